r"""Representation probe (cGML paper Table 5 / Table 4): a linear classifier on frozen features.

The frozen encoder H of a trained model maps labelled inputs to bottleneck features (the
flattened last feature map of H, `encoder_features`); a multinomial logistic regression is
fitted on the probe-train features and its accuracy is reported on the probe-test
features (`linear_probe`). The same probe scores an untrained encoder of the same
architecture (the floor: what the architecture gives without training).

Classifier: features standardised with the probe-train mean and standard deviation;
argmin_{W,b} mean cross-entropy + l2 ||W||^2 by full-batch L-BFGS (`optax.lbfgs`, a fixed
number of iterations); l2 is the value of `l2_grid` with the best accuracy on a seeded
held-out fraction `val_frac` of the probe-train rows, then the classifier is refitted on
all probe-train rows with that l2.

Used by the spectral3d task (ModelNet10, `cgml_jax.tasks.spectral3d`) and by the
comparison command (`cgml_jax.compare`, `config.probe.*`).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

# ---------------------------------------------------------------------------------------
# Features of a frozen encoder.


def chunked(fn: Callable, x: np.ndarray, batch_size: int) -> np.ndarray:
  """fn over fixed-size chunks of x (the last one padded, so one compilation).

  Args:
    fn: (batch_size, ...) jax array -> (batch_size, ...) array.
    x: (N, ...) inputs.
    batch_size: chunk size.

  Returns:
    (N, ...) the concatenated outputs, padding dropped.
  """
  if len(x) == 0:
    raise ValueError('chunked: no inputs')
  outs = []
  for start in range(0, len(x), batch_size):
    part = x[start:start + batch_size]
    pad = batch_size - len(part)
    if pad:
      part = np.concatenate([part, np.repeat(part[-1:], pad, 0)], 0)
    outs.append(np.asarray(fn(jnp.asarray(part)))[:batch_size - pad])
  return np.concatenate(outs, 0)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _bottleneck(encoder, variables, x, preprocess=None):
  if preprocess is not None:
    x = preprocess(x)
  h = encoder.apply(variables, x, train=False)
  last = jax.tree.leaves(h)[-1] if isinstance(h, (tuple, list)) else h
  return last.reshape(last.shape[0], -1)


def features(encoder, variables: dict, x: np.ndarray, batch_size: int,
             preprocess: Callable | None = None) -> np.ndarray:
  """Flattened bottleneck (the last feature map of H(x)), (N, D), in eval mode.

  Args:
    encoder: the Flax module H (returns a tuple of feature maps or one array).
    variables: {'params': ..., other collections}.
    x: (N, ...) inputs in H's format, or raw inputs that `preprocess` maps to it.
    batch_size: inputs per call.
    preprocess: optional jnp function applied to each chunk inside the compiled call
      (hashable: pass the same object each time, or it recompiles).
  """
  return chunked(lambda xx: _bottleneck(encoder, variables, xx, preprocess), x, batch_size)


def state_encoder(state) -> tuple:
  """(H, its variables) of any trained state of the project (cGML, L1, GAN peers).

  The state needs `encoder`, `params['encoder']` and `stats['encoder']`.
  """
  return state.encoder, {'params': state.params['encoder'], **state.stats['encoder']}


def encoder_features(state, x: np.ndarray, batch_size: int,
                     preprocess: Callable | None = None) -> np.ndarray:
  """`features` of the frozen H of a trained state (see `state_encoder`)."""
  return features(*state_encoder(state), x, batch_size, preprocess)


# ---------------------------------------------------------------------------------------
# Linear probe: multinomial logistic regression with L2, full-batch L-BFGS.


@functools.partial(jax.jit, static_argnums=(4, 5))
def _fit_logreg(x, y, weight, l2, num_classes: int, steps: int):
  """argmin_W,b  sum_i w_i CE_i / sum_i w_i + l2 ||W||^2 by `steps` L-BFGS iterations.

  Rows with weight 0 (held out) do not count; weights instead of a row subset keep one
  compilation per feature dimension.
  """
  params = (jnp.zeros((x.shape[1], num_classes), x.dtype), jnp.zeros((num_classes,), x.dtype))

  def loss(p):
    logits = x @ p[0] + p[1]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(weight * ce) / jnp.sum(weight) + l2 * jnp.sum(jnp.square(p[0]))

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def body(carry, _):
    p, s = carry
    v, g = value_and_grad(p, state=s)
    u, s = opt.update(g, s, p, value=v, grad=g, value_fn=loss)
    return (optax.apply_updates(p, u), s), v

  (params, _), _ = jax.lax.scan(body, (params, opt.init(params)), length=steps)
  return params


def _accuracy(params, x, y) -> float:
  return float(np.mean(np.argmax(x @ np.asarray(params[0]) + np.asarray(params[1]), 1) == y))


def fit_linear_probe(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray,
                     y_test: np.ndarray, *, l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
                     val_frac: float = 0.2, steps: int = 100, seed: int = 0
                     ) -> dict[str, float]:
  """Test accuracy of a linear classifier on standardised features (L2 picked on a split).

  Args:
    f_train, f_test: (N, D), (M, D) features.
    y_train, y_test: (N,), (M,) integer labels in [0, num_classes).
    l2_grid: candidate weights of l2 ||W||^2 (added to the mean cross-entropy).
    val_frac: fraction of the training rows held out (seeded) to pick l2.
    steps: L-BFGS iterations per fit.
    seed: seed of the held-out split.

  Returns:
    {'test_acc', 'train_acc', 'val_acc' (of the chosen l2), 'l2', 'dim', 'num_train',
     'num_test', 'chance' (frequency of the most common test label)}.
  """
  f_train, f_test = np.asarray(f_train, np.float32), np.asarray(f_test, np.float32)
  y_train, y_test = np.asarray(y_train).astype(np.int32), np.asarray(y_test).astype(np.int32)
  if f_train.ndim != 2 or f_test.ndim != 2 or f_train.shape[1] != f_test.shape[1]:
    raise ValueError(f'features must be (N, D) and (M, D); got {f_train.shape}, {f_test.shape}')
  if len(f_train) != len(y_train) or len(f_test) != len(y_test):
    raise ValueError(f'{len(f_train)} / {len(f_test)} feature rows but {len(y_train)} / '
                     f'{len(y_test)} labels')
  if not 0.0 < val_frac < 1.0 or len(f_train) < 2:
    raise ValueError(f'need >= 2 training rows and 0 < val_frac < 1; got {len(f_train)} rows, '
                     f'val_frac={val_frac}')
  if min(y_train.min(), y_test.min()) < 0:
    raise ValueError('labels must be non-negative integers')
  mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
  xtr = (f_train - mu) / sd
  xte = (f_test - mu) / sd
  k = int(max(y_train.max(), y_test.max()) + 1)
  perm = np.random.default_rng(seed).permutation(len(xtr))
  n_val = min(len(xtr) - 1, max(1, int(val_frac * len(xtr))))
  val = perm[:n_val]
  w_fit = np.ones(len(xtr), np.float32)
  w_fit[val] = 0.0
  xj, yj = jnp.asarray(xtr), jnp.asarray(y_train)
  val_acc = {}
  for l2 in l2_grid:
    params = _fit_logreg(xj, yj, jnp.asarray(w_fit), l2, k, steps)
    val_acc[l2] = _accuracy(params, xtr[val], y_train[val])
  best = max(l2_grid, key=lambda l2: (val_acc[l2], l2))
  params = _fit_logreg(xj, yj, jnp.ones(len(xtr), jnp.float32), best, k, steps)
  return {'test_acc': _accuracy(params, xte, y_test), 'train_acc': _accuracy(params, xtr, y_train),
          'val_acc': val_acc[best], 'l2': float(best), 'dim': int(xtr.shape[1]),
          'num_train': int(len(xtr)), 'num_test': int(len(xte)),
          'chance': float(np.bincount(y_test).max() / len(y_test))}


def linear_probe(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray,
                 y_test: np.ndarray, config) -> dict[str, float]:
  """`fit_linear_probe` with `config.probe.{l2_grid, val_frac, steps}` and `config.seed`."""
  p = config.probe
  return fit_linear_probe(f_train, y_train, f_test, y_test, l2_grid=tuple(p.l2_grid),
                          val_frac=float(p.val_frac), steps=int(p.steps), seed=int(config.seed))
