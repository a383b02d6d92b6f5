"""Every config's `smoke` wins over its other variants: `cpu,smoke`, `best,smoke`, ... train
the same tiny budget as `smoke` alone (a variant applied after smoke would silently undo it).
"""

import importlib
import itertools

import pytest

from cgml_jax import configs

CONFIGS = ('toy', 'colour_modes', 'hue_modes', 'colorize', 'mnist_corrupted', 'complete',
           'translate', 'spectral3d', 'compare_mnist', 'compare_facades', 'compare_modes',
           'probe')
# Fields a smoke run shrinks; every variant combined with smoke must leave them as smoke
# sets them.
# Variants that choose the data or the task (and so the image side) are compared with smoke
# on the same data: colorize's `paper` is its photo task.
DATA_VARIANTS = {'mnist': 'mnist', 'photos': 'photos', 'cifar': 'cifar'}
TASK_VARIANTS = {('colorize', 'paper'): 'photos'}
BUDGET = ('train.steps', 'train.inner_steps', 'data.batch_size', 'data.image_size',
          'data.num_train', 'eval.num_test', 'eval.num_samples', 'model.base_channels',
          'model.max_channels', 'model.width', 'latent.traverse_steps')


def _variants(module) -> list[str]:
  """The boolean config arguments of a config module (besides smoke)."""
  seen = {}
  real = configs.parse_arg

  def spy(arg, **spec):
    if not seen:  # the module's own arguments, not those of a config it builds on
      seen.update(spec)
    return real(arg, **spec)

  configs.parse_arg = spy
  try:
    module.get_config('smoke')
  finally:
    configs.parse_arg = real
  return sorted(k for k, v in seen.items() if isinstance(v, bool) and k != 'smoke')


def _budget(c) -> dict:
  out = {}
  for field in BUDGET:
    block, name = field.split('.')
    if block in c and name in c[block]:
      out[field] = c[block][name]
  return out


@pytest.mark.parametrize('name', CONFIGS)
def test_smoke_is_applied_last(name):
  module = importlib.import_module(f'experiments.{name}')
  flags = _variants(module)
  checked = 0
  for r in range(1, len(flags) + 1):
    for combo in itertools.combinations(flags, r):
      try:
        got = module.get_config(','.join(combo + ('smoke',)))
      except ValueError as e:
        assert 'exclude each other' in str(e) or 'are for the' in str(e), e
        continue
      same_data = {DATA_VARIANTS.get(v) or TASK_VARIANTS.get((name, v)) for v in combo}
      want = module.get_config(','.join(sorted(same_data - {None}) + ['smoke']))
      assert _budget(got) == _budget(want), (name, combo)
      checked += 1
  assert checked or not flags
