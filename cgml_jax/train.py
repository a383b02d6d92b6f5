"""`train_and_evaluate(config, workdir)`: the one entry point, dispatching on `config.task`."""

from __future__ import annotations

import importlib
import json
import os
import subprocess

import jax
import ml_collections

from cgml_jax import configs
from cgml_jax.training import checkpoint

# task name -> module with `train_and_evaluate(config, workdir) -> dict`.
TASKS = {
    'toy': 'cgml_jax.tasks.toy',
    'colorize': 'cgml_jax.tasks.colorize',
    'colour_modes': 'cgml_jax.tasks.colour_modes',
    'complete': 'cgml_jax.tasks.complete',
    'translate': 'cgml_jax.tasks.translate',
    'mnist_corrupted': 'cgml_jax.tasks.mnist_corrupted',
    'spectral3d': 'cgml_jax.tasks.spectral3d',
}


def code_version(root: str | None = None) -> dict:
  """The git commit of this checkout and whether it had uncommitted changes, or the
  package version where the code is not a git checkout.

  Changes under results/ do not count: they are outputs (a seed sweep copies each seed's
  metrics there, and must not mark its own next seeds as run from a modified tree).
  """
  root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no', '--',
                            '.', ':(exclude)results'],
                           cwd=root, capture_output=True, text=True, timeout=10,
                           check=True).stdout.strip()
    return {'commit': commit, 'dirty': bool(dirty)}
  except (OSError, subprocess.SubprocessError):
    from cgml_jax import __version__  # pylint: disable=g-import-not-at-top
    return {'version': __version__}


def hardware() -> str:
  """The devices a run used, e.g. 'cpu x1 (2 host cores)' or 'tpu x8 (96 host cores)'."""
  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  return (f'{devices[0].platform} x{len(devices)} ({", ".join(kinds)}; '
          f'{os.cpu_count()} host cores)')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates the experiment described by `config`, writing into `workdir`.

  `workdir/metrics.json` also records the code version, the hardware and the config that
  produced it (under 'provenance'), so that result files can be traced back to their run.

  Returns:
    The metrics written to `workdir/metrics.json`.

  Raises:
    configs.ConfigError: a config field holds a value the library cannot use (checked
      before any work starts, `configs.validate`).
  """
  configs.validate(config)
  task = config.get('task')
  out = importlib.import_module(TASKS[task]).train_and_evaluate(config, workdir)
  path = os.path.join(workdir, 'metrics.json')
  if jax.process_index() == 0 and os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    saved['provenance'] = {**code_version(), 'hardware': hardware(),
                           'config': checkpoint.config_to_json(config)}
    with open(path + '.tmp', 'w') as f:
      json.dump(saved, f, indent=1)
    os.replace(path + '.tmp', path)
  return out
