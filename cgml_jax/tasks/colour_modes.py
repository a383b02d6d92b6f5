r"""Colour modes: colorization whose answers are known, to measure multimodality directly.

Every example is a grey glyph g (S, S) in [0, 1] (a digit, or a shape drawn here) and a
palette colour c_m, m drawn per example from the prior p over the first M = `data.num_modes`
colours of `data.palette`, independently of the glyph:

  x = 2 g - 1                  (S, S, 1)  the glyph, grey, in [-1, 1]
  y = 2 g c_m - 1              (S, S, 3)  the same glyph in colour m on black, RGB in [-1, 1]
  E = mean |y_hat - y|         (cgml_jax.cgml.l1_error)

Given x, y has exactly M answers with probabilities p, so a sample is right or wrong about
its mode by construction. RGB rather than colorize.py's LAB ab: x carries no lightness of
the target (palette colours differ in L), so the ab parameterisation, which takes L from
the input, does not apply; in RGB the modes are the palette points themselves, and E and
the mode rule work in the same space.

Mode of a sample (`sample_colours`, `assign`): its colour is the least-squares c with
y_hat ~ g c on the stroke pixels (g >= 0.5, where the glyph is on),

  c_hat = sum_stroke g (y_hat + 1) / 2  /  sum_stroke g^2,

exactly c_m for the ground truth (also on MNIST's anti-aliased strokes). The sample has
mode m if c_m is its nearest palette colour and |c_hat - c_m|_2 < tau; otherwise it is a
phantom. tau = `eval.mode_tau`, or (< 0, the default) half the smallest distance between
two palette colours (0.707 for red, green, blue; 0.5 with all six default colours), so the
tau-balls are disjoint. L1 regression's per-channel median of three primaries is black
(distance 1 from each) and their mean grey (0.82): both phantoms.

`extra_eval` draws K = `eval.num_samples` samples per test input (deterministic methods:
K copies) and reports, per method, the metrics of `cgml_jax.metrics.modes` (coverage,
phantom_rate, mode_frequency_error against p, the mode histogram) and

  fidelity          mean E(y_hat, 2 g c_a - 1) over the samples with a mode a: the error
                    against the ground truth re-rendered in the sample's own mode, i.e.
                    shape error with the choice of mode factored out (nan if no sample
                    has a mode);
  fidelity_nearest  the same over all samples, each re-rendered in its nearest colour.

Sources (`data.name`): 'shapes' (alias 'embedded'; no files: one filled disk, rectangle,
triangle, ring or cross per image, a pure function of (seed, split, index), see
`ShapesSource`) and 'mnist' (the offline digits, resized to `data.image_size`).
"""

from __future__ import annotations

import ml_collections
import numpy as np

from cgml_jax import cgml
from cgml_jax.data import load_source, parse_split
from cgml_jax.metrics import modes as modes_lib
from cgml_jax.tasks import image

# Red, green, blue, yellow, cyan, magenta in [0, 1]: the first M are the default modes.
PALETTE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0),
           (1.0, 1.0, 0.0), (0.0, 1.0, 1.0), (1.0, 0.0, 1.0))
# Further palettes for the known-mode suite (experiments/colour_modes.py, SUITE):
# 'other': secondary hues, some pairs only ~0.6-0.7 apart; 'near': reds and greens
# ~0.45 apart; 'grey': a grey mode among primaries, near (but not at) their mean.
PALETTES = {
    'primary': PALETTE,
    'other': ((1.0, 0.55, 0.0), (0.55, 0.0, 1.0), (0.0, 0.6, 0.5), (1.0, 0.3, 0.65),
              (0.55, 1.0, 0.2), (0.1, 0.2, 0.6)),
    'near': ((1.0, 0.0, 0.0), (1.0, 0.45, 0.0), (1.0, 0.0, 0.45), (0.0, 0.8, 0.0),
             (0.0, 0.8, 0.45), (0.0, 0.0, 1.0)),
    'grey': ((0.5, 0.5, 0.5), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0),
             (1.0, 1.0, 0.0), (0.0, 1.0, 1.0)),
}
MAX_MODES = 6
STROKE = 0.5  # glyph intensity (in [0, 1]) from which a pixel counts as stroke
SHAPES = ('disk', 'rectangle', 'triangle', 'ring', 'cross')
_SPLIT_IDS = {'train': 0, 'validation': 1, 'test': 2}


# ---------------------------------------------------------------------------------------
# Palette, prior, tolerance.


def palette(config) -> np.ndarray:
  """The M mode colours, (M, 3) in [0, 1]: the first `data.num_modes` of `data.palette`."""
  d = config.data
  pal = np.asarray([list(c) for c in d.palette], np.float64)
  m = int(d.num_modes)
  if pal.ndim != 2 or pal.shape[1] != 3:
    raise ValueError(f'data.palette must be a list of RGB triples, got {pal.tolist()}')
  if not 2 <= m <= min(MAX_MODES, len(pal)):
    raise ValueError(f'data.num_modes must be in [2, {min(MAX_MODES, len(pal))}] (palette has '
                     f'{len(pal)} colours), got {m}')
  pal = pal[:m]
  if np.any(pal < 0) or np.any(pal > 1):
    raise ValueError(f'palette colours must be in [0, 1], got {pal.tolist()}')
  if min_gap(pal) <= 0:
    raise ValueError(f'palette colours must be distinct, got {pal.tolist()}')
  return pal


def prior(config) -> np.ndarray:
  """p over the M modes (`data.prior`; () = uniform), normalised."""
  return modes_lib.validate_prior(tuple(config.data.prior), int(config.data.num_modes))


def min_gap(pal: np.ndarray) -> float:
  """Smallest Euclidean distance between two palette colours."""
  d = np.linalg.norm(pal[:, None] - pal[None], axis=-1)
  return float(d[~np.eye(len(pal), dtype=bool)].min())


def regression_colour(pal: np.ndarray, p: np.ndarray) -> np.ndarray:
  """Where a regression to one colour per input converges under E = L2 (the task's
  default E): the prior-weighted mean of the palette, (3,). (Under E = L1 it is the
  per-channel median, which can be a palette colour itself: a valid sample of one mode,
  whose collapse coverage and the frequency error already expose.)"""
  return p @ pal


MIN_TAU = 0.05  # below this the mode rule cannot tell a mode from a regression's output
REGRESSION_MARGIN = 0.9  # tau is at most this share of a mode's distance to a regression


def tau(config) -> float:
  """The mode tolerance: `eval.mode_tau`, or (< 0) the largest tau that keeps the
  tau-balls of the modes disjoint and off what a regression outputs: half the smallest
  palette gap, and at most `REGRESSION_MARGIN` of the smallest distance from a mode to
  the palette's prior-weighted mean (`regression_colour`), so that a collapsed regression
  never counts as a valid mode (e.g. a grey mode among colours that average to nearly
  grey)."""
  t = float(config.eval.mode_tau)
  if t >= 0:
    return t
  pal, p = palette(config), prior(config)
  to_reg = float(np.linalg.norm(pal - regression_colour(pal, p), axis=-1).min())
  if REGRESSION_MARGIN * to_reg < MIN_TAU:
    raise ValueError(f'palette {pal.tolist()} with prior {p.round(3).tolist()} has a mode '
                     f'within {to_reg:.3f} of its mean colour, so a regression '
                     'would count as that mode; choose another palette, num_modes or prior')
  return min(0.5 * min_gap(pal), REGRESSION_MARGIN * to_reg)


# ---------------------------------------------------------------------------------------
# Sources.


def render_shape(rng: np.random.Generator, size: int) -> np.ndarray:
  """One filled shape (kind, size and position from `rng`) as (size, size, 1) uint8 0/255.

  Shapes span 40-80% of the image side, so every glyph has a stroke of many pixels (the
  colour estimate averages over them).
  """
  from skimage import draw
  img = np.zeros((size, size), np.uint8)
  kind = SHAPES[rng.integers(len(SHAPES))]
  extent = rng.uniform(0.4, 0.8) * size
  r = extent / 2
  cy, cx = (rng.uniform(r, size - r) for _ in range(2))
  if kind in ('disk', 'ring'):
    rr, cc = draw.disk((cy, cx), r, shape=img.shape)
    img[rr, cc] = 255
    if kind == 'ring':
      rr, cc = draw.disk((cy, cx), r * 0.55, shape=img.shape)
      img[rr, cc] = 0
  elif kind == 'rectangle':
    h, w = extent, extent * rng.uniform(0.5, 1.0)
    rr, cc = draw.rectangle((cy - h / 2, cx - w / 2), (cy + h / 2 - 1, cx + w / 2 - 1),
                            shape=img.shape)
    img[rr.astype(int), cc.astype(int)] = 255
  elif kind == 'triangle':
    angle = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3
    rr, cc = draw.polygon(cy + r * np.sin(angle), cx + r * np.cos(angle), shape=img.shape)
    img[rr, cc] = 255
  else:  # cross: two bars a third of the extent wide
    t = max(extent / 3, 2.0)
    for h, w in ((extent, t), (t, extent)):
      rr, cc = draw.rectangle((cy - h / 2, cx - w / 2), (cy + h / 2 - 1, cx + w / 2 - 1),
                              shape=img.shape)
      img[rr.astype(int), cc.astype(int)] = 255
  return img[..., None]


class ShapesSource:
  """Embedded glyphs: example i of a split is `render_shape(default_rng([seed, split, i]))`.

  Examples are {'image': (size, size, 1) uint8}. No files; deterministic per
  (seed, split, index); the splits use different streams.
  """

  def __init__(self, split: str, num_examples: int, size: int, seed: int = 0):
    base, sl = parse_split(split)
    if base not in _SPLIT_IDS:
      raise ValueError(f'split must be one of {sorted(_SPLIT_IDS)}, got {split!r}')
    self.split_id, self.size, self.seed = _SPLIT_IDS[base], int(size), int(seed)
    self.num_examples = len(range(num_examples)[sl])  # i.i.d. glyphs: a slice is a prefix

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, i: int) -> dict:
    if not 0 <= i < self.num_examples:
      raise IndexError(f'glyph {i} out of range for {self.num_examples} examples')
    return {'image': render_shape(np.random.default_rng([self.seed, self.split_id, int(i)]),
                                  self.size)}


def source(config, split: str):
  """'shapes' / 'embedded' (`ShapesSource`) or 'mnist' (offline digits)."""
  d = config.data
  name = d.name or 'shapes'
  if name in ('shapes', 'embedded'):
    base, _ = parse_split(split)
    n = d.num_train if base == 'train' else config.eval.num_test
    return ShapesSource(split, n, d.image_size, config.seed)
  if name == 'mnist':
    return load_source('mnist', split, data_dir=d.data_dir or None)
  raise ValueError(f"colour_modes data.name must be 'shapes' (or 'embedded') or 'mnist', "
                   f'got {name!r}')


# ---------------------------------------------------------------------------------------
# Examples, E, images.


def render(glyph: np.ndarray, colour: np.ndarray) -> np.ndarray:
  """y = 2 g c - 1: glyph (..., S, S, 1) in [0, 1] coloured with colour (..., 3) in [0, 1]."""
  return 2.0 * glyph * colour[..., None, None, :] - 1.0


def transform(config, protocol=None):
  """uint8 glyph -> {'x': grey glyph, 'y': the glyph in a colour drawn from p, 'mode'}."""
  del protocol  # the same rule for training and evaluation
  pal, p = palette(config), prior(config)
  resize = image.resize(config.data.image_size)

  def fn(example, rng):
    g = resize(example, None)['image'][..., :1].astype(np.float32) / 255.0
    m = int(rng.choice(len(p), p=p))
    return {'x': (2.0 * g - 1.0).astype(np.float32),
            'y': render(g, pal[m]).astype(np.float32), 'mode': np.int32(m)}
  return fn


def _loss_fn(config):
  """E of every method, by `loss.error` (cgml.ERRORS): 'l1' or 'l2' (mean squared)."""
  return cgml.ERRORS[config.loss.error]


def _to_image(x, y):
  return y


def _input_image(x):
  return x


# ---------------------------------------------------------------------------------------
# Known-mode metrics.


def sample_colours(x: np.ndarray, outputs: np.ndarray) -> np.ndarray:
  """Least-squares stroke colour of every sample (module docstring), (N, K, 3) in [0, 1].

  Args:
    x: (N, S, S, 1) inputs in [-1, 1].
    outputs: (N, K, S, S, 3) samples in [-1, 1].
  """
  g = (np.asarray(x, np.float64) + 1.0) / 2.0                 # (N, S, S, 1)
  w = np.where(g >= STROKE, g, 0.0)[:, None]                  # (N, 1, S, S, 1)
  y01 = (np.asarray(outputs, np.float64) + 1.0) / 2.0
  num = (w * y01).sum(axis=(2, 3))                            # (N, K, 3)
  den = np.maximum((w * w).sum(axis=(2, 3)), 1e-12)           # (N, 1, 1)
  return num / den


def mode_scores(config, x: np.ndarray, outputs: np.ndarray) -> dict:
  """The known-mode metrics of samples (N, K, S, S, 3) of inputs x (N, S, S, 1)."""
  pal, p, t = palette(config), prior(config), tau(config)
  colours = sample_colours(x, outputs)
  a = modes_lib.assign_nearest(colours, pal, t)
  nearest = modes_lib.assign_nearest(colours, pal, np.inf)
  g = (np.asarray(x, np.float64) + 1.0) / 2.0

  def err(assignment):
    target = render(g[:, None], pal[np.maximum(assignment, 0)])   # (N, K, S, S, 3)
    return np.abs(outputs - target).reshape(assignment.shape + (-1,)).mean(-1)

  has = a != modes_lib.NO_MODE
  fid = err(a)
  return {**modes_lib.summary(a, p),
          'fidelity': float(fid[has].mean()) if has.any() else float('nan'),
          'fidelity_nearest': float(err(nearest).mean()),
          'prior': [round(float(v), 6) for v in p], 'tau': t, 'num_inputs': int(len(x)),
          'num_samples': int(outputs.shape[1])}


def extra_eval(config, trained: dict, key, workdir: str) -> dict:
  """The known-mode metrics per method, on the first `eval.num_test` test inputs with
  K = `eval.num_samples` samples each (`image.known_mode_samples`)."""
  del workdir
  data, samples = image.known_mode_samples(TASK, config, trained, key)
  out = {}
  for name, outputs in samples.items():
    out[name] = mode_scores(config, data['x'], outputs)
    print(f'[colour_modes/{name}] ' + ', '.join(
        f'{kk} {v:.4g}' for kk, v in out[name].items() if isinstance(v, float)), flush=True)
  return out


TASK = image.ImageTask(name='colour_modes', in_channels=1, out_channels=3,
                       transform=transform, loss_fn=_loss_fn, to_image=_to_image,
                       input_image=_input_image, source=source, extra_eval=extra_eval)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains every method of `config.methods` on colour modes; generic and mode metrics."""
  return image.run(TASK, config, workdir)
