"""The outer training loop shared by every method.

`fit` runs any `step_fn(state, batch, key) -> (state, metrics)` over any `flax.struct`
train state: jit over a `data` mesh (batches split, state replicated), per-step keys
`fold_in(key, step)`, NaN/Inf checks on the metrics and the whole state, console progress
with rate and ETA, metric writers, Orbax checkpoints with automatic resume, and a clean
save-and-exit on SIGTERM and on Ctrl-C (SIGINT).

Exactness: a run is a function of (initial state, key, data order). The checkpoint holds
the state, the key and the iterator position, so a resumed run takes the same steps on the
same batches with the same keys as an uninterrupted one (bitwise on CPU with the same
device count).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import math
import os
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
  """SIGTERM or SIGINT arrived; the state at `step` was checkpointed and training stopped.

  `signum` says which: the launcher exits with 128 + signum (143 for SIGTERM, 130 for
  SIGINT), the shell's convention for a process ended by that signal.
  """

  def __init__(self, step: int, directory: str | None, signum: int = signal.SIGTERM):
    self.step, self.directory, self.signum = step, directory, int(signum)
    where = f'checkpoint at step {step} in {directory}' if directory else 'no checkpointer'
    what = ('interrupted (Ctrl-C)' if self.signum == signal.SIGINT
            else f'preempted ({signal.Signals(self.signum).name})')
    super().__init__(f'{what} after step {step}; {where}. Run the same command again to '
                     'resume.')


def format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


class Progress:
  """Console progress: a line when training starts, one after the first step (which
  includes compilation), then one every `every` steps or `interval` seconds, whichever
  comes first, each with the rate and the ETA (CI-friendly: plain lines, no carriage
  returns). Only process 0 prints."""

  def __init__(self, name: str, total: int, every: int, stream=None, interval: float = 15.0):
    self.name, self.total, self.every, self.stream = name, total, max(1, every), stream
    self.interval = interval
    self.t0 = self.last_line = time.perf_counter()
    self.first_step = None

  def _print(self, text: str):
    if jax.process_index() == 0:
      print(f'[{self.name}] {text}', file=self.stream or sys.stdout, flush=True)
    self.last_line = time.perf_counter()

  def start(self, step: int):
    """Before the first step of this call: `step` steps are already done (a resume)."""
    self.t0 = time.perf_counter()
    verb = 'starting' if step == 0 else 'resuming'
    self._print(f'{verb} at step {step}/{self.total}; compiling the step')

  def update(self, step: int, metrics: dict[str, float]):
    """`step` is the number of completed steps."""
    parts = ' '.join(f'{k}={v:.4g}' for k, v in metrics.items())
    now = time.perf_counter()
    if self.first_step is None:
      # Rates exclude the first step: it includes compilation.
      self._print(f'step {step}/{self.total} {parts} | first step {now - self.t0:.1f}s '
                  '(with compilation)')
      self.first_step, self.t0 = step, now
      return
    if (step % self.every and step != self.total
        and now - self.last_line < self.interval):
      return
    rate = (step - self.first_step) / max(now - self.t0, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else float('inf')
    self._print(f'step {step}/{self.total} {parts} | {rate:.1f} steps/s '
                f'ETA {format_eta(eta)}')


def exit_interrupted(status: int):
  """Ends the process after a handled Ctrl-C, skipping the interpreter's teardown.

  After a KeyboardInterrupt that lands while XLA compiles, JAX crashes in the teardown
  of the interpreter (SIGSEGV: status 139 and a "Fatal Python error" after the command's
  one line). The exit handlers (the workdir lock's release, logging) still run, and
  stdout and stderr are flushed; then the process ends with `status`.
  """
  sys.stdout.flush()
  sys.stderr.flush()
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


@contextlib.contextmanager
def _signal_flag(enabled: bool, signals=(signal.SIGTERM, signal.SIGINT)):
  """Yields a list to which each of `signals` is appended when it arrives (main thread
  only).

  A second SIGINT raises KeyboardInterrupt at once, so that Ctrl-C twice aborts without
  waiting for the current step and its checkpoint. A signal that the process ignores
  (SIGINT of a job started in the background by a shell without job control) stays
  ignored.
  """
  flag = []
  if not enabled or threading.current_thread() is not threading.main_thread():
    yield flag
    return

  def handler(signum, frame):
    del frame
    if signum == signal.SIGINT and signal.SIGINT in flag:
      raise KeyboardInterrupt
    flag.append(signum)

  previous = {s: signal.signal(s, handler) for s in signals
              if signal.getsignal(s) is not signal.SIG_IGN}
  try:
    yield flag
  finally:
    for s, p in previous.items():
      signal.signal(s, p)


# Arguments of `reached_preemption_sync_point` in this process. JAX's protocol wants a
# number that only grows and that every process passes in the same sequence: not the step,
# which starts again at 0 for each method a task trains (a notice that arrives between two
# fits would name a sync point the next fit never reaches). Every process runs the same
# fits and steps, so this count agrees between them.
_sync_calls = itertools.count(1)


@contextlib.contextmanager
def _preemption(enabled: bool):
  """Yields `stop()`, which every process calls once per step: the number of the signal
  that stops training (SIGTERM or SIGINT), or 0 to go on.

  One process: the first of SIGTERM or SIGINT that has arrived (a Python signal handler;
  nothing else runs per step). Several processes: SIGTERM reaches one host first, or only
  one, yet all must checkpoint the same step. JAX's preemption service (started by
  `jax.distributed.initialize`, on unless `jax_enable_preemption_service` is off) catches
  SIGTERM in every process, spreads the notice through the coordination service and agrees
  on a step (the furthest process's next one); `reached_preemption_sync_point` is True on
  every process at that step. Python's own SIGTERM handler must then stay uninstalled, as
  it would replace the service's, and SIGINT keeps Python's default (KeyboardInterrupt, no
  checkpoint): the service does not spread it. Without the service, each process's flag is
  gathered over all processes every step (a small host all-gather per step) and every
  process stops on the largest signal number seen.
  """
  if not enabled:
    yield lambda: 0
    return
  if jax.process_count() == 1:
    with _signal_flag(True) as flag:
      yield lambda: flag[0] if flag else 0
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  sync = lambda: multihost_utils.reached_preemption_sync_point(next(_sync_calls))
  try:
    first = [sync()]  # this call stands for the first step's, so its answer is kept
  except RuntimeError:  # the preemption service is disabled
    first = None
  if first is not None:
    yield lambda: signal.SIGTERM if (first.pop() if first else sync()) else 0
    return
  with _signal_flag(True) as flag:
    yield lambda: int(np.max(multihost_utils.process_allgather(
        np.int32(flag[0] if flag else 0))))


def fit(state, step_fn: Callable, batches: Iterator[dict], *, num_steps: int,
        key: jax.Array, log_every: int = 100, name: str = 'train',
        extra_metrics: Callable[[Any], dict] | None = None,
        history_every: int | None = None, checkpointer=None, writer=None,
        mesh=None, handle_sigterm: bool = True,
        timing: dict | None = None) -> tuple[Any, list[dict]]:
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
    handle_sigterm: on SIGTERM or SIGINT (Ctrl-C), finish the current step, checkpoint
      it and raise `Preempted`; a second SIGINT raises KeyboardInterrupt at once. In a
      multi-process run SIGTERM to any one process stops every process at the same step
      (see `_preemption`).
    timing: if given, filled with 'train_seconds': the wall seconds this run has spent in
      `fit`, summed over every session that resumed it. The sum is kept in the
      checkpoints, so a call that finds the run already trained reports the recorded
      time, not its own.

  Returns:
    (final state, history: list of {'step': s, **metrics} dicts, including the part
    restored from a checkpoint).
  """
  t_call = time.perf_counter()
  mesh = parallel.make_mesh() if mesh is None else mesh
  history_every = history_every or log_every
  state = parallel.replicate(state, mesh)
  history: list[dict] = []
  start = 0
  seconds_before = 0.0  # training time of earlier sessions, from the checkpoint
  timing = {} if timing is None else timing

  def seconds() -> float:
    return seconds_before + time.perf_counter() - t_call

  if checkpointer is not None:
    restored = checkpointer.restore_latest(state, key=key, iterator=batches)
    if restored is not None:
      state, key, start = restored.state, restored.key, restored.step
      history = list(restored.meta.get('history', []))
      recorded = restored.meta.get('train_seconds')
      if start >= num_steps:
        if jax.process_index() == 0:
          print(f'[{name}] already trained to step {start}; not training again', flush=True)
        timing['train_seconds'] = seconds() if recorded is None else float(recorded)
        return state, history
      # Checkpoints written before the time was recorded count from this session on.
      seconds_before = float(recorded or 0.0)
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
    # What a rerun reads back: the final save's time is the run's reported time too.
    timing['train_seconds'] = round(seconds(), 3)
    checkpointer.save(step, state, key=key, iterator=batches,
                      meta={'finished': step >= num_steps, 'num_steps': num_steps,
                            'history': history, 'train_seconds': timing['train_seconds']})
    last_saved = step
    if writer is not None:
      # Written metrics then reach disk at least as far as the checkpoint. After a kill,
      # the steps between the checkpoint and the kill are logged again on resume: readers
      # of metrics.jsonl keep the last record of each step.
      writer.flush()

  pending = None
  progress.start(start)
  with _preemption(handle_sigterm) as stop_signal:
    for step in range(start, num_steps):
      signum = stop_signal()
      if signum:
        if pending is not None:
          settle(pending)
        if checkpointer is not None:
          save(step)
          checkpointer.wait()
        if writer is not None:
          writer.flush()
        raise Preempted(step, checkpointer.directory if checkpointer is not None else None,
                        signum)
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
  if checkpointer is None:
    timing['train_seconds'] = seconds()
  return state, history


def last_update_norms(history: list[dict]) -> dict[str, float]:
  """The `update_norm*` metrics of the newest record: the size of each optimiser's last
  update, zero when a schedule has run out before the end of training."""
  if not history:
    return {}
  return {k: v for k, v in history[-1].items() if k.startswith('update_norm')}


def _checkpointable(it) -> bool:
  return hasattr(it, 'get_state') and hasattr(it, 'set_state')
