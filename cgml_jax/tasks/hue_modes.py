r"""Hue modes: colorization of natural photos whose answers are known, to measure
multimodality on real images.

Every example is a colour photo with lightness L and chroma ab in CIE-LAB, and one of M
angles theta_m, m drawn per example from the prior p (`data.prior`; () = uniform),
independently of the photo. The target is the photo's chroma rotated by theta_m in the
(a, b) plane:

  x = L / 50 - 1                      (S, S, 1)  the grey photo, as in colorize.py
  y = R(theta_m) ab / 110             (S, S, 2)  R the 2-D rotation: (a + ib) e^{i theta_m}
  E = mean (y_hat - y)^2              (cgml.ERRORS['l2'], `loss.error`)

Given x, y has exactly M answers with probabilities p. The angles are `data.angles`
(degrees; () = evenly spaced, 360 m / M). Rotating ab keeps each pixel's chroma, so every
mode is as colourful as the photo; the prior-weighted mean of the M answers, where an L2
regression collapses, is the photo's ab scaled by the complex factor
c = sum_m p_m e^{i theta_m} (`regression_factor`): 0 for evenly spaced uniform modes,
|c| = 0.44 for (0.6, 0.3, 0.1) at 0, 120, 240 degrees: desaturated.

Mode of a sample (`fit_rotation`, `sample_modes`). With complex numbers u = a + ib of the
ground truth's unrotated chroma and v of the sample (CIE units), over the chromatic pixels
W of the ground truth (|u| >= `eval.pixel_chroma`), the least-squares rotation and scale
of the sample against the truth is

  s e^{i phi} = sum_W conj(u) v / sum_W |u|^2,
  residual    = ||v - s e^{i phi} u||_W / ||v||_W.

The sample has mode m if phi is within half the smallest gap between two angles of
theta_m (circular distance, strictly), the fit is good (residual < `eval.residual_tol`)
and the sample is not desaturated (s >= `eval.min_scale`); otherwise it is a phantom
(`cgml_jax.metrics.modes.NO_MODE`). The ground truth R(theta_m) u has s = 1, phi =
theta_m and residual 0. A rule under which the regression's collapse c u would count as a
mode (|c| >= min_scale with its angle near a mode, e.g. p = (0.8, 0.2) at 0 and 180
degrees) is refused in one line before training (`mode_rule`).

On photos a sample can also miss the truth because the colorization itself is ambiguous
(a car may be red or blue in both modes): such samples fit badly (high residual) and count
as phantoms, so phantom_rate is an upper bound on mode errors and coverage a lower bound.
`scale_median` and `residual_median` report the fits themselves.

Test inputs whose ground truth is nearly grey, whose mode no sample can show, are skipped:
mean chroma over the image below `eval.min_chroma` (CIE units) or fewer than
`eval.min_chromatic_fraction` of its pixels chromatic. Their count is `num_skipped`.

`extra_eval` draws K = `eval.num_samples` samples per test input (deterministic methods: K
copies) and reports, per method, over the inputs kept, the metrics of
`cgml_jax.metrics.modes.summary` (coverage, ideal_coverage, coverage_ratio,
phantom_rate, mode_frequency_error, mode_histogram) and

  fidelity           mean E(y_hat, R(theta_a) u / 110) over the samples with a mode a: the
                     error against the ground truth rotated to the sample's own mode (nan
                     if no sample has a mode);
  fidelity_nearest   the same over all samples, each against its nearest rotated truth;
  psnr_mode_best     per input, the best PSNR of its samples with a mode against the truth
                     rotated to that mode, mean over the inputs with such a sample (nan if
                     none); images as the task shows them (L of the input with the ab,
                     sRGB, `cgml_jax.tasks.image`'s protocol);
  psnr_nearest_best  per input, the best PSNR of any sample against any of the M rotated
                     truths, mean over inputs: for a regression (one output, no mode) the
                     number to read against the others' psnr_mode_best.

Data (`data.name`): 'embedded' (the default, no files: crops of scikit-image's photos;
train crops from six photos, test crops from the two held-out photos chelsea and rocket,
so the splits share no pixels; `cgml_jax.data.sources.EmbeddedImageSource`), 'cifar10'
(the offline npz; its test split is rows 900:1000 of each class listed class by class in
turn, so the first `eval.num_test` test images hold every class) or any RGB source of
`cgml_jax.data.load_source`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import ml_collections
import numpy as np

from cgml_jax import cgml
from cgml_jax.data import color, transforms
from cgml_jax.metrics import image as image_metrics
from cgml_jax.metrics import modes as modes_lib
from cgml_jax.tasks import colorize, image

MAX_MODES = 6


# ---------------------------------------------------------------------------------------
# Angles, prior and the mode rule.


def angles(config) -> np.ndarray:
  """The M mode angles in radians, (M,): `data.angles` (degrees), or () = 360 m / M."""
  d = config.data
  m = int(d.num_modes)
  if not 2 <= m <= MAX_MODES:
    raise ValueError(f'data.num_modes must be in [2, {MAX_MODES}], got {m}')
  deg = (np.arange(m) * 360.0 / m if len(d.angles) == 0
         else np.asarray(list(d.angles), np.float64))
  if deg.shape != (m,) or not np.all(np.isfinite(deg)):
    raise ValueError(f'data.angles must hold {m} finite angles in degrees (one per mode), '
                     f'got {list(d.angles)}')
  theta = np.deg2rad(deg)
  if half_gap(theta) <= 0:
    raise ValueError(f'data.angles must be distinct modulo 360 degrees, got {deg.tolist()}')
  return theta


def prior(config) -> np.ndarray:
  """p over the M modes (`data.prior`; () = uniform), normalised."""
  return modes_lib.validate_prior(tuple(config.data.prior), int(config.data.num_modes))


def circular_distance(a, b) -> np.ndarray:
  """|a - b| on the circle, in [0, pi] (radians; broadcasts)."""
  return np.abs(np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b)))))


def half_gap(theta: np.ndarray) -> float:
  """Half the smallest circular distance between two angles (radians)."""
  d = circular_distance(theta[:, None], theta[None])
  return 0.5 * float(d[~np.eye(len(theta), dtype=bool)].min())


def regression_factor(theta: np.ndarray, p: np.ndarray) -> complex:
  """c = sum_m p_m e^{i theta_m}: the prior-weighted mean of the M answers is c u, where
  a regression under E = L2 collapses (u the photo's chroma as a complex number)."""
  return complex((np.asarray(p) * np.exp(1j * np.asarray(theta))).sum())


@dataclasses.dataclass(frozen=True)
class ModeRule:
  """The mode rule and its thresholds (module docstring); angles in radians, chroma in
  CIE ab units."""
  theta: np.ndarray
  prior: np.ndarray
  half_gap: float
  pixel_chroma: float
  min_chroma: float
  min_chromatic_fraction: float
  residual_tol: float
  min_scale: float


def mode_rule(config) -> ModeRule:
  """The rule of `config` (`data.num_modes`, `data.angles`, `data.prior` and the `eval`
  thresholds).

  Raises:
    ValueError: on bad angles, prior or thresholds, or when the regression's collapse
      (`regression_factor`) would count as a mode.
  """
  theta, p, e = angles(config), prior(config), config.eval
  rule = ModeRule(theta=theta, prior=p, half_gap=half_gap(theta),
                  pixel_chroma=float(e.pixel_chroma), min_chroma=float(e.min_chroma),
                  min_chromatic_fraction=float(e.min_chromatic_fraction),
                  residual_tol=float(e.residual_tol), min_scale=float(e.min_scale))
  if not (rule.pixel_chroma >= 0 and rule.min_chroma >= 0
          and 0 <= rule.min_chromatic_fraction <= 1):
    raise ValueError('eval.pixel_chroma and eval.min_chroma must be >= 0 and '
                     'eval.min_chromatic_fraction in [0, 1], got '
                     f'{rule.pixel_chroma}, {rule.min_chroma}, {rule.min_chromatic_fraction}')
  if not (rule.residual_tol > 0 and rule.min_scale > 0):
    raise ValueError(f'eval.residual_tol and eval.min_scale must be > 0, got '
                     f'{rule.residual_tol} and {rule.min_scale}')
  c = regression_factor(theta, p)
  if abs(c) >= rule.min_scale and circular_distance(np.angle(c), theta).min() < rule.half_gap:
    raise ValueError(
        f'angles {np.rad2deg(theta).round(1).tolist()} with prior {p.round(3).tolist()} '
        f'average to {abs(c):.3f} x the photo rotated by {np.rad2deg(np.angle(c)):.1f} '
        f'degrees, which eval.min_scale = {rule.min_scale} counts as a mode, so a regression '
        'would score as a sampler; raise eval.min_scale above it or choose other angles, '
        'num_modes or prior')
  return rule


# ---------------------------------------------------------------------------------------
# Examples, E, images.


def rotate(ab: np.ndarray, theta) -> np.ndarray:
  """ab (..., 2) rotated by theta (radians, broadcastable to ab.shape[:-1]) in the (a, b)
  plane: (a + ib) e^{i theta}, in ab's float dtype."""
  ab = np.asarray(ab)
  z = (ab[..., 0] + 1j * ab[..., 1]) * np.exp(1j * np.asarray(theta))
  dtype = ab.dtype if ab.dtype.kind == 'f' else np.float64
  return np.stack([z.real, z.imag], axis=-1).astype(dtype)


def transform(config, protocol=None):
  """uint8 RGB 'image' -> {'x': L, 'y': the ab rotated by a mode drawn from p, 'mode'};
  evaluation examples (protocol set) also keep the unrotated 'ab' the mode rule reads.

  Random flips (`data.flip`) augment training only.
  """
  theta, p = angles(config), prior(config)
  mode_rule(config)  # a rule that cannot tell the regression from a mode fails before training
  steps = [image.resize(config.data.image_size)]
  if protocol is None and config.data.get('flip', False):
    steps.append(transforms.random_flip())
  lab = transforms.compose(*steps, transforms.colorization())

  def fn(example, rng):
    ex = lab(example, rng)
    m = int(rng.choice(len(p), p=p))
    out = {'x': ex['x'], 'y': rotate(ex['y'], theta[m]), 'mode': np.asarray(m, np.int32)}
    if protocol is not None:
      out['ab'] = ex['y']
    return out
  return fn


def _loss_fn(config):
  """E of every method, by `loss.error` (cgml.ERRORS): 'l2' (mean squared) or 'l1'."""
  return cgml.ERRORS[config.loss.error]


# ---------------------------------------------------------------------------------------
# Known-mode metrics.


def _complex(ab) -> np.ndarray:
  """(..., 2) scaled ab -> (...) complex a + ib in CIE units."""
  ab = np.asarray(ab, np.float64) * color.AB_SCALE
  return ab[..., 0] + 1j * ab[..., 1]


def fit_rotation(ab: np.ndarray, outputs: np.ndarray, pixel_chroma: float) -> dict:
  """The least-squares rotation and scale of every sample against its unrotated truth.

  Args:
    ab: (N, S, S, 2) the ground truth's unrotated ab / 110.
    outputs: (N, K, S, S, 2) samples, ab / 110.
    pixel_chroma: the pixels fitted are those where the truth's chroma is >= this (CIE).

  Returns:
    {'scale': s, 'angle': phi (radians), 'residual'}, each (N, K); residual is inf for a
    sample with no chroma on the fitted pixels, and every entry is nan for an input with
    no such pixel.
  """
  u = _complex(ab)[:, None]                                   # (N, 1, S, S)
  v = _complex(outputs)                                       # (N, K, S, S)
  w = np.abs(u) >= pixel_chroma
  axes = (2, 3)
  uu = (w * np.abs(u) ** 2).sum(axes)                         # (N, 1)
  with np.errstate(invalid='ignore', divide='ignore'):
    c = (w * np.conj(u) * v).sum(axes) / uu                   # (N, K)
    vv = np.sqrt((w * np.abs(v) ** 2).sum(axes))
    res = np.sqrt((w * np.abs(v - c[..., None, None] * u) ** 2).sum(axes)) / vv
  res = np.where(vv > 0, res, np.inf)
  res = np.where(uu > 0, res, np.nan)
  return {'scale': np.abs(c), 'angle': np.angle(c), 'residual': res}


def grey_inputs(rule: ModeRule, ab: np.ndarray) -> np.ndarray:
  """(N,) bool: inputs whose truth is nearly grey (mean chroma below `min_chroma`, or
  fewer than `min_chromatic_fraction` of the pixels, or none, at `pixel_chroma` or more)."""
  chroma = np.abs(_complex(ab)).reshape(len(ab), -1)
  chromatic = (chroma >= rule.pixel_chroma).mean(axis=1)
  return ((chroma.mean(axis=1) < rule.min_chroma)
          | (chromatic < rule.min_chromatic_fraction) | (chromatic == 0))


def sample_modes(rule: ModeRule, ab: np.ndarray, outputs: np.ndarray) -> np.ndarray:
  """The mode of every sample (module docstring), (N, K) in {NO_MODE, 0, ..., M - 1}.

  Args:
    rule: `mode_rule(config)`.
    ab: (N, S, S, 2) the ground truth's unrotated ab / 110.
    outputs: (N, K, S, S, 2) samples, ab / 110.
  """
  fit = fit_rotation(ab, outputs, rule.pixel_chroma)
  d = circular_distance(fit['angle'][..., None], rule.theta)  # (N, K, M)
  with np.errstate(invalid='ignore'):
    ok = ((d.min(axis=-1) < rule.half_gap) & (fit['residual'] < rule.residual_tol)
          & (fit['scale'] >= rule.min_scale))
  return np.where(ok, d.argmin(axis=-1), modes_lib.NO_MODE)


def _errors_and_psnr(config, x, ab, outputs, theta):
  """E and PSNR of every sample against every rotated truth, each (N, K, M)."""
  e_fn = _loss_fn(config)
  n, k = outputs.shape[:2]
  flat = outputs.reshape((n * k,) + outputs.shape[2:])
  xk = np.repeat(x, k, axis=0)
  shown = colorize.to_image(xk, flat)
  errs, psnrs = [], []
  for t in theta:
    target = np.repeat(rotate(ab, t), k, axis=0).astype(np.float32)
    errs.append(np.asarray(e_fn(jnp.asarray(flat), {'y': jnp.asarray(target)})))
    psnrs.append(np.asarray(image_metrics.psnr(shown, colorize.to_image(xk, target))))
  return (np.stack(errs, -1).reshape(n, k, -1).astype(np.float64),
          np.stack(psnrs, -1).reshape(n, k, -1).astype(np.float64))


def mode_scores(config, x: np.ndarray, ab: np.ndarray, outputs: np.ndarray) -> dict:
  """The known-mode metrics (module docstring) of samples (N, K, S, S, 2) of inputs x
  (N, S, S, 1) with unrotated truth ab (N, S, S, 2); grey inputs are left out."""
  rule = mode_rule(config)
  outputs = np.asarray(outputs)
  skip = grey_inputs(rule, ab)
  x, ab, outputs = x[~skip], ab[~skip], outputs[~skip]
  out = {'num_inputs': int(len(x)), 'num_skipped': int(skip.sum()),
         'num_samples': int(outputs.shape[1]),
         'angles': [round(float(v), 4) for v in np.rad2deg(rule.theta)],
         'prior': [round(float(v), 6) for v in rule.prior],
         'half_gap': round(float(np.rad2deg(rule.half_gap)), 4),
         'pixel_chroma': rule.pixel_chroma, 'min_chroma': rule.min_chroma,
         'min_chromatic_fraction': rule.min_chromatic_fraction,
         'residual_tol': rule.residual_tol, 'min_scale': rule.min_scale}
  if not len(x):
    return out
  fit = fit_rotation(ab, outputs, rule.pixel_chroma)
  a = sample_modes(rule, ab, outputs)
  has = a != modes_lib.NO_MODE
  err, psnr = _errors_and_psnr(config, x, ab, outputs, rule.theta)
  own = np.maximum(a, 0)[..., None]
  err_own = np.take_along_axis(err, own, -1)[..., 0]
  psnr_own = np.where(has, np.take_along_axis(psnr, own, -1)[..., 0], -np.inf).max(axis=1)
  with_mode = has.any(axis=1)
  return {**modes_lib.summary(a, rule.prior),
          'fidelity': float(err_own[has].mean()) if has.any() else float('nan'),
          'fidelity_nearest': float(err.min(axis=-1).mean()),
          'psnr_mode_best': (float(psnr_own[with_mode].mean()) if with_mode.any()
                             else float('nan')),
          'psnr_nearest_best': float(psnr.max(axis=(1, 2)).mean()),
          'scale_median': float(np.median(fit['scale'])),
          'residual_median': float(np.median(fit['residual'])), **out}


# Entries of `mode_scores` that restate the rule's settings, not measurements.
_SETTINGS = ('half_gap', 'pixel_chroma', 'min_chroma', 'min_chromatic_fraction',
             'residual_tol', 'min_scale')


def extra_eval(config, trained: dict, key, workdir: str) -> dict:
  """The known-mode metrics per method, on the first `eval.num_test` test inputs with
  K = `eval.num_samples` samples each (`image.known_mode_samples`)."""
  del workdir
  data, samples = image.known_mode_samples(TASK, config, trained, key)
  out = {}
  for name, outputs in samples.items():
    out[name] = mode_scores(config, data['x'], data['ab'], outputs)
    print(f'[hue_modes/{name}] ' + ', '.join(
        f'{kk} {v:.4g}' for kk, v in out[name].items()
        if isinstance(v, float) and kk not in _SETTINGS), flush=True)
  return out


TASK = image.ImageTask(name='hue_modes', in_channels=1, out_channels=2,
                       transform=transform, loss_fn=_loss_fn, to_image=colorize.to_image,
                       input_image=colorize.input_image, extra_eval=extra_eval,
                       extra_scores=colorize.chroma_scores,
                       extra_summary=colorize.colorfulness)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains every method of `config.methods` on hue modes; generic and mode metrics."""
  return image.run(TASK, config, workdir)
