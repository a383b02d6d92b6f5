r"""Per-example transforms: plain numpy functions `fn(example, rng) -> example`.

`example` is a dict of numpy arrays from a source; `rng` is a `np.random.Generator` that the
pipeline seeds from (seed, epoch, example id), so random corruptions are fresh every epoch
yet reproducible. A deterministic transform simply ignores `rng`. Task modules write their
own transforms with the same signature and chain them with `compose`.

The pipeline expects the final example to hold the model's 'x' and 'y' (and whatever the
loss reads, e.g. 'mask'); it adds 'index' itself.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from cgml_jax.data import masks as masks_lib
from cgml_jax.data.color import AB_SCALE, L_SCALE  # constants only; transforms stay numpy

Example = dict[str, np.ndarray]
Transform = Callable[[Example, np.random.Generator], Example]


def compose(*fns: Transform) -> Transform:
  """Chains transforms left to right; each receives the same rng stream in turn."""
  def composed(example: Example, rng: np.random.Generator) -> Example:
    for fn in fns:
      example = fn(example, rng)
    return example
  return composed


def select(**mapping: str) -> Transform:
  """Keeps and renames keys: select(x='input', y='target') -> {'x': ex['input'], ...}."""
  def fn(example: Example, rng: np.random.Generator) -> Example:
    del rng
    missing = [v for v in mapping.values() if v not in example]
    if missing:
      raise KeyError(f'select needs keys {missing}; the example has {sorted(example)}')
    return {new: example[old] for new, old in mapping.items()}
  return fn


def to_float(keys: Sequence[str] = ('image',), low: float = -1.0, high: float = 1.0
             ) -> Transform:
  """uint8 0..255 -> float32 in [low, high] for the given keys."""
  def fn(example: Example, rng: np.random.Generator) -> Example:
    del rng
    out = dict(example)
    for k in keys:
      out[k] = example[k].astype(np.float32) * ((high - low) / 255.0) + low
    return out
  return fn


def random_crop(size: int | tuple[int, int], keys: Sequence[str] = ('image',)
                ) -> Transform:
  """The same random (h, w) window of every key (arrays HWC of equal H, W)."""
  h, w = (size, size) if isinstance(size, int) else size

  def fn(example: Example, rng: np.random.Generator) -> Example:
    H, W = example[keys[0]].shape[:2]
    if H < h or W < w:
      raise ValueError(f'random_crop to {(h, w)} needs images at least that large, got '
                       f'{example[keys[0]].shape}')
    top, left = int(rng.integers(H - h + 1)), int(rng.integers(W - w + 1))
    out = dict(example)
    for k in keys:
      out[k] = example[k][top:top + h, left:left + w]
    return out
  return fn


def random_flip(keys: Sequence[str] = ('image',)) -> Transform:
  """Horizontal flip of every key together, with probability 1/2."""
  def fn(example: Example, rng: np.random.Generator) -> Example:
    if rng.random() >= 0.5:
      return example
    out = dict(example)
    for k in keys:
      out[k] = np.ascontiguousarray(example[k][:, ::-1])
    return out
  return fn


def paired(x_key: str = 'input', y_key: str = 'target') -> Transform:
  """Image-to-image translation: uint8 pairs -> {'x', 'y'} float32 in [-1, 1]."""
  return compose(to_float((x_key, y_key)), select(x=x_key, y=y_key))


def completion(mask_fn: Callable[[np.random.Generator, int, int], np.ndarray],
               key: str = 'image', mask_channel: bool = True, fill: float = 0.0
               ) -> Transform:
  """Image completion: {'x': masked image (+ mask channel), 'y': image, 'mask': hole}.

  Args:
    mask_fn: (rng, H, W) -> (H, W, 1) float mask with 1 in the hole, e.g.
      `lambda rng, h, w: masks.random_square_mask(rng, h, w)`.
    key: the float image in [-1, 1], (H, W, C).
    mask_channel: append the mask to x as an extra channel (x is then (H, W, C + 1)).
    fill: value written into the hole.

  Returns:
    A transform producing 'x' (H, W, C[+1]), 'y' (H, W, C), 'mask' (H, W, 1) float32.
  """
  def fn(example: Example, rng: np.random.Generator) -> Example:
    y = example[key]
    if y.dtype == np.uint8:
      raise TypeError(f'completion expects float images in [-1, 1]; apply to_float first '
                      f'(got uint8 {key!r} of shape {y.shape})')
    mask = np.asarray(mask_fn(rng, y.shape[0], y.shape[1]), np.float32)
    x = y * (1.0 - mask) + fill * mask
    if mask_channel:
      x = np.concatenate([x, mask], axis=-1)
    return {'x': x.astype(np.float32), 'y': y.astype(np.float32), 'mask': mask}
  return fn


def square_masks(min_size: int | None = None, max_size: int | None = None):
  """mask_fn for `completion`: random squares (training)."""
  return lambda rng, h, w: masks_lib.random_square_mask(rng, h, w, min_size, max_size)


def fraction_masks(fraction: float):
  """mask_fn for `completion`: squares of a fixed area fraction (Table 3 protocol)."""
  return lambda rng, h, w: masks_lib.area_fraction_mask(rng, h, w, fraction)


def irregular_masks(**kwargs):
  """mask_fn for `completion`: free-form strokes (kwargs of masks.irregular_mask)."""
  return lambda rng, h, w: masks_lib.irregular_mask(rng, h, w, **kwargs)


def colorization(key: str = 'image') -> Transform:
  """Colorization: uint8 RGB -> {'x': L (H, W, 1), 'y': ab (H, W, 2)}, both float32.

  L / 50 - 1 and ab / 110, as `cgml_jax.data.color.rgb_to_l_ab` (same sRGB D65 conversion,
  here through skimage.color.rgb2lab in numpy).
  """
  def fn(example: Example, rng: np.random.Generator) -> Example:
    del rng
    from skimage.color import rgb2lab
    img = example[key]
    if img.ndim != 3 or img.shape[-1] != 3:
      raise ValueError(f'colorization needs RGB images (H, W, 3), got {img.shape}')
    lab = rgb2lab(img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img)
    lab = lab.astype(np.float32)
    return {'x': lab[..., :1] / L_SCALE - 1.0, 'y': lab[..., 1:] / AB_SCALE}
  return fn
