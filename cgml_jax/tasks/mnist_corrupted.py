r"""Corrupted-MNIST recovery (paper Sec. 5.1): fill a hole in the top half of a digit when
some training targets are corrupted, and see which modes each method produces.

Every example: a rectangle of random size inside the top half (rows 0..13) is masked; x is
the masked image plus the mask channel, y the target; E = mean |y_hat - y| over the hole
(`cgml_jax.losses.masked_l1`). Two corruptions of the training targets, drawn afresh every
epoch (`data.corruption`):

  'overlap'  with probability `data.overlap_rate` (0.2) the top half of y is overlapped
             (pixel-wise max) with the top half of another random training digit. In the
             input, the overlap is visible outside the hole (`data.overlap_region =
             'top_half'`) or hidden in it (`'hole'`).
  'box'      with probability `data.box_rate` (p = 0.3) a white `data.box_size` square is
             drawn into y at the centre of the hole (so x never shows it): given x, the
             hole has two modes, box and no box.

Test inputs are clean digits of the official test set with the same kind of hole. Besides
the generic metrics of `cgml_jax.tasks.image` (E_best / E_mean are the L1 error on the hole
of clean test inputs, best of K / mean over K), `extra_eval` measures, with K =
`eval.num_samples` samples per input (1 for L1):

  overlap  clean_sample_rate   fraction of samples whose hole error vs the clean digit is
                               below `eval.clean_tau` (mean |.| in [-1, 1] units)
           clean_input_rate    fraction of inputs with at least one such sample
           excess_ink          mean over the hole of max(0, y_hat - y) in [0, 1] units
                               (extra strokes: the overlap's signature)
  box      box_sample_rate     fraction of samples with a box: mean of (y_hat - y) over the
                               box square, in [0, 1] units, above `eval.box_threshold`
           both_modes_rate     fraction of inputs whose K samples contain a box and no box
           (inputs whose clean digit already covers half the box square are left out)
"""

from __future__ import annotations

import ml_collections
import numpy as np

from cgml_jax import losses
from cgml_jax.data import load_source
from cgml_jax.tasks import image

CORRUPTIONS = ('overlap', 'box')
HALF = 14  # rows of the top half of a 28 x 28 digit


def _train_images(config) -> np.ndarray:
  src = load_source('mnist', config.data.train_split, data_dir=config.data.data_dir or None)
  return src.arrays['image'][src.indices]


def hole(rng: np.random.Generator, config, size: int = 28) -> np.ndarray:
  """(28, 28, 1) mask: a rectangle of sides in [mask_min, mask_max] inside the top half."""
  d = config.data
  h = int(rng.integers(d.mask_min, min(d.mask_max, HALF) + 1))
  w = int(rng.integers(d.mask_min, d.mask_max + 1))
  top, left = int(rng.integers(HALF - h + 1)), int(rng.integers(size - w + 1))
  m = np.zeros((size, size, 1), np.float32)
  m[top:top + h, left:left + w] = 1.0
  return m


def box_in(mask: np.ndarray, side: int) -> np.ndarray:
  """The side x side square at the centre of the mask's rectangle, as a (H, W, 1) mask."""
  rows, cols = np.flatnonzero(mask[..., 0].any(1)), np.flatnonzero(mask[..., 0].any(0))
  cy, cx = (rows[0] + rows[-1] + 1) // 2, (cols[0] + cols[-1] + 1) // 2
  b = np.zeros_like(mask)
  b[max(cy - side // 2, 0):cy - side // 2 + side, max(cx - side // 2, 0):cx - side // 2 + side] = 1
  return b * mask


def make_transform(config, protocol, others: np.ndarray | None):
  """Per-example transform; protocol None = training (corrupted), else clean test."""
  d = config.data
  if d.corruption not in CORRUPTIONS:
    raise ValueError(f'data.corruption must be one of {CORRUPTIONS}, got {d.corruption!r}')

  def fn(example, rng):
    clean = example['image'].astype(np.float32) / 255.0  # [0, 1]
    mask = hole(rng, config)
    box = box_in(mask, d.box_size)
    y = clean.copy()
    shown = clean
    if protocol is None:
      if d.corruption == 'overlap' and rng.random() < d.overlap_rate:
        other = others[rng.integers(len(others))].astype(np.float32) / 255.0
        y[:HALF] = np.maximum(y[:HALF], other[:HALF])
        shown = y if d.overlap_region == 'top_half' else clean
      elif d.corruption == 'box' and rng.random() < d.box_rate:
        y = np.maximum(y, box)
    to_pm1 = lambda a: a * 2.0 - 1.0
    x = np.concatenate([to_pm1(shown) * (1.0 - mask), mask], axis=-1)
    return {'x': x.astype(np.float32), 'y': to_pm1(y).astype(np.float32), 'mask': mask,
            'box': box}
  return fn


def extra_eval(config, states: dict, key, workdir: str) -> dict:
  """The two mode measurements of the module docstring, per method."""
  del workdir
  import jax
  data = image.load_eval_set(TASK, config, 'test')
  n, bs = len(data['x']), config.eval.batch_size
  out = {}
  for method, state in states.items():
    outs = []
    for start in range(0, n, bs):
      outs.append(image.predict(method, state, data['x'][start:start + bs],
                                jax.random.fold_in(key, start), config.eval.num_samples,
                                config.latent.traverse_steps))
    y_hat = (np.concatenate(outs) + 1.0) / 2.0      # (N, K, 28, 28, 1) in [0, 1]
    y = ((data['y'] + 1.0) / 2.0)[:, None]          # (N, 1, 28, 28, 1)
    m = data['mask'][:, None]
    area = m.sum(axis=(2, 3, 4))
    err = (np.abs(y_hat - y) * m).sum(axis=(2, 3, 4)) / area * 2.0  # [-1, 1] units
    r = {'num_inputs': int(n), 'num_samples': int(y_hat.shape[1]),
         'hole_error_best': float(err.min(1).mean()),
         'hole_error_mean': float(err.mean())}
    if config.data.corruption == 'overlap':
      clean = err < config.eval.clean_tau
      r.update(clean_tau=float(config.eval.clean_tau),
               clean_sample_rate=float(clean.mean()),
               clean_input_rate=float(clean.any(1).mean()),
               excess_ink=float((np.maximum(y_hat - y, 0) * m).sum(axis=(2, 3, 4)).mean()
                                / area.mean()))
    else:
      b = data['box'][:, None]
      b_area = np.maximum(b.sum(axis=(2, 3, 4)), 1.0)
      lift = ((y_hat - y) * b).sum(axis=(2, 3, 4)) / b_area         # (N, K)
      usable = ((y * b).sum(axis=(2, 3, 4)) / b_area)[:, 0] < 0.5    # digit leaves room
      has_box = lift > config.eval.box_threshold
      both = has_box.any(1) & (~has_box).any(1)
      r.update(box_threshold=float(config.eval.box_threshold), usable_inputs=int(usable.sum()),
               box_sample_rate=float(has_box[usable].mean()),
               both_modes_rate=float(both[usable].mean()),
               box_intensity_mean=float(lift[usable].mean()))
    out[method] = r
    print(f'[mnist_corrupted/{method}] {r}', flush=True)
  return out


def _source(config, split):
  return load_source('mnist', split, data_dir=config.data.data_dir or None)


_OTHERS = {}


def transform(config, protocol=None):
  others = None
  if protocol is None and config.data.corruption == 'overlap':
    k = (config.data.data_dir, config.data.train_split)
    if k not in _OTHERS:
      _OTHERS.clear()
      _OTHERS[k] = _train_images(config)
    others = _OTHERS[k]
  return make_transform(config, protocol, others)


def _to_image(x, y):
  return y


def _input_image(x):
  return x[..., :1]


TASK = image.ImageTask(name='mnist_corrupted', in_channels=2, out_channels=1,
                       transform=transform, loss_fn=lambda config: losses.masked_l1,
                       to_image=_to_image, input_image=_input_image, source=_source,
                       extra_eval=extra_eval)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains L1 and cGML on corrupted MNIST; generic metrics plus the mode measurements."""
  return image.run(TASK, config, workdir)
