"""Config mistakes are one-line `ConfigError`s naming the field, before any work starts."""

import importlib
import os
import subprocess
import sys
from unittest import mock

import pytest

from cgml_jax import configs, train
from experiments import colorize, compare_mnist, complete, spectral3d, toy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (config module, variant, field, bad value, text the message must hold)
CASES = [
    (colorize, 'photos,smoke', 'train.steps', -5, 'config.train.steps = -5'),
    (colorize, 'photos,smoke', 'train.steps', 0, 'integer >= 1'),
    (colorize, 'photos,smoke', 'data.batch_size', 0, 'config.data.batch_size = 0'),
    (colorize, 'photos,smoke', 'eval.batch_size', 0, 'config.eval.batch_size'),
    (colorize, 'photos,smoke', 'eval.num_samples', 0, 'config.eval.num_samples'),
    (colorize, 'photos,smoke', 'eval.num_test', -1, 'config.eval.num_test'),
    (colorize, 'photos,smoke', 'train.inner_steps', 0, 'config.train.inner_steps = 0'),
    (colorize, 'photos,smoke', 'train.lr', -1e-3, 'config.train.lr'),
    (colorize, 'photos,smoke', 'train.schedule', 'cosin', "'constant', 'cosine'"),
    (colorize, 'photos,smoke', 'train.unroll', 'yes', "one of ('auto', True, False)"),
    (colorize, 'photos,smoke', 'methods', ('l1', 'cgmll'), "unknown method 'cgmll'"),
    (colorize, 'photos,smoke', 'methods', (), 'non-empty tuple'),
    (colorize, 'photos,smoke', 'methods', ('cgml+msgan',), '+dsgan / +msgan go on'),
    (colorize, 'photos,smoke', 'data.image_size', 0, 'config.data.image_size = 0'),
    (colorize, 'photos,smoke', 'model.bottleneck_size', 32, 'data.image_size = 16'),
    (colorize, 'photos,smoke', 'model.z_dim', 0, 'config.model.z_dim'),
    (colorize, 'photos,smoke', 'model.impl', 'fast', "'auto', 'matmul', 'conv', 'plain'"),
    (colorize, 'photos,smoke', 'model.z_injection', 'some', "('bottleneck', 'all')"),
    (colorize, 'photos,smoke', 'model.latent_hidden', (16, 0), 'tuple of widths'),
    (colorize, 'photos,smoke', 'latent.init', 'zero', "('random', 'persistent', 'balanced')"),
    (colorize, 'photos,smoke', 'latent.step_size', 0.0, 'config.latent.step_size'),
    (colorize, 'photos,smoke', 'latent.step_size_decay', 1.5, '<= 1.0'),
    (colorize, 'photos,smoke', 'latent.traverse_steps', -1, 'integer >= 0'),
    (colorize, 'photos,smoke', 'checkpoint.every', 0, 'config.checkpoint.every'),
    (colorize, 'photos,smoke', 'task', 'colourise', "'colorize'"),
    (complete, 'smoke', 'eval.protocols', ('area25', 'square'), "'area10'"),
    (complete, 'paper', 'data.center_crop', -1, 'config.data.center_crop = -1'),
    (toy, 'smoke', 'loss.error', 'l3', "('l1', 'l2')"),
    (toy, 'smoke', 'data.batch_size', -3, 'config.data.batch_size = -3'),
    (toy, 'smoke', 'data.batch_size', 10**8, 'at most the 512 training examples'),
    (colorize, 'photos,smoke', 'data.batch_size', 65, 'at most the 64 training examples'),
    (toy, 'smoke', 'train.generator_update', 'first', "('every', 'last')"),
    (toy, 'smoke', 'latent.z_loss', 'sum', "('split', 'joint')"),
    (spectral3d, 'smoke', 'train.steps', 0, 'config.train.steps = 0'),
    (compare_mnist, 'smoke', 'mrgan.disc_batch_size', 9, 'at most data.batch_size = 8'),
    (compare_mnist, 'smoke', 'mrgan.predictor_patience', 0, 'config.mrgan.predictor_patience'),
    (compare_mnist, 'smoke', 'mrgan.noise', 'flat', "('spatial', 'vector')"),
    (spectral3d, 'smoke', 'basisgan.generator', 'vgg', "('resnet', 'unet')"),
    (spectral3d, 'smoke', 'basisgan.latent', 'one', "('auto', 'per_layer', 'shared')"),
    (spectral3d, 'smoke', 'basisgan.latent_dim', 0, 'config.basisgan.latent_dim = 0'),
    (spectral3d, 'smoke', 'basisgan.num_blocks', 0, 'config.basisgan.num_blocks = 0'),
]


@pytest.mark.parametrize('module,variant,field,value,text', CASES,
                         ids=[f'{c[0].__name__.split(".")[-1]}-{c[2]}={c[3]}' for c in CASES])
def test_bad_field_is_one_line_config_error(tmp_path, module, variant, field, value, text):
  config = module.get_config(variant)
  block, _, name = field.rpartition('.')
  (config[block] if block else config)[name] = value
  workdir = tmp_path / 'run'
  with pytest.raises(configs.ConfigError) as e:
    train.train_and_evaluate(config, str(workdir))
  msg = str(e.value)
  assert '\n' not in msg and text in msg, msg
  assert isinstance(e.value, ValueError)
  assert not workdir.exists()  # nothing was started


VARIANTS = {'colorize': (None, 'smoke', 'best', 'photos', 'photos,smoke', 'paper'),
            'colour_modes': (None, 'smoke', 'best', 'mnist'),
            'hue_modes': (None, 'smoke', 'paper', 'cifar', 'variant=embedded4',
                          'variant=cifar3_skew,smoke'),
            'compare_modes': (None, 'smoke'), 'complete': (None, 'cpu', 'smoke', 'paper'),
            'translate': (None, 'cpu', 'smoke', 'paper'), 'toy': (None, 'smoke', 'paper', 'best'),
            'spectral3d': (None, 'smoke'), 'mnist_corrupted': (None, 'box', 'smoke'),
            'compare_mnist': (None, 'box', 'smoke'), 'compare_facades': (None, 'cpu', 'smoke')}


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_shipped_configs_are_valid(name):
  module = importlib.import_module(f'experiments.{name}')
  for variant in VARIANTS[name]:
    configs.validate(module.get_config(variant))


def test_launcher_reports_the_field(tmp_path):
  """Through the launcher: the message names the field (these used to be an IndexError
  and a ZeroDivisionError deep inside training)."""
  # One subprocess (the in-process cases above cover data.batch_size=0 the same way).
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.run', '--config=experiments/colorize.py:photos,smoke',
       f'--workdir={tmp_path / "run"}', '--config.train.steps=-5'], cwd=ROOT,
      capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert 'config.train.steps = -5' in out.stdout + out.stderr
  assert 'IndexError' not in out.stderr
  assert not (tmp_path / 'run').exists()


def test_batch_must_split_over_the_devices(monkeypatch):
  import jax
  monkeypatch.setattr(jax, 'device_count', lambda: 4)
  config = colorize.get_config('photos,smoke')
  config.data.batch_size = 6
  with pytest.raises(configs.ConfigError, match=r'data.batch_size = 6.*multiple of the 4 '):
    configs.validate(config)
  config.data.batch_size = 8
  configs.validate(config)


def test_multi_process_runs_are_not_initialised_early(monkeypatch):
  """JAX's backend must not start before jax.distributed.initialize (in workdir.prepare)."""
  import jax

  def too_early():
    raise AssertionError('validate started the JAX backend before the hosts joined')
  monkeypatch.setattr(jax, 'device_count', too_early)
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'localhost:1234')
  configs.validate(colorize.get_config('photos,smoke'))


def test_colorize_defaults_to_colour_modes_and_photos_is_one_argument_away():
  assert colorize.get_config().task == 'colour_modes'
  assert colorize.get_config().latent.init_candidates == 16   # best-of-16 by default
  assert colorize.get_config('best').latent.init_candidates == 16
  from experiments import colour_modes, compare_modes
  assert colour_modes.get_config('paper').latent.init_candidates == 1
  assert compare_modes.get_config().latent.init_candidates == 1   # the paper's cGML row
  assert colorize.get_config('photos').task == 'colorize'
  assert colorize.get_config('paper').data.name == 'tfds:stl10'
  with pytest.raises(ValueError, match="'best' and 'mnist' are for the colour-modes"):
    colorize.get_config('photos,best')


def test_missing_data_and_a_batch_larger_than_the_files_are_refused_before_the_workdir(
    tmp_path):
  """`train.check_data`: the offline files a config reads are looked for (headers only)
  before the workdir exists; the message names the file and both ways to point at it."""
  from cgml_jax.data import sources
  from experiments import colour_modes
  config = colour_modes.get_config('mnist,smoke')
  config.data.data_dir = str(tmp_path / 'no_data')
  workdir = tmp_path / 'run'
  with pytest.raises(sources.DataNotFoundError) as e:
    train.train_and_evaluate(config, str(workdir))
  msg = str(e.value)
  assert '\n' not in msg and 'mnist/mnist_train.npz' in msg and str(tmp_path / 'no_data') in msg
  assert '$CGML_DATA_DIR' in msg and '--config.data.data_dir' in msg
  assert '(in the data folder of config.data.data_dir)' in msg
  assert not workdir.exists()
  # The message says where the folder it looked in came from.
  config.data.data_dir = ''
  with mock.patch.dict(os.environ, {sources.ENV_VAR: str(tmp_path / 'env_data')}):
    with pytest.raises(sources.DataNotFoundError, match=r'in the data folder of \$CGML_DATA_DIR'):
      train.train_and_evaluate(config, str(workdir))
  with mock.patch.dict(os.environ):
    os.environ.pop(sources.ENV_VAR, None)
    if not (sources.resolve_data_dir(must_exist=False) / 'mnist' / 'mnist_train.npz').exists():
      with pytest.raises(sources.DataNotFoundError,
                         match=r'in the default data folder, as neither \$CGML_DATA_DIR nor'):
        train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
  data_dir = sources.resolve_data_dir(must_exist=False)
  if not (data_dir / 'mnist' / 'mnist_train.npz').exists():
    pytest.skip('the batch-size half needs the offline data folder (docs/data.md)')
  config.data.data_dir = str(data_dir)
  config.data.train_split = 'train[:100]'
  config.data.batch_size = 101
  with pytest.raises(configs.ConfigError, match=r"at most the 100 examples of mnist split "
                                                r"'train\[:100\]'"):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
