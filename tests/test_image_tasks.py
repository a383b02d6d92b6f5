"""Image tasks: grids, masks and scores on hand-made arrays, and every task's smoke config
end to end through the real entry point (`cgml_jax.train.train_and_evaluate`)."""

import importlib
import json
import math
import os

import numpy as np
import pytest

from cgml_jax import train
from cgml_jax.data import transforms
from cgml_jax.tasks import colorize, complete, image, mnist_corrupted, viz
from experiments import mnist_corrupted as mnist_config


def test_grid_layout_and_blank_cells():
  a = np.full((4, 5, 1), -1.0, np.float32)   # black, grey channel
  b = np.ones((4, 5, 3), np.float32)         # white RGB
  g = viz.grid([[a, b], [None, a]], pad=1)
  assert g.shape == (2 * 5 + 1, 2 * 6 + 1, 3) and g.dtype == np.uint8
  assert (g[1:5, 1:6] == 0).all() and (g[1:5, 7:12] == 255).all()
  assert (g[6:10, 1:6] == 255).all()         # blank cell = background


def test_samples_grid_has_input_truth_and_every_sample():
  n, k = 3, 4
  x = np.zeros((n, 6, 6, 3), np.float32)
  cols = {'l1': np.zeros((n, 1, 6, 6, 3)), 'cgml': np.zeros((n, k, 6, 6, 3))}
  g = viz.samples_grid(x, x, cols, labelled=False)
  assert g.shape == (n * 8 + 2, (2 + 1 + k) * 8 + 2, 3)


def test_summarize_best_of_k_direction():
  s = image.summarize({'psnr': np.array([[10., 20.], [30., 5.]]),
                       'E': np.array([[0.5, 0.1], [0.2, 0.9]]),
                       'pixel_diversity': np.array([0.1, 0.3])})
  assert s['psnr_best'] == 25.0 and s['psnr_mean'] == 16.25
  assert math.isclose(s['E_best'], 0.15) and math.isclose(s['pixel_diversity'], 0.2)


def test_completion_composite_keeps_observed_pixels():
  y = np.linspace(-1, 1, 2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
  mask = np.zeros((2, 8, 8, 1), np.float32)
  mask[:, 2:5, 3:6] = 1
  x = np.concatenate([y * (1 - mask), mask], -1)
  out = np.asarray(complete.to_image(x, np.full_like(y, 0.5)))
  np.testing.assert_allclose(out[mask[..., 0] == 0], y[mask[..., 0] == 0])
  assert (out[mask[..., 0] == 1] == 0.5).all()


def test_completion_eval_masks_have_the_table3_areas():
  c = importlib.import_module('experiments.complete').get_config()
  rng = np.random.default_rng(0)
  for name, frac in (('area10', 0.10), ('area15', 0.15), ('area25', 0.25), ('center', 0.25)):
    m = complete.mask_fn(c, name)(rng, 64, 64)
    assert abs(m.mean() - frac) < 0.01, name
  with pytest.raises(ValueError, match='unknown completion protocol'):
    complete.mask_fn(c, 'bogus')


def test_colorization_round_trip_through_rgb():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
  ex = transforms.colorization()({'image': img}, rng)
  rgb = np.asarray(colorize.to_image(ex['x'][None], ex['y'][None]))[0]
  np.testing.assert_allclose((rgb + 1) * 127.5, img, atol=1.0)


def test_mnist_hole_box_and_corruptions():
  c = mnist_config.get_config('box')
  c.data.box_rate = 1.0
  rng = np.random.default_rng(0)
  for _ in range(20):
    m = mnist_corrupted.hole(rng, c)
    assert m[mnist_corrupted.HALF:].sum() == 0                   # top half only
    side_h, side_w = m[..., 0].any(1).sum(), m[..., 0].any(0).sum()
    assert c.data.mask_min <= min(side_h, side_w) and max(side_h, side_w) <= c.data.mask_max
    b = mnist_corrupted.box_in(m, c.data.box_size)
    assert b.sum() == c.data.box_size ** 2 and (b <= m).all()     # box inside the hole
  digit = {'image': np.zeros((28, 28, 1), np.uint8)}
  ex = mnist_corrupted.make_transform(c, None, None)(digit, np.random.default_rng(1))
  assert ex['x'].shape == (28, 28, 2) and (ex['x'][..., 0][ex['mask'][..., 0] == 1] == 0).all()
  assert (ex['y'][ex['box'][..., 0] == 1] == 1).all()              # white box in y only
  test = mnist_corrupted.make_transform(c, 'test', None)(digit, np.random.default_rng(1))
  assert (test['y'] == -1).all()                                   # test targets are clean
  c2 = mnist_config.get_config()
  c2.data.overlap_rate = 1.0
  other = np.full((1, 28, 28, 1), 255, np.uint8)
  ex = mnist_corrupted.make_transform(c2, None, other)(digit, np.random.default_rng(2))
  assert (ex['y'][:14] == 1).all() and (ex['y'][14:] == -1).all()


def test_box_mode_judged_on_the_free_box_pixels():
  box = np.zeros((3, 1, 6, 6, 1), np.float32)
  box[:, :, 1:5, 1:5] = 1                                   # 16 box pixels
  y = np.zeros((3, 1, 6, 6, 1), np.float32)
  y[1, :, 1:3, 1:5] = 1                                     # digit covers 8 of 16: usable
  y[2, :, 1:4, 1:5] = 1                                     # digit covers 12 of 16: not
  y_hat = np.repeat(y, 2, axis=1)                           # sample 0: no box (clean digit)
  y_hat[:, 1] = np.maximum(y_hat[:, 1], 0.8 * box[:, 0])    # sample 1: a grey-white box
  usable, has_box, intensity = mnist_corrupted.box_present(y_hat, y, box, 0.5)
  assert usable.tolist() == [True, True, False]
  assert has_box[:2].tolist() == [[False, True], [False, True]]
  np.testing.assert_allclose(intensity[:2, 1], 0.8)         # covered pixels do not dilute it


# colorize.py's default is the colour-modes task; its photo colorization is `photos`.
SMOKE = {'colorize': 'photos,smoke'}


# colorize (photos) also runs in the quickstart notebook, mnist_corrupted in compare_mnist's
# smoke: their own smoke runs are in -m slow.
@pytest.mark.parametrize('name', [
    pytest.param('colorize', marks=pytest.mark.slow), 'complete', 'translate',
    pytest.param('mnist_corrupted', marks=pytest.mark.slow)])
def test_smoke_config_end_to_end(name, tmp_path):
  config = importlib.import_module(f'experiments.{name}').get_config(SMOKE.get(name, 'smoke'))
  out = train.train_and_evaluate(config, str(tmp_path))
  files = set(os.listdir(tmp_path))
  assert {'metrics.json', 'metrics.md', 'trajectory.png'} <= files
  assert all(f'samples_{p}.png' in files for p in out['eval'])
  metrics = json.load(open(tmp_path / 'metrics.json'))
  for per_method in metrics['eval'].values():
    assert set(per_method) == {'l1', 'cgml'}
    for m in per_method.values():
      assert np.isfinite([m['psnr_best'], m['E_best'], m['pixel_diversity']]).all()
    assert per_method['l1']['pixel_diversity'] == 0.0
  assert '| cgml |' in open(tmp_path / 'metrics.md').read()
  for method, info in metrics['train'].items():   # every optimiser still moving at the end
    assert info['final_update_norm'] and min(info['final_update_norm'].values()) > 0, method
  if name == 'colorize':  # the colourfulness ratio is generated for every method
    for m in metrics['eval']['test'].values():
      assert m['colorfulness'] == pytest.approx(m['chroma'] / m['chroma_gt'])
  if name == 'mnist_corrupted':
    assert set(metrics['task_metrics']) == {'l1', 'cgml', 'cgml_T0'}
    assert 'clean_sample_rate' in metrics['task_metrics']['cgml']
    tm = metrics['task_metrics']   # the T = 0 row reads cGML's K, L1 its one output
    assert tm['cgml_T0']['num_samples'] == tm['cgml']['num_samples'] > 1
    assert tm['l1']['num_samples'] == 1


@pytest.mark.parametrize('name', ['colorize', 'translate', 'complete', 'mnist_corrupted'])
def test_evaluation_sets_are_deterministic_and_unaugmented(name):
  """No random transform touches an evaluation split: two builds are bitwise identical,
  and with flips on for training the evaluation images are not flipped."""
  config = importlib.import_module(f'experiments.{name}').get_config(SMOKE.get(name, 'smoke'))
  if 'flip' in config.data:
    config.data.flip = True
  task_module = importlib.import_module(f'cgml_jax.tasks.{name}')
  task = (task_module.make_task(config.data.channels) if name == 'complete'
          else task_module.TASK)
  protocol = task.protocols(config)[0]
  a = image.load_eval_set(task, config, protocol)
  b = image.load_eval_set(task, config, protocol)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  if 'flip' in config.data:
    config.data.flip = False
    unflipped = image.load_eval_set(task, config, protocol)
    for k in a:
      np.testing.assert_array_equal(a[k], unflipped[k])
