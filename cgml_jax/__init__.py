"""cgml_jax: Conditional Generative Modeling via Learning the Latent Space, in JAX/Flax."""

__version__ = '0.2.0'
