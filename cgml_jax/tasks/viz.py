"""Image grids for the image tasks: input | ground truth | samples, and latent trajectories.

Everything here is numpy + Pillow: images are float arrays in [-1, 1] (the models' range),
(H, W, C) with C = 1 or 3, converted to uint8 only when written.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def to_uint8(img: np.ndarray) -> np.ndarray:
  """[-1, 1] float (H, W, C) -> uint8 RGB (H, W, 3); grey is repeated to three channels."""
  img = np.asarray(img, np.float32)
  if img.ndim == 2:
    img = img[..., None]
  if img.shape[-1] == 1:
    img = np.repeat(img, 3, axis=-1)
  if img.shape[-1] != 3:
    raise ValueError(f'to_uint8 needs (H, W, 1 or 3) images, got {img.shape}')
  return (np.clip((np.nan_to_num(img) + 1.0) * 127.5, 0, 255) + 0.5).astype(np.uint8)


def grid(rows: Sequence[Sequence[np.ndarray | None]], pad: int = 2,
         background: int = 255) -> np.ndarray:
  """Tiles rows of equally sized images into one uint8 (H, W, 3) array.

  Args:
    rows: rows of images in [-1, 1], each (h, w, 1 or 3); None leaves a blank cell.
    pad: pixels between cells.
    background: grey level of the padding and of blank cells.

  Returns:
    uint8 RGB image.
  """
  cells = [c for r in rows for c in r if c is not None]
  if not cells:
    raise ValueError('grid needs at least one image')
  h, w = np.asarray(cells[0]).shape[:2]
  ncol = max(len(r) for r in rows)
  out = np.full((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), background, np.uint8)
  for i, r in enumerate(rows):
    for j, c in enumerate(r):
      if c is None:
        continue
      c = to_uint8(c)
      if c.shape[:2] != (h, w):
        raise ValueError(f'grid cells must share a size, got {c.shape[:2]} and {(h, w)}')
      top, left = pad + i * (h + pad), pad + j * (w + pad)
      out[top:top + h, left:left + w] = c
  return out


def samples_grid(inputs: np.ndarray, truth: np.ndarray, columns: dict[str, np.ndarray]
                 ) -> np.ndarray:
  """One row per input: input | ground truth | every method's outputs.

  Args:
    inputs: (N, h, w, C) inputs as shown (e.g. the grey L or the masked image).
    truth: (N, h, w, C) ground truths.
    columns: method -> (N, K_m, h, w, C) outputs (K_m = 1 for a regression baseline).

  Returns:
    uint8 RGB grid with N rows and 2 + sum K_m columns.
  """
  rows = []
  for i in range(len(inputs)):
    row = [inputs[i], truth[i]]
    for s in columns.values():
      row.extend(list(s[i]))
    rows.append(row)
  return grid(rows)


def save_png(path: str | os.PathLike, image: np.ndarray, scale: int = 1):
  """Writes a uint8 (H, W, 3) image (or a [-1, 1] float image) as PNG, optionally enlarged
  `scale` times by pixel repetition."""
  from PIL import Image
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = to_uint8(image)
  if scale > 1:
    image = image.repeat(scale, axis=0).repeat(scale, axis=1)
  Image.fromarray(image).save(path)


def plot_curves(path: str, curves: dict, target: float):
  """curves.png: probe E vs. step per method (paper Fig. 18 analogue)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
  for method, (steps, values) in curves.items():
    ax.plot(steps, values, marker='.', label=method)
  ax.axhline(target, color='grey', ls='--', lw=0.8, label='target')
  ax.set_xlabel('training step (batches)')
  ax.set_ylabel('probe error E (best of samples)')
  ax.set_yscale('log')
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
