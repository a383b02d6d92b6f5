"""Cost of the toy's multimodality options: seconds per training step and per sampling call.

  python -m experiments.toy_cost [--config=experiments/toy.py] [--repeats=50]

Times the jitted `cgml.train_step` of the config's cGML model (one batch, l inner steps)
with each training option on and off, and `cgml.sample` (the test set, K samples, T steps)
with and without the rho_hat redraw; medians of `repeats` calls after a warm-up call.
"""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from cgml_jax import cgml, optim
from cgml_jax.tasks import toy

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'experiments/toy.py', 'Toy config file.',
                                lock_config=True)
flags.DEFINE_integer('repeats', 50, 'Timed calls per variant (median reported).')

TRAIN_VARIANTS = {
    'paper': {},
    'init_candidates=4': {'init_candidates': 4},
    'init_candidates=16': {'init_candidates': 16},
    'init_candidates=64': {'init_candidates': 64},
    "latent_target='end'": {'latent_target': 'end'},
}
SAMPLE_VARIANTS = {
    'paper': {},
    'redraw_rounds=1': {'redraw_rho': 1e-9, 'redraw_rounds': 1},
    'redraw_rounds=3': {'redraw_rho': 1e-9, 'redraw_rounds': 3},
}


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `fn()` (which must block) over `repeats` calls after one warm-up.

  Returns:
    Seconds per call.
  """
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main(argv):
  del argv
  config = FLAGS.config
  modes = toy.validate_modes(config.data.modes)
  data = toy.make_dataset(jax.random.key(0), config.data.num_train, modes)
  b = config.data.batch_size
  batch = {k: jnp.asarray(v[:b]) for k, v in data.items() if k != 'mode'}
  enc, gen, lat = toy._models(config, config.model.z_dim)  # pylint: disable=protected-access
  tx = optim.from_config(config.train, config.train.lr)
  base = cgml.Hyper(z_dim=config.model.z_dim, step_size=config.latent.step_size,
                    alpha=config.latent.alpha, inner_steps=config.train.inner_steps,
                    unroll=config.train.unroll)
  state = cgml.CGMLState.create(jax.random.key(1), batch['x'], encoder=enc, generator=gen,
                                latent_net=lat, tx_hg=tx, tx_latent=tx, hp=base,
                                num_examples=len(data['x']))
  print(f'batch {b}, l = {base.inner_steps}, {FLAGS.repeats} timed calls each\n')
  print('| training option | ms per step | relative |\n|---|---|---|')
  ref = None
  for name, kw in TRAIN_VARIANTS.items():
    s = state.replace(hp=dataclasses.replace(base, **kw))
    step = jax.jit(cgml.train_step)  # not donated: the same state is reused
    sec = median_seconds(lambda: jax.block_until_ready(step(s, batch, jax.random.key(0))),
                         FLAGS.repeats)
    ref = ref or sec
    print(f'| {name} | {1e3 * sec:.1f} | {sec / ref:.2f} |')
  x = jnp.asarray(data['x'][:config.data.num_test])
  k, t = config.eval.num_samples, config.latent.traverse_steps
  print(f'\n| sampling ({len(x)} x, K = {k}, T = {t}) | ms per call | relative |\n|---|---|---|')
  ref = None
  for name, kw in SAMPLE_VARIANTS.items():
    s = state.replace(hp=dataclasses.replace(base, **kw))
    fn = jax.jit(cgml.sample, static_argnums=(3, 4))
    sec = median_seconds(lambda: jax.block_until_ready(fn(s, x, jax.random.key(0), k, t)),
                         max(FLAGS.repeats // 5, 3))
    ref = ref or sec
    print(f'| {name} | {1e3 * sec:.1f} | {sec / ref:.2f} |')


if __name__ == '__main__':
  app.run(main)
