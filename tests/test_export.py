"""Shareable models: export -> load -> sample is bitwise the training code's sampling, and
the sampling command runs on a folder of images."""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from cgml_jax import export
from cgml_jax.tasks import colorize, image
from cgml_jax.tasks import methods as methods_lib
from cgml_jax.training import workdir as workdir_lib
from experiments import colorize as colorize_config
from experiments import sample as sample_cmd


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A smoke-trained colorization run (cGML and L1, checkpointed) and its eval inputs."""
  wd = str(tmp_path_factory.mktemp('colorize_run'))
  config = colorize_config.get_config('photos,smoke')
  config.train.steps = 2
  writer = workdir_lib.prepare(config, wd)
  trained = {m: image.train_method(m, colorize.TASK, config, jax.random.key(i), wd, writer)
             for i, m in enumerate(('cgml', 'l1'))}
  writer.close()
  x = image.load_eval_set(colorize.TASK, config, 'test')['x'][:3]
  return config, wd, trained, x


@pytest.mark.parametrize('method', ['cgml', 'l1'])
def test_export_load_sample_is_bitwise_identical(run, tmp_path, method):
  config, _, trained, x = run
  key = jax.random.key(7)
  want = methods_lib.sample(trained[method], x, key, 4)
  path = export.export(trained[method], config, tmp_path / 'model')
  model = export.load_pretrained(path)
  got = model.sample(x, key, 4)
  assert model.method == method and model.config.data.image_size == config.data.image_size
  assert got.shape == (3, 4) + x.shape[1:3] + (2,)
  np.testing.assert_array_equal(got, want)
  if method == 'l1':  # K copies of one prediction
    np.testing.assert_array_equal(got[:, 0], got[:, 3])
  else:
    assert np.abs(got[:, 0] - got[:, 1]).max() > 0
  # Small: parameters only (no optimiser state).
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
  assert size < 2 * sum(a.nbytes for a in jax.tree.leaves(trained[method].state.params)) + 2e5


def test_export_from_workdir_checkpoint(run, tmp_path):
  config, wd, trained, x = run
  model = export.load_pretrained(export.export(wd, None, tmp_path / 'm'))  # cgml by default
  assert model.method == 'cgml'
  key = jax.random.key(3)
  np.testing.assert_array_equal(model.sample(x, key, 2),
                                methods_lib.sample(trained['cgml'], x, key, 2))
  with pytest.raises(export.ExportError, match='exists'):
    export.export(wd, None, tmp_path / 'm')


def test_sample_command_on_a_folder(run, tmp_path):
  config, _, trained, _ = run
  model_dir = export.export(trained['cgml'], config, tmp_path / 'model')
  photos = tmp_path / 'photos'
  photos.mkdir()
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(photos / 'colour.png')
  Image.fromarray(rng.integers(0, 255, (24, 20), np.uint8)).save(photos / 'grey.png')
  lines = []
  written = sample_cmd.run(str(model_dir), str(photos), str(tmp_path / 'out'), 3,
                           log=lines.append)
  names = sorted(os.listdir(tmp_path / 'out'))
  assert names == sorted(['grid.png', 'colour_grid.png', 'grey_grid.png']
                         + [f'{s}_sample{k}.png' for s in ('colour', 'grey') for k in range(3)])
  assert len(written) == len(names)
  resized = [l for l in lines if 'grey.png' in l]
  assert len(resized) == 1 and '20x24' in resized[0] and '16x16' in resized[0]
  assert not any('colour.png' in l for l in lines)  # already the model's size
  out = np.asarray(Image.open(tmp_path / 'out' / 'colour_sample0.png'))
  assert out.ndim == 3 and out.shape[-1] == 3


@pytest.mark.slow  # long; run with -m slow
def test_sample_command_completion_masks(tmp_path):
  """Completion: a mask PNG (white = hole, resized to the model) or a named protocol."""
  from cgml_jax import cgml
  from cgml_jax.tasks import complete, methods
  from cgml_jax.training import optim
  from experiments import complete as complete_config
  config = complete_config.get_config('smoke')
  task = complete.make_task(config.data.channels)
  enc, gen, lat = image.build_models(task, config)
  s = config.data.image_size
  tx = optim.from_config(config.train, config.train.lr)
  state = cgml.CGMLState.create(jax.random.key(0), np.zeros((1, s, s, 4), np.float32),
                                encoder=enc, generator=gen, latent_net=lat, tx_hg=tx,
                                tx_latent=tx, hp=methods.hyper(config))
  model_dir = export.export(state, config, tmp_path / 'model')
  rng = np.random.default_rng(1)
  Image.fromarray(rng.integers(0, 255, (s, s, 3), np.uint8)).save(tmp_path / 'face.png')
  hole = np.zeros((2 * s, 2 * s), np.uint8)
  hole[s // 2:s, s // 2:s] = 255
  Image.fromarray(hole).save(tmp_path / 'hole.png')
  for mask in ('center', str(tmp_path / 'hole.png')):
    out = tmp_path / f'out_{len(mask)}'
    sample_cmd.run(str(model_dir), str(tmp_path / 'face.png'), str(out), 2, mask=mask,
                   log=lambda line: None)
    assert sorted(os.listdir(out)) == ['face_grid.png', 'face_sample0.png', 'face_sample1.png',
                                       'grid.png']
    # Outside the hole the output is the observed image (completion composites).
    got = np.asarray(Image.open(out / 'face_sample0.png')).astype(int)
    scale = got.shape[0] // s
    want = np.asarray(Image.open(tmp_path / 'face.png')).astype(int)
    assert np.abs(got[::scale, ::scale][0, 0] - want[0, 0]).max() <= 1
