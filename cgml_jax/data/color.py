r"""sRGB <-> CIE-LAB in JAX, the same conversion as skimage.color.rgb2lab / lab2rgb.

sRGB (IEC 61966-2-1) with the D65 white and the 2-degree observer:

  linear = ((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92
  XYZ = M @ linear,  M = skimage's xyz_from_rgb
  f(t) = t ** (1/3) if t > 0.008856 else 7.787 t + 16/116,   t = XYZ / white
  L = 116 f(Y) - 16,  a = 500 (f(X) - f(Y)),  b = 200 (f(Y) - f(Z))

All functions are elementwise over leading axes (any batch shape), jit- and grad-safe
(the branches use `jnp.where` with guarded inputs so that gradients are finite).

For colorization, L and ab are scaled to about [-1, 1]: L / 50 - 1 and ab / 110
(`rgb_to_l_ab`, `l_ab_to_rgb`); cgml_jax.data.transforms.colorization does the same in
numpy for the input pipeline.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# Colorization scaling of (L, ab) to about [-1, 1].
L_SCALE = 50.0    # L in [0, 100] -> L / 50 - 1
AB_SCALE = 110.0  # a, b within about [-110, 110] -> ab / 110

XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB)
D65_WHITE = np.array([0.95047, 1.0, 1.08883])  # skimage's ('D65', '2') tristimulus values

_EPS_LAB = 0.008856
_KAPPA = 7.787


def _check_rgb(x, name):
  if x.shape[-1] != 3:
    raise ValueError(f'{name} needs a last axis of 3 channels, got shape {x.shape}')


def rgb_to_lab(rgb: jnp.ndarray) -> jnp.ndarray:
  """sRGB in [0, 1] -> CIE-LAB (L in [0, 100], a and b roughly in [-128, 127]).

  Args:
    rgb: (..., 3) float sRGB in [0, 1].

  Returns:
    (..., 3) float LAB, matching skimage.color.rgb2lab (D65, 2 degrees).
  """
  _check_rgb(rgb, 'rgb_to_lab')
  rgb = jnp.asarray(rgb, jnp.promote_types(rgb.dtype, jnp.float32))
  high = rgb > 0.04045
  safe = jnp.where(high, rgb, 1.0)
  linear = jnp.where(high, ((safe + 0.055) / 1.055) ** 2.4, rgb / 12.92)
  xyz = linear @ jnp.asarray(XYZ_FROM_RGB.T, linear.dtype)
  t = xyz / jnp.asarray(D65_WHITE, xyz.dtype)
  high = t > _EPS_LAB
  f = jnp.where(high, jnp.cbrt(jnp.where(high, t, 1.0)), _KAPPA * t + 16.0 / 116.0)
  fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
  return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb(lab: jnp.ndarray) -> jnp.ndarray:
  """CIE-LAB -> sRGB in [0, 1], matching skimage.color.lab2rgb (D65, 2 degrees).

  As in skimage, a negative Z (out-of-gamut b) is clipped to 0 and the result is clipped
  to [0, 1].

  Args:
    lab: (..., 3) float LAB.

  Returns:
    (..., 3) float sRGB in [0, 1].
  """
  _check_rgb(lab, 'lab_to_rgb')
  lab = jnp.asarray(lab, jnp.promote_types(lab.dtype, jnp.float32))
  L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
  fy = (L + 16.0) / 116.0
  fx = a / 500.0 + fy
  fz = jnp.maximum(fy - b / 200.0, 0.0)
  f = jnp.stack([fx, fy, fz], axis=-1)
  high = f > 0.2068966
  t = jnp.where(high, f ** 3, (f - 16.0 / 116.0) / _KAPPA)
  xyz = t * jnp.asarray(D65_WHITE, t.dtype)
  linear = xyz @ jnp.asarray(RGB_FROM_XYZ.T, xyz.dtype)
  high = linear > 0.0031308
  safe = jnp.where(high, linear, 1.0)
  rgb = jnp.where(high, 1.055 * safe ** (1 / 2.4) - 0.055, 12.92 * linear)
  return jnp.clip(rgb, 0.0, 1.0)


def rgb_to_l_ab(rgb: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Splits sRGB in [0, 1] into the colorization input and target, scaled to ~[-1, 1].

  Args:
    rgb: (..., 3) sRGB in [0, 1].

  Returns:
    (L, ab): (..., 1) with L / 50 - 1 in [-1, 1], and (..., 2) with ab / 110.
  """
  lab = rgb_to_lab(rgb)
  return lab[..., :1] / L_SCALE - 1.0, lab[..., 1:] / AB_SCALE


def l_ab_to_rgb(l: jnp.ndarray, ab: jnp.ndarray) -> jnp.ndarray:
  """Inverse of `rgb_to_l_ab`: scaled (L, ab) -> sRGB in [0, 1].

  Args:
    l: (..., 1) scaled lightness, L / 50 - 1.
    ab: (..., 2) scaled chroma, ab / 110.

  Returns:
    (..., 3) sRGB in [0, 1].
  """
  if l.shape[-1] != 1 or ab.shape[-1] != 2 or l.shape[:-1] != ab.shape[:-1]:
    raise ValueError(f'need L (..., 1) and ab (..., 2) of the same leading shape, got '
                     f'{l.shape} and {ab.shape}')
  lab = jnp.concatenate([(l + 1.0) * L_SCALE, ab * AB_SCALE], axis=-1)
  return lab_to_rgb(lab)
