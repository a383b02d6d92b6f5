"""The outer training loop shared by every method.

`fit` runs any `step_fn(state, batch, key) -> (state, metrics)` over any `flax.struct`
train state: jit over a `data` mesh (batches split, state replicated), per-step keys
`fold_in(key, step)`, NaN/Inf checks on the metrics and the whole state, console progress
with rate and ETA, metric writers, Orbax checkpoints with automatic resume, and a clean
save-and-exit on SIGTERM.

Exactness: a run is a function of (initial state, key, data order). The checkpoint holds
the state, the key and the iterator position, so a resumed run takes the same steps on the
same batches with the same keys as an uninterrupted one (bitwise on CPU with the same
device count).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from cgml_jax.training import parallel


class NonFiniteError(FloatingPointError):
  """Raised when a loss, metric or state value becomes NaN/Inf; names the step."""


class Preempted(Exception):
  """SIGTERM arrived; the state at `step` was checkpointed and training stopped."""

  def __init__(self, step: int, directory: str | None):
    self.step, self.directory = step, directory
    where = f'checkpoint at step {step} in {directory}' if directory else 'no checkpointer'
    super().__init__(f'preempted (SIGTERM) after step {step}; {where}. Run the same command '
                     'again to resume.')


def format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


class Progress:
  """Console progress lines with rate and ETA, one every `every` steps (CI-friendly)."""

  def __init__(self, name: str, total: int, every: int, stream=None):
    self.name, self.total, self.every, self.stream = name, total, max(1, every), stream
    self.t0 = time.perf_counter()
    self.first_step = None

  def update(self, step: int, metrics: dict[str, float]):
    """`step` is the number of completed steps."""
    if self.first_step is None:
      # Rates exclude the first step: it includes compilation.
      self.first_step, self.t0 = step, time.perf_counter()
      if step != self.total:
        return
    if step % self.every and step != self.total:
      return
    dt = time.perf_counter() - self.t0
    rate = (step - self.first_step) / max(dt, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else float('inf')
    parts = ' '.join(f'{k}={v:.4g}' for k, v in metrics.items())
    if jax.process_index() == 0:
      print(f'[{self.name}] step {step}/{self.total} {parts} | {rate:.1f} steps/s '
            f'ETA {format_eta(eta)}', file=self.stream or sys.stdout, flush=True)


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


@contextlib.contextmanager
def _sigterm_flag(enabled: bool):
  """Yields a list that becomes non-empty when SIGTERM arrives (main thread only)."""
  flag = []
  if not enabled or threading.current_thread() is not threading.main_thread():
    yield flag
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.append(signum))
  try:
    yield flag
  finally:
    signal.signal(signal.SIGTERM, previous)


# Arguments of `reached_preemption_sync_point` in this process. JAX's protocol wants a
# number that only grows and that every process passes in the same sequence: not the step,
# which starts again at 0 for each method a task trains (a notice that arrives between two
# fits would name a sync point the next fit never reaches). Every process runs the same
# fits and steps, so this count agrees between them.
_sync_calls = itertools.count(1)


@contextlib.contextmanager
def _preemption(enabled: bool):
  """Yields `stop()`, which every process calls once per step: True when training must stop.

  One process: True once SIGTERM has arrived (a Python signal handler; nothing else runs
  per step). Several processes: SIGTERM reaches one host first, or only one, yet all must
  checkpoint the same step. JAX's preemption service (started by `jax.distributed.
  initialize`, on unless `jax_enable_preemption_service` is off) catches SIGTERM in every
  process, spreads the notice through the coordination service and agrees on a step (the
  furthest process's next one); `reached_preemption_sync_point` is True on every process
  at that step. Python's own SIGTERM handler must then stay uninstalled, as it would
  replace the service's. Without the service, each process's SIGTERM flag is OR-ed over
  all processes every step (a small host all-gather per step).
  """
  if not enabled:
    yield lambda: False
    return
  if jax.process_count() == 1:
    with _sigterm_flag(True) as flag:
      yield lambda: bool(flag)
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  sync = lambda: multihost_utils.reached_preemption_sync_point(next(_sync_calls))
  try:
    first = [sync()]  # this call stands for the first step's, so its answer is kept
  except RuntimeError:  # the preemption service is disabled
    first = None
  if first is not None:
    yield lambda: first.pop() if first else sync()
    return
  with _sigterm_flag(True) as flag:
    yield lambda: bool(np.any(multihost_utils.process_allgather(np.int32(bool(flag)))))


def fit(state, step_fn: Callable, batches: Iterator[dict], *, num_steps: int,
        key: jax.Array, log_every: int = 100, name: str = 'train',
        extra_metrics: Callable[[Any], dict] | None = None,
        history_every: int | None = None, checkpointer=None, writer=None,
        mesh=None, handle_sigterm: bool = True) -> tuple[Any, list[dict]]:
  """Runs `step_fn(state, batch, key) -> (state, metrics)` up to step `num_steps`.

  The step's key is `fold_in(key, step)`, so a run is a function of (state, data, key).
  Every step's metrics and every floating leaf of the new state are checked for NaN/Inf
  (on device; the host reads the flags one step late so it never waits on the device,
  except before a checkpoint, which is only written once its step is known to be finite).
  The first non-finite step stops training with its number in the message; the newest
  checkpoint on disk is then the last good one.

  Args:
    state: the initial train state (any pytree with static fields). Ignored apart from its
      structure if `checkpointer` holds a checkpoint: training resumes from there.
    step_fn: the pure train step.
    batches: iterator of process-local batches (pytrees with a leading batch axis). With
      `get_state`/`set_state` its position is checkpointed; otherwise it is
      fast-forwarded on resume (see `cgml_jax.training.checkpoint`).
    num_steps: total number of steps of the run (not of this call).
    key: base PRNG key.
    log_every: console line every this many steps.
    name: prefix of the console lines, errors and written scalars.
    extra_metrics: state -> dict of extra scalars (e.g. the learning rate). It is traced
      inside the jitted step, so it must be jnp code (no `float(...)`).
    history_every: record metrics every this many steps (default: `log_every`).
    checkpointer: a `cgml_jax.training.checkpoint.Checkpointer`: resume from its newest readable
      checkpoint, save every `checkpointer.every` steps and at the end.
    writer: a `cgml_jax.training.writers` writer; the recorded metrics go to it as `name/metric`.
    mesh: device mesh with a `data` axis (default: all devices, `parallel.make_mesh()`).
    handle_sigterm: on SIGTERM, finish the current step, checkpoint it and raise
      `Preempted`. In a multi-process run SIGTERM to any one process stops every process
      at the same step (see `_preemption`).

  Returns:
    (final state, history: list of {'step': s, **metrics} dicts, including the part
    restored from a checkpoint).
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  history_every = history_every or log_every
  state = parallel.replicate(state, mesh)
  history: list[dict] = []
  start = 0

  if checkpointer is not None:
    restored = checkpointer.restore_latest(state, key=key, iterator=batches)
    if restored is not None:
      state, key, start = restored.state, restored.key, restored.step
      history = list(restored.meta.get('history', []))
      if start >= num_steps:
        if jax.process_index() == 0:
          print(f'[{name}] already trained to step {start}; not training again', flush=True)
        return state, history
      if not _checkpointable(batches):
        for _ in range(start):  # fast-forward (see the module docstring of checkpoint)
          next(batches)

  def wrapped(state, batch, key):
    new_state, metrics = step_fn(state, batch, key)
    metrics = dict(metrics)
    if extra_metrics is not None:
      metrics.update(extra_metrics(new_state))
    flags = {'metrics': _all_finite(metrics), 'state': _all_finite(new_state)}
    return new_state, metrics, flags

  rep = parallel.replicated(mesh)
  jstep = jax.jit(wrapped, donate_argnums=0, out_shardings=(rep, rep, rep))
  progress = Progress(name, num_steps, log_every)
  last_saved = checkpointer.latest_step() if checkpointer is not None else None

  def settle(pending):
    """Reads a step's metrics to the host, checks them, records and shows them."""
    step, metrics, flags = pending
    metrics, flags = jax.device_get((metrics, flags))
    if not (flags['metrics'] and flags['state']):
      bad = {k: float(v) for k, v in metrics.items() if not np.all(np.isfinite(v))}
      what = f'metrics {bad}' if bad else 'the parameters/state (metrics finite)'
      kept = (f'the last good checkpoint is step {last_saved} in {checkpointer.directory}'
              if last_saved is not None else 'no checkpoint was written')
      raise NonFiniteError(f'[{name}] non-finite value at step {step}: {what}. Training '
                           f'stopped; {kept}. Lower the learning rates or beta, or enable '
                           'gradient clipping.')
    shown = {k: float(v) for k, v in metrics.items()}
    if step % history_every == 0 or step == num_steps:
      history.append({'step': step, **shown})
      if writer is not None:
        writer.write_scalars(step, {f'{name}/{k}': v for k, v in shown.items()})
    progress.update(step, shown)

  def save(step):
    nonlocal last_saved
    checkpointer.save(step, state, key=key, iterator=batches,
                      meta={'finished': step >= num_steps, 'num_steps': num_steps,
                            'history': history})
    last_saved = step
    if writer is not None:
      # Written metrics then reach disk at least as far as the checkpoint. After a kill,
      # the steps between the checkpoint and the kill are logged again on resume: readers
      # of metrics.jsonl keep the last record of each step.
      writer.flush()

  pending = None
  with _preemption(handle_sigterm) as preempted:
    for step in range(start, num_steps):
      if preempted():
        if pending is not None:
          settle(pending)
        if checkpointer is not None:
          save(step)
          checkpointer.wait()
        if writer is not None:
          writer.flush()
        raise Preempted(step, checkpointer.directory if checkpointer is not None else None)
      batch = parallel.shard_batch(next(batches), mesh)
      state, metrics, flags = jstep(state, batch, jax.random.fold_in(key, step))
      if pending is not None:
        settle(pending)
      pending = (step + 1, metrics, flags)
      if checkpointer is not None and (checkpointer.should_save(step + 1)
                                       or step + 1 == num_steps):
        settle(pending)
        pending = None
        save(step + 1)
    if pending is not None:
      settle(pending)
  if checkpointer is not None:
    checkpointer.wait()
  if writer is not None:
    writer.flush()
  return state, history


def last_update_norms(history: list[dict]) -> dict[str, float]:
  """The `update_norm*` metrics of the newest record: the size of each optimiser's last
  update, zero when a schedule has run out before the end of training."""
  if not history:
    return {}
  return {k: v for k, v in history[-1].items() if k.startswith('update_norm')}


def _checkpointable(it) -> bool:
  return hasattr(it, 'get_state') and hasattr(it, 'set_state')
