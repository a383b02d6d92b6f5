"""Fingerprints of the lowered train steps: sha256 of their StableHLO text.

  python -m benchmarks.hlo_fingerprint            # one line per (config, method)

Two checkouts that print the same fingerprints run the same XLA programs for these
methods, so a refactor or an opt-in option that leaves them unchanged cannot change the
numbers of the defaults. The configs are the smoke variants of the toy and of colour
modes (the conv nets of every image task), with the methods' default options.
"""

import hashlib
import importlib

import jax

from cgml_jax.tasks import colour_modes, image
from cgml_jax.tasks import methods as methods_lib
from cgml_jax.tasks import toy

CASES = (('toy', 'smoke', ('l1', 'cgml', 'cgml_no_rho')),
         ('colour_modes', 'smoke,paper', ('l1', 'cgml')),
         ('colour_modes', 'smoke', ('cgml',)))


def context(name: str, config) -> methods_lib.Context:
  if name == 'toy':
    data = toy.make_dataset(jax.random.key(config.seed), config.data.num_train,
                            toy.validate_modes(config.data.modes))
    return toy.method_context(config, data)
  return image.method_context(colour_modes.TASK, config)


def fingerprints() -> dict[str, str]:
  """'config:arg method' -> sha256 of the lowered train step's StableHLO text."""
  out = {}
  for name, arg, methods in CASES:
    config = importlib.import_module(f'experiments.{name}').get_config(arg)
    ctx = context(name, config)
    for method in methods:
      built = methods_lib.build(method, ctx, jax.random.key(0))
      text = jax.jit(built.step_fn).lower(built.state, ctx.example,
                                          jax.random.key(1)).as_text()
      out[f'{name}:{arg} {method}'] = hashlib.sha256(text.encode()).hexdigest()
  return out


if __name__ == '__main__':
  for k, v in fingerprints().items():
    print(f'{v}  {k}')
