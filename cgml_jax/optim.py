"""Optimisers from config: one place that turns a ConfigDict into an optax chain."""

from __future__ import annotations

import optax

SCHEDULES = ('constant', 'cosine', 'warmup_cosine')


def make_schedule(lr: float, schedule: str, total_steps: int, warmup_steps: int = 0):
  """Learning-rate schedule: 'constant', 'cosine' (to 0) or 'warmup_cosine'."""
  if schedule == 'constant':
    return optax.constant_schedule(lr)
  if schedule == 'cosine':
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  if schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(total_steps, 1))
  raise ValueError(f'unknown schedule {schedule!r}; expected one of {SCHEDULES}')


def make_optimizer(lr: float, *, schedule: str = 'constant', total_steps: int = 1,
                   warmup_steps: int = 0, grad_clip: float = 0.0, b1: float = 0.9,
                   b2: float = 0.999, weight_decay: float = 0.0, amsgrad: bool = False):
  """Adam(W) / AMSGrad with optional global-norm clipping.

  Returns:
    (optax.GradientTransformation, schedule: step -> learning rate).
  """
  if lr <= 0:
    raise ValueError(f'learning rate must be > 0, got {lr}')
  sched = make_schedule(lr, schedule, total_steps, warmup_steps)
  if amsgrad:
    base = optax.amsgrad(sched, b1=b1, b2=b2)
    if weight_decay:
      base = optax.chain(optax.add_decayed_weights(weight_decay), base)
  elif weight_decay:
    base = optax.adamw(sched, b1=b1, b2=b2, weight_decay=weight_decay)
  else:
    base = optax.adam(sched, b1=b1, b2=b2)
  if grad_clip:
    base = optax.chain(optax.clip_by_global_norm(grad_clip), base)
  return base, sched
