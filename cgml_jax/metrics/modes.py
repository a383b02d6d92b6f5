r"""Known-mode metrics: how K samples per input spread over the modes a task knows exist.

For tasks whose answers form a known, finite set of modes (the colour-modes task, the box
setting of corrupted MNIST, the toy), each sample is first assigned a mode, or none:

  assignment   a (N, K) int array; a[i, k] in {0, ..., M - 1} is the mode of the k-th
               sample of input i, NO_MODE (-1) a phantom (a sample near no mode). How a
               task assigns is its own rule (`assign_nearest` is the usual one: the
               nearest mode centre if it lies within a tolerance tau, else NO_MODE).

Then, for N inputs with K samples each and a data prior p over the M modes:

  coverage               fraction of inputs whose K samples contain every one of the M
                         modes (1 needs K >= M; a method with one output per input, K
                         copies of it, scores 0 whenever M >= 2).
  phantom_rate           fraction of the N K samples assigned to no mode.
  mode_frequency_error   total-variation distance between the samples' outcome histogram
                         and the data's, over M + 1 outcomes (the M modes and 'none'):
                           TV = 1/2 (sum_m |h_m - p_m| + h_none),
                         h the fractions of all N K samples; the data never produce a
                         phantom, so TV = 0 needs no phantoms and the prior's frequencies,
                         and all-phantom samples give 1. While no mode gets more than its
                         prior share TV equals phantom_rate; over-produced modes add to it.
  ideal_coverage         the coverage of a sampler that draws each of the K samples
                         i.i.d. from the prior p itself (`ideal_coverage`): with a
                         skewed prior or K near M even a perfect sampler misses modes, so
                         coverage is read against it (coverage_ratio = coverage / ideal).
  fidelity               (task-specific, see e.g. `cgml_jax.tasks.colour_modes`) each
                         sample's error against the ground truth re-rendered in that
                         sample's own mode, so shape errors are kept apart from the choice
                         of mode.

Pure numpy; every function takes plain arrays.
"""

from __future__ import annotations

import numpy as np

NO_MODE = -1


def validate_prior(prior, num_modes: int) -> np.ndarray:
  """The prior as a float array summing to 1; () or None = uniform over `num_modes`.

  Raises:
    ValueError: on a wrong length, negative or non-finite entries, or a zero sum.
  """
  if num_modes < 1:
    raise ValueError(f'num_modes must be >= 1, got {num_modes}')
  if prior is None or len(prior) == 0:
    return np.full(num_modes, 1.0 / num_modes)
  p = np.asarray(list(prior), np.float64)
  if p.shape != (num_modes,):
    raise ValueError(f'prior must have {num_modes} entries (one per mode), got {p.tolist()}')
  if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
    raise ValueError(f'prior must be finite, non-negative and not all zero, got {p.tolist()}')
  return p / p.sum()


def assign_nearest(features: np.ndarray, centres: np.ndarray, tau: float) -> np.ndarray:
  """Each sample's nearest mode centre if within `tau` (Euclidean), else NO_MODE.

  Args:
    features: (N, K, D) one feature vector per sample (e.g. a mean stroke colour).
    centres: (M, D) mode centres shared by all inputs, or (N, M, D) per input.
    tau: tolerance; a sample at distance >= tau from every centre is a phantom.

  Returns:
    (N, K) int assignment in {NO_MODE, 0, ..., M - 1}.
  """
  features = np.asarray(features, np.float64)
  centres = np.asarray(centres, np.float64)
  if centres.ndim == 2:
    centres = np.broadcast_to(centres[None], (features.shape[0],) + centres.shape)
  dist = np.linalg.norm(features[:, :, None, :] - centres[:, None, :, :], axis=-1)  # N K M
  nearest = dist.argmin(axis=-1)
  return np.where(dist.min(axis=-1) < tau, nearest, NO_MODE)


def _check(assignment, num_modes: int) -> np.ndarray:
  a = np.asarray(assignment)
  if a.ndim != 2:
    raise ValueError(f'assignment must be (N inputs, K samples), got shape {a.shape}')
  if a.size and (a.min() < NO_MODE or a.max() >= num_modes):
    raise ValueError(f'assignment entries must be in [{NO_MODE}, {num_modes - 1}]')
  return a


def coverage(assignment, num_modes: int) -> float:
  """Fraction of inputs (rows) whose samples contain every mode 0..M-1."""
  a = _check(assignment, num_modes)
  hit = np.stack([(a == m).any(axis=1) for m in range(num_modes)], axis=1)  # (N, M)
  return float(hit.all(axis=1).mean())


def phantom_rate(assignment) -> float:
  """Fraction of samples assigned to no mode."""
  return float((np.asarray(assignment) == NO_MODE).mean())


def mode_histogram(assignment, num_modes: int) -> np.ndarray:
  """Fractions of all samples in each mode, (M,) (the phantoms' share is 1 - sum)."""
  a = _check(assignment, num_modes)
  return np.array([(a == m).mean() for m in range(num_modes)])


def mode_frequency_error(assignment, prior) -> float:
  """Total-variation distance between the samples' outcomes (M modes and 'none') and the
  prior's (which puts no mass on 'none'); see the module docstring."""
  p = validate_prior(prior, len(prior))
  h = mode_histogram(assignment, len(p))
  return float(0.5 * (np.abs(h - p).sum() + (1.0 - h.sum())))


def ideal_coverage(prior, num_samples: int) -> float:
  r"""P(K i.i.d. draws from p contain every mode), by inclusion-exclusion:

    sum over subsets S of the modes of (-1)^|S| (1 - p(S))^K.

  Args:
    prior: p over the M modes (normalised here).
    num_samples: K.
  """
  p = validate_prior(prior, len(prior))
  m = len(p)
  total = 0.0
  for bits in range(1 << m):
    members = [i for i in range(m) if bits >> i & 1]
    total += (-1) ** len(members) * (1.0 - p[members].sum()) ** num_samples
  return float(min(max(total, 0.0), 1.0))


def summary(assignment, prior) -> dict[str, float]:
  """coverage (with the prior's ideal and their ratio), phantom_rate,
  mode_frequency_error and the histogram of an assignment (N inputs, K samples)."""
  p = validate_prior(prior, len(prior))
  cov = coverage(assignment, len(p))
  ideal = ideal_coverage(p, np.asarray(assignment).shape[1])
  return {'coverage': cov, 'ideal_coverage': ideal,
          'coverage_ratio': cov / ideal if ideal > 0 else float('nan'),
          'phantom_rate': phantom_rate(assignment),
          'mode_frequency_error': mode_frequency_error(assignment, p),
          'mode_histogram': [round(float(v), 6) for v in mode_histogram(assignment, len(p))]}
