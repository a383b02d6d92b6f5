"""The toy task: its metrics on hand-made samples, input validation, and end to end."""

import json
import os

import jax
import numpy as np
import pytest

from cgml_jax import cgml, train
from cgml_jax.models.mlp import MLPLatentNet
from cgml_jax.tasks import toy
from experiments import toy as toy_config

MODES = np.array([4.0, -4.0], np.float32)


def test_metrics_on_hand_made_samples():
  x = np.array([[0.5], [-0.8], [1.0]], np.float32)
  b = toy.branches(x, MODES)  # (3, 2, 3)
  np.testing.assert_allclose(b[0, 0], 4 * np.array([0.5, 0.25, 0.125]))
  # Two samples on each branch: perfect.
  on = np.stack([b[:, 0], b[:, 1], b[:, 0], b[:, 1]], axis=1)
  m = toy.evaluate_samples(x, on, MODES, tau=0.2)
  assert m == {'branch_error': 0.0, 'coverage': 1.0, 'coverage_separated': 1.0,
               'phantom_rate': 0.0, 'mode_frequency_error': 0.0, 'tau': 0.2}
  # All samples on branch 0: no coverage, no phantoms, half the mass on the wrong mode.
  m = toy.evaluate_samples(x, np.repeat(b[:, :1], 4, axis=1), MODES, tau=0.2)
  assert m['coverage'] == 0.0 and m['phantom_rate'] == 0.0
  assert m['mode_frequency_error'] == 0.5
  # All samples at the mean of the branches (what L2 regression predicts): all phantoms.
  mid = np.repeat(b.mean(1, keepdims=True), 4, axis=1)
  m = toy.evaluate_samples(x, mid, MODES, tau=0.2)
  assert m['phantom_rate'] == 1.0 and m['coverage'] == 0.0 and m['mode_frequency_error'] == 1.0
  np.testing.assert_allclose(m['branch_error'], np.linalg.norm(b[:, 0] - mid[:, 0], axis=-1).mean(),
                             rtol=1e-6)
  # Half of the samples 0.1 off a branch, half 1.0 off: tau = 0.2 splits them.
  off = on.copy()
  off[:, :2, 0] += 0.1
  off[:, 2:, 0] += 1.0
  m = toy.evaluate_samples(x, off, MODES, tau=0.2)
  assert m['phantom_rate'] == 0.5 and m['coverage'] == 1.0


def test_near_zero_x_counts_as_covered_but_not_separated():
  x = np.array([[0.01]], np.float32)  # branches 0.08 apart < 2 tau
  b = toy.branches(x, MODES)
  m = toy.evaluate_samples(x, b[:, :1], MODES, tau=0.2)
  assert m['coverage'] == 1.0 and np.isnan(m['coverage_separated'])


@pytest.mark.parametrize('modes,match', [((), 'non-empty'), ((4.0, 4.0), 'distinct'),
                                         ((1.0, float('nan')), 'finite')])
def test_bad_modes_raise(modes, match):
  with pytest.raises(ValueError, match=match):
    toy.validate_modes(modes)


def test_dataset_follows_the_modes():
  import jax
  data = toy.make_dataset(jax.random.key(0), 1000, np.array([4.0, -4.0, 2.0], np.float32))
  assert set(np.unique(data['mode'])) == {0, 1, 2}
  np.testing.assert_allclose(data['y'][:, 1] / np.maximum(data['x'][:, 0] ** 2, 1e-12),
                             np.array([4.0, -4.0, 2.0])[data['mode']], rtol=1e-3, atol=1e-3)


def test_residual_latent_net_predicts_the_displacement():
  """MLPLatentNet(residual=True) is z + the plain net's r_hat, with the same parameters."""
  kz, kh = jax.random.split(jax.random.key(0))
  z, h = jax.random.normal(kz, (5, 3)), jax.random.normal(kh, (5, 8))
  plain, resid = MLPLatentNet(width=16), MLPLatentNet(width=16, residual=True)
  variables = plain.init(jax.random.key(1), z, h)
  r_plain, rho_plain = plain.apply(variables, z, h)
  r_res, rho_res = resid.apply(variables, z, h)
  np.testing.assert_allclose(np.asarray(r_res), np.asarray(z + r_plain), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(rho_res), np.asarray(rho_plain))
  assert np.abs(np.asarray(r_plain)).max() > 1e-3  # the two are not trivially equal


@pytest.mark.slow  # long; the notebook runs the same path at smoke size
def test_toy_end_to_end_small(tmp_path):
  """A shrunken toy run still separates the two branches where L1 cannot."""
  config = toy_config.get_config()
  with config.unlocked():
    config.data.num_test = 100
    config.train.steps = 800
    config.train.inner_steps = 10
    config.train.log_every = 400
    config.eval.num_samples = 16
    config.methods = ('l1', 'cgml')
  out = train.train_and_evaluate(config, str(tmp_path))
  saved = json.load(open(tmp_path / 'metrics.json'))
  assert saved['methods'].keys() == {'l1', 'cgml'}
  for name in ('fig3_toy.png', 'rho_heatmap.png', 'rho_xy.png'):
    assert os.path.exists(tmp_path / name), name
  cg, l1 = out['methods']['cgml'], out['methods']['l1']
  assert cg['coverage_separated'] >= 0.8, cg
  assert cg['phantom_rate'] <= 0.2, cg
  assert l1['coverage_separated'] <= 0.05, l1


def test_rho_xy_map_bins_rho_hat_by_output(tmp_path):
  """Fig. 3d: each (x, y[d]) cell is the mean rho_hat of the sphere points G maps there."""
  config = toy_config.get_config('smoke')
  with config.unlocked():
    config.methods = ('cgml',)
    config.train.steps = 2
    config.eval.plots = True
  ctx = toy.method_context(config, toy.make_dataset(jax.random.key(0), 64, MODES))
  state = toy.methods_lib.build('cgml', ctx, jax.random.key(1)).state
  key = jax.random.key(5)
  z = cgml.sample_sphere(key, (64, state.hp.z_dim))
  xs, edges, rmap = toy.rho_xy_map(state, num_x=7, num_z=64, num_y=1, key=key)
  assert xs.shape == (7,) and edges.shape == (3, 2) and rmap.shape == (3, 1, 7)
  for i, x in enumerate(xs):  # one bin per dimension: the mean over every z
    h = cgml.repeat_batch(cgml.encode(state, np.full((1, 1), x, np.float32)), 64)
    rho = np.asarray(cgml.latent_field(state, z, h)[1])
    np.testing.assert_allclose(rmap[:, 0, i], rho.mean(), rtol=1e-5)
  xs, edges, rmap = toy.rho_xy_map(state, num_x=7, num_z=64, num_y=40, key=key)
  h = cgml.repeat_batch(cgml.encode(state, np.full((1, 1), xs[3], np.float32)), 64)
  y = np.asarray(cgml.generate(state, h, z))
  rho = np.asarray(cgml.latent_field(state, z, h)[1])
  for d in range(3):  # empty exactly where no output falls; else the mean of those there
    hit = np.clip(np.searchsorted(edges[d], y[:, d], side='right') - 1, 0, 39)
    for j in range(40):
      if (hit == j).any():
        np.testing.assert_allclose(rmap[d, j, 3], rho[hit == j].mean(), rtol=1e-5)
      else:
        assert np.isnan(rmap[d, j, 3])
  assert np.isnan(rmap).any() and np.isfinite(rmap).any()
  toy.plot(str(tmp_path), np.zeros((2, 1), np.float32), {}, MODES, None, None,
           (xs, edges, rmap))
  assert os.path.exists(tmp_path / 'rho_xy.png')


def test_unknown_task_and_method_raise(tmp_path):
  config = toy_config.get_config('smoke')
  with config.unlocked():
    config.methods = ('cgml', 'vae')
  with pytest.raises(ValueError, match="'vae'"):
    train.train_and_evaluate(config, str(tmp_path))
  with config.unlocked():
    config.task = 'nope'
  with pytest.raises(ValueError, match="'nope'"):
    train.train_and_evaluate(config, str(tmp_path))


def test_cimle_trains_on_the_toy(tmp_path):
  """cIMLE, the peer without a discriminator, runs on the toy's MLPs: it trains (its
  last update is non-zero), samples (N, K, 3) and is scored and plotted like cGML."""
  config = toy_config.get_config('smoke')
  with config.unlocked():
    config.methods = ('cimle',)
    config.train.steps = 6
    config.eval.plots = True
  out = train.train_and_evaluate(config, str(tmp_path))
  r = out['methods']['cimle']
  assert r['final_update_norm']['update_norm'] > 0, r
  assert 0.0 <= r['coverage'] <= 1.0 and 0.0 <= r['phantom_rate'] <= 1.0
  assert os.path.exists(tmp_path / 'fig3_toy.png')


def test_toy_offers_cimle_only_of_the_peers(tmp_path):
  """The toy config carries cIMLE's fields and no GAN fields; asking it for a GAN peer
  is refused in one line before any work."""
  config = toy_config.get_config('smoke')
  assert 'cimle' in config and 'gan' not in config
  with config.unlocked():
    config.methods = ('pix2pix',)
    config.train.steps = 1
  with pytest.raises(ValueError, match="unknown toy method 'pix2pix'"):
    train.train_and_evaluate(config, str(tmp_path))


def test_samples_image_is_a_titled_rgb_picture():
  """The logged toy picture: an RGB array of the figure's size with something drawn."""
  x = np.linspace(-1, 1, 20, dtype=np.float32)[:, None]
  samples = toy.branches(x, MODES)[:, :1].repeat(3, axis=1)   # (N, K, 3) on one branch
  titled = toy.samples_image(x, samples, MODES, 'cgml')
  assert titled.dtype == np.uint8 and titled.ndim == 3 and titled.shape[2] == 3
  assert titled.shape[:2] == (260, 600)                     # 6 x 2.6 inches at 100 dpi
  assert (titled < 128).any()
