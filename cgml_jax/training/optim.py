"""Optimisers from config: one place that turns a ConfigDict into an optax chain.

Learning rates are functions of the *batch* step, not of the number of `update` calls.
cGML updates its optimisers l times per batch (Algorithm 1's inner loop), so a schedule
that counted updates would be spent after 1/l of the run. Every optimiser built here ends
in `scale_by_batch_schedule`, whose `update` takes the batch index as the extra argument
`batch_step`; all updates of one batch use schedule(batch_step), and the rate applied is
kept in the optimiser state, where `learning_rates` reads it for logging.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ('constant', 'cosine', 'warmup_cosine')


def make_schedule(lr: float, schedule: str, total_steps: int, warmup_steps: int = 0):
  """Learning rate as a function of the batch step: 'constant', 'cosine' (to 0 at
  `total_steps`) or 'warmup_cosine' (0 -> lr over `warmup_steps`, then cosine to 0)."""
  if schedule == 'constant':
    return optax.constant_schedule(lr)
  if schedule == 'cosine':
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  if schedule == 'warmup_cosine':
    if not 0 <= warmup_steps < max(total_steps, 1):
      raise ValueError(f'warmup_steps must be in [0, train.steps), got {warmup_steps}')
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(total_steps, 1))
  raise ValueError(f'unknown schedule {schedule!r}; expected one of {SCHEDULES}')


class BatchScheduleState(NamedTuple):
  """The learning rate that the newest `update` applied."""
  learning_rate: jax.Array


def scale_by_batch_schedule(
    schedule: Callable[[jax.Array], jax.Array]) -> optax.GradientTransformationExtraArgs:
  """updates -> -schedule(batch_step) * updates, with `batch_step` passed to `update`.

  Unlike `optax.scale_by_learning_rate(schedule)`, which counts its own `update` calls,
  the step comes from the caller, so several updates per batch share one rate. Calling
  `update` without `batch_step` is an error rather than a silent fallback.
  """
  def init_fn(params):
    del params
    return BatchScheduleState(jnp.asarray(schedule(0), jnp.float32))

  def update_fn(updates, state, params=None, *, batch_step=None, **extra_args):
    del state, params, extra_args
    if batch_step is None:
      raise TypeError('this optimiser follows a per-batch schedule: call '
                      'tx.update(grads, opt_state, params, batch_step=state.step)')
    lr = jnp.asarray(schedule(batch_step), jnp.float32)
    updates = jax.tree.map(lambda u: (-lr).astype(u.dtype) * u, updates)
    return updates, BatchScheduleState(lr)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def make_optimizer(lr: float, *, schedule: str = 'constant', total_steps: int = 1,
                   warmup_steps: int = 0, grad_clip: float = 0.0, b1: float = 0.9,
                   b2: float = 0.999, weight_decay: float = 0.0, amsgrad: bool = False,
                   clip_value: float = 0.0) -> optax.GradientTransformationExtraArgs:
  """Adam / AdamW / AMSGrad with a per-batch learning-rate schedule.

  Args:
    lr: peak learning rate (> 0).
    schedule: one of SCHEDULES, over `total_steps` batches.
    grad_clip: clip the gradients' global norm to this (0: off).
    clip_value: clip each gradient element to [-clip_value, clip_value] (0: off), as
      PyTorch's `clip_grad_value_`.
    weight_decay: decoupled (AdamW) for Adam; for AMSGrad an L2 term added to the
      gradients before the moments, as PyTorch's `Adam(amsgrad=True, weight_decay=...)`.

  Returns:
    The optimiser; its `update` needs `batch_step=` (see `scale_by_batch_schedule`).
  """
  if lr <= 0:
    raise ValueError(f'learning rate must be > 0, got {lr}')
  parts = []
  if grad_clip:
    parts.append(optax.clip_by_global_norm(grad_clip))
  if clip_value:
    parts.append(optax.clip(clip_value))
  if amsgrad:
    if weight_decay:
      parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.scale_by_amsgrad(b1=b1, b2=b2))
  else:
    parts.append(optax.scale_by_adam(b1=b1, b2=b2))
    if weight_decay:
      parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(scale_by_batch_schedule(make_schedule(lr, schedule, total_steps, warmup_steps)))
  return optax.chain(*parts)


def from_config(train, lr: float) -> optax.GradientTransformationExtraArgs:
  """The optimiser of a config's `train` block (schedule, steps, warmup, clipping) at `lr`."""
  return make_optimizer(lr, schedule=train.schedule, total_steps=train.steps,
                        warmup_steps=train.get('warmup_steps', 0),
                        grad_clip=train.get('grad_clip', 0.0))


def learning_rates(opt_state) -> dict[str, jax.Array]:
  """The rates the newest updates applied, read from an optimiser state.

  Args:
    opt_state: one optimiser's state, or a dict {name: optimiser state}.

  Returns:
    {'lr': rate} for one optimiser; {'lr_<name>': rate} for a dict of them (optimisers
    without a `BatchScheduleState` are left out).
  """
  def find(tree):
    leaves = jax.tree.leaves(tree, is_leaf=lambda s: isinstance(s, BatchScheduleState))
    found = [s.learning_rate for s in leaves if isinstance(s, BatchScheduleState)]
    return found[0] if found else None

  if isinstance(opt_state, dict):
    rates = {f'lr_{k}': find(v) for k, v in opt_state.items()}
    return {k: v for k, v in rates.items() if v is not None}
  rate = find(opt_state)
  return {} if rate is None else {'lr': rate}
