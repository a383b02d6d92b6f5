"""`train_and_evaluate(config, workdir)`: the one entry point, dispatching on `config.task`."""

from __future__ import annotations

import importlib

import ml_collections

# task name -> module with `train_and_evaluate(config, workdir) -> dict`.
TASKS = {
    'toy': 'cgml_jax.tasks.toy',
    'colorize': 'cgml_jax.tasks.colorize',
    'complete': 'cgml_jax.tasks.complete',
    'translate': 'cgml_jax.tasks.translate',
    'mnist_corrupted': 'cgml_jax.tasks.mnist_corrupted',
    'spectral3d': 'cgml_jax.tasks.spectral3d',
}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates the experiment described by `config`, writing into `workdir`.

  Returns:
    The metrics written to `workdir/metrics.json`.
  """
  task = config.get('task')
  if task not in TASKS:
    raise ValueError(f'unknown config.task {task!r}; expected one of {sorted(TASKS)}')
  return importlib.import_module(TASKS[task]).train_and_evaluate(config, workdir)
