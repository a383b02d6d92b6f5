r"""Corrupted-MNIST recovery (paper Sec. 5.1): fill a hole in the top half of a digit when
some training targets are corrupted, and see which modes each method produces.

Every example: a rectangle of random size inside the top half (rows 0..13) is masked; x is
the masked image plus the mask channel, y the target; E = mean |y_hat - y| over the hole
(`cgml_jax.cgml.l1_error`; `loss.error='l2'`: mean squared). Two corruptions of the
training targets, drawn afresh every epoch (`data.corruption`):

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
  box      box_sample_rate     fraction of samples with a box (`box_present`): mean sample
                               value, in [0, 1] units, on the box pixels the clean digit
                               leaves dark, above `eval.box_threshold` (0.5, halfway
                               between the no-box (0) and box (1) targets there)
           both_modes_rate     fraction of inputs whose K samples contain a box and no box
           coverage, phantom_rate, mode_frequency_error
                               the known-mode metrics of `cgml_jax.metrics.modes` with the
                               modes (box, no box), prior (box_rate, 1 - box_rate) and the
                               rule above; coverage = both_modes_rate, and the two-way rule
                               assigns every sample, so phantom_rate is 0 by construction
           (inputs whose clean digit covers more than half of the box square are left out;
           L1 has K = 1 sample, so it can show one mode only by construction)
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from cgml_jax import cgml
from cgml_jax.data import load_source
from cgml_jax.metrics import modes as modes_lib
from cgml_jax.tasks import complete, image
from cgml_jax.tasks import methods as methods_lib

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


def box_present(y_hat: np.ndarray, y: np.ndarray, box: np.ndarray, threshold: float):
  """Decides, per sample, whether the box mode is present (box setting).

  The box is judged only on the box pixels the clean digit leaves dark (clean value
  < 0.5): there the box mode's target is 1 and the no-box mode's target is the dark digit
  background, so the mean sample intensity on them separates the two modes; pixels the
  digit already covers are white in both modes and say nothing.

  Args:
    y_hat: (N, K, H, W, 1) samples in [0, 1].
    y: (N, 1, H, W, 1) clean digits in [0, 1].
    box: (N, 1, H, W, 1) box squares (1 inside).
    threshold: a sample has the box if its mean intensity on the free box pixels exceeds
      this (0.5: halfway between the two modes).

  Returns:
    (usable (N,): at least half of the box is free, so the input can show the box;
     has_box (N, K) bool; intensity (N, K): mean sample value on the free box pixels).
  """
  free = box * (y < 0.5)
  n_free = free.sum(axis=(2, 3, 4))                                   # (N, 1)
  usable = (n_free >= 0.5 * box.sum(axis=(2, 3, 4)))[:, 0] & (n_free[:, 0] > 0)
  intensity = (y_hat * free).sum(axis=(2, 3, 4)) / np.maximum(n_free, 1.0)  # (N, K)
  return usable, intensity > threshold, intensity


def mode_scores(config, data: dict, outputs: np.ndarray) -> dict:
  """The mode measurements of the module docstring for outputs (N, K, 28, 28, 1) in [-1, 1]
  of the clean test inputs `data` (from `image.load_eval_set`)."""
  y_hat = (outputs + 1.0) / 2.0                    # (N, K, 28, 28, 1) in [0, 1]
  y = ((data['y'] + 1.0) / 2.0)[:, None]          # (N, 1, 28, 28, 1)
  m = data['mask'][:, None]
  area = m.sum(axis=(2, 3, 4))
  err = (np.abs(y_hat - y) * m).sum(axis=(2, 3, 4)) / area * 2.0  # [-1, 1] units
  r = {'num_inputs': int(len(y_hat)), 'num_samples': int(y_hat.shape[1]),
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
    usable, has_box, intensity = box_present(y_hat, y, data['box'][:, None],
                                             config.eval.box_threshold)
    both = has_box.any(1) & (~has_box).any(1)
    r.update(box_threshold=float(config.eval.box_threshold), usable_inputs=int(usable.sum()),
             box_sample_rate=float(has_box[usable].mean()),
             both_modes_rate=float(both[usable].mean()),
             box_intensity_mean=float(intensity[usable].mean()))
    # Mode 0 = box, 1 = no box, with the training prior (p, 1 - p).
    p = float(config.data.box_rate)
    summary = modes_lib.summary(np.where(has_box[usable], 0, 1), (p, 1.0 - p))
    r.update({k: summary[k] for k in ('coverage', 'phantom_rate', 'mode_frequency_error')})
  return r


def extra_eval(config, trained: dict, key, workdir: str) -> dict:
  """The mode measurements of the module docstring, per method.

  cGML is measured twice: with its inference (Eq. 4, T = `latent.traverse_steps`), and as
  'cgml_T0', G at the K random z_0 without Z's flow, which separates what G learned from
  what the flow of Z does with it.
  """
  del workdir
  import jax

  from cgml_jax import cgml
  data = image.load_eval_set(TASK, config, 'test')
  n, bs = len(data['x']), config.eval.batch_size
  # (row name, trained method, K): the T = 0 row is cGML's model with its own K
  runs = [(m, t, image.num_samples_of(m, config)) for m, t in trained.items()]
  if 'cgml' in trained:
    runs.append(('cgml_T0', dataclasses.replace(
        trained['cgml'], sample_fn=lambda s, x, k, num: cgml.sample(s, x, k, num, 0)),
                 image.num_samples_of('cgml', config)))
  out = {}
  for name, t, k in runs:
    outs = [methods_lib.sample(t, data['x'][start:start + bs], jax.random.fold_in(key, start),
                               k)
            for start in range(0, n, bs)]
    out[name] = mode_scores(config, data, np.concatenate(outs))
    print(f'[mnist_corrupted/{name}] {out[name]}', flush=True)
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


def _input_image(x):
  return x[..., :1]


def _loss_fn(config):
  """E on the hole: `loss.error` 'l1' (the default) or 'l2', both masked (cgml.ERRORS)."""
  return cgml.ERRORS[config.loss.error]


TASK = image.ImageTask(name='mnist_corrupted', in_channels=2, out_channels=1,
                       transform=transform, loss_fn=_loss_fn,
                       to_image=complete.to_image, input_image=_input_image, source=_source,
                       extra_eval=extra_eval)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains L1 and cGML on corrupted MNIST; generic metrics plus the mode measurements."""
  return image.run(TASK, config, workdir)
