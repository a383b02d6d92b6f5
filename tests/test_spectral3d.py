"""Tests of cgml_jax.spectral3d: SH and 3D Zernike transforms against scipy and analytic cases.

Most transform tests use degree 6 rather than the default 16: the properties checked do not
depend on the degree, and the jit compile time of the unrolled recurrences grows with it.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sps
from conftest import DATA_AVAILABLE, SKIP_REASON
from scipy.spatial.transform import Rotation

from cgml_jax.spectral3d import pointcloud, sph, zernike

L = 6


def _fibonacci_sphere(n):
  i = np.arange(n) + 0.5
  z = 1 - 2 * i / n
  phi = math.pi * (1 + 5 ** 0.5) * i
  s = np.sqrt(1 - z * z)
  return np.stack([s * np.cos(phi), s * np.sin(phi), z], -1)


def _random_map(l_max, seed=0):
  c = np.random.default_rng(seed).normal(size=(l_max + 1, 2 * l_max + 1))
  return (c * sph.map_mask(l_max)).astype(np.float32)


@pytest.fixture(scope='module')
def modelnet_sample():
  if not DATA_AVAILABLE:
    pytest.skip(SKIP_REASON)
  points, labels, names = pointcloud.load_modelnet10('test')
  return points[::113][:8], labels, names


# --------------------------------------------------------------------------- SH basis
def test_real_sph_harm_matches_scipy():
  l_max = 16
  rng = np.random.default_rng(0)
  theta, phi = rng.uniform(0, np.pi, 64), rng.uniform(0, 2 * np.pi, 64)
  ours = sph.real_sph_harm(l_max, theta, phi)
  err = 0.0
  for l in range(l_max + 1):
    for m in range(-l, l + 1):
      c = sps.sph_harm_y(l, abs(m), theta, phi)
      ref = c.real if m == 0 else math.sqrt(2) * (-1) ** m * (c.real if m > 0 else c.imag)
      err = max(err, np.abs(ours[:, l, m + l_max] - ref).max())
  assert err < 1e-12
  assert np.all(ours[:, ~sph.map_mask(l_max)] == 0)
  # The JAX float32 path at unit vectors agrees with the float64 grid path.
  xyz = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1)
  np.testing.assert_allclose(sph.real_sph_harm_xyz(L, jnp.asarray(xyz, jnp.float32)),
                             sph.real_sph_harm(L, theta, phi), atol=2e-5)


def test_dh_quadrature_is_exact_to_the_band_limit():
  b = L + 1
  theta, phi, w = sph.dh_grid(b)
  t, p = np.meshgrid(theta, phi, indexing='ij')
  y = sph.real_sph_harm(L, t, p)[..., sph.map_mask(L)]
  gram = np.einsum('jka,jkb,j->ab', y, y, w) * (2 * np.pi / (2 * b))
  np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-12)
  # Exactness stops at degree 2B: ∫ P_{2B}(cos θ) sin θ dθ = 0 is missed.
  assert abs(np.sum(w * sps.eval_legendre(2 * b - 2, np.cos(theta)))) < 1e-12
  assert abs(np.sum(w * sps.eval_legendre(2 * b, np.cos(theta)))) > 1e-3
  with pytest.raises(ValueError, match='bandwidth'):
    sph.sh_inverse(jnp.zeros((L + 1, 2 * L + 1)), bandwidth=L)


def test_forward_inverse_roundtrip():
  c = jnp.asarray(np.stack([_random_map(L, 0), _random_map(L, 1)]))
  for b in (L + 1, L + 4):
    f = sph.sh_inverse(c, bandwidth=b)
    assert f.shape == (2, 2 * b, 2 * b)
    back = sph.sh_forward(f, l_max=L)
    err = float(jnp.max(jnp.abs(back - c))) / float(jnp.max(jnp.abs(c)))
    assert err < 1e-5, (b, err)
  # Arbitrary-direction synthesis agrees with the grid synthesis.
  dirs = sph.grid_directions(L + 1).reshape(-1, 3)
  np.testing.assert_allclose(sph.sh_evaluate(c, jnp.asarray(dirs, jnp.float32)),
                             sph.sh_inverse(c).reshape(2, -1), atol=2e-5)


# --------------------------------------------------------------------------- SH maps
def test_sphere_has_only_degree_zero():
  pts = _fibonacci_sphere(2000)[None].astype(np.float32)
  for mode in sph.RADIAL_MODES:
    c = sph.sh_maps(pts, l_max=L, n_shells=2, mode=mode)
    assert c.shape == (1, 3, L + 1, 2 * L + 1)
    # Constant radius 1: f_00 = sqrt(4π) and nothing else.
    np.testing.assert_allclose(c[0, 0, 0, L], math.sqrt(4 * math.pi), rtol=1e-5)
    assert np.abs(c[0, 0, 1:]).max() < 1e-5
    # Back to a point cloud: grid directions at the synthesised radius 1.
    cloud = np.asarray(sph.sh_to_points(jnp.asarray(c[0, 0]), bandwidth=L + 3))
    assert cloud.shape == ((2 * L + 6) ** 2, 3)
    np.testing.assert_allclose(np.linalg.norm(cloud, axis=-1), 1.0, atol=1e-5)
    # All points in the outer shell: its density integrates to 1 (l = 0 coefficient
    # sqrt(4π) · 1/(4π)); the inner shell is empty.
    np.testing.assert_allclose(c[0, 2, 0, L], 1 / math.sqrt(4 * math.pi), rtol=2e-2)
    assert np.abs(c[0, 1]).max() == 0
    inv = np.asarray(sph.sh_invariants(c[0, 2]))
    # The Fibonacci points are nearly uniform; hard cones count ~10 points each, noisily.
    assert inv[1:].max() < (2e-3 if mode == 'soft' else 0.1) * inv[0], (mode, inv)


def test_soft_extent_matches_bruteforce_numpy():
  rng = np.random.default_rng(1)
  pts = rng.normal(size=(2, 50, 3)) * rng.uniform(0.2, 1.0, (2, 50, 1))
  pts /= np.linalg.norm(pts, axis=-1).max()
  q, beta = sph.default_power(L), 20.0
  f = np.asarray(sph.sphere_functions(jnp.asarray(pts, jnp.float32), L + 1, 1, q, beta))
  dirs = sph.grid_directions(L + 1).reshape(-1, 3)
  r = np.linalg.norm(pts, axis=-1)
  k = ((1 + np.einsum('gi,bni->bgn', dirs, pts / r[..., None])) / 2) ** q
  wr = k * np.exp(beta * r)[:, None, :]
  ext = (wr * r[:, None, :]).sum(-1) / wr.sum(-1)
  dens = k.sum(-1) * (q + 1) / (4 * np.pi * 50)
  np.testing.assert_allclose(f[:, 0].reshape(2, -1), ext, rtol=1e-4)
  np.testing.assert_allclose(f[:, 1].reshape(2, -1), dens, rtol=1e-3, atol=1e-6)
  # Funk–Hecke shell coefficients = grid transform of the grid densities, up to aliasing
  # (the kernel is not band-limited to L).
  c_grid = sph.sh_forward(jnp.asarray(f[:, 1:]), L)
  c_fh = sph.shell_coeffs(jnp.asarray(pts, jnp.float32), L, 1, q)
  np.testing.assert_allclose(c_grid[..., 0, L], c_fh[..., 0, L], rtol=1e-3)
  assert float(jnp.max(jnp.abs(c_grid - c_fh))) < 0.1 * float(jnp.max(jnp.abs(c_fh)))


def test_kernel_coeffs_match_numerical_funk_hecke():
  q, t, w = 20, *np.polynomial.legendre.leggauss(64)
  ref = [(q + 1) / 2 * np.sum(w * ((1 + t) / 2) ** q * sps.eval_legendre(l, t))
         for l in range(L + 1)]
  np.testing.assert_allclose(sph.kernel_coeffs(q, L), ref, rtol=1e-10)


def test_sh_invariants_under_rotation(modelnet_sample):
  pts = modelnet_sample[0]
  rot = Rotation.random(3, random_state=0).as_matrix().astype(np.float32)
  c = sph.sh_maps(pts, l_max=L, n_shells=2)
  inv = np.asarray(sph.sh_invariants(c))
  for r in rot:
    c_rot = sph.sh_maps(pts @ r.T, l_max=L, n_shells=2)
    inv_rot = np.asarray(sph.sh_invariants(c_rot))
    rel = np.linalg.norm(inv_rot - inv, axis=-1) / np.linalg.norm(inv, axis=-1)
    # Extent: sampled on the grid, so only invariant up to aliasing of the kernel's
    # content above the band (measured ≤ 1.3 % at L = 16 over 46 shapes; 3 % bound).
    assert rel[:, 0].max() < 3e-2
    # Shells: Funk–Hecke sums over points are exactly equivariant, float32 round-off only.
    assert rel[:, 1:].max() < 1e-5
    # The coefficients themselves do change: the invariance above is not vacuous.
    hi = np.s_[:, :, 1:]   # l = 0 is trivially invariant
    assert np.linalg.norm(c_rot[hi] - c[hi]) > 0.2 * np.linalg.norm(c[hi])


# --------------------------------------------------------------------------- Zernike
def _nk_radial(n, l, r):
  """Novotni & Klein's monomial form, float64."""
  k = (n - l) // 2
  out = 0.0
  for v in range(k + 1):
    q = ((-1) ** k / 2 ** (2 * k) * math.sqrt((2 * l + 4 * k + 3) / 3) * math.comb(2 * k, k)
         * (-1) ** v * math.comb(k, v) * math.comb(2 * (k + l + v) + 1, 2 * k)
         / math.comb(k + l + v, k))
    out = out + q * r ** (2 * v + l)
  return out


def test_zernike_radial_matches_jacobi_and_novotni_klein():
  n_max = 16
  r = np.linspace(0, 1, 101)
  ours = np.asarray(zernike.zernike_radial(n_max, jnp.asarray(r, jnp.float32)))
  for n in range(n_max + 1):
    for l in range(n_max + 1):
      if l > n or (n - l) % 2:
        assert np.all(ours[:, n, l] == 0)
        continue
      jac = (math.sqrt(2 * n + 3) * r ** l
             * sps.eval_jacobi((n - l) // 2, 0, l + 0.5, 2 * r * r - 1))
      np.testing.assert_allclose(ours[:, n, l], jac, atol=5e-5 * max(1, np.abs(jac).max()))
      np.testing.assert_allclose(_nk_radial(n, l, r), jac / math.sqrt(3), atol=1e-8)


def test_zernike_moments_recover_a_zernike_expansion():
  """Moments of f = Σ c Z by exact quadrature in the ball return c (orthonormality)."""
  n_max = 4
  rng = np.random.default_rng(0)
  c = rng.normal(size=(n_max + 1, (n_max + 1) ** 2)) * zernike.map_mask(n_max)
  # Gauss–Legendre in r (weight r^2 dr folded in) x DH on the sphere: exact for the
  # degree <= 2N polynomial products.
  x, wx = np.polynomial.legendre.leggauss(n_max + 2)
  rr, wr = (x + 1) / 2, wx / 2 * ((x + 1) / 2) ** 2
  b = n_max + 1
  _, _, wt = sph.dh_grid(b)
  dirs = sph.grid_directions(b)
  w_ang = np.broadcast_to(wt[:, None] * (2 * np.pi / (2 * b)), dirs.shape[:2])
  pts = (rr[:, None, None, None] * dirs[None]).reshape(-1, 3)
  w = (wr[:, None, None] * w_ang[None]).reshape(-1)
  f = np.asarray(zernike.zernike_evaluate(jnp.asarray(c, jnp.float32),
                                         jnp.asarray(pts, jnp.float32)))
  om = zernike.zernike_moments(jnp.asarray(pts, jnp.float32)[None], n_max,
                               jnp.asarray(f * w, jnp.float32)[None])[0]
  np.testing.assert_allclose(om, c, atol=2e-4)


def test_zernike_invariants_under_rotation(modelnet_sample):
  n_max = 6
  pts = jnp.asarray(modelnet_sample[0])
  om = zernike.zernike_moments(pts, n_max)
  inv = np.asarray(zernike.zernike_invariants(om))
  assert inv.shape == (pts.shape[0], n_max + 1, n_max + 1)
  assert np.all(inv[:, ~zernike.valid_mask(n_max)] == 0)
  for r in Rotation.random(3, random_state=1).as_matrix().astype(np.float32):
    om_rot = zernike.zernike_moments(pts @ r.T, n_max)
    inv_rot = np.asarray(zernike.zernike_invariants(om_rot))
    # Sums over the points rotate exactly: float32 round-off only.
    assert np.abs(inv_rot - inv).max() < 1e-5 * np.abs(inv).max()
    assert float(jnp.linalg.norm(om_rot[:, :, 1:] - om[:, :, 1:])) > 0.2 * float(
        jnp.linalg.norm(om[:, :, 1:]))


def test_zernike_voxels_of_the_ball():
  """The unit-ball indicator: Ω_000 = sqrt(4π/3), higher degrees only from the grid."""
  res = 24
  c = zernike.voxel_centres(res)
  occ = (np.linalg.norm(c, axis=-1) <= 1.0).astype(np.float32)[None]
  om = zernike.zernike_moments_voxels(jnp.asarray(occ), 4)  # l = 4 present
  np.testing.assert_allclose(om[0, 0, 0], math.sqrt(4 * math.pi / 3), rtol=1e-2)
  inv = np.asarray(zernike.zernike_invariants(om))[0]
  # The voxel grid has cubic symmetry, which allows l = 4 (staircase error) but
  # forbids l = 1, 2, 3.
  assert inv[:, 1:4].max() < 1e-5 * inv[0, 0]
  assert inv[:, 4:].max() < 3e-2 * inv[0, 0]
  # voxelize puts a point in the voxel that contains it (4 copies, one voxel).
  vox = zernike.voxelize(np.array([[[0.5, 0.0, 0.0]] * 4]), 8)
  assert vox.sum() == 1 and vox[0, 6, 4, 4] == 1


# --------------------------------------------------------------------------- loaders
CUBE_OFF = """OFF
# unit cube, quads
8 6 0
-1 -1 -1
1 -1 -1
1 1 -1
-1 1 -1
-1 -1 1
1 -1 1
1 1 1
-1 1 1
4 0 3 2 1
4 4 5 6 7
4 0 1 5 4
4 2 3 7 6
4 1 2 6 5
4 0 4 7 3
"""


def _write_modelnet_tree(root):
  # ModelNet's malformed header variant: counts glued to 'OFF'.
  tet = 'OFF4 4 0\n0 0 0\n2 0 0\n0 2 0\n0 0 2\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n'
  for cls, text in (('cube', CUBE_OFF), ('tetra', tet)):
    for split, count in (('train', 2), ('test', 1)):
      d = root / cls / split
      d.mkdir(parents=True)
      for i in range(count):
        (d / f'{cls}_{i:04d}.off').write_text(text)


def test_read_off_and_area_weighted_sampling(tmp_path):
  path = tmp_path / 'cube.off'
  path.write_text(CUBE_OFF)
  v, f = pointcloud.read_off(path)
  assert v.shape == (8, 3) and f.shape == (12, 3)
  pts = pointcloud.sample_mesh(v, f, 6000, seed=3)
  np.testing.assert_allclose(np.abs(pts).max(-1), 1.0, atol=1e-12)  # on the surface
  # Equal-area faces get equal shares of the points (binomial 3-sigma band).
  face = np.argmax(np.abs(pts), -1) * 2 + (pts[np.arange(6000), np.argmax(np.abs(pts), -1)] > 0)
  counts = np.bincount(face, minlength=6)
  assert np.all(np.abs(counts - 1000) < 3 * math.sqrt(6000 * (1 / 6) * (5 / 6)))
  np.testing.assert_array_equal(pts, pointcloud.sample_mesh(v, f, 6000, seed=3))
  assert not np.array_equal(pts, pointcloud.sample_mesh(v, f, 6000, seed=4))


def test_load_off_folder(tmp_path):
  _write_modelnet_tree(tmp_path)
  pts, labels, names = pointcloud.load_off_folder(tmp_path, 'train', n_points=256, seed=0)
  assert names == ['cube', 'tetra'] and pts.shape == (4, 256, 3) and pts.dtype == np.float32
  np.testing.assert_array_equal(labels, [0, 0, 1, 1])
  np.testing.assert_allclose(np.linalg.norm(pts, axis=-1).max(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(pts.mean(1), 0.0, atol=1e-6)
  # Per-file seeds: different names give different samples of the same mesh.
  assert not np.array_equal(pts[0], pts[1])
  test_pts, test_labels, _ = pointcloud.load_off_folder(tmp_path, 'test', n_points=64)
  assert test_pts.shape == (2, 64, 3) and list(test_labels) == [0, 1]
  with pytest.raises(FileNotFoundError, match='nowhere'):
    pointcloud.load_off_folder(tmp_path / 'nowhere')


def test_npz_h5_and_missing_paths(tmp_path, monkeypatch):
  pts = np.random.default_rng(0).normal(size=(3, 16, 3)).astype(np.float32)
  np.savez(tmp_path / 'modelnet10_test.npz', points=pts, labels=np.array([0, 1, 1], np.uint8),
           class_names=np.array(['a', 'b']))
  got, labels, names = pointcloud.load_npz(tmp_path / 'modelnet10_test.npz')
  np.testing.assert_array_equal(got, pts)
  assert labels.dtype == np.int32 and names == ['a', 'b']
  # The data root comes from $CGML_DATA_DIR when no path is given.
  monkeypatch.setenv(pointcloud.DATA_ENV, str(tmp_path))
  np.testing.assert_array_equal(pointcloud.load_modelnet10('test')[0], pts)
  with pytest.raises(FileNotFoundError, match=str(tmp_path / 'modelnet')):
    pointcloud.load_modelnet10('train')
  with pytest.raises(FileNotFoundError, match='missing.npz'):
    pointcloud.load_npz(tmp_path / 'missing.npz')
  try:
    import h5py  # pylint: disable=import-outside-toplevel
  except ImportError:
    with pytest.raises(ImportError, match='pip install h5py'):
      pointcloud.load_h5(tmp_path / 'x.h5')
  else:
    with h5py.File(tmp_path / 'x.h5', 'w') as f:
      f['data'], f['label'] = pts, np.array([[0], [1], [1]])
    got, labels, _ = pointcloud.load_h5(tmp_path / 'x.h5')
    np.testing.assert_array_equal(got, pts)
    np.testing.assert_array_equal(labels, [0, 1, 1])


def test_shared_modelnet10_layout(data_dir):
  pts, labels, names = pointcloud.load_modelnet10('test', root=str(data_dir))
  assert pts.shape == (908, 1024, 3) and labels.shape == (908,)
  assert names[0] == 'bathtub' and names[9] == 'toilet'
  np.testing.assert_allclose(np.linalg.norm(pts, axis=-1).max(-1), 1.0, atol=1e-5)
