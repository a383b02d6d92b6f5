"""Data parallelism: one `data` mesh axis over every device of every process.

Parameters, optimiser states and the persistent z table are replicated; each batch is
split along its leading axis over the `data` axis. The train step stays an ordinary
`jax.jit` of the single-device function: XLA partitions it from the input shardings and
inserts the all-reduces of the batch means (gradients, losses) itself. The result equals
the one-device step up to float reassociation of those sums.

Multi-host: every process calls `initialize_distributed` before touching JAX, reads its own
slice of each global batch (`process_batch_size`, rows `process_index::process_count` of
the data or a grain shard), and `shard_batch` assembles the global array from the local
pieces without any host-to-host copy.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'

# Our own variables for launchers that are not auto-detected by JAX (SLURM, Open MPI and
# Cloud TPU are; there `jax.distributed.initialize()` needs no arguments).
ENV_COORDINATOR = 'JAX_COORDINATOR_ADDRESS'
ENV_NUM_PROCESSES = 'JAX_NUM_PROCESSES'
ENV_PROCESS_ID = 'JAX_PROCESS_ID'
_AUTO_DETECTED = ('SLURM_JOB_ID', 'OMPI_COMM_WORLD_SIZE', 'TPU_WORKER_HOSTNAMES',
                  'MEGASCALE_COORDINATOR_ADDRESS')


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Joins a multi-process run if one is configured; a no-op on a single process.

  Order: explicit arguments (e.g. from `config.distributed`), then the environment
  variables JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, then JAX's
  own cluster detection (SLURM, Open MPI, Cloud TPU). Must run before any JAX computation.

  Returns:
    True if this process is part of a multi-process run.
  """
  if jax.distributed.is_initialized():
    return True
  env = os.environ
  address = coordinator_address or env.get(ENV_COORDINATOR)
  count = num_processes if num_processes is not None else env.get(ENV_NUM_PROCESSES)
  pid = process_id if process_id is not None else env.get(ENV_PROCESS_ID)
  if address or count is not None or pid is not None:
    missing = [n for n, v in ((ENV_COORDINATOR, address), (ENV_NUM_PROCESSES, count),
                              (ENV_PROCESS_ID, pid)) if v in (None, '')]
    if missing:
      raise ValueError(f'multi-process run half configured: missing {missing} (set them in '
                       'config.distributed or the environment)')
    if int(count) <= 1:
      return False
    jax.distributed.initialize(coordinator_address=address, num_processes=int(count),
                               process_id=int(pid))
    return True
  if any(k in env for k in _AUTO_DETECTED):
    jax.distributed.initialize()
    return jax.process_count() > 1
  return False


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis `data` over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def process_batch_size(global_batch_size: int, mesh: Mesh | None = None) -> int:
  """The rows each process loads; raises unless the global batch splits evenly.

  Args:
    global_batch_size: examples per step over all devices.
    mesh: default `make_mesh()`.
  """
  mesh = make_mesh() if mesh is None else mesh
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(
        f'global batch size {global_batch_size} is not divisible by the {n} devices of the '
        f"'{DATA_AXIS}' mesh axis; use a multiple of {n} (e.g. "
        f'{max(n, global_batch_size // n * n)}).')
  return global_batch_size // jax.process_count()


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Copies every array leaf of `tree` to all devices of `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Global arrays from this process's rows of a batch, split over `data`.

  Args:
    batch: pytree of host arrays with the process-local batch as leading axis (all leaves
      the same length).
    mesh: from `make_mesh`.

  Returns:
    The same pytree of `jax.Array`s of global leading size local * process_count.
  """
  sharding = data_sharding(mesh)
  n = mesh.devices.size
  local_n = mesh.local_mesh.devices.size

  def put(x):
    x = np.asarray(x)
    if x.ndim == 0:
      raise ValueError(f'batch leaves need a leading batch axis, got a scalar {x!r}')
    if x.shape[0] % local_n:
      raise ValueError(
          f'per-process batch of {x.shape[0]} rows does not split over the {local_n} local '
          f"devices (global batch {x.shape[0] * jax.process_count()} over {n} devices of "
          f"'{DATA_AXIS}'); use a global batch size divisible by {n}.")
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, batch)


def is_primary() -> bool:
  """True on the process that writes shared files (configs, metrics, plots)."""
  return jax.process_index() == 0


def to_local(tree: Any) -> Any:
  """This process's copy of a replicated pytree, as single-device arrays.

  Evaluation code that mixes the trained state with host arrays then runs on one device
  per process, also in a multi-process run where the global arrays are not addressable.
  """
  def local(x):
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
      return x.addressable_data(0)
    return x
  return jax.tree.map(local, tree)
