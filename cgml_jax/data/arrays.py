"""In-memory datasets as endless, checkpointable batch iterators (numpy arrays)."""

from __future__ import annotations

import numpy as np


class BatchIterator:
  """Endless shuffled batches (a fresh permutation every epoch), checkpointable.

  The order is that of `np.random.default_rng(seed)` drawing one permutation per epoch.
  `get_state()` is {'epoch', 'position'}; `set_state` redraws the permutations up to that
  epoch, so a restored iterator continues with exactly the batches the original would have
  produced. With several processes each takes its contiguous slice of every global batch
  (process order = device order of the `data` mesh), so the global batch is the same for
  any process count.
  """

  def __init__(self, data: dict, batch_size: int, seed: int, process_index: int = 0,
               process_count: int = 1):
    n = len(data['x'])
    if batch_size > n:
      raise ValueError(f'batch_size {batch_size} exceeds num_train {n}')
    if batch_size % process_count:
      raise ValueError(f'batch_size {batch_size} does not split over {process_count} processes')
    self.data, self.batch_size, self.seed = data, batch_size, seed
    self.local = batch_size // process_count
    self.offset = process_index * self.local
    self.per_epoch = n // batch_size
    self.set_state({'epoch': 0, 'position': 0})

  def get_state(self) -> dict:
    return {'epoch': self.epoch, 'position': self.position}

  def set_state(self, state: dict):
    self.epoch, self.position = int(state['epoch']), int(state['position'])
    self._rng = np.random.default_rng(self.seed)
    for _ in range(self.epoch + 1):
      self._perm = self._rng.permutation(len(self.data['x']))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self.position == self.per_epoch:
      self.epoch, self.position = self.epoch + 1, 0
      self._perm = self._rng.permutation(len(self.data['x']))
    start = self.position * self.batch_size + self.offset
    idx = self._perm[start:start + self.local]
    self.position += 1
    return {'x': self.data['x'][idx], 'y': self.data['y'][idx], 'index': self.data['index'][idx]}
