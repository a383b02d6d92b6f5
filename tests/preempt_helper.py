"""A tiny `loop.fit` with checkpoints on 2 forced CPU devices per process, for preemption.

  JAX_COORDINATOR_ADDRESS=localhost:PORT JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=i \
      python tests/preempt_helper.py --workdir=DIR --out=OUT.npz [--reference=REF.npz] \
      [--steps=60] [--pace=0.1]

Trains a linear model with Adam on batches whose rows are split over the processes (so
every step all-reduces across them) and a per-step key. On SIGTERM it prints the
`Preempted` message and exits with 143, like the launcher; on completion process 0 writes
the final state to --out. `--pace` sleeps that long per batch, so that a run lasts long
enough to be signalled mid-way; it cannot change results. `--reference` first trains the
same run without checkpoints and without pace (uninterrupted) and writes it there: the
test then needs no separate pair of processes for the reference.
"""

import argparse
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument('--workdir', required=True)
parser.add_argument('--out', required=True)
parser.add_argument('--reference', default='')
parser.add_argument('--steps', type=int, default=60)
parser.add_argument('--pace', type=float, default=0.0)
args = parser.parse_args()
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=2').strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from cgml_jax.training import parallel  # noqa: E402

parallel.initialize_distributed()

from cgml_jax.training import checkpoint, loop  # noqa: E402

TX = optax.adam(0.05)
GLOBAL_BATCH = 8


class Batches:
  """This process's rows of deterministic global batches; checkpointable."""

  def __init__(self, pace: float):
    self.pos, self.pace = 0, pace

  def get_state(self):
    return {'pos': self.pos}

  def set_state(self, s):
    self.pos = s['pos']

  def __iter__(self):
    return self

  def __next__(self):
    rng = np.random.default_rng(self.pos)
    self.pos += 1
    time.sleep(self.pace)
    x = rng.normal(size=(GLOBAL_BATCH, 2)).astype(np.float32)
    rows = slice(jax.process_index(), None, jax.process_count())
    return {'x': x[rows], 'y': x[rows] @ np.float32([[1.0], [-2.0]])}


def step_fn(state, batch, key):
  noise = 0.01 * jax.random.normal(key, (1,))

  def loss(w):
    return jnp.mean((batch['x'] @ w + noise - batch['y']) ** 2)

  e, g = jax.value_and_grad(loss)(state['w'])
  updates, opt = TX.update(g, state['opt'], state['w'])
  return {'w': optax.apply_updates(state['w'], updates), 'opt': opt}, {'E': e}


def save(state, path):
  if jax.process_index() == 0:
    local = parallel.to_local(state)
    np.savez(path, **{jax.tree_util.keystr(k): np.asarray(v)
                      for k, v in jax.tree_util.tree_leaves_with_path(local)})


def main():
  def fit(batches, ckpt, name):
    w = jnp.zeros((2, 1))  # a fresh state per fit: fit donates its buffers
    return loop.fit({'w': w, 'opt': TX.init(w)}, step_fn, batches, num_steps=args.steps,
                    key=jax.random.key(0), log_every=5, checkpointer=ckpt, name=name)

  if args.reference:
    save(fit(Batches(0.0), None, 'reference')[0], args.reference)
  ckpt = checkpoint.Checkpointer(os.path.join(args.workdir, 'ck'), every=50, keep=2)
  try:
    state, _ = fit(Batches(args.pace), ckpt, 'train')
  except loop.Preempted as e:
    print(e, flush=True)
    ckpt.close()
    sys.exit(143)
  ckpt.close()
  save(state, args.out)
  print('done', flush=True)


if __name__ == '__main__':
  main()
