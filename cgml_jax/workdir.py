"""What every task does before training: hosts joined, workdir claimed, writer opened."""

from __future__ import annotations

import os

import ml_collections

from cgml_jax import checkpoint, parallel, writers


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
