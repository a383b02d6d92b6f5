"""Peer methods that cGML (ICLR 2021) is compared against, on the project's backbones.

  gan        GAN losses (NS-GAN, LSGAN), PatchGAN and Context-Encoder discriminators
  basisgan   BasisConv (stochastic filters w = psi(z) . a) and a BasisGAN U-Net decoder
  mrgan      MR-GAN predictor and moment-reconstruction losses (MLMM, MCMLE)
  bicyclegan BicycleGAN (cVAE-GAN + cLR-GAN): latent encoder E(y), state, step, sampler
  cimle      conditional IMLE: train the nearest of m samples; state, step, sampler
  diversity  DSGAN and MSGAN regularisers, as add-ons to any GAN method
  methods    train states, jit-able steps and samplers for all of the above
"""

from cgml_jax.peers import basisgan, bicyclegan, cimle, diversity, gan, methods, mrgan

__all__ = ['basisgan', 'bicyclegan', 'cimle', 'diversity', 'gan', 'methods', 'mrgan']
