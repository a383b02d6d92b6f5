"""What every task does before training: hosts joined, workdir claimed, writer opened."""

from __future__ import annotations

import os
import time

import ml_collections

from cgml_jax.training import checkpoint, loop, optim, parallel, writers


def prepare(config: ml_collections.ConfigDict, workdir: str):
  """Joins the hosts (config.distributed), checks the workdir's config, opens the writer.

  A workdir written by a different config is refused here, before any work, unless
  `config.checkpoint.allow_config_mismatch` (see `checkpoint.check_workdir_config`).

  Returns:
    The metric writer of `workdir/logs`.
  """
  d = config.get('distributed')
  if d is not None:
    parallel.initialize_distributed(d.coordinator_address or None, d.num_processes or None,
                                    d.process_id if d.process_id >= 0 else None)
  os.makedirs(workdir, exist_ok=True)
  checkpoint.check_workdir_config(workdir, config,
                                  allow_mismatch=config.checkpoint.allow_config_mismatch)
  return writers.create_writer(os.path.join(workdir, 'logs'),
                               tensorboard=config.logging.tensorboard)


def fit_method(state, step_fn, batches, config: ml_collections.ConfigDict, workdir: str | None,
               method: str, name: str, key, *, num_steps: int | None = None, writer=None,
               mesh=None, extra_metrics=None, history_every: int | None = None):
  """`loop.fit` with checkpoints in `workdir/checkpoints/<method>`.

  Besides the step's own metrics it logs the learning rates that the optimisers applied
  (read from their states, `optim.learning_rates`) and whatever `extra_metrics(state)`
  returns.

  Args:
    num_steps: batches to train for (default `config.train.steps`).

  Returns:
    (state gathered to the host, metric history, wall seconds).
  """
  ckpt = None
  if workdir is not None:
    c = config.checkpoint
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints', method), every=c.every,
                                   keep=c.keep, async_save=c.async_save)

  def logged(s):
    out = dict(optim.learning_rates(s.opt_state))
    if extra_metrics is not None:
      out.update(extra_metrics(s))
    return out

  t0 = time.perf_counter()
  try:
    state, history = loop.fit(state, step_fn, batches,
                              num_steps=config.train.steps if num_steps is None else num_steps,
                              key=key, log_every=config.train.log_every, name=name,
                              extra_metrics=logged, history_every=history_every,
                              checkpointer=ckpt, writer=writer, mesh=mesh)
  finally:
    if ckpt is not None:
      ckpt.close()
  return parallel.to_local(state), history, time.perf_counter() - t0
