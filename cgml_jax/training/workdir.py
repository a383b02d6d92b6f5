"""What every task does before training: hosts joined, workdir claimed, writer opened."""

from __future__ import annotations

import json
import os
import shutil

import jax
import ml_collections
import numpy as np

from cgml_jax.training import checkpoint, loop, optim, parallel, writers
from cgml_jax.training import lock as lock_lib

# Re-exported: callers of `prepare` catch these.
from cgml_jax.training.lock import WorkdirError, WorkdirLocked  # noqa: F401


def ensure_workdir(workdir: str) -> str:
  """Creates `workdir` if needed and checks that it is a writable directory.

  Returns:
    Its absolute path.

  Raises:
    WorkdirError: it cannot be created (a parent is a file, no permission, read-only
      filesystem, ...) or written; the message is one line.
  """
  path = os.path.abspath(workdir)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f'cannot create workdir {path}: {e.strerror or e}'
                       + (f' ({e.filename})' if e.filename and e.filename != path else '')
                       ) from None
  if not os.access(path, os.W_OK | os.X_OK):
    raise WorkdirError(f'workdir {path} is not writable by this user')
  return path


def claim(workdir: str, *, timeout: float | None = None, log=None):
  """Takes the workdir lock on process 0 and tells every process whether that worked.

  Only process 0 locks (one run is one lock, however many hosts it spans); if it is
  refused, every process raises, so that no host trains into a workdir it does not own.

  Args:
    workdir: an existing directory.
    timeout: lock takeover timeout in seconds (see `cgml_jax.training.lock`).
    log: stream for the takeover message.

  Returns:
    The `lock.WorkdirLock` on process 0, None on the others.

  Raises:
    WorkdirLocked / WorkdirError: on every process, if process 0 could not take the lock.
  """
  multi = jax.distributed.is_initialized() and jax.process_count() > 1
  # Without jax.distributed this is process 0; asking jax would start the backend first.
  primary = not multi or jax.process_index() == 0
  held, error = None, None
  if primary:
    try:
      held = lock_lib.acquire(workdir, timeout=timeout, log=log)
    except WorkdirError as e:
      error = e
  if multi:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    ok = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not ok and error is None:
      raise WorkdirLocked(f'process 0 could not take the lock of workdir {workdir} '
                          '(its output says why)')
  if error is not None:
    raise error
  return held


def prepare(config: ml_collections.ConfigDict, workdir: str):
  """Joins the hosts (config.distributed), locks the workdir, checks its config, opens the
  writer.

  It writes nothing but the lock: the config is recorded (`workdir/config.json`) when
  the first method starts training (`fit_method`), and the writer creates `workdir/logs`
  on its first record. A run that stops before training, for missing data or a bad
  size, leaves nothing that would refuse the corrected command on the same workdir.

  The workdir is created if needed and locked for the rest of the process's life (see
  `cgml_jax.training.lock`): a second run on it is refused here, before any work. The
  takeover timeout is `config.checkpoint.lock_timeout` if the config has that field, else
  $CGML_LOCK_TIMEOUT, else `lock.DEFAULT_TIMEOUT`. A workdir written by a different config
  is refused too, unless `config.checkpoint.allow_config_mismatch` (see
  `checkpoint.check_workdir_config`).

  Returns:
    The metric writer of `workdir/logs`.

  Raises:
    WorkdirError: the workdir cannot be created or written, or another run holds it.
  """
  d = config.get('distributed')
  if d is not None:
    parallel.initialize_distributed(d.coordinator_address or None, d.num_processes or None,
                                    d.process_id if d.process_id >= 0 else None)
  ensure_workdir(workdir)
  claim(workdir, timeout=config.get('checkpoint', {}).get('lock_timeout'))
  checkpoint.check_workdir_config(workdir, config,
                                  allow_mismatch=config.checkpoint.allow_config_mismatch,
                                  record=False)
  return writers.create_writer(os.path.join(workdir, 'logs'),
                               tensorboard=config.logging.tensorboard)


def fit_method(state, step_fn, batches, config: ml_collections.ConfigDict, workdir: str | None,
               method: str, name: str, key, *, num_steps: int | None = None, writer=None,
               mesh=None, extra_metrics=None, history_every: int | None = None):
  """`loop.fit` with checkpoints in `workdir/checkpoints/<method>`.

  Besides the step's own metrics it logs the learning rates that the optimisers applied
  (read from their states, `optim.learning_rates`) and whatever `extra_metrics(state)`
  returns. It records the config in `workdir/config.json` (if not already there) before
  training starts.

  Args:
    num_steps: batches to train for (default `config.train.steps`).

  Returns:
    (state gathered to the host, metric history, training seconds: wall time spent
    training this method, summed over every launch of the run, as recorded in its
    checkpoints; a rerun that finds it trained reports the recorded time).
  """
  ckpt = None
  if workdir is not None:
    checkpoint.record_workdir_config(workdir, config)
    c = config.checkpoint
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints', method), every=c.every,
                                   keep=c.keep, async_save=c.async_save)

  def logged(s):
    out = dict(optim.learning_rates(s.opt_state))
    if extra_metrics is not None:
      out.update(extra_metrics(s))
    return out

  timing = {}
  try:
    state, history = loop.fit(state, step_fn, batches,
                              num_steps=config.train.steps if num_steps is None else num_steps,
                              key=key, log_every=config.train.log_every, name=name,
                              extra_metrics=logged, history_every=history_every,
                              checkpointer=ckpt, writer=writer, mesh=mesh, timing=timing)
  finally:
    if ckpt is not None:
      ckpt.close()
  return parallel.to_local(state), history, timing['train_seconds']


def copy_result(metrics_path: str, dest: str, allow_dirty: bool = False) -> bool:
  """Copies a run's metrics.json to `dest` (a results file), unless the run's provenance
  says it ran from a tree with uncommitted changes (its commit would not name the code)
  and not `allow_dirty`.

  Returns:
    Whether it was copied.
  """
  with open(metrics_path) as f:
    prov = json.load(f).get('provenance', {})
  if prov.get('dirty', True) and not allow_dirty:
    return False
  os.makedirs(os.path.dirname(dest), exist_ok=True)
  shutil.copyfile(metrics_path, dest)
  return True
