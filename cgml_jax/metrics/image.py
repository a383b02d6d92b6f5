r"""Pixel metrics: PSNR and SSIM (through dm-pix), per image.

Both take images in `data_range` (default [-1, 1], the models' output range) and first map
them to [0, 1]; PSNR then uses peak 1 and SSIM the standard Gaussian window (11 px,
sigma 1.5, k1 = 0.01, k2 = 0.03, max_val 1), averaged over channels. Rescaling matters for
SSIM: its luminance term is not invariant to an offset, and the usual convention (and
skimage's `structural_similarity(..., data_range=1, gaussian_weights=True,
use_sample_covariance=False)`) is [0, 1].
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp

DEFAULT_RANGE = (-1.0, 1.0)


def _to_unit(x: jax.Array, data_range: tuple[float, float]) -> jax.Array:
  lo, hi = data_range
  if not hi > lo:
    raise ValueError(f'data_range must be (low, high) with high > low, got {data_range}')
  return (jnp.asarray(x, jnp.float32) - lo) / (hi - lo)


def _check(a: jax.Array, b: jax.Array, name: str):
  if a.shape != b.shape or a.ndim != 4:
    raise ValueError(f'{name} needs two (B, H, W, C) batches of equal shape, got {a.shape} '
                     f'and {b.shape}')


def psnr(a: jax.Array, b: jax.Array, data_range: tuple[float, float] = DEFAULT_RANGE
         ) -> jax.Array:
  """Peak signal-to-noise ratio in dB per image, peak = the full data range.

  Args:
    a, b: (B, H, W, C) images in `data_range`.
    data_range: (low, high) of the pixel values.

  Returns:
    (B,) PSNR; +inf for identical images.
  """
  _check(a, b, 'psnr')
  return dm_pix.psnr(_to_unit(a, data_range), _to_unit(b, data_range))


def ssim(a: jax.Array, b: jax.Array, data_range: tuple[float, float] = DEFAULT_RANGE
         ) -> jax.Array:
  """Structural similarity per image (Gaussian 11x11, sigma 1.5), mean over channels.

  Args:
    a, b: (B, H, W, C) images in `data_range`, H and W >= 11.
    data_range: (low, high) of the pixel values.

  Returns:
    (B,) SSIM in [-1, 1]; 1 for identical images.
  """
  _check(a, b, 'ssim')
  if min(a.shape[1:3]) < 11:
    raise ValueError(f'ssim needs images of at least 11x11 (the window), got {a.shape}')
  return dm_pix.ssim(_to_unit(a, data_range), _to_unit(b, data_range), max_val=1.0)
