r"""Inpainting masks in numpy, seeded through a `np.random.Generator`.

Convention: a mask is (H, W, 1) float32 with 1 on the missing pixels (the hole to fill) and
0 where the input is observed. The corrupted input is `image * (1 - mask)`, and the masked
L1 loss (`cgml_jax.losses.masked_l1`) scores the hole.

  random_square_mask   train: a square of random side in [min_size, max_size]
  area_fraction_mask   evaluation: a square covering a given fraction of the image
                       (10%, 15%, 25%: the paper's Table 3 protocol), random position
  center_mask          a fixed centred square of a given area fraction
  irregular_mask       free-form strokes (random walks of thick line segments)
"""

from __future__ import annotations

import math

import numpy as np

# The masked-area fractions of the paper's Table 3 (image completion).
TABLE3_FRACTIONS = (0.10, 0.15, 0.25)


def _check_hw(height: int, width: int):
  if height < 1 or width < 1:
    raise ValueError(f'mask size must be positive, got {(height, width)}')


def _square(height: int, width: int, top: int, left: int, side_h: int, side_w: int
            ) -> np.ndarray:
  mask = np.zeros((height, width, 1), np.float32)
  mask[top:top + side_h, left:left + side_w] = 1.0
  return mask


def random_square_mask(rng: np.random.Generator, height: int, width: int,
                       min_size: int | None = None, max_size: int | None = None
                       ) -> np.ndarray:
  """A square hole of random side and position (training masks).

  Args:
    rng: numpy generator.
    height, width: image size.
    min_size, max_size: side range in pixels, inclusive; defaults min(H, W) // 4 and
      min(H, W) // 2.

  Returns:
    (H, W, 1) float32 mask, 1 in the hole.
  """
  _check_hw(height, width)
  short = min(height, width)
  lo = max(1, short // 4) if min_size is None else min_size
  hi = max(lo, short // 2) if max_size is None else max_size
  if not 1 <= lo <= hi <= short:
    raise ValueError(f'need 1 <= min_size <= max_size <= {short}, got {(lo, hi)}')
  side = int(rng.integers(lo, hi + 1))
  top = int(rng.integers(height - side + 1))
  left = int(rng.integers(width - side + 1))
  return _square(height, width, top, left, side, side)


def _side_for_fraction(height: int, width: int, fraction: float) -> int:
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f'masked-area fraction must be in (0, 1], got {fraction}')
  side = int(round(math.sqrt(fraction * height * width)))
  return max(1, min(side, height, width))


def area_fraction_mask(rng: np.random.Generator, height: int, width: int,
                       fraction: float) -> np.ndarray:
  """A square hole covering `fraction` of the image at a random position.

  The side is round(sqrt(fraction * H * W)), so the area matches `fraction` up to
  rounding (e.g. 64x64 at 25%: a 32x32 square, exactly 25%).

  Args:
    rng: numpy generator (position only).
    height, width: image size.
    fraction: masked-area fraction in (0, 1], e.g. one of TABLE3_FRACTIONS.

  Returns:
    (H, W, 1) float32 mask, 1 in the hole.
  """
  _check_hw(height, width)
  side = _side_for_fraction(height, width, fraction)
  top = int(rng.integers(height - side + 1))
  left = int(rng.integers(width - side + 1))
  return _square(height, width, top, left, side, side)


def center_mask(height: int, width: int, fraction: float = 0.25) -> np.ndarray:
  """A centred square hole covering `fraction` of the image (deterministic).

  Args:
    height, width: image size.
    fraction: masked-area fraction in (0, 1].

  Returns:
    (H, W, 1) float32 mask, 1 in the hole.
  """
  _check_hw(height, width)
  side = _side_for_fraction(height, width, fraction)
  return _square(height, width, (height - side) // 2, (width - side) // 2, side, side)


def _draw_stroke(mask: np.ndarray, points: np.ndarray, radius: float):
  """Sets to 1 every pixel within `radius` of the polyline `points` (K, 2) as (row, col)."""
  h, w = mask.shape
  lo = np.maximum(np.floor(points.min(0) - radius).astype(int), 0)
  hi = np.minimum(np.ceil(points.max(0) + radius).astype(int) + 1, (h, w))
  rr, cc = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]]
  pix = np.stack([rr.ravel(), cc.ravel()], -1).astype(np.float64)[:, None]   # (P, 1, 2)
  p0, d = points[:-1], np.diff(points, axis=0)                                # (S, 2)
  t = np.clip(((pix - p0) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0.0, 1.0)
  dist2 = ((pix - (p0 + t[..., None] * d)) ** 2).sum(-1).min(axis=1)         # (P,)
  mask[lo[0]:hi[0], lo[1]:hi[1]] |= (dist2 <= radius ** 2).reshape(rr.shape)


def irregular_mask(rng: np.random.Generator, height: int, width: int,
                   max_strokes: int = 4, max_vertices: int = 8,
                   max_width: float | None = None, max_length: float | None = None,
                   target_fraction: float | None = None) -> np.ndarray:
  """Free-form hole made of random strokes (as in DeepFill v2 / partial-conv masks).

  Each stroke starts at a uniform point and takes 1..max_vertices straight segments with
  uniform directions and lengths in [0.1, 1] * max_length, drawn with a round brush of
  width uniform in [0.3, 1] * max_width.

  Args:
    rng: numpy generator.
    height, width: image size.
    max_strokes: 1..max_strokes strokes (ignored when target_fraction is set).
    max_vertices: segments per stroke, at most.
    max_width: brush width; default min(H, W) / 8.
    max_length: segment length; default min(H, W) / 4.
    target_fraction: if set, strokes are added until at least this fraction is masked.

  Returns:
    (H, W, 1) float32 mask, 1 in the hole.
  """
  _check_hw(height, width)
  short = min(height, width)
  max_width = max(short / 8, 1.0) if max_width is None else max_width
  max_length = max(short / 4, 1.0) if max_length is None else max_length
  if target_fraction is not None and not 0.0 < target_fraction < 1.0:
    raise ValueError(f'target_fraction must be in (0, 1), got {target_fraction}')
  mask = np.zeros((height, width), bool)
  n_strokes = int(rng.integers(1, max_strokes + 1))
  done = 0
  limit = np.array([height - 1, width - 1], np.float64)
  while True:
    radius = rng.uniform(0.3, 1.0) * max_width / 2
    n_seg = int(rng.integers(1, max_vertices + 1))
    angle = rng.uniform(0, 2 * np.pi, n_seg)
    length = rng.uniform(0.1, 1.0, n_seg) * max_length
    points = [rng.uniform([0, 0], limit)]
    for a, l in zip(angle, length):
      points.append(np.clip(points[-1] + l * np.array([np.sin(a), np.cos(a)]), 0, limit))
    _draw_stroke(mask, np.stack(points), radius)
    done += 1
    if target_fraction is None:
      if done >= n_strokes:
        break
    elif mask.mean() >= target_fraction:
      break
  return mask[..., None].astype(np.float32)
