"""cgml_jax: Conditional Generative Modeling via Learning the Latent Space, in JAX/Flax.

The algorithm (paper Sec. 2-3) is `cgml_jax.cgml`; the L1 baseline `cgml_jax.regression`;
error functions `cgml_jax.losses`; the one entry point of every experiment
`train_and_evaluate(config, workdir)`; shared config blocks `cgml_jax.configs`. Training
infrastructure lives in `cgml_jax.training`, models in `cgml_jax.models`, the peers in
`cgml_jax.peers`, the registry of every method in `cgml_jax.tasks.methods`.

The names below are loaded on first use, so that importing a light submodule (e.g. the
workdir lock) does not start JAX.
"""

import importlib

__version__ = '0.2.0'

_MODULES = ('cgml', 'configs', 'losses', 'regression')
_NAMES = {'CGMLState': 'cgml', 'Hyper': 'cgml', 'project_to_sphere': 'cgml',
          'sample': 'cgml', 'sample_sphere': 'cgml', 'train_step': 'cgml',
          'traverse': 'cgml', 'train_and_evaluate': 'train'}
__all__ = ['__version__', *_MODULES, *_NAMES]


def __getattr__(name):
  if name in _MODULES:
    return importlib.import_module(f'cgml_jax.{name}')
  if name in _NAMES:
    return getattr(importlib.import_module(f'cgml_jax.{_NAMES[name]}'), name)
  raise AttributeError(f'module cgml_jax has no attribute {name!r}')
