r"""Image error functions E for cGML: `loss_fn(y_hat, batch) -> (B,)` per-example errors.

Same contract as `cgml.l1_error`: the z step differentiates the sum over the batch, so the
error of example i must depend on example i alone (no batch statistics).

  masked_l1             image completion: mean |y_hat - y| over the hole batch['mask']
  colorization_loss     E = |a - a_hat| + |b - b_hat|
                            + lam (KL(hist(a_hat) || U) + KL(hist(b_hat) || U))
  soft_histogram        the differentiable histogram behind it
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

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
  y, m = batch['y'], batch['mask'].astype(y_hat.dtype)
  if y.shape != y_hat.shape:
    raise ValueError(f"y_hat {y_hat.shape} and batch['y'] {y.shape} differ")
  m = jnp.broadcast_to(m, y.shape)
  err = (jnp.abs(y_hat - y) * m).reshape(y.shape[0], -1).sum(axis=1)
  return err / jnp.maximum(m.reshape(y.shape[0], -1).sum(axis=1), 1.0)


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


def colorization_loss(lam: float = 0.1, bins: int = 32, kernel: str = 'triangular',
                      low: float = -1.0, high: float = 1.0) -> LossFn:
  r"""Factory of the colorization error (paper Sec. 4, colorization).

    E = mean|a - a_hat| + mean|b - b_hat| + lam (KL(hist(a_hat) || U) + KL(hist(b_hat) || U))

  hist is `soft_histogram` of one example's predicted channel over all its pixels, so the
  KL terms push each output towards using the whole colour range.

  Args:
    lam: weight lambda of the histogram terms (0 gives the plain L1).
    bins: histogram bins K.
    kernel: 'triangular' or 'gaussian' (see `soft_histogram`).
    low, high: range of the scaled ab values (ab / 110 in [-1, 1]).

  Returns:
    loss_fn(y_hat, batch) -> (B,), with y_hat and batch['y'] (B, H, W, 2) = scaled (a, b).
  """
  def loss_fn(y_hat: jax.Array, batch: dict) -> jax.Array:
    y = batch['y']
    if y_hat.shape != y.shape or y.shape[-1] != 2:
      raise ValueError(f"colorization_loss needs y_hat and batch['y'] of shape (B, H, W, 2), "
                       f"got {y_hat.shape} and {y.shape}")
    b = y.shape[0]
    l1 = jnp.abs(y_hat - y).reshape(b, -1, 2).mean(axis=1).sum(axis=-1)
    if lam == 0:
      return l1
    chans = jnp.moveaxis(y_hat.reshape(b, -1, 2), -1, 1)          # (B, 2, H*W)
    hist = soft_histogram(chans, bins, low, high, kernel)          # (B, 2, K)
    return l1 + lam * kl_to_uniform(hist).sum(axis=-1)
  return loss_fn
