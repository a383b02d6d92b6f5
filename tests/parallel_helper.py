"""Runs a few cGML steps through `loop.fit` on N forced CPU devices; writes params to npz.

  python tests/parallel_helper.py --devices=4 --out=p4.npz [--batch=8] [--steps=2]

Multi-process: set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID; each
process forces --devices local devices and reads its own rows of every batch.

XLA_FLAGS must be set before jax is imported, hence a separate process per device count.
Prints one JSON line {'ok': ..., ...} on stdout.
"""

import argparse
import json
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument('--devices', type=int, required=True)
parser.add_argument('--out', required=True)
parser.add_argument('--batch', type=int, default=8)
parser.add_argument('--steps', type=int, default=2)
parser.add_argument('--uneven', type=int, default=0, help='also report the error for this batch')
args = parser.parse_args()
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           f' --xla_force_host_platform_device_count={args.devices}').strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  (after XLA_FLAGS)
import numpy as np  # noqa: E402
import optax  # noqa: E402

from cgml_jax.training import parallel  # noqa: E402

parallel.initialize_distributed()

from cgml_jax import cgml  # noqa: E402
from cgml_jax.data.arrays import BatchIterator  # noqa: E402
from cgml_jax.models.mlp import MLPEncoder, MLPGenerator, MLPLatentNet  # noqa: E402
from cgml_jax.tasks import toy  # noqa: E402
from cgml_jax.training import loop  # noqa: E402


def main():
  mesh = parallel.make_mesh()
  info = {'devices': mesh.devices.size, 'processes': jax.process_count()}
  try:
    parallel.process_batch_size(args.batch, mesh)
  except ValueError as e:
    print(json.dumps({'ok': False, 'error': str(e), **info}), flush=True)
    return
  modes = np.array([4.0, -4.0], np.float32)
  data = toy.make_dataset(jax.random.key(1), 64, modes)
  hp = cgml.Hyper(z_dim=3, step_size=1.0, alpha=1.0, inner_steps=2, latent_init='persistent')
  # SGD, not Adam: Adam divides by sqrt(v), so on a near-zero gradient (e.g. an L1 bias
  # gradient, a mean of balanced signs) it turns float reassociation noise into a full step.
  tx = optax.sgd(0.1)
  state = cgml.CGMLState.create(
      jax.random.key(0), data['x'][:args.batch], encoder=MLPEncoder(width=16, depth=2, h_dim=8),
      generator=MLPGenerator(out_dim=3, width=16, depth=2, spectral_norm=True),
      latent_net=MLPLatentNet(width=16, depth=2), tx_hg=tx, tx_latent=tx, hp=hp,
      num_examples=64)
  batches = BatchIterator(data, args.batch, seed=0, process_index=jax.process_index(),
                              process_count=jax.process_count())
  first = parallel.shard_batch(BatchIterator(data, args.batch, 0, jax.process_index(),
                                                 jax.process_count()).__next__(), mesh)
  info['batch_spec'] = str(first['x'].sharding.spec)
  info['batch_shards'] = len(first['x'].addressable_shards)
  def flatten(s, prefix=''):
    return {prefix + jax.tree_util.keystr(p): np.asarray(v) for p, v in
            jax.tree_util.tree_leaves_with_path({'params': s.params, 'stats': s.stats,
                                                 'z_table': s.z_table})}

  init = flatten(state, 'init')
  state, _ = loop.fit(state, cgml.train_step, batches, num_steps=args.steps,
                      key=jax.random.key(2), log_every=1000, mesh=mesh)
  info['params_replicated'] = all(x.sharding.is_fully_replicated
                                  for x in jax.tree.leaves(state))
  flat = {**flatten(parallel.to_local(state)), **init}
  if jax.process_index() == 0:
    np.savez(args.out, **flat)
  if args.uneven:
    try:
      parallel.process_batch_size(args.uneven, mesh)
      info['uneven_error'] = None
    except ValueError as e:
      info['uneven_error'] = str(e)
  print(json.dumps({'ok': True, **info}), flush=True)


if __name__ == '__main__':
  main()
