"""Orbax checkpoints that continue a run exactly, and the workdir's config guard.

A checkpoint at step s is one Orbax step directory with three items:

  state  the whole train state pytree (any `flax.struct.PyTreeNode`: params, optimiser
         states, spectral-norm statistics, step, the persistent z table) and the base PRNG
         key; step keys are `fold_in(key, step)`, so the key and s fix every later key;
  data   the data iterator's position, `get_state()` as JSON, one file per process
         (`process_{i}-of-{n}.json`, like grain's own handler);
  meta   JSON: step, whether training finished, the recorded metric history.

Orbax writes into a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint as the latest. A save that fails (a full disk, a
lost mount) raises `CheckpointWriteError` naming the step and the cause; the partial
directory is removed by the next run, which resumes from the newest complete checkpoint.
A latest checkpoint that exists but cannot be read (a truncated or deleted file) is
reported, moved to `<dir>/corrupted/<step>-<time>` and the one before it is used.

Iterators without `get_state`/`set_state` (e.g. a Python generator) are fast-forwarded on
restore by drawing `step` batches: exact only if the iterator is a deterministic function
of its seed, and O(step). Prefer a checkpointable iterator.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

# Orbax reports every file it writes at absl INFO level; keep the console to our one-line
# save/restore reports (warnings and errors still show).
logging.getLogger('absl').setLevel(logging.WARNING)


# ---------------------------------------------------------------------------------------
# The data iterator as an Orbax item.


class IteratorHandler(ocp.CheckpointHandler):
  """Saves `get_state()` of any iterator as JSON, one file per process."""

  @staticmethod
  def _file(directory: epath.Path) -> epath.Path:
    return directory / f'process_{jax.process_index()}-of-{jax.process_count()}.json'

  def save(self, directory: epath.Path, args: 'IteratorSave'):
    state = args.item.get_state()
    if isinstance(state, bytes):  # grain DataLoaderIterator
      state = {'__bytes__': base64.b64encode(state).decode()}
    self._file(directory).write_text(json.dumps(state))

  def restore(self, directory: epath.Path, args: 'IteratorRestore'):
    f = self._file(directory)
    if not f.exists():
      raise FileNotFoundError(f'no iterator state {f} (was the run written with a different '
                              'number of processes?)')
    state = json.loads(f.read_text())
    if isinstance(state, dict) and set(state) == {'__bytes__'}:
      state = base64.b64decode(state['__bytes__'])
    args.item.set_state(state)
    return args.item

  def metadata(self, directory: epath.Path):
    return None

  def structure(self, directory: epath.Path):
    return None

  def finalize(self, directory: epath.Path):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(IteratorHandler, for_save=True)
@dataclasses.dataclass
class IteratorSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(IteratorHandler, for_restore=True)
@dataclasses.dataclass
class IteratorRestore(ocp.args.CheckpointArgs):
  item: Any


@dataclasses.dataclass(frozen=True)
class _Frozen:
  state: Any

  def get_state(self):
    return self.state


def is_checkpointable(iterator) -> bool:
  return hasattr(iterator, 'get_state') and hasattr(iterator, 'set_state')


# ---------------------------------------------------------------------------------------
# The manager.


class CheckpointMismatchError(ValueError):
  """A readable checkpoint that does not fit the train state (e.g. another model size)."""


class CheckpointWriteError(RuntimeError):
  """Writing a checkpoint failed (e.g. no space left); the cause is chained."""


def _shapes(tree) -> list[tuple]:
  leaves = jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, 'shape') and hasattr(x, 'dtype'))
  return sorted((tuple(x.shape), np.dtype(x.dtype).name) for x in leaves)


class _Held:
  error: BaseException | None = None


@contextlib.contextmanager
def _orbax_errors_held():
  """Holds back the error records that Orbax logs while a save runs, then passes them on
  unless they report the exception that the save raised (set `.error` of the yielded
  object to it).

  Orbax logs a failed write with its traceback from a worker thread and then raises the
  same exception; `CheckpointWriteError` reports it in one line, and the traceback stays
  reachable as its cause (launcher flag --traceback).
  """
  held, logger, out = [], logging.getLogger('absl'), _Held()

  def hold(record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
      held.append(record)
      return False
    return True

  logger.addFilter(hold)
  try:
    yield out
  finally:
    logger.removeFilter(hold)
    for record in held:
      reported = record.exc_info and out.error is not None and (
          record.exc_info[1] is out.error or str(record.exc_info[1]) == str(out.error))
      if not reported:
        logger.handle(record)


def _key_data(key: jax.Array) -> jax.Array:
  """The raw data of the base key, replicated over every device of every process.

  The base key lives on one local device. Orbax writes (and reads) nothing host-local in a
  multi-process run, so there the key becomes a global replicated array (every process
  holds the same key).
  """
  data = jax.random.key_data(key)
  if jax.process_count() == 1:
    return data
  sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(jax.devices()), ('all',)),
                                        jax.sharding.PartitionSpec())
  return jax.make_array_from_process_local_data(sharding, np.asarray(data))


class _Manager(ocp.CheckpointManager):
  """Orbax's manager, minus its own queries of JAX's preemption service.

  Orbax asks `reached_preemption_sync_point(step)` in every save, only to log. That
  service compares the number of its latest query with the agreed stop point, so queries
  must come from one monotone sequence: `loop.fit` makes them (see `loop._preemption`),
  and decides when to save and stop.
  """

  def reached_preemption(self, step: int) -> bool:
    del step
    return False


@dataclasses.dataclass
class Restored:
  state: Any          # the train state, with the template's static fields and shardings
  key: jax.Array      # the base PRNG key of the run
  step: int           # completed steps
  meta: dict          # {'step', 'finished', 'history', ...}


class Checkpointer:
  """An `ocp.CheckpointManager` for one training run (one method), plus fallbacks.

  Args:
    directory: where the step directories go (e.g. workdir/checkpoints/<method>).
    every: save every this many steps (the final step and preemption always save).
    keep: keep the newest `keep` checkpoints.
    async_save: write in a background thread (the device-to-host copy still blocks).
    log: stream for the one-line save/restore/corruption reports (default stdout).
  """

  def __init__(self, directory: str, *, every: int, keep: int = 3, async_save: bool = False,
               log=None):
    if every < 1 or keep < 1:
      raise ValueError(f'checkpoint every={every} and keep={keep} must both be >= 1')
    self.directory = os.path.abspath(directory)
    self.every, self.keep, self.log = every, keep, log
    self._async = async_save
    self._failed = False  # a save failed: closing must not raise its error a second time
    self._manager = self._make_manager()

  def _make_manager(self):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=self.keep, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=self._async)
    # Handlers named up front, so that a new process can read a checkpoint's metadata
    # before restoring it (see `_check_fits`).
    handlers = {'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler(),
                'data': IteratorHandler()}
    return _Manager(self.directory, options=options, item_handlers=handlers)

  def _say(self, msg: str):
    if jax.process_index() == 0:
      print(msg, file=self.log or sys.stdout, flush=True)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    return step % self.every == 0

  def save(self, step: int, state: Any, *, key: jax.Array, iterator=None,
           meta: dict | None = None, wait: bool = False):
    """Writes checkpoint `step` (atomically) and prunes to the newest `keep`."""
    if step in self._manager.all_steps():
      return
    t0 = time.perf_counter()
    items = {
        'state': ocp.args.StandardSave({'train': state, 'key': _key_data(key)}),
        'meta': ocp.args.JsonSave({'step': int(step), **(meta or {})}),
    }
    if iterator is not None and is_checkpointable(iterator):
      # The position now, not whenever a background save gets to it.
      items['data'] = IteratorSave(_Frozen(iterator.get_state()))
    with _orbax_errors_held() as held:
      try:
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)
        if wait or not self._async:
          self._manager.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        held.error = e
        raise self._write_failed(step, e) from e
    self._say(f'[checkpoint] saved step {step} to {self.directory} '
              f'({time.perf_counter() - t0:.2f}s)')

  def _write_failed(self, step: int | None, error: Exception) -> CheckpointWriteError:
    """The one-line error for a failed save of `step` (None: a background save)."""
    self._failed = True
    cause = str(error).strip().splitlines()[0][:300] if str(error).strip() else ''
    try:
      kept = [s for s in self._manager.all_steps() if s != step]
    except Exception:  # pylint: disable=broad-except
      kept = []
    intact = (f'the newest complete checkpoint is step {max(kept)}' if kept else
              'no earlier checkpoint exists')
    what = f'checkpoint {step}' if step is not None else 'a checkpoint'
    return CheckpointWriteError(
        f'writing {what} to {self.directory} failed ({type(error).__name__}: {cause}); '
        f'{intact}. Free space or fix the filesystem, then run the same command to resume.')

  def wait(self):
    """Blocks until a background save is complete; raises CheckpointWriteError if it failed."""
    with _orbax_errors_held() as held:
      try:
        self._manager.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        held.error = e
        raise self._write_failed(None, e) from e

  def close(self):
    """Waits for background saves and closes the manager. After a failed save (already
    reported) it only cleans up, so that the first error is the one that propagates."""
    failed_before = self._failed
    try:
      self.wait()
      self._manager.close()
    except Exception:  # pylint: disable=broad-except
      if not failed_before:
        raise

  def _check_fits(self, step: int, abstract: Any, iterator):
    """Raises CheckpointMismatchError if readable metadata disagrees with the template."""
    saved = _shapes(self._manager.item_metadata(step)['state'].tree)
    wanted = _shapes(abstract)
    if saved != wanted:
      only_saved = sorted(set(saved) - set(wanted))[:5]
      only_wanted = sorted(set(wanted) - set(saved))[:5]
      raise CheckpointMismatchError(
          f'checkpoint {step} in {self.directory} does not fit the train state: it holds '
          f'{len(saved)} arrays, the state has {len(wanted)}; (shape, dtype) only in the '
          f'checkpoint: {only_saved}, only in the state: {only_wanted}. Was it written with '
          'another model config? Use a new workdir.')
    has_data = os.path.isdir(os.path.join(self.directory, str(step), 'data'))
    if iterator is not None and is_checkpointable(iterator) and not has_data:
      raise CheckpointMismatchError(
          f'checkpoint {step} in {self.directory} has no data iterator position, but the '
          f'iterator {type(iterator).__name__} is checkpointable (was it written by a run '
          'with a plain iterator?)')

  def _restore_step(self, step: int, template: Any, key: jax.Array, iterator) -> Restored:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                            {'train': template, 'key': _key_data(key)})
    self._check_fits(step, abstract, iterator)
    items = {'state': ocp.args.StandardRestore(abstract), 'meta': ocp.args.JsonRestore()}
    if iterator is not None and is_checkpointable(iterator):
      items['data'] = IteratorRestore(iterator)
    out = self._manager.restore(step, args=ocp.args.Composite(**items))
    meta = dict(out['meta'])
    if int(meta.get('step', -1)) != step:
      raise ValueError(f'checkpoint {step} says it is step {meta.get("step")}')
    state = out['state']['train']
    raw = out['state']['key']
    if isinstance(raw, jax.Array) and not raw.is_fully_addressable:
      raw = raw.addressable_data(0)  # multi-process: this process's copy (see _key_data)
    saved_key = jax.random.wrap_key_data(np.asarray(raw), impl=jax.random.key_impl(key))
    return Restored(state=state, key=saved_key, step=step, meta=meta)

  def _quarantine(self, step: int, error: Exception):
    self._say(f'[checkpoint] step {step} in {self.directory} is unreadable '
              f'({type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ""})'
              '; moving it aside and using the previous one')
    if jax.process_index() == 0:
      dest = os.path.join(self.directory, 'corrupted', f'{step}-{int(time.time())}')
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f'quarantine {self.directory} {step}')
    self._manager.close()
    self._manager = self._make_manager()

  def restore_latest(self, template: Any, *, key: jax.Array, iterator=None) -> Restored | None:
    """The newest readable checkpoint, or None if there is none.

    Args:
      template: a train state of the right structure (its static fields, shapes, dtypes
        and shardings are used; its values are not).
      key: a key of the right PRNG implementation (the saved one is returned).
      iterator: the data iterator; moved to the saved position if checkpointable, else
        fast-forwarded by the caller (see module docstring).
    """
    while True:
      step = self.latest_step()
      if step is None:
        return None
      t0 = time.perf_counter()
      try:
        restored = self._restore_step(step, template, key, iterator)
      except CheckpointMismatchError:
        raise  # readable but for another state: moving it aside would lose work
      except Exception as e:  # pylint: disable=broad-except
        # Anything unreadable counts as corrupt: truncated tensorstore chunks raise
        # ValueError, deleted files FileNotFoundError, bad JSON JSONDecodeError, ...
        self._quarantine(step, e)
        continue
      self._say(f'[checkpoint] restored step {step} from {self.directory} '
                f'({time.perf_counter() - t0:.2f}s)')
      return restored


# ---------------------------------------------------------------------------------------
# The config guard.

# Fields that may change between a run and its resumption without changing the result:
# logging, checkpoint cadence, the workdir lock's timeout, evaluation-only output and the
# guard's own flag. Anything else (including train.steps, which sets the length of the lr
# schedule) must match.
RESUMABLE_FIELDS = ('train.log_every', 'checkpoint.every', 'checkpoint.keep',
                    'checkpoint.async_save', 'checkpoint.allow_config_mismatch',
                    'checkpoint.lock_timeout', 'logging.*', 'eval.plots', 'distributed.*')


class ConfigMismatchError(ValueError):
  """The workdir was written by a run with a different config."""


def _flatten(d: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(d, dict):
    out = {}
    for k, v in d.items():
      out.update(_flatten(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: d}


def _ignored(field: str, ignore) -> bool:
  return any(field == p or (p.endswith('.*') and field.startswith(p[:-1])) for p in ignore)


def config_diff(old: dict, new: dict, ignore=RESUMABLE_FIELDS) -> dict[str, tuple]:
  """{field: (old, new)} over dotted field names, without the `ignore`d ones."""
  a, b = _flatten(old), _flatten(new)
  return {k: (a.get(k, '<absent>'), b.get(k, '<absent>')) for k in sorted(set(a) | set(b))
          if a.get(k, '<absent>') != b.get(k, '<absent>') and not _ignored(k, ignore)}


def config_to_json(config) -> dict:
  """The config as plain JSON values (tuples become lists)."""
  # Tuples become lists, so that comparing with a saved config is JSON to JSON.
  return json.loads(config.to_json() if hasattr(config, 'to_json') else json.dumps(config))


def check_workdir_config(workdir: str, config, *, allow_mismatch: bool = False,
                         ignore=RESUMABLE_FIELDS, log=None, record: bool = True) -> dict:
  """Refuses to continue a workdir written with a different config; records the config.

  The first run writes `workdir/config.json`. Later runs compare against it and raise
  `ConfigMismatchError` listing each differing field, unless `allow_mismatch`, in which
  case the differences are printed and the new config is recorded.

  Args:
    record: write the config now; False leaves that to `record_workdir_config`, called
      once the run has started work worth guarding (`workdir.prepare` defers it, so a run
      refused before training leaves no config behind).

  Returns:
    The differences {field: (saved, new)} (empty if none or a fresh workdir).
  """
  path = os.path.join(workdir, 'config.json')
  new = config_to_json(config)
  diff = {}
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    diff = config_diff(old, new, ignore)
    if diff:
      lines = '\n'.join(f'  {k}: saved {a!r} != new {b!r}' for k, (a, b) in diff.items())
      if not allow_mismatch:
        raise ConfigMismatchError(
            f'{workdir} holds a run with a different config:\n{lines}\nUse a new --workdir, '
            'or pass --config.checkpoint.allow_config_mismatch=True to continue anyway.')
      if jax.process_index() == 0:
        print(f'[checkpoint] continuing {workdir} despite config changes:\n{lines}',
              file=log or sys.stdout, flush=True)
  if record and (diff or not os.path.exists(path)):
    _write_config(path, new)
  return diff


def record_workdir_config(workdir: str, config, ignore=RESUMABLE_FIELDS):
  """Writes `workdir/config.json` unless it already holds `config` up to the `ignore`d
  fields (process 0 only), as `check_workdir_config(..., record=True)` would.

  Call `check_workdir_config` first: this does not refuse a mismatch, it records it (one
  that was allowed).
  """
  path = os.path.join(workdir, 'config.json')
  new = config_to_json(config)
  if os.path.exists(path):
    with open(path) as f:
      if not config_diff(json.load(f), new, ignore):
        return
  _write_config(path, new)


def _write_config(path: str, config_json: dict):
  if jax.process_index() != 0:
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(config_json, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
