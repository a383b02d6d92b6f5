r"""grain pipelines: shard, shuffle per epoch, transform with fresh per-epoch randomness, batch.

    source --index--> shard (process i of n) --shuffle(seed, epoch)--> transform --> batch
           --> repeat(num_epochs)

* 'index': every example carries its row in the source (int32), before sharding and
  shuffling: the id of cGML's persistent z table.
* Shuffling: grain's `shuffle` reseeds each epoch (seed + epoch), so the order changes per
  epoch and is the same on every run with the same seed.
* Randomness of transforms: the transform of example `id` in epoch `e` receives
  `np.random.default_rng([seed, e, id])`. Corruptions and masks are fresh every epoch yet
  reproducible, and independent of the shuffle and of the number of processes.
* Batches: dicts of numpy arrays with a leading batch axis; with `drop_remainder` every
  batch is full and an epoch has `len(shard) // batch_size` steps.
* Multi-host: process i of n reads rows i, i + n, i + 2n, ... and every shard is cut to
  floor(N / n) rows so that all processes take the same number of steps (up to n - 1
  examples per epoch are left out). `batch_size` is per process.
* Checkpointing: iterators from `iter(ds)` or `make_iterator(ds)` are grain
  `DatasetIterator`s with `get_state()` (a small JSON-able dict) and `set_state()`. With
  Orbax, save them next to the train state:

      ocp.args.Composite(state=ocp.args.StandardSave(state),
                         data=grain.checkpoint.CheckpointSave(iterator))

  and restore with `grain.checkpoint.CheckpointRestore(iterator)` (see
  `checkpoint_args`). The state is one integer (the next batch), so restoring is O(1).
"""

from __future__ import annotations

import json
from typing import Any

import grain
import numpy as np

from cgml_jax.data.transforms import Example, Transform


def _add_index(n: int):
  def fn(i: int, example: Example) -> Example:
    if not isinstance(example, dict):
      raise TypeError(f'sources must return dicts of arrays, got {type(example).__name__}')
    return {**example, 'index': np.int32(i % n)}
  return fn


def _apply_transform(transform: Transform | None, seed: int, epoch_length: int):
  def fn(i: int, example: Example) -> Example:
    index = example['index']
    if transform is None:
      return example
    epoch = i // epoch_length
    rng = np.random.default_rng([seed, epoch, int(index)])
    out = transform(example, rng)
    if not isinstance(out, dict):
      raise TypeError(f'a transform must return a dict, got {type(out).__name__}')
    return {**out, 'index': index}
  return fn


def make_pipeline(source: Any, *, batch_size: int, seed: int = 0,
                  transform: Transform | None = None, shuffle: bool = True,
                  num_epochs: int | None = None, drop_remainder: bool = True,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """A grain `MapDataset` of batches (see the module docstring for the guarantees).

  Args:
    source: random-access source (len, getitem -> dict of numpy arrays), e.g. from
      `cgml_jax.data.load_source`.
    batch_size: examples per batch on this process.
    seed: seeds the shuffle and the transforms, in [0, 2**32).
    transform: `fn(example, rng) -> example` (cgml_jax.data.transforms), or None.
    shuffle: reshuffle every epoch; False keeps source order (evaluation).
    num_epochs: passes over the data; None repeats forever.
    drop_remainder: drop the last incomplete batch of each epoch.
    process_index, process_count: this process's shard (`jax.process_index()`,
      `jax.process_count()`).

  Returns:
    `grain.MapDataset` whose elements are batches {key: (batch_size, ...) array,
    'index': (batch_size,) int32}. `len(ds)` is steps per epoch times num_epochs
    (sys.maxsize if infinite); `iter(ds)` gives a checkpointable iterator.
  """
  n = len(source)
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index must be in [0, {process_count}), got {process_index}')
  if not 0 <= seed < 2**32:
    raise ValueError(f'seed must be in [0, 2**32), got {seed}')
  shard_len = n // process_count
  if batch_size < 1 or (drop_remainder and shard_len < batch_size):
    raise ValueError(f'batch_size {batch_size} does not fit a shard of {shard_len} examples '
                     f'({n} examples over {process_count} processes)')
  ds = grain.MapDataset.source(source).map_with_index(_add_index(n))
  if process_count > 1:
    ds = ds[process_index::process_count][:shard_len]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.map_with_index(_apply_transform(transform, seed, shard_len))
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  return ds


def steps_per_epoch(num_examples: int, batch_size: int, process_count: int = 1,
                    drop_remainder: bool = True) -> int:
  """Batches per epoch on each process, as `make_pipeline` produces them."""
  shard = num_examples // process_count
  return shard // batch_size if drop_remainder else -(-shard // batch_size)


def make_iterator(ds: grain.MapDataset, num_threads: int = 2, prefetch: int = 4
                  ) -> grain.DatasetIterator:
  """A checkpointable iterator that reads `num_threads` batches ahead in threads.

  Args:
    ds: from `make_pipeline`.
    num_threads: reader threads (numpy transforms release the GIL only in part; 1-4 suits
      small CPU hosts).
    prefetch: batches buffered ahead.

  Returns:
    grain `DatasetIterator` (next(), get_state(), set_state()).
  """
  opts = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return iter(ds.to_iter_dataset(opts))


def iterator_state(it: grain.DatasetIterator) -> str:
  """The iterator position as a JSON string (what grain's Orbax handler writes)."""
  return json.dumps(it.get_state())


def restore_iterator(it: grain.DatasetIterator, state: str | dict) -> grain.DatasetIterator:
  """Moves `it` (from the same pipeline definition) to a saved position; returns it."""
  it.set_state(json.loads(state) if isinstance(state, str) else state)
  return it


def checkpoint_args(it: grain.DatasetIterator, restore: bool = False):
  """Orbax args for the iterator: `grain.checkpoint.CheckpointSave/Restore(it)`.

  Use as one item of `ocp.args.Composite(...)` in `CheckpointManager.save/restore`.
  """
  import grain.checkpoint as gc  # imports orbax
  return gc.CheckpointRestore(it) if restore else gc.CheckpointSave(it)
