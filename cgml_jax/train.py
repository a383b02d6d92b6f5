"""`train_and_evaluate(config, workdir)`: the one entry point, dispatching on `config.task`."""

from __future__ import annotations

import glob
import importlib
import json
import math
import os
import pathlib
import subprocess
import time

import jax
import ml_collections
import numpy as np

from cgml_jax import configs
from cgml_jax.training import checkpoint

# task name -> module with `train_and_evaluate(config, workdir) -> dict`.
TASKS = {
    'toy': 'cgml_jax.tasks.toy',
    'colorize': 'cgml_jax.tasks.colorize',
    'colour_modes': 'cgml_jax.tasks.colour_modes',
    'hue_modes': 'cgml_jax.tasks.hue_modes',
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


# ---------------------------------------------------------------------------------------
# The offline data a config reads, checked before the workdir is touched.

# Tasks whose examples come from an image source named by `config.data.name`.
_IMAGE_TASKS = ('colorize', 'colour_modes', 'hue_modes', 'complete', 'translate',
                'mnist_corrupted')


def _data_root(config) -> str | None:
  return config.get('data', {}).get('data_dir') or None


def _missing(what: str, path: pathlib.Path, config):
  from cgml_jax.data import sources  # pylint: disable=g-import-not-at-top
  if _data_root(config):
    origin = 'the data folder of config.data.data_dir'
  elif os.environ.get(sources.ENV_VAR):
    origin = f'the data folder of ${sources.ENV_VAR}'
  else:
    origin = (f'the default data folder, as neither ${sources.ENV_VAR} nor '
              'config.data.data_dir is set')
  raise sources.DataNotFoundError(
      f'{what} not found: {path} (in {origin}); point ${sources.ENV_VAR} or '
      '--config.data.data_dir at the folder that holds it (docs/data.md)')


def _local_rows(name: str, split: str, config) -> int:
  """Rows of `split` of the local npz dataset `name`, read from the file's header."""
  from cgml_jax.data import sources  # pylint: disable=g-import-not-at-top
  ds = sources.LOCAL_DATASETS[name]
  base, _ = sources.parse_split(split)
  if base in ds.splits:
    path = sources.resolve_data_dir(_data_root(config), must_exist=False) / ds.files[
        ds.splits[base][0]]
    if not path.exists():
      _missing(f'{name} ({ds.files[ds.splits[base][0]]})', path, config)
  return len(sources.split_indices(name, split, _data_root(config))[1])


def _check_source(name: str, split: str, config) -> int | None:
  """Checks that split `split` of source `name` can be read; its size where cheap."""
  from cgml_jax.data import sources  # pylint: disable=g-import-not-at-top
  if name in sources.LOCAL_DATASETS:
    return _local_rows(name, split, config)
  kind, _, arg = name.partition(':')
  if kind in ('folder', 'pix2pix') and arg:
    path = pathlib.Path(arg).expanduser()
    if not path.is_absolute():
      path = sources.resolve_data_dir(_data_root(config), must_exist=False) / path
    if not path.exists():
      _missing(f'image folder of data.name={name!r}', path, config)
  return None  # generated sources, TFDS (checked by TfdsSource when it opens)


def check_data(config: ml_collections.ConfigDict, workdir: str | None = None):
  """Checks that the offline data `config` reads is there, and that the batch fits it.

  Cheap: it reads npz headers (and CIFAR-10's labels), no arrays. Run before the workdir
  is created, so that a missing folder costs nothing and the corrected command can use
  the same workdir.

  Raises:
    sources.DataNotFoundError: a data file or folder is missing; one line naming it and
      how to point at the data folder.
    configs.ConfigError: `data.batch_size` is larger than the training split.
  """
  task = config.get('task')
  d = config.get('data', ml_collections.ConfigDict())
  if task in _IMAGE_TASKS:
    name = 'mnist' if task == 'mnist_corrupted' else (d.get('name') or 'embedded')
    n_train = _check_source(name, d.get('train_split', 'train'), config)
    _check_source(name, d.get('test_split', 'test'), config)
    batch = d.get('batch_size')
    if n_train is not None and isinstance(batch, int) and batch > n_train:
      raise configs.ConfigError(
          f'config.data.batch_size = {batch} is not allowed; expected at most the {n_train} '
          f'examples of {name} split {d.get("train_split", "train")!r}')
  probe = config.get('probe')
  if probe is not None and probe.get('datasets'):
    for name in probe.datasets:
      for split in (probe.get('train_split', 'train'), probe.get('test_split', 'test')):
        _check_source(name, split, config)
  if task == 'spectral3d':
    from cgml_jax.spectral3d import pointcloud  # pylint: disable=g-import-not-at-top
    cached = workdir is not None and glob.glob(os.path.join(workdir, 'maps_*.npz'))
    root = pointcloud.data_dir(_data_root(config))
    for split in ('train', 'test'):
      name = f'modelnet10_{split}.npz'
      if not (cached or (root / 'modelnet' / name).exists() or (root / name).exists()):
        _missing(f'ModelNet10 ({name})', root / 'modelnet' / name, config)


# ---------------------------------------------------------------------------------------
# What a finished run leaves behind.


def strict_json(value):
  """`value` with every non-finite float (NaN, inf) replaced by None: strict JSON."""
  if isinstance(value, dict):
    return {k: strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


def _image_summaries(config, workdir: str, since: float):
  """The figures this run wrote (top-level PNGs) as image summaries in `workdir/logs`."""
  if not config.get('logging', {}).get('images', True):
    return
  paths = sorted(p for p in glob.glob(os.path.join(workdir, '*.png'))
                 if os.path.getmtime(p) >= since)
  if not paths:
    return
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from cgml_jax.training import writers  # pylint: disable=g-import-not-at-top
  writer = writers.create_writer(os.path.join(workdir, 'logs'),
                                 tensorboard=config.logging.get('tensorboard', True))
  step = int(config.get('train', {}).get('steps', 0))
  for p in paths:
    with Image.open(p) as im:
      img = np.asarray(im.convert('RGB'), np.float32) / 255.0
    writer.write_images(step, {f'figures/{os.path.basename(p)[:-4]}': img})
  writer.close()


# Headline metrics of the console summary, in column order, with their formats.
HEADLINE = (('coverage', '.3f'), ('phantom_rate', '.3f'), ('mode_frequency_error', '.3f'),
            ('psnr_best', '.2f'), ('ssim_best', '.3f'), ('lpips_best', '.3f'),
            ('diversity', '.3f'), ('final_E', '.4g'), ('final_loss', '.4g'))


def _items(value) -> list:
  return list(value.items()) if isinstance(value, dict) else []


def _per_method(metrics: dict) -> dict[str, dict]:
  """{row: {metric: value}} from the shapes of metrics.json the tasks write."""
  rows: dict[str, dict] = {}

  def add(row, values):
    if isinstance(values, dict):
      rows.setdefault(row, {}).update(
          {k: v for k, v in values.items() if isinstance(v, (int, float, type(None)))})

  for m, v in _items(metrics.get('methods')):  # the toy
    add(m, v)
  protocols = dict(_items(metrics.get('eval')))  # the image tasks
  for protocol, per in protocols.items():
    for m, v in _items(per):
      add(m if len(protocols) == 1 else f'{m} ({protocol})', v)
  for m, v in _items(metrics.get('task_metrics')):
    add(m, v)
  for m, v in _items(metrics.get('train')):
    if isinstance(v, dict) and 'seconds' in v:
      for row in [r for r in rows if r == m or r.startswith(f'{m} (')] or [m]:
        rows.setdefault(row, {})['train_seconds'] = v['seconds']
  for m, v in _items(metrics.get('timing')):  # spectral3d
    if isinstance(v, dict):
      add(m, v)
  for m, v in _items(metrics.get('recovery')):
    if isinstance(v, dict) and 'all/all_degrees' in v:
      rows.setdefault(m, {})['recovery_error'] = v['all/all_degrees']
  return rows


def summary(metrics: dict, workdir: str) -> str:
  """A short table of each method's headline metrics and the files the run wrote."""
  rows = _per_method(metrics)
  cols = [(k, f) for k, f in HEADLINE + (('recovery_error', '.4f'),)
          if any(k in r for r in rows.values())] + [('train_seconds', '.1f')]

  def cell(v, fmt):
    if v is None:
      return 'n/a'
    return format(v, fmt) if isinstance(v, float) else str(v)

  table = [['method'] + [k if k != 'train_seconds' else 'train s' for k, _ in cols]]
  table += [[m] + [cell(r.get(k), f) if k in r else '' for k, f in cols]
            for m, r in rows.items()]
  widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
  lines = ['  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
  lines.insert(1, '  '.join('-' * w for w in widths))
  files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(workdir, '*'))
                 if os.path.isfile(p) and not p.endswith(('.lock', '.tmp')))
  dirs = [f'{d}/' for d in ('logs', 'checkpoints') if os.path.isdir(os.path.join(workdir, d))]
  lines.append(f'wrote to {workdir}: ' + ', '.join(files + dirs))
  return '\n'.join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates the experiment described by `config`, writing into `workdir`.

  The config, the offline data it reads and the batch size are checked first
  (`configs.validate`, `check_data`): a run refused for any of them writes nothing. After
  the task, `workdir/metrics.json` is rewritten as strict JSON (NaN and infinities become
  null) and also records the code version, the hardware and the config that produced it
  (under 'provenance'), so that result files can be traced back to their run; the PNG
  figures the run wrote become image summaries in `workdir/logs` (`logging.images`).

  Returns:
    The metrics written to `workdir/metrics.json`.

  Raises:
    configs.ConfigError: a config field holds a value the library cannot use.
    cgml_jax.data.DataNotFoundError: offline data the config reads is missing.
  """
  configs.validate(config)
  check_data(config, workdir)
  task = config.get('task')
  t_start = time.time()
  out = importlib.import_module(TASKS[task]).train_and_evaluate(config, workdir)
  path = os.path.join(workdir, 'metrics.json')
  if jax.process_index() == 0 and os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    saved['provenance'] = {**code_version(), 'hardware': hardware(),
                           'config': checkpoint.config_to_json(config)}
    with open(path + '.tmp', 'w') as f:
      json.dump(strict_json(saved), f, indent=1, allow_nan=False)
    os.replace(path + '.tmp', path)
  if jax.process_index() == 0:
    checkpoint.record_workdir_config(workdir, config)
    _image_summaries(config, workdir, t_start - 1.0)
  return out
