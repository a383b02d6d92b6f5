"""The outer training loop shared by every method: jit, keys, progress, non-finite checks."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np


class NonFiniteError(FloatingPointError):
  """Raised when a loss or metric becomes NaN/Inf; names the step."""


def format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


class Progress:
  """Console progress lines with rate and ETA, one every `every` steps (CI-friendly)."""

  def __init__(self, name: str, total: int, every: int, stream=sys.stdout):
    self.name, self.total, self.every, self.stream = name, total, max(1, every), stream
    self.t0 = time.perf_counter()
    self.first_step = None

  def update(self, step: int, metrics: dict[str, float]):
    """`step` is the number of completed steps."""
    if self.first_step is None:
      # Rates exclude the first step: it includes compilation.
      self.first_step, self.t0 = step, time.perf_counter()
      return
    if step % self.every and step != self.total:
      return
    dt = time.perf_counter() - self.t0
    rate = (step - self.first_step) / max(dt, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else float('inf')
    parts = ' '.join(f'{k}={v:.4g}' for k, v in metrics.items())
    print(f'[{self.name}] step {step}/{self.total} {parts} | {rate:.1f} steps/s '
          f'ETA {format_eta(eta)}', file=self.stream, flush=True)


def check_finite(metrics: dict[str, Any], step: int, name: str = 'train'):
  """Raises `NonFiniteError` naming `step` if any metric is NaN or Inf."""
  bad = {k: float(v) for k, v in metrics.items() if not np.all(np.isfinite(np.asarray(v)))}
  if bad:
    raise NonFiniteError(f'[{name}] non-finite value at step {step}: {bad}. Training stopped; '
                         'lower the learning rates or beta, or enable gradient clipping.')


def fit(state, step_fn: Callable, batches: Iterator[dict], *, num_steps: int,
        key: jax.Array, log_every: int = 100, name: str = 'train',
        extra_metrics: Callable[[Any], dict] | None = None,
        history_every: int | None = None) -> tuple[Any, list[dict]]:
  """Runs `num_steps` of `step_fn(state, batch, key) -> (state, metrics)` under jit.

  The step's key is `fold_in(key, step)`, so a run is a function of (state, data, key).
  Every step's metrics are checked for NaN/Inf; the first non-finite one stops training
  with the step number in the message.

  Args:
    state: the initial train state (any pytree with static fields).
    step_fn: the pure train step.
    batches: iterator of batches.
    num_steps: number of steps to run.
    key: PRNG key.
    log_every: console line every this many steps.
    name: prefix of the console lines and of errors.
    extra_metrics: state -> dict of extra scalars to print (e.g. the learning rate).
    history_every: record metrics every this many steps (default: `log_every`).

  Returns:
    (final state, history: list of {'step': s, **metrics} dicts).
  """
  jstep = jax.jit(step_fn, donate_argnums=0)
  progress = Progress(name, num_steps, log_every)
  history_every = history_every or log_every
  history = []
  for step in range(num_steps):
    batch = next(batches)
    state, metrics = jstep(state, batch, jax.random.fold_in(key, step))
    metrics = jax.device_get(metrics)
    check_finite(metrics, step + 1, name)
    shown = {k: float(v) for k, v in metrics.items()}
    if extra_metrics is not None:
      shown.update(extra_metrics(state))
    if (step + 1) % history_every == 0 or step + 1 == num_steps:
      history.append({'step': step + 1, **shown})
    progress.update(step + 1, shown)
  return state, history
