r"""Real spherical harmonics, Driscoll–Healy quadrature, and spherical maps of point clouds.

cGML (ICLR 2021) Sec. 5.4 represents a 3D shape by spectral maps: functions on the sphere
(and in the ball, see `zernike.py`) expanded in an orthonormal basis, with the coefficients
laid out as a 2D image for conv nets. This module is the spherical half.

Real spherical harmonics (orthonormal on S^2, no Condon–Shortley phase), for 0 <= l <= L:

    Y_l0        = Q_l^0(cos θ)
    Y_lm        = √2 Q_l^m(cos θ) cos(m φ)        m > 0
    Y_l,-m      = √2 Q_l^m(cos θ) sin(m φ)        m > 0
    Q_l^m(x)    = sqrt((2l+1)/(4π) (l-m)!/(l+m)!) P_l^m(x)   (P without the (-1)^m phase)

so that Y_lm = √2 (-1)^m Re Y_l^m (m > 0) and √2 (-1)^m Im Y_l^|m| (m < 0) in terms of the
complex harmonics of `scipy.special.sph_harm_y` (which carry the phase). Q is computed by the
standard stable three-term recurrence in l at fixed m.

Forward transform (Driscoll & Healy 1994, "Computing Fourier transforms and convolutions
on the 2-sphere", Adv. Appl. Math. 15). On the equiangular grid of bandwidth B,

    θ_j = π (2j+1) / (4B),   φ_k = 2π k / (2B),    j, k = 0 .. 2B-1,

    f_lm = ∫ f Y_lm dΩ = (2π / 2B) Σ_j Σ_k w_j f(θ_j, φ_k) Y_lm(θ_j, φ_k),

    w_j  = (4/(2B)) sin θ_j Σ_{p=0}^{B-1} sin((2p+1) θ_j) / (2p+1)

is exact for every f of band limit < B (the weights integrate x^d, d < 2B, exactly in
x = cos θ, and 2B equispaced φ integrate trigonometric polynomials of frequency < 2B). The
grid bandwidth B must exceed the output degree L; by default B = L + 1 (a 2(L+1) x 2(L+1)
grid, 34 x 34 for L = 16). Content of f above degree 2B-1-l aliases into f_lm.

Both transforms are separable einsums against matrices precomputed once per (L, B) in
float64: a Fourier stage over φ (2B x (2L+1)) and a Legendre stage over θ.

Coefficient maps are arrays (..., L+1, 2L+1): row l, column m + L, zero where |m| > l.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_L = 16
RADIAL_MODES = ('soft', 'hard')


# ---------------------------------------------------------------------------------------
# Basis functions (array-API generic: numpy float64 for precomputed grids, jnp under jit).
# ---------------------------------------------------------------------------------------
def _legendre_q(l_max: int, x, s, xp, stack: bool = True):
  """Normalised associated Legendre Q_l^m(x) for 0 <= m <= l <= l_max.

  Args:
    l_max: maximal degree L.
    x: cos θ, any shape S.
    s: sin θ >= 0, same shape.
    xp: numpy or jax.numpy.

  Returns:
    Array (L+1, L+1, *S) indexed [l, m], zero for m > l (or the nested lists if not stack).
  """
  zero = xp.zeros_like(x)
  q = [[zero] * (l_max + 1) for _ in range(l_max + 1)]
  qmm = zero + 1.0 / math.sqrt(4.0 * math.pi)
  for m in range(l_max + 1):
    if m > 0:
      # Diagonal recurrence: Q_m^m = sqrt((2m+1)/(2m)) sin θ Q_{m-1}^{m-1}.
      qmm = math.sqrt((2 * m + 1) / (2 * m)) * s * qmm
    q[m][m] = qmm
    if m + 1 <= l_max:
      q[m + 1][m] = math.sqrt(2 * m + 3) * x * qmm
    for l in range(m + 2, l_max + 1):
      a = math.sqrt((4 * l * l - 1) / (l * l - m * m))
      b = math.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1))
      q[l][m] = a * (x * q[l - 1][m] - b * q[l - 2][m])
  if not stack:
    return q
  return xp.stack([xp.stack(row) for row in q])


def _fourier_t(l_max: int, phi, xp):
  """Azimuthal factors T_m(φ) for m = -L..L: √2 sin(|m|φ), 1, √2 cos(mφ). Shape (2L+1, *S)."""
  rows = []
  for m in range(-l_max, l_max + 1):
    if m < 0:
      rows.append(math.sqrt(2.0) * xp.sin(-m * phi))
    elif m == 0:
      rows.append(xp.ones_like(phi))
    else:
      rows.append(math.sqrt(2.0) * xp.cos(m * phi))
  return xp.stack(rows)


def _expand_m(q, l_max: int, xp):
  """Q[l, |m|] -> Q[l, m + L] for m = -L..L (zeros stay zeros for |m| > l)."""
  idx = np.abs(np.arange(-l_max, l_max + 1))
  return q[:, idx]


def real_sph_harm(l_max: int, theta, phi):
  r"""Real spherical harmonics Y_lm(θ, φ) as a coefficient-map-shaped array.

  Args:
    l_max: maximal degree L.
    theta: polar angles in [0, π], any shape S (numpy or JAX).
    phi: azimuths, same shape.

  Returns:
    Array (*S, L+1, 2L+1), entry [..., l, m + L] = Y_lm, zero for |m| > l. numpy float64
    for numpy inputs, JAX otherwise.
  """
  xp = np if isinstance(theta, np.ndarray) and isinstance(phi, np.ndarray) else jnp
  q = _expand_m(_legendre_q(l_max, xp.cos(theta), xp.sin(theta), xp), l_max, xp)
  t = _fourier_t(l_max, phi, xp)
  y = q * t[None]
  return xp.moveaxis(xp.moveaxis(y, 0, -1), 0, -1)


def ylm_blocks(l_max: int, directions):
  """Real Y_lm at (..., 3) vectors as a list over l of (2l+1, ...) arrays, m = -l..l.

  No zero padding, so fused consumers touch only the (L+1)^2 valid values. cos(mφ), sin(mφ)
  come from the angle-addition recurrence on x/ρ, y/ρ (no atan2). The zero vector maps to
  the north pole.
  """
  d = jnp.asarray(directions)
  rho = jnp.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2)
  r = jnp.sqrt(rho ** 2 + d[..., 2] ** 2)
  safe_r = jnp.where(r > 0, r, 1.0)
  safe_rho = jnp.where(rho > 0, rho, 1.0)
  x = jnp.where(r > 0, d[..., 2] / safe_r, 1.0)
  s = rho / safe_r
  c1 = jnp.where(rho > 0, d[..., 0] / safe_rho, 1.0)
  s1 = jnp.where(rho > 0, d[..., 1] / safe_rho, 0.0)
  cos_m, sin_m = [jnp.ones_like(x)], [jnp.zeros_like(x)]
  for _ in range(l_max):
    cos_m, sin_m = (cos_m + [cos_m[-1] * c1 - sin_m[-1] * s1],
                    sin_m + [sin_m[-1] * c1 + cos_m[-1] * s1])
  q = _legendre_q(l_max, x, s, jnp, stack=False)
  sq2 = math.sqrt(2.0)
  blocks = []
  for l in range(l_max + 1):
    row = ([sq2 * q[l][-m] * sin_m[-m] for m in range(-l, 0)] + [q[l][0]]
           + [sq2 * q[l][m] * cos_m[m] for m in range(1, l + 1)])
    blocks.append(jnp.stack(row))
  return blocks


def _ylm_leading(l_max: int, directions):
  """Real Y_lm at (..., 3) vectors in padded leading layout (L+1, 2L+1, ...)."""
  blocks = ylm_blocks(l_max, directions)
  pad = lambda b, l: jnp.pad(b, [(l_max - l, l_max - l)] + [(0, 0)] * (b.ndim - 1))
  return jnp.stack([pad(b, l) for l, b in enumerate(blocks)])


@functools.partial(jax.jit, static_argnums=0)
def real_sph_harm_xyz(l_max: int, directions):
  """Real Y_lm at unit vectors (JAX, jit-friendly; the zero vector maps to the north pole).

  Args:
    l_max: maximal degree L.
    directions: (..., 3) vectors; only their direction is used.

  Returns:
    (..., L+1, 2L+1) map of Y_lm values.
  """
  y = _ylm_leading(l_max, directions)
  return jnp.moveaxis(jnp.moveaxis(y, 0, -1), 0, -1)


def map_mask(l_max: int) -> np.ndarray:
  """Boolean (L+1, 2L+1) mask of the valid entries |m| <= l of a coefficient map."""
  l = np.arange(l_max + 1)[:, None]
  m = np.arange(-l_max, l_max + 1)[None, :]
  return np.abs(m) <= l


# ---------------------------------------------------------------------------------------
# Driscoll–Healy grid and precomputed transform matrices.
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def dh_grid(bandwidth: int):
  """Driscoll–Healy equiangular grid and θ-quadrature weights.

  Args:
    bandwidth: B >= 1; the grid has 2B x 2B points.

  Returns:
    (theta (2B,), phi (2B,), weights (2B,)) numpy float64, with
    Σ_j weights_j g(cos θ_j) = ∫_0^π g(cos θ) sin θ dθ exactly for polynomials g of
    degree < 2B.
  """
  if bandwidth < 1:
    raise ValueError(f'bandwidth must be >= 1, got {bandwidth}')
  b = bandwidth
  j = np.arange(2 * b)
  theta = np.pi * (2 * j + 1) / (4 * b)
  phi = 2 * np.pi * j / (2 * b)
  p = np.arange(b)[:, None]
  weights = (2.0 / b) * np.sin(theta) * np.sum(np.sin((2 * p + 1) * theta) / (2 * p + 1), 0)
  return theta, phi, weights


def grid_directions(bandwidth: int) -> np.ndarray:
  """Unit vectors of the DH grid, (2B, 2B, 3) float64, indexed [θ_j, φ_k]."""
  theta, phi, _ = dh_grid(bandwidth)
  t, p = np.meshgrid(theta, phi, indexing='ij')
  return np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1)


@functools.lru_cache(maxsize=None)
def _transform_mats(l_max: int, bandwidth: int):
  """Fourier (2B, 2L+1) and weighted/unweighted Legendre (2B, L+1, 2L+1) matrices, float64."""
  theta, phi, w = dh_grid(bandwidth)
  fourier = _fourier_t(l_max, phi, np).T                            # [k, m]
  q = _expand_m(_legendre_q(l_max, np.cos(theta), np.sin(theta), np), l_max, np)
  legendre = np.moveaxis(q, -1, 0)                                  # [j, l, m]
  dphi = 2 * np.pi / (2 * bandwidth)
  legendre_w = legendre * (w * dphi)[:, None, None]
  return fourier, legendre, legendre_w


def _check_bandwidth(l_max: int, bandwidth: int | None) -> int:
  b = l_max + 1 if bandwidth is None else bandwidth
  if b <= l_max:
    raise ValueError(f'grid bandwidth {b} must exceed the degree L={l_max} for an exact '
                     'transform')
  return b


@functools.partial(jax.jit, static_argnames=('l_max',))
def sh_forward(f: jax.Array, l_max: int = DEFAULT_L) -> jax.Array:
  r"""Real spherical-harmonic coefficients f_lm = ∫ f Y_lm dΩ by DH quadrature.

  Args:
    f: (..., 2B, 2B) samples on the DH grid of `dh_grid(B)` ([θ_j, φ_k]), B > L.
    l_max: output degree L.

  Returns:
    (..., L+1, 2L+1) coefficient map (row l, column m + L), zero where |m| > l.
  """
  n = f.shape[-1]
  if f.shape[-2] != n or n % 2:
    raise ValueError(f'expected (..., 2B, 2B) DH samples, got shape {f.shape}')
  fourier, _, legendre_w = _transform_mats(l_max, _check_bandwidth(l_max, n // 2))
  dt = f.dtype if jnp.issubdtype(f.dtype, jnp.floating) else jnp.float32
  g = jnp.einsum('...jk,km->...jm', f, jnp.asarray(fourier, dt))
  return jnp.einsum('...jm,jlm->...lm', g, jnp.asarray(legendre_w, dt))


@functools.partial(jax.jit, static_argnames=('bandwidth',))
def sh_inverse(coeffs: jax.Array, bandwidth: int | None = None) -> jax.Array:
  """Synthesis f(θ_j, φ_k) = Σ_lm f_lm Y_lm on the DH grid.

  Args:
    coeffs: (..., L+1, 2L+1) coefficient map.
    bandwidth: grid bandwidth B > L (default L + 1).

  Returns:
    (..., 2B, 2B) samples on `dh_grid(B)`.
  """
  l_max = coeffs.shape[-2] - 1
  if coeffs.shape[-1] != 2 * l_max + 1:
    raise ValueError(f'expected a (..., L+1, 2L+1) map, got shape {coeffs.shape}')
  fourier, legendre, _ = _transform_mats(l_max, _check_bandwidth(l_max, bandwidth))
  dt = coeffs.dtype
  g = jnp.einsum('...lm,jlm->...jm', coeffs, jnp.asarray(legendre, dt))
  return jnp.einsum('...jm,km->...jk', g, jnp.asarray(fourier, dt))


@jax.jit
def sh_evaluate(coeffs: jax.Array, directions: jax.Array) -> jax.Array:
  """Synthesis at arbitrary directions: Σ_lm f_lm Y_lm(d).

  Args:
    coeffs: (..., L+1, 2L+1) coefficient map.
    directions: (P, 3) vectors (normalised internally).

  Returns:
    (..., P) values.
  """
  y = real_sph_harm_xyz(coeffs.shape[-2] - 1, directions)
  return jnp.einsum('...lm,plm->...p', coeffs, y.astype(coeffs.dtype))


def sh_invariants(coeffs: jax.Array) -> jax.Array:
  """Rotation-invariant energies ||f_l|| = sqrt(Σ_m f_lm^2), (..., L+1).

  Rotations act on each degree-l block by an orthogonal (real Wigner) matrix, so these
  norms are invariant; on sampled data only up to aliasing (see module docstring).
  """
  return jnp.sqrt(jnp.sum(jnp.square(coeffs), axis=-1))


# ---------------------------------------------------------------------------------------
# Spherical functions of a point cloud.
# ---------------------------------------------------------------------------------------
def default_power(l_max: int) -> int:
  """Power q of the angular kernel K_q(c) = ((1 + c)/2)^q, c = cos of the angle.

  K_q is a polynomial of degree q in c; its Funk–Hecke (Legendre) coefficients are
  λ_l = Π_{j=1..l} (q-j+1)/(q+j+1) ≈ exp(-l(l+1)/q) (`kernel_coeffs`). q is chosen so that
  λ = 1e-3 at degree 2L+1. Why that degree: the DH quadrature of bandwidth B = L+1 gets
  f_lm exactly when f has no content above degree 2B-1-l, so l = 0 is exact up to the 1e-3
  tail, while the l = L coefficients see aliasing from degrees >= L+2 (λ_{L+2} ≈ 0.14 for
  L = 16). The kernel blurs detail (λ_L = 0.19) to keep that aliasing — and with it the
  rotation error of ||f_l|| — at the percent level; a larger `bandwidth` in `sh_maps`
  cuts the aliasing at 4x cost per doubling.
  q = 162 for L = 16: angular width sqrt(2/q) ≈ 6.4 degrees (the grid step is 5.3). A power
  instead of a von Mises–Fisher exp(κ(c-1)) (≈ the same kernel with κ = q/2) because
  integer powers are a few multiplies, and the (grid x points) kernel evaluation is the
  whole cost of the maps.
  """
  return int(round((2 * l_max + 1) * (2 * l_max + 2) / math.log(1e3)))


def kernel_coeffs(q: int, l_max: int) -> np.ndarray:
  r"""Funk–Hecke coefficients of the normalised kernel k_q(c) = (q+1)/(4π) ((1+c)/2)^q.

  k_q(u·μ) = Σ_l λ_l Σ_m Y_lm(u) Y_lm(μ), with
  λ_l = 2π ∫ k_q(t) P_l(t) dt = q!(q+1)!/((q-l)!(q+l+1)!),
  λ_0 = 1 (k_q integrates to 1 on the sphere), λ_l = 0 for l > q.

  Returns:
    (L+1,) float64.
  """
  lam = np.ones(l_max + 1)
  for l in range(1, l_max + 1):
    lam[l] = lam[l - 1] * max(q - l + 1, 0) / (q + l + 1)
  return lam


def _check_mode(mode: str):
  if mode not in RADIAL_MODES:
    raise ValueError(f'mode must be one of {RADIAL_MODES}, got {mode!r}')


def _prepare(points, n_shells: int, beta: float):
  """Radii, unit directions, softmax radial weights and one-hot shells of (b, n, 3) clouds."""
  if points.ndim != 3 or points.shape[-1] != 3:
    raise ValueError(f'expected points of shape (batch, N, 3), got {points.shape}')
  points = points.astype(jnp.float32)
  r = jnp.linalg.norm(points, axis=-1)
  xhat = points / jnp.maximum(r, 1e-12)[..., None]
  # exp(β (r - max r)) in [e^{-β}, 1]: the radial factor of the soft maximum, shifted so it
  # cannot overflow.
  rad_w = jnp.exp(beta * (r - jnp.max(r, -1, keepdims=True)))
  shell = jnp.clip(jnp.floor(r * n_shells).astype(jnp.int32), 0, max(n_shells - 1, 0))
  onehot = jax.nn.one_hot(shell, n_shells, dtype=jnp.float32)
  return r, xhat, rad_w, onehot


def _grid_channels(points, bandwidth: int, n_shells: int, q: int, beta: float, mode: str,
                   cone_deg: float, with_shells: bool):
  """Extent (and optionally shell densities) on the DH grid, (b, C, 2B, 2B)."""
  r, xhat, rad_w, onehot = _prepare(points, n_shells, beta)
  dirs = jnp.asarray(grid_directions(bandwidth).reshape(-1, 3), jnp.float32)
  n_pts = points.shape[1]
  if mode == 'soft':
    # All soft channels are kernel sums Σ_i K_q(u·x̂_i) h_i(c): one (grid x N) kernel matrix
    # times an (N x C) matrix. Done 4 shapes at a time (lax.map) so the kernel block stays
    # in cache: 2.6x less CPU than fusing the kernel into reductions or one big block.
    cols = [rad_w, rad_w * r]
    if with_shells:
      cols += list(jnp.moveaxis(onehot, -1, 0) * ((q + 1) / (4 * jnp.pi * n_pts)))
    h = jnp.stack(cols, -1)                                         # (b, n, C)
    sub = 4
    pad = -points.shape[0] % sub
    xs = jnp.pad(xhat, ((0, pad), (0, 0), (0, 0)))
    hs = jnp.pad(h, ((0, pad), (0, 0), (0, 0)))

    def block(args):
      x, hh = args
      w = (0.5 * (1.0 + jnp.einsum('bni,gi->bgn', x, dirs))) ** q
      return jnp.einsum('bgn,bnc->bgc', w, hh)

    sums = jax.lax.map(block, (xs.reshape((-1, sub) + xs.shape[1:]),
                               hs.reshape((-1, sub) + hs.shape[1:])))
    sums = sums.reshape((-1,) + sums.shape[2:])[:points.shape[0]]   # (b, g, C)
    # The tiny uniform term keeps 0/0 away where every point is so far from u that the
    # kernel underflows; the extent then falls back to the cloud's soft-max radius.
    eps = 1e-30
    ext = (sums[..., 1] + eps * jnp.sum(rad_w * r, -1, keepdims=True)) / (
        sums[..., 0] + eps * jnp.sum(rad_w, -1, keepdims=True))
    chans = [ext] + [sums[..., 2 + s_] for s_ in range(n_shells if with_shells else 0)]
  else:
    # A broadcast sum rather than an einsum, so XLA fuses it into the reductions below.
    cos = sum(dirs[None, :, None, i] * xhat[:, None, :, i] for i in range(3))
    cos_a = jnp.cos(jnp.deg2rad(cone_deg))
    inside = cos >= cos_a
    chans = [jnp.max(jnp.where(inside, r[:, None, :], 0.0), axis=-1)]
    if with_shells:
      solid = 2 * jnp.pi * (1 - cos_a)
      chans += [jnp.sum(jnp.where(inside, onehot[:, None, :, s], 0.0), -1) / (n_pts * solid)
                for s in range(n_shells)]
  out = jnp.stack(chans, axis=1)
  return out.reshape(out.shape[:2] + (2 * bandwidth, 2 * bandwidth))


@functools.partial(jax.jit, static_argnames=('bandwidth', 'n_shells', 'q', 'mode'))
def sphere_functions(points: jax.Array, bandwidth: int = DEFAULT_L + 1, n_shells: int = 0,
                     q: int = default_power(DEFAULT_L), beta: float = 20.0,
                     mode: str = 'soft', cone_deg: float = 8.0) -> jax.Array:
  r"""Spherical functions of point clouds sampled on the DH grid.

  Channel 0 — radial extent, the distance from the centre to the outermost surface point
  along each direction u (the spherical representation of Spectral-GAN, used by cGML
  Sec. 5.4):

    soft:  ext(u) = Σ_i r_i e^{β r_i} K_q(u·x̂_i) / Σ_i e^{β r_i} K_q(u·x̂_i),
           K_q(c) = ((1 + c)/2)^q,

  a smooth cone-maximum: points within angle ~sqrt(2/q) of u compete and β favours the
  outermost. It lies in [min r, max r]. In a direction with no point nearby it takes the
  radius of the angularly nearest points rather than 0 (a hole is smoothed over);
  smoothness is what keeps the rotation-invariant norms stable on a finite grid.

    hard:  ext(u) = max { r_i : angle(u, x̂_i) <= cone_deg }, 0 if the cone is empty.

  Channels 1..S — point density per radial shell, shell s = [s/S, (s+1)/S) (the last one
  closed at 1):

    soft:  ρ_s(u) = (1/N) Σ_{i in s} k_q(u·x̂_i),   k_q = (q+1)/(4π) K_q   (∫ k_q dΩ = 1)
    hard:  ρ_s(u) = #{i in s within the cone} / (N · cone solid angle)

  so ∫ ρ_s dΩ is the fraction of points in shell s (soft mode, exactly).

  Args:
    points: (batch, N, 3) clouds, centred and inside the unit ball.
    bandwidth: DH grid bandwidth B (grid 2B x 2B).
    n_shells: S, number of radial density channels.
    q: kernel power (soft mode); see `default_power`.
    beta: radial sharpness β of the soft maximum (soft mode).
    mode: 'soft' or 'hard'.
    cone_deg: cone half-angle in degrees (hard mode).

  Returns:
    (batch, 1 + S, 2B, 2B) float32 samples on `dh_grid(B)`.
  """
  _check_mode(mode)
  return _grid_channels(points, bandwidth, n_shells, q, beta, mode, cone_deg, True)


@functools.partial(jax.jit, static_argnames=('l_max', 'n_shells', 'q'))
def shell_coeffs(points: jax.Array, l_max: int = DEFAULT_L, n_shells: int = 1,
                 q: int = default_power(DEFAULT_L)) -> jax.Array:
  r"""SH coefficients of the soft shell densities, exactly, without a grid (Funk–Hecke).

    ρ_s,lm = (1/N) Σ_{i in s} λ_l Y_lm(x̂_i),   λ_l = `kernel_coeffs(q, L)`.

  Equal to `sh_forward(sphere_functions(...)[:, 1:])` up to the grid's aliasing, but
  exactly rotation-equivariant (a sum over the points) and cheap: N (L+1)^2 terms per shape.

  Args:
    points: (batch, N, 3) clouds in the unit ball.
    l_max: degree L.
    n_shells: number of shells S.
    q: kernel power.

  Returns:
    (batch, S, L+1, 2L+1) coefficient maps.
  """
  _, xhat, _, onehot = _prepare(points, n_shells, 0.0)
  lam = kernel_coeffs(q, l_max)
  blocks = [float(lam[l]) * jnp.einsum('mbn,bns->bsm', y, onehot) / points.shape[1]
            for l, y in enumerate(ylm_blocks(l_max, xhat))]
  pad = lambda b, l: jnp.pad(b, [(0, 0), (0, 0), (l_max - l, l_max - l)])
  return jnp.stack([pad(b, l) for l, b in enumerate(blocks)], axis=2)


def sh_maps(points, l_max: int = DEFAULT_L, bandwidth: int | None = None, n_shells: int = 0,
            q: int | None = None, beta: float = 20.0, mode: str = 'soft',
            cone_deg: float = 8.0, batch_size: int = 64) -> np.ndarray:
  """Spherical-harmonic spectral maps of many point clouds (cGML Sec. 5.4).

  Channel 0: `sh_forward` of the grid-sampled extent of `sphere_functions`. Channels 1..S:
  shell densities, by `shell_coeffs` in soft mode (exact), by the grid in hard mode. Runs in
  fixed-size jitted chunks so memory stays bounded (the last chunk is padded: one
  compilation).

  Args:
    points: (num_shapes, N, 3) clouds in the unit ball (numpy or JAX).
    l_max: degree L of the maps.
    bandwidth: grid bandwidth B > L (default L + 1).
    n_shells, beta, mode, cone_deg: see `sphere_functions`.
    q: kernel power (default `default_power(l_max)`).
    batch_size: shapes per jitted chunk.

  Returns:
    (num_shapes, 1 + n_shells, L+1, 2L+1) float32 numpy maps.
  """
  _check_mode(mode)
  b = _check_bandwidth(l_max, bandwidth)
  q = default_power(l_max) if q is None else int(q)
  points = np.asarray(points, np.float32)
  if points.ndim != 3 or points.shape[-1] != 3:
    raise ValueError(f'expected points of shape (num_shapes, N, 3), got {points.shape}')
  chunk = functools.partial(_sh_maps_chunk, l_max=l_max, bandwidth=b, n_shells=n_shells, q=q,
                            beta=beta, mode=mode, cone_deg=cone_deg)
  return chunked_map(chunk, points, batch_size)


@functools.partial(jax.jit, static_argnames=('l_max', 'bandwidth', 'n_shells', 'q', 'mode'))
def _sh_maps_chunk(p, l_max, bandwidth, n_shells, q, beta, mode, cone_deg):
  soft = mode == 'soft'
  f = _grid_channels(p, bandwidth, n_shells, q, beta, mode, cone_deg, with_shells=not soft)
  c = sh_forward(f, l_max)
  if soft and n_shells:
    c = jnp.concatenate([c, shell_coeffs(p, l_max, n_shells, q)], axis=1)
  return c


def chunked_map(fn, points: np.ndarray, batch_size: int) -> np.ndarray:
  """Applies a jitted per-chunk fn over axis 0 with a padded last chunk."""
  num = points.shape[0]
  bs = max(1, min(batch_size, num))
  outs = []
  for start in range(0, num, bs):
    part = points[start:start + bs]
    pad = bs - part.shape[0]
    if pad:
      part = np.concatenate([part, np.repeat(part[-1:], pad, 0)], 0)
    outs.append(np.asarray(fn(part))[:bs - pad])
  return np.concatenate(outs, 0)


def sh_to_points(coeffs: jax.Array, bandwidth: int | None = None) -> jax.Array:
  """Point cloud of a radial-extent map, for pictures: grid directions x synthesised radius.

  Args:
    coeffs: (..., L+1, 2L+1) coefficients of a radial function (channel 0 of `sh_maps`).
    bandwidth: grid bandwidth of the synthesis (default L + 1; larger gives denser clouds).

  Returns:
    (..., (2B)^2, 3) points u_g * max(f(u_g), 0).
  """
  l_max = coeffs.shape[-2] - 1
  b = _check_bandwidth(l_max, bandwidth)
  radius = sh_inverse(coeffs, b).reshape(coeffs.shape[:-2] + (-1,))
  dirs = jnp.asarray(grid_directions(b).reshape(-1, 3), coeffs.dtype)
  return jnp.maximum(radius, 0.0)[..., None] * dirs
