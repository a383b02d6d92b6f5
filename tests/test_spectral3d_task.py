"""The spectral3d task: corruption, normalisation, metrics, probe, and the real entry point."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from cgml_jax import train
from cgml_jax.tasks import spectral3d as task
from experiments import spectral3d as s3d_config


def _corrupt_config(mask_prob):
  c = ml_collections.ConfigDict()
  c.corrupt = ml_collections.ConfigDict(dict(mask_prob=mask_prob, num_rects=2, max_frac=0.5,
                                             noise_std=1.0))
  c.train = ml_collections.ConfigDict(dict(region_weight=4.0))
  return c


@pytest.mark.parametrize('mask_prob', [0.0, 1.0])
def test_corruption_touches_only_the_region_of_valid_entries(mask_prob):
  l_max = 5
  s = 2 * l_max + 1
  y = jax.random.normal(jax.random.key(0), (16, s, s, 3)) * task.valid_image(l_max)
  keys = jax.random.split(jax.random.key(1), 16)
  b = jax.device_get(task.make_batch(keys, y, l_max, _corrupt_config(mask_prob)))
  y = np.asarray(y)
  valid = task.valid_image(l_max)
  region = b['region']
  assert region.sum() > 0
  assert np.all(region <= valid)                     # never outside |m| <= l
  xc = b['x'][..., :-1]
  np.testing.assert_array_equal(b['x'][..., -1:], np.broadcast_to(valid, region.shape))
  np.testing.assert_array_equal(xc * (1 - region), y * (1 - region))  # untouched outside
  inside = np.broadcast_to(region, y.shape) > 0
  if mask_prob == 1.0:
    assert np.all(xc[inside] == 0)
  else:
    assert np.all(xc[inside] != y[inside])
  np.testing.assert_allclose(b['mask'], valid * (1 + 4.0 * region))


def test_normalizer_round_trip_and_unit_scale():
  rng = np.random.default_rng(0)
  l_max = 4
  valid = task.valid_entries(l_max)
  scales = np.array([[1.0], [100.0]])[None, :, :, None] * (np.arange(l_max + 1) + 1.0)[
      None, None, :, None]
  maps = (rng.normal(size=(200, 2, l_max + 1, 2 * l_max + 1)) * scales + 3.0) * valid
  norm = task.Normalizer(maps)
  y = norm(maps)
  assert np.all(y[..., ~valid] == 0)
  # Per (channel, degree): unit mean square over shapes and valid m.
  ms = np.square(y).sum(axis=(0, 3)) / (valid.sum(-1) * len(y))
  np.testing.assert_allclose(ms, 1.0, rtol=1e-3)
  np.testing.assert_allclose(norm.inverse(y), maps, rtol=1e-4, atol=1e-3)
  img = task.to_image(y)
  assert img.shape == (200, 2 * l_max + 1, 2 * l_max + 1, 2)
  np.testing.assert_array_equal(task.from_image(img, l_max), y)


def test_average_precision_by_hand():
  # Ranking: rel, not, rel -> AP = (1/1 + 2/3) / 2.
  dist = np.array([[0.1, 0.2, 0.3]])
  rel = np.array([[True, False, True]])
  np.testing.assert_allclose(task.average_precision(dist, rel), [(1 + 2 / 3) / 2])


def test_reconstruction_map_is_one_for_separated_classes_and_excludes_self():
  labels = np.array([0, 0, 1, 1])
  d = np.array([[0.0], [0.1], [5.0], [5.1]])
  assert task.reconstruction_map(d, d, labels, 0.0, 1.0) == 1.0
  # A query recovered into the other class ranks its own class last.
  q = d.copy()
  q[0] = 5.05
  ap0 = (1 / 3)  # its one relevant shape (index 1) comes third of three
  np.testing.assert_allclose(task.reconstruction_map(q, d, labels, 0.0, 1.0), (ap0 + 3) / 4)


def test_band_errors_by_hand():
  l_max = 2
  s = 5
  y = np.zeros((1, s, s, 1), np.float32)
  y_hat = y.copy()
  y_hat[0, 2, 2, 0] = 1.0   # l = 2, m = 0
  region = np.zeros((1, s, s, 1), np.float32)
  region[0, 2, 2, 0] = 1.0
  e = task.band_errors(y_hat, y, region, l_max, [(0, 1), (2, 2)])
  assert e['all/l0-1'] == 0.0
  np.testing.assert_allclose(e['all/l2-2'], 1 / 5)        # 5 valid entries at l = 2
  np.testing.assert_allclose(e['all/all_degrees'], 1 / 9)
  assert e['region/l2-2'] == 1.0 and e['region/l0-1'] == 0.0


def test_linear_probe_separates_separable_data():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 8)) * 4
  y_tr, y_te = rng.integers(0, 3, 300), rng.integers(0, 3, 100)
  f_tr = centres[y_tr] + rng.normal(size=(300, 8))
  f_te = centres[y_te] + rng.normal(size=(100, 8))
  c = s3d_config.get_config()
  out = task.linear_probe(f_tr, y_tr, f_te, y_te, c)
  assert out['test_acc'] > 0.95
  # Shuffled labels carry no signal.
  chance = task.linear_probe(f_tr, rng.permutation(y_tr), f_te, y_te, c)
  assert chance['test_acc'] < 0.6


@pytest.mark.slow  # long; the notebook runs the same path at smoke size
def test_smoke_config_through_the_entry_point(tmp_path):
  config = s3d_config.get_config('smoke')
  out = train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / 'metrics.json') as f:
    saved = json.load(f)
  assert saved['num_train'] == 64 and saved['num_test'] == 32
  for m in ('input', 'l1', 'cgml', 'cgml_best'):
    rec = saved['recovery'][m]
    assert set(rec) >= {'all/l0-2', 'all/l3-6', 'region/all_degrees'}
    assert all(np.isfinite(v) for v in rec.values())
  assert saved['recovery']['input']['all/all_degrees'] > 0
  for k in ('clean', 'input', 'l1', 'cgml'):
    assert 0 < saved['reconstruction_map'][k] <= 1
  for k in ('l1', 'cgml', 'random_encoder', 'zernike_invariants', 'sh_invariants'):
    assert 0 <= saved['classification'][k]['test_acc'] <= 1
  assert os.path.exists(tmp_path / 'fig20_spectral3d.png')
  assert os.path.exists(tmp_path / 'metrics.md')
  assert any(f.startswith('maps_') and f.endswith('.npz') for f in os.listdir(tmp_path))
  assert out['recovery'] == saved['recovery']
  for method in ('l1', 'cgml'):   # every optimiser still moving at the last step
    norms = saved['timing'][method]['final_update_norm']
    assert norms and min(norms.values()) > 0, method


def test_figure_columns_are_titled_input_methods_samples_truth(tmp_path):
  """fig20's columns: the input, L1 by its display name, cGML's samples with k, the truth;
  render_clouds draws one panel per (row, column)."""
  l_max, r = 3, 2
  s = 2 * l_max + 1
  rng = np.random.default_rng(0)
  maps = lambda *shape: rng.normal(size=shape + (s, s, 1)).astype(np.float32)
  cols = task.figure_columns(maps(r), {'l1': maps(r, 1), 'cgml': maps(r, 4)}, maps(r), 2)
  assert list(cols) == ['input (corrupted)', 'L1 regression', 'cGML with ρ\nk = 1',
                        'cGML with ρ\nk = 2', 'ground truth']
  assert all(v.shape == (r, s, s, 1) for v in cols.values())

  class Identity:
    def inverse(self, y):
      return y

  task.render_clouds(str(tmp_path), cols, l_max, Identity(), ['masked', 'noisy'], 8)
  assert os.path.getsize(tmp_path / 'fig20_spectral3d.png') > 0
