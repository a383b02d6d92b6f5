"""Metric writers: TensorBoard and JSON lines, behind CLU's `MetricWriter` interface.

`create_writer(logdir)` returns one writer with `write_scalars(step, {name: value})`,
`write_images(step, {name: (H, W, C) or (N, H, W, C) array in [0, 1]})`, `flush()` and
`close()` that fans out to

  * JSON lines: `logdir/metrics.jsonl`, one `{"step", name: value, ...}` object per call,
    images as PNGs under `logdir/images/` with their paths in `logdir/images.jsonl`;
  * TensorBoard: `clu.metric_writers.create_default_writer` when CLU's TensorFlow backend
    imports, else a tensorboardX `SummaryWriter` when tensorboardX is installed, else none
    (reported once). Both write event files that `tensorboard --logdir` reads.

Nothing is created until the first record: a run refused before training leaves no
`logs/` behind. Only process 0 writes; the others get a writer that drops everything, so
trainers can call it unconditionally. Non-finite scalars are written as JSON null.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Mapping

import jax
import numpy as np


def _json_float(v) -> float | None:
  v = float(v)
  return v if math.isfinite(v) else None


class JsonlWriter:
  """Scalars to `metrics.jsonl`, images to PNG files listed in `images.jsonl`; the files
  are created by the first record."""

  def __init__(self, logdir: str):
    self.logdir = logdir
    self._f = None

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    if self._f is None:
      os.makedirs(self.logdir, exist_ok=True)
      self._f = open(os.path.join(self.logdir, 'metrics.jsonl'), 'a')
    row = {'step': int(step), **{k: _json_float(v) for k, v in scalars.items()}}
    self._f.write(json.dumps(row, allow_nan=False) + '\n')

  def write_images(self, step: int, images: Mapping[str, Any]):
    from PIL import Image
    d = os.path.join(self.logdir, 'images')
    os.makedirs(d, exist_ok=True)
    paths = {}
    for name, img in images.items():
      img = _as_hwc(img)
      path = os.path.join(d, f'{name.replace("/", "_")}_{int(step):08d}.png')
      Image.fromarray(_to_uint8(img[..., 0] if img.shape[-1] == 1 else img)).save(path)
      paths[name] = os.path.relpath(path, self.logdir)
    with open(os.path.join(self.logdir, 'images.jsonl'), 'a') as f:
      f.write(json.dumps({'step': int(step), **paths}) + '\n')

  def write_hparams(self, hparams: Mapping[str, Any]):
    os.makedirs(self.logdir, exist_ok=True)
    with open(os.path.join(self.logdir, 'hparams.json'), 'w') as f:
      json.dump(dict(hparams), f, indent=2, default=str)

  def flush(self):
    if self._f is not None:
      self._f.flush()

  def close(self):
    if self._f is not None:
      self._f.close()
      self._f = None


class _TensorBoardXWriter:
  """TensorBoard event files through tensorboardX (no TensorFlow needed)."""

  def __init__(self, logdir: str):
    import tensorboardX
    self._w = tensorboardX.SummaryWriter(logdir)

  def write_scalars(self, step, scalars):
    for k, v in scalars.items():
      self._w.add_scalar(k, float(v), int(step))

  def write_images(self, step, images):
    for k, img in images.items():
      self._w.add_image(k, _to_uint8(_as_hwc(img)), int(step), dataformats='HWC')

  def write_hparams(self, hparams):
    self._w.add_text('hparams', json.dumps(dict(hparams), default=str), 0)

  def flush(self):
    self._w.flush()

  def close(self):
    self._w.close()


class MultiWriter:
  """Calls every writer in turn (same as `clu.metric_writers.MultiWriter`)."""

  def __init__(self, writers):
    self.writers = list(writers)

  def write_scalars(self, step, scalars):
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_images(self, step, images):
    for w in self.writers:
      w.write_images(step, images)

  def write_hparams(self, hparams):
    for w in self.writers:
      w.write_hparams(hparams)

  def flush(self):
    for w in self.writers:
      w.flush()

  def close(self):
    for w in self.writers:
      w.close()


class _Lazy:
  """A writer built by `make()` on its first record (None from `make`: records dropped)."""

  def __init__(self, make):
    self._make, self._w, self._made = make, None, False

  def _get(self):
    if not self._made:
      self._w, self._made = self._make(), True
    return self._w

  def write_scalars(self, step, scalars):
    if (w := self._get()) is not None:
      w.write_scalars(step, scalars)

  def write_images(self, step, images):
    if (w := self._get()) is not None:
      w.write_images(step, images)

  def write_hparams(self, hparams):
    if (w := self._get()) is not None:
      w.write_hparams(hparams)

  def flush(self):
    if self._w is not None:
      self._w.flush()

  def close(self):
    if self._w is not None:
      self._w.close()


def _tensorboard_writer(logdir: str, log=sys.stdout):
  try:
    from clu import metric_writers  # needs TensorFlow for its SummaryWriter
    return metric_writers.SummaryWriter(logdir)
  except ImportError:
    pass
  try:
    return _TensorBoardXWriter(logdir)
  except ImportError:
    print('[writers] no TensorBoard backend (install tensorflow or tensorboardX); '
          'writing JSON lines only', file=log, flush=True)
    return None


def create_writer(logdir: str, *, tensorboard: bool = True, jsonl: bool = True) -> MultiWriter:
  """The run's writer (see module docstring); a no-op writer on processes other than 0."""
  if jax.process_index() != 0:
    return MultiWriter([])
  writers = [JsonlWriter(logdir)] if jsonl else []
  if tensorboard:
    writers.append(_Lazy(lambda: _tensorboard_writer(logdir)))
  return MultiWriter(writers)


def mode_grid(samples: Any, pad: int = 1) -> np.ndarray:
  """One image of K modes per input: (N, K, H, W, C) -> (N (H + pad), K (W + pad), C).

  Row i holds the K samples for input i, so a collapsed model shows K equal columns.
  """
  s = np.asarray(samples, np.float32)
  if s.ndim == 4:
    s = s[..., None]
  if s.ndim != 5:
    raise ValueError(f'mode_grid expects (N, K, H, W[, C]) samples, got shape {s.shape}')
  n, k, h, w, c = s.shape
  s = np.pad(s, ((0, 0), (0, 0), (0, pad), (0, pad), (0, 0)), constant_values=1.0)
  return s.transpose(0, 2, 1, 3, 4).reshape(n * (h + pad), k * (w + pad), c)


def _as_hwc(img) -> np.ndarray:
  img = np.asarray(img)
  if img.ndim == 4:  # a batch: stack vertically
    img = img.reshape(-1, *img.shape[2:])
  if img.ndim == 2:
    img = img[..., None]
  if img.ndim != 3:
    raise ValueError(f'images must be (H, W), (H, W, C) or (N, H, W, C), got {img.shape}')
  return img


def _to_uint8(img: np.ndarray) -> np.ndarray:
  if img.dtype == np.uint8:
    return img
  return (np.clip(np.nan_to_num(img), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
