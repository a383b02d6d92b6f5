"""Image grids for the image tasks: input | ground truth | samples, and latent trajectories.

Everything here is numpy + Pillow: images are float arrays in [-1, 1] (the models' range),
(H, W, C) with C = 1 or 3, converted to uint8 only when written. The labelled grids name
every column above the cells (input, ground truth, each method by its display name in
`cgml_jax.tasks.names`, and under a method the sample index k = 1..K); their text is drawn
with Pillow in matplotlib's bundled DejaVu Sans, which has the Greek letters of the names.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Mapping, Sequence

import numpy as np

from cgml_jax.tasks import names

# Grids are enlarged by pixel repetition until a cell is about this wide, so that the
# labels above a cell fit over it and the pixels of 16-32 px images stay visible.
CELL_PX = 96
FONT_PX = 13


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


def legible_scale(cell: int) -> int:
  """Pixel-repetition factor that brings a `cell`-pixel image to about CELL_PX pixels."""
  return max(1, CELL_PX // max(1, int(cell)))


@dataclasses.dataclass(frozen=True)
class Labels:
  """The text around a grid of cells.

  Attributes:
    groups: the first header row, left to right: (text, number of columns it spans); the
      spans add up to the number of columns. Empty for no header.
    columns: the second header row, one text per column ('' leaves a column blank), e.g.
      the sample index under a method. Empty for no second row.
    rows: one text per row, drawn left of it. Empty for no row labels.
  """
  groups: tuple[tuple[str, int], ...] = ()
  columns: tuple[str, ...] = ()
  rows: tuple[str, ...] = ()


def samples_labels(counts: Mapping[str, int], truth: bool = True,
                   input_label: str = 'input') -> Labels:
  """The header of a samples grid: input | [ground truth] | each method over its columns.

  Args:
    counts: method name (as in `config.methods`) -> number of its columns, in grid order.
      Methods are shown by `names.display`; names outside its table are shown as given.
    truth: whether the grid has a ground-truth column after the input.
    input_label: the text over the input column.

  Returns:
    Labels whose groups are the column titles and whose second row gives each sample's
    index k = 1..K under methods with more than one column.
  """
  groups = [(input_label, 1)] + ([('ground truth', 1)] if truth else [])
  columns = [''] * len(groups)
  for method, k in counts.items():
    if k < 1:
      raise ValueError(f'method {method!r} needs at least one column, got {k}')
    groups.append((names.display(method), int(k)))
    columns += [f'k = {i}' for i in range(1, k + 1)] if k > 1 else ['']
  return Labels(tuple(groups), tuple(columns) if any(columns) else ())


def trajectory_labels(frames: Sequence[int], starts: int, method: str = 'cgml') -> Labels:
  """The labels of a trajectory grid: one row per z_0, the input, then G(h, z_t) at `frames`.

  Args:
    frames: the traversal steps t shown, left to right (t = 0 is G(h, z_0)).
    starts: the number of rows (random starting points z_0).
    method: the method whose Eq. 4 flow is shown (its display name heads the frames).
  """
  return Labels(groups=(('input', 1), (f'{names.display(method)}: G(h, z_t)', len(frames))),
                columns=('',) + tuple(f't = {int(t)}' for t in frames),
                rows=tuple(f'z₀ #{s + 1}' for s in range(starts)))


@functools.lru_cache(maxsize=None)
def _font(size: int):
  """DejaVu Sans from matplotlib's own fonts (it has ρ and subscripts); Pillow's default
  font otherwise."""
  from PIL import ImageFont
  try:
    from matplotlib import font_manager
    path = font_manager.findfont(font_manager.FontProperties(family='DejaVu Sans'),
                                 fallback_to_default=False)
    return ImageFont.truetype(path, size)
  except (ImportError, OSError, ValueError):
    return ImageFont.load_default(size)


def _wrap(text: str, font, width: int) -> list[str]:
  """Greedy word wrap to `width` pixels; a single word wider than that keeps its line."""
  lines = []
  for word in text.split(' '):
    if lines and font.getlength(lines[-1] + ' ' + word) <= width:
      lines[-1] += ' ' + word
    else:
      lines.append(word)
  return lines or ['']


def labelled_grid(rows: Sequence[Sequence[np.ndarray | None]], labels: Labels,
                  scale: int | None = None, pad: int = 2, background: int = 255,
                  font_size: int = FONT_PX) -> np.ndarray:
  """`grid(rows)` enlarged by pixel repetition, with a header above and row labels left.

  The cells are the unlabelled grid's pixels repeated `scale` times (nearest neighbour),
  so the image's lower right part is exactly that enlarged grid; the text is drawn at the
  final size, so it stays sharp whatever the scale.

  Args:
    rows: as for `grid`.
    labels: the header groups (spanning columns), per-column texts and row texts.
    scale: pixel-repetition factor; None picks `legible_scale` of the cell width.
    pad, background: as for `grid` (pad is enlarged with the cells).
    font_size: text height in pixels.

  Returns:
    uint8 RGB image.
  """
  from PIL import Image, ImageDraw
  tiles = grid(rows, pad, background)
  cell = next(np.asarray(c).shape[:2] for r in rows for c in r if c is not None)
  nrow, ncol = len(rows), max(len(r) for r in rows)
  spans = sum(n for _, n in labels.groups)
  if labels.groups and spans != ncol:
    raise ValueError(f'header groups span {spans} columns, the grid has {ncol}: '
                     f'{labels.groups}')
  if labels.columns and len(labels.columns) != ncol:
    raise ValueError(f'{len(labels.columns)} column labels for {ncol} columns')
  if labels.rows and len(labels.rows) != nrow:
    raise ValueError(f'{len(labels.rows)} row labels for {nrow} rows')
  s = legible_scale(cell[1]) if scale is None else max(1, int(scale))
  tiles = tiles.repeat(s, axis=0).repeat(s, axis=1)
  h, w, p = cell[0] * s, cell[1] * s, pad * s
  font = _font(font_size)
  line = font_size + 3
  margin = max(2, font_size // 3)

  def x0(j):  # left edge of column j in the tiles
    return p + j * (w + p)

  wrapped, j = [], 0
  for text, n in labels.groups:
    wrapped.append((_wrap(text, font, n * w + (n - 1) * p), j, n))
    j += n
  group_h = max((len(t) for t, _, _ in wrapped), default=0) * line
  group_h += 2 * margin if labels.groups else 0
  col_h = line + margin if any(labels.columns) else 0
  left = 0
  if any(labels.rows):
    left = int(max(font.getlength(t) for t in labels.rows)) + 2 * margin
  top = group_h + col_h
  out = Image.new('RGB', (left + tiles.shape[1], top + tiles.shape[0]), (background,) * 3)
  out.paste(Image.fromarray(tiles), (left, top))
  draw = ImageDraw.Draw(out)
  ink = (0, 0, 0)
  for lines, j, n in wrapped:
    a, b = left + x0(j), left + x0(j + n - 1) + w
    y = margin + (group_h - 2 * margin - len(lines) * line)
    for t in lines:
      draw.text(((a + b) / 2, y), t, fill=ink, font=font, anchor='ma')
      y += line
    if n > 1:  # a rule under a label that spans several columns shows its extent
      inset = max(2, w // 16)  # keeps the rules of neighbouring groups apart
      draw.line([(a + inset, group_h - margin // 2), (b - inset, group_h - margin // 2)],
                fill=ink)
  for j, t in enumerate(labels.columns):
    if t:
      draw.text((left + x0(j) + w / 2, group_h), t, fill=ink, font=font, anchor='ma')
  for i, t in enumerate(labels.rows):
    if t:
      draw.text((left - margin, top + p + i * (h + p) + h / 2), t, fill=ink, font=font,
                anchor='rm')
  return np.asarray(out)


def samples_grid(inputs: np.ndarray, truth: np.ndarray | None,
                 columns: Mapping[str, np.ndarray], labelled: bool = True,
                 scale: int | None = None) -> np.ndarray:
  """One row per input: input | ground truth | every method's outputs, labelled.

  Args:
    inputs: (N, h, w, C) inputs as shown (e.g. the grey L or the masked image).
    truth: (N, h, w, C) ground truths, or None for a grid without that column.
    columns: method name -> (N, K_m, h, w, C) outputs (K_m = 1 for a regression baseline).
    labelled: header with the column titles (`samples_labels`), enlarged by `scale`; False
      gives the bare `grid` of the cells at their own size.
    scale: pixel-repetition factor of the labelled grid; None picks `legible_scale`.

  Returns:
    uint8 RGB grid with N rows and 1 (+ 1 with truth) + sum K_m columns.
  """
  rows = []
  for i in range(len(inputs)):
    row = [inputs[i]] + ([] if truth is None else [truth[i]])
    for s in columns.values():
      row.extend(list(s[i]))
    rows.append(row)
  if not labelled:
    return grid(rows)
  counts = {m: int(np.shape(s)[1]) for m, s in columns.items()}
  return labelled_grid(rows, samples_labels(counts, truth=truth is not None), scale=scale)


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
    ax.plot(steps, values, marker='.', label=names.display(method))
  ax.axhline(target, color='grey', ls='--', lw=0.8, label='target')
  ax.set_xlabel('training step (batches)')
  ax.set_ylabel('probe error E (best of samples)')
  ax.set_yscale('log')
  ax.set_title('training curves: error on a fixed probe batch', fontsize=10)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
