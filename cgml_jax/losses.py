r"""Image error functions E for cGML: `loss_fn(y_hat, batch) -> (B,)` per-example errors.

Same contract as `cgml.l1_error`: the z step differentiates the sum over the batch, so the
gradient of example i must come from example i alone (see `colorization_loss`, form
'batch', for the one term that reads a batch statistic, held fixed).

  masked_l1             image completion: mean |y_hat - y| over the hole batch['mask']
  colorization_loss     E = |a - a_hat| + |b - b_hat| + a colour-balance term
                            (per-image or batch histogram KL, or Zhang et al.'s rebalancing)
  soft_histogram        the differentiable histogram behind the KL terms
  ab_histogram, rebalance_weights   the training set's ab prior and its rebalancing weights
  high_frequency_energy the speckle measure of the tests
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cgml_jax import cgml

LossFn = Callable[[jax.Array, dict], jax.Array]
_EPS = 1e-8


def masked_l1(y_hat: jax.Array, batch: dict) -> jax.Array:
  """Mean absolute error inside the hole: sum(|y_hat - y| * m) / (sum(m) * C).

  Args:
    y_hat: (B, H, W, C) prediction.
    batch: 'y' (B, H, W, C) target and 'mask' (B, H, W, 1) or (B, H, W, C), 1 in the hole.

  Returns:
    (B,) errors; an example with an empty mask scores 0.
  """
  if 'mask' not in batch:
    raise KeyError(f"masked_l1 needs batch['mask']; the batch has {sorted(batch)}")
  if batch['y'].shape != y_hat.shape:
    raise ValueError(f"y_hat {y_hat.shape} and batch['y'] {batch['y'].shape} differ")
  return cgml.l1_error(y_hat, batch)


def soft_histogram(values: jax.Array, bins: int = 32, low: float = -1.0,
                   high: float = 1.0, kernel: str = 'triangular',
                   sigma: float | None = None) -> jax.Array:
  r"""Differentiable histogram of the last axis: each value spreads unit mass over bins.

  Bin centres c_k = low + (k + 1/2) * w, w = (high - low) / bins. Values are clipped to
  [c_0, c_{K-1}] (so outliers count in the edge bins).

  * 'triangular': linear interpolation between the two nearest centres, weight
    max(0, 1 - |v - c_k| / w). Uniform data on [low, high] gives exactly 1/K per bin.
  * 'gaussian': weights exp(-(v - c_k)^2 / (2 sigma^2)), sigma = w / 2 by default,
    normalised per value.

  Args:
    values: (..., N) values.
    bins: K.
    low, high: histogram range.
    kernel: 'triangular' or 'gaussian'.
    sigma: Gaussian width (only for kernel='gaussian').

  Returns:
    (..., K) probabilities summing to 1 along the last axis.
  """
  if bins < 2 or not high > low:
    raise ValueError(f'need bins >= 2 and high > low, got bins={bins}, range=({low}, {high})')
  w = (high - low) / bins
  centres = low + (jnp.arange(bins, dtype=values.dtype) + 0.5) * w
  v = jnp.clip(values, centres[0], centres[-1])[..., None]
  if kernel == 'triangular':
    weights = jnp.maximum(0.0, 1.0 - jnp.abs(v - centres) / w)
  elif kernel == 'gaussian':
    s = w / 2 if sigma is None else sigma
    weights = jnp.exp(-0.5 * ((v - centres) / s) ** 2)
  else:
    raise ValueError(f"kernel must be 'triangular' or 'gaussian', got {kernel!r}")
  weights = weights / jnp.maximum(weights.sum(axis=-1, keepdims=True), _EPS)
  return weights.mean(axis=-2)


def kl_to_uniform(p: jax.Array) -> jax.Array:
  """KL(p || U) = sum_k p_k log(K p_k) over the last axis (0 log 0 = 0); shape (...)."""
  k = p.shape[-1]
  safe = jnp.where(p > 0, p, 1.0)
  return jnp.sum(jnp.where(p > 0, p * jnp.log(k * safe), 0.0), axis=-1)


def ab_histogram(ab: np.ndarray, bins: int = 32, low: float = -1.0,
                 high: float = 1.0) -> np.ndarray:
  """Joint histogram of scaled (a, b) pairs on a bins x bins grid (numpy, no gradient).

  Args:
    ab: (..., 2) scaled chroma values; values outside [low, high] count in the edge bins.
    bins: bins per axis.
    low, high: range of each axis.

  Returns:
    (bins, bins) probabilities (rows: a, columns: b) summing to 1.
  """
  idx = _bin_index(np.asarray(ab, np.float64).reshape(-1, 2), bins, low, high)
  counts = np.zeros((bins, bins))
  np.add.at(counts, (idx[:, 0], idx[:, 1]), 1.0)
  return counts / max(counts.sum(), 1.0)


def _bin_index(v, bins: int, low: float, high: float):
  """Nearest-grid bin of each value (numpy or jax), clipped to [0, bins - 1]."""
  xp = jnp if isinstance(v, jax.Array) else np
  i = xp.floor((v - low) / ((high - low) / bins)).astype(xp.int32)
  return xp.clip(i, 0, bins - 1)


def rebalance_weights(prior: np.ndarray, mix: float = 0.5, sigma: float = 5.0 / 110.0,
                      low: float = -1.0, high: float = 1.0) -> np.ndarray:
  r"""Class-rebalancing weights of Zhang et al. (2016, Eq. 3-4) on an ab grid.

    p~ = G_sigma * p,   w ~ ((1 - mix) p~ + mix / Q)^-1,   sum_q p~_q w_q = 1

  with Q the number of bins the data uses (p > 0, Zhang's in-gamut bins). Rare (saturated)
  colours get weights above 1, the common near-grey ones below 1; mix = 1 gives w = 1.

  Args:
    prior: (bins, bins) empirical ab distribution of the training set (`ab_histogram`).
    mix: lambda of Zhang et al., the share of the uniform distribution (0.5 there).
    sigma: Gaussian smoothing width in scaled ab units (5 / 110: Zhang's 5 ab units).
    low, high: range of each axis of the grid.

  Returns:
    (bins, bins) float32 weights.
  """
  if not 0 < mix <= 1:
    raise ValueError(f'mix must be in (0, 1], got {mix}')
  p = np.asarray(prior, np.float64)
  bins = p.shape[0]
  s = sigma / ((high - low) / bins)  # in bins
  r = max(1, int(np.ceil(3 * s)))
  g = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
  g /= g.sum()
  smooth = np.apply_along_axis(lambda v: np.convolve(v, g, mode='same'), 0, p)
  smooth = np.apply_along_axis(lambda v: np.convolve(v, g, mode='same'), 1, smooth)
  smooth /= smooth.sum()
  q = max(int((p > 0).sum()), 1)
  w = 1.0 / ((1 - mix) * smooth + mix / q)
  return (w / (smooth * w).sum()).astype(np.float32)


HIST_FORMS = ('none', 'per_image', 'batch', 'rebalance')


def colorization_loss(lam: float = 0.1, bins: int = 32, kernel: str = 'triangular',
                      low: float = -1.0, high: float = 1.0, form: str = 'none',
                      weights: np.ndarray | None = None) -> LossFn:
  r"""Factory of the colorization error (paper Sec. 5.2, colorization).

  The paper adds lam (KL(hist(a_hat) || U) + KL(hist(b_hat) || U)) to the L1 on ab because
  the ab distribution of a natural DATASET is imbalanced (mostly near grey). `form` says
  which histogram is meant and how the imbalance is countered:

  * 'none': E = mean|a - a_hat| + mean|b - b_hat| (the L1 of the paper without the term).
  * 'per_image': + lam * KL of each example's own histogram. Each output is pushed to use
    the whole colour range, and the cheapest way is a scatter of saturated pixels: on
    natural images it paints a regular grid of coloured dots. Kept for comparison only.
  * 'batch': the KL of the batch histogram p_bar = mean_i hist_i, the dataset-level
    imbalance the paper names, estimated on the batch. E is per-example, so example i gets
    the share lam * <hist_i, sg(log(K p_bar))> (sg = stop_gradient). Its batch mean equals
    lam * KL(p_bar || U) and its gradient with respect to any output equals the gradient of
    lam * KL(p_bar || U) (the +1 of d(p log p) vanishes because every hist_i sums to 1),
    so the (H, G) step sees the batch KL exactly. In the z step (which differentiates the
    batch sum) the gradient with respect to z_i only flows through example i's own output:
    the other examples enter as a fixed cost per colour bin, not through their gradients.
    The term is linear in hist_i, so it gives an image no reason to spread its colours.
  * 'rebalance': Zhang et al.'s class rebalancing carried over to the L1: each pixel's
    error is weighted by w(ab_gt) from `rebalance_weights` (rare colours weigh more):
    E = mean_px w(a, b) (|a - a_hat| + |b - b_hat|). The weights depend on the target only,
    so E stays a function of example i alone and is minimised by y_hat = y for every
    image: it can shift which of the plausible colours the L1 prefers (towards the rarer,
    more saturated one) but cannot reward speckle. lam is unused.

  Args:
    lam: weight lambda of the histogram terms ('per_image' and 'batch'; 0 gives the L1).
    bins: histogram bins K per channel.
    kernel: 'triangular' or 'gaussian' (see `soft_histogram`).
    low, high: range of the scaled ab values (ab / 110 in [-1, 1]).
    form: one of HIST_FORMS.
    weights: (G, G) rebalancing weights on an ab grid over [low, high]^2 (form
      'rebalance' only).

  Returns:
    loss_fn(y_hat, batch) -> (B,), with y_hat and batch['y'] (B, H, W, 2) = scaled (a, b).
  """
  if form not in HIST_FORMS:
    raise ValueError(f'form must be one of {HIST_FORMS}, got {form!r}')
  if (form == 'rebalance') != (weights is not None):
    raise ValueError("weights are needed by form='rebalance' and only by it")
  if weights is not None:
    weights = jnp.asarray(weights, jnp.float32)
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
      raise ValueError(f'weights must be a square (G, G) grid, got {weights.shape}')

  def loss_fn(y_hat: jax.Array, batch: dict) -> jax.Array:
    y = batch['y']
    if y_hat.shape != y.shape or y.shape[-1] != 2:
      raise ValueError(f"colorization_loss needs y_hat and batch['y'] of shape (B, H, W, 2), "
                       f"got {y_hat.shape} and {y.shape}")
    b = y.shape[0]
    err = jnp.abs(y_hat - y).reshape(b, -1, 2).sum(axis=-1)          # (B, H*W)
    if form == 'rebalance':
      idx = _bin_index(jnp.asarray(y).reshape(b, -1, 2), weights.shape[0], low, high)
      return (weights[idx[..., 0], idx[..., 1]] * err).mean(axis=1)
    l1 = err.mean(axis=1)
    if form == 'none' or lam == 0:
      return l1
    chans = jnp.moveaxis(y_hat.reshape(b, -1, 2), -1, 1)          # (B, 2, H*W)
    hist = soft_histogram(chans, bins, low, high, kernel)          # (B, 2, K)
    if form == 'per_image':
      return l1 + lam * kl_to_uniform(hist).sum(axis=-1)
    p_bar = hist.mean(axis=0)                                      # (2, K)
    cost = jax.lax.stop_gradient(jnp.log(bins * jnp.maximum(p_bar, _EPS)))
    return l1 + lam * (hist * cost).sum(axis=(-2, -1))
  return loss_fn


def high_frequency_energy(ab: jax.Array) -> jax.Array:
  """Mean squared 4-neighbour Laplacian of each channel (interior pixels): speckle energy.

  Args:
    ab: (B, H, W, C) images.

  Returns:
    (B,) energies; 0 for a constant image.
  """
  lap = (4 * ab[:, 1:-1, 1:-1] - ab[:, :-2, 1:-1] - ab[:, 2:, 1:-1] - ab[:, 1:-1, :-2]
         - ab[:, 1:-1, 2:])
  return jnp.mean(lap ** 2, axis=(1, 2, 3))
