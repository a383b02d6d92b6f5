"""The toy of paper Sec. 4 / Fig. 3: y = s * (x, x^2, x^3) with s drawn from a few modes.

x ~ U[-1, 1]; s is drawn uniformly from `config.data.modes` per example, so every x has
len(modes) valid outputs (branches). A regressor can only hit their median; cGML should
put each of its K samples on some branch (no phantoms) and every branch under some sample
(coverage).

Metrics on held-out x, each with K samples (tau = config.eval.tau_frac * max|s|):
  branch_error   mean over samples of the distance to the nearest true branch;
  coverage       fraction of test x for which every branch has a sample within tau;
  phantom_rate   fraction of samples within tau of no branch.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cgml_jax import cgml, loop, optim, parallel, regression
from cgml_jax import workdir as workdir_lib
from cgml_jax.models.mlp import MLPEncoder, MLPGenerator, MLPLatentNet

METHODS = ('l1', 'cgml_no_rho', 'cgml')


def validate_modes(modes) -> np.ndarray:
  """The scales s as a float array; raises on an empty, repeated or non-finite list."""
  modes = np.asarray(list(modes), np.float32)
  if modes.ndim != 1 or modes.size == 0:
    raise ValueError(f'config.data.modes must be a non-empty list of scales, got {modes.tolist()}')
  if not np.all(np.isfinite(modes)):
    raise ValueError(f'config.data.modes must be finite, got {modes.tolist()}')
  if len(np.unique(modes)) != modes.size:
    raise ValueError(f'config.data.modes must be distinct, got {modes.tolist()}')
  return modes


def branches(x: np.ndarray, modes: np.ndarray) -> np.ndarray:
  """True outputs for every mode: x (N, 1) -> (N, M, 3)."""
  basis = np.concatenate([x, x ** 2, x ** 3], axis=-1)  # (N, 3)
  return modes[None, :, None] * basis[:, None, :]


def make_dataset(key: jax.Array, n: int, modes: np.ndarray) -> dict[str, np.ndarray]:
  """n examples {'x' (n, 1), 'y' (n, 3), 'mode' (n,), 'index' (n,)}."""
  kx, ks = jax.random.split(key)
  x = np.asarray(jax.random.uniform(kx, (n, 1), minval=-1.0, maxval=1.0))
  mode = np.asarray(jax.random.randint(ks, (n,), 0, len(modes)))
  y = branches(x, modes)[np.arange(n), mode]
  return {'x': x, 'y': y.astype(np.float32), 'mode': mode, 'index': np.arange(n)}


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


def batch_iterator(data: dict, batch_size: int, seed: int) -> BatchIterator:
  """Endless shuffled batches of the whole batch on one process (see `BatchIterator`)."""
  return BatchIterator(data, batch_size, seed)


def evaluate_samples(x: np.ndarray, samples: np.ndarray, modes: np.ndarray,
                     tau: float) -> dict[str, float]:
  """Branch error, coverage and phantom rate of samples (N, K, 3) at inputs x (N, 1)."""
  b = branches(x, modes)  # (N, M, 3)
  dist = np.linalg.norm(samples[:, :, None, :] - b[:, None, :, :], axis=-1)  # (N, K, M)
  nearest = dist.min(axis=2)  # (N, K)
  covered = (dist < tau).any(axis=1).all(axis=1)  # (N,)
  # Where branches are closer than 2 tau one sample can cover both, so coverage there says
  # nothing about multimodality: report it separately on the x where branches separate.
  gaps = np.linalg.norm(b[:, :, None] - b[:, None, :], axis=-1)
  gaps = np.where(np.eye(len(modes), dtype=bool)[None], np.inf, gaps)
  separated = gaps.min(axis=(1, 2)) >= 2 * tau if len(modes) > 1 else np.ones(len(x), bool)
  return {
      'branch_error': float(nearest.mean()),
      'coverage': float(covered.mean()),
      'coverage_separated': float(covered[separated].mean()) if separated.any() else float('nan'),
      'phantom_rate': float((nearest >= tau).mean()),
      'tau': float(tau),
  }


def _models(config, z_dim: int):
  m = config.model
  enc = MLPEncoder(width=m.width, depth=m.depth, h_dim=m.h_dim, activation=m.activation)
  gen = MLPGenerator(out_dim=3, width=m.width, depth=m.depth, activation=m.activation,
                     spectral_norm=m.spectral_norm, lipschitz=m.lipschitz)
  lat = MLPLatentNet(width=m.width, depth=m.depth, activation=m.activation,
                     spectral_norm=m.latent_spectral_norm, lipschitz=m.latent_lipschitz,
                     residual=m.latent_residual)
  return enc, gen, lat



def train_method(method: str, config, data: dict, key: jax.Array, workdir: str | None = None,
                 writer=None):
  """Trains one of METHODS on `data`; returns (state, history, seconds).

  With a `workdir`, checkpoints go to `workdir/checkpoints/<method>` and training resumes
  from there; a method whose final checkpoint exists is restored, not retrained.
  """
  if method not in METHODS:
    raise ValueError(f'unknown toy method {method!r}; expected one of {METHODS}')
  k_init, k_train = jax.random.split(key)
  enc, gen, lat = _models(config, config.model.z_dim)
  x0 = jnp.asarray(data['x'][:config.data.batch_size])
  tx_hg = optim.from_config(config.train, config.train.lr)
  if method == 'l1':
    state = regression.RegressionState.create(k_init, x0, encoder=enc, generator=gen, tx=tx_hg)
    step_fn = regression.train_step
  else:
    tx_lat = optim.from_config(config.train, config.train.lr_latent)
    hp = cgml.Hyper(z_dim=config.model.z_dim, step_size=config.latent.step_size,
                    alpha=config.latent.alpha, inner_steps=config.train.inner_steps,
                    use_momentum=(method == 'cgml') and config.latent.use_momentum,
                    generator_update=config.train.generator_update,
                    latent_init=config.latent.init, clip_step=config.latent.clip_step,
                    step_size_decay=config.latent.step_size_decay,
                    unroll=config.train.unroll,
                    init_candidates=config.latent.get('init_candidates', 1),
                    latent_target=config.latent.get('target', 'next'),
                    redraw_rho=config.latent.get('redraw_rho', 0.0),
                    redraw_rounds=config.latent.get('redraw_rounds', 0))
    state = cgml.CGMLState.create(k_init, x0, encoder=enc, generator=gen, latent_net=lat,
                                  tx_hg=tx_hg, tx_latent=tx_lat, hp=hp,
                                  num_examples=len(data['x']))
    step_fn = cgml.train_step
  mesh = parallel.make_mesh()
  parallel.process_batch_size(config.data.batch_size, mesh)  # fails early if uneven
  batches = BatchIterator(data, config.data.batch_size, config.seed,
                          jax.process_index(), jax.process_count())
  return workdir_lib.fit_method(state, step_fn, batches, config, workdir, method,
                                f'toy/{method}', k_train, writer=writer,
                                mesh=mesh)


def sample_method(method: str, state, x: np.ndarray, key: jax.Array, config):
  """(N, K, 3) samples; for 'l1' the one prediction repeated K times."""
  k = config.eval.num_samples
  if method == 'l1':
    y = np.asarray(jax.jit(regression.predict)(state, jnp.asarray(x)))
    return np.repeat(y[:, None], k, axis=1)
  fn = jax.jit(cgml.sample, static_argnums=(3, 4))
  return np.asarray(fn(state, jnp.asarray(x), key, k, config.latent.traverse_steps))


def rho_map(state, x: np.ndarray, key: jax.Array, num_samples: int, num_steps: int):
  """Mean predicted rho_hat along traversals: (num_steps, N) for a heat map over (t, x)."""
  @jax.jit
  def run(state, x, key):
    b = x.shape[0]
    h = cgml._repeat(cgml.encode(state, x), num_samples)
    z0 = cgml.sample_sphere(key, (b * num_samples, state.hp.z_dim))

    def step(z, _):
      r_hat, rho_hat = cgml.latent_field(state, z, h)
      return cgml.eq4_step(z, r_hat, rho_hat, state.hp.use_momentum,
                           state.hp.clip_step), rho_hat

    _, rhos = jax.lax.scan(step, z0, length=num_steps)
    return rhos.reshape(num_steps, b, num_samples).mean(-1)

  return np.asarray(run(state, jnp.asarray(x), key))


def samples_image(x: np.ndarray, samples: np.ndarray, modes: np.ndarray) -> np.ndarray:
  """The K samples per x (red) over the true branches (grey), y[0] and y[2]: (H, W, 3)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  xs = np.linspace(-1, 1, 200)[:, None]
  truth = branches(xs, modes)
  fig, axes = plt.subplots(1, 2, figsize=(5, 2.2), dpi=64)
  for ax, d in zip(axes, (0, 2)):
    ax.plot(xs[:, 0], truth[:, :, d], color='0.7', lw=2)
    ax.scatter(np.repeat(x[:, 0], samples.shape[1]), samples[:, :, d].ravel(), s=1, color='C3')
    ax.set_title(f'y[{d}], K={samples.shape[1]}', fontsize=8)
  fig.tight_layout()
  fig.canvas.draw()
  img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  plt.close(fig)
  return img


def plot(workdir: str, x: np.ndarray, samples: dict, modes: np.ndarray, rho: np.ndarray | None,
         x_rho: np.ndarray | None):
  """fig3_toy.png (per output dimension: truth, L1, w/o rho, with rho) and rho_heatmap.png."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  cols = ['truth'] + [m for m in METHODS if m in samples]
  titles = {'truth': 'ground truth', 'l1': 'L1 regression', 'cgml_no_rho': 'cGML w/o ρ',
            'cgml': 'cGML with ρ'}
  xs = np.linspace(-1, 1, 400)[:, None]
  truth = branches(xs, modes)
  fig, axes = plt.subplots(3, len(cols), figsize=(3.2 * len(cols), 8), sharex=True,
                           sharey='row', squeeze=False)
  for d in range(3):
    for c, name in enumerate(cols):
      ax = axes[d, c]
      for m in range(len(modes)):
        ax.plot(xs[:, 0], truth[:, m, d], color='0.75', lw=3 if name == 'truth' else 1.5, zorder=1)
      if name != 'truth':
        s = samples[name]
        ax.scatter(np.repeat(x[:, 0], s.shape[1]), s[:, :, d].ravel(), s=2, alpha=0.5,
                   color='C3', zorder=2)
      if d == 0:
        ax.set_title(titles[name])
      if c == 0:
        ax.set_ylabel(f'y[{d}] = s·x^{d + 1}')
      if d == 2:
        ax.set_xlabel('x')
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'fig3_toy.png'), dpi=110)
  plt.close(fig)
  if rho is not None:
    order = np.argsort(x_rho[:, 0])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    im = ax.imshow(rho[:, order], aspect='auto', origin='lower', cmap='viridis',
                   extent=[x_rho[order[0], 0], x_rho[order[-1], 0], 0.5, rho.shape[0] + 0.5])
    ax.set_xlabel('x')
    ax.set_ylabel('traversal step t')
    ax.set_title('learned ρ̂ (mean over samples)')
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, 'rho_heatmap.png'), dpi=110)
    plt.close(fig)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains every method in `config.methods` with the same budget, evaluates, plots.

  Writes `workdir/metrics.json` ({method: metrics}), `fig3_toy.png`, `rho_heatmap.png`.
  """
  modes = validate_modes(config.data.modes)
  for m in config.methods:
    if m not in METHODS:
      raise ValueError(f'unknown toy method {m!r} in config.methods; expected some of {METHODS}')
  writer = workdir_lib.prepare(config, workdir)
  key = jax.random.key(config.seed)
  k_train, k_test, k_models, k_eval = jax.random.split(key, 4)
  data = make_dataset(k_train, config.data.num_train, modes)
  test = make_dataset(k_test, config.data.num_test, modes)
  tau = config.eval.tau_frac * float(np.abs(modes).max())
  results, samples, rho, states = {}, {}, None, {}
  for i, method in enumerate(config.methods):
    state, history, seconds = train_method(method, config, data,
                                           jax.random.fold_in(k_models, i), workdir, writer)
    s = sample_method(method, state, test['x'], k_eval, config)
    samples[method] = s
    if config.logging.images:
      writer.write_images(config.train.steps, {f'toy/{method}/samples':
                                               samples_image(test['x'], s, modes)})
    results[method] = {**evaluate_samples(test['x'], s, modes, tau),
                       'train_seconds': round(seconds, 2), 'final_E': history[-1]['E'],
                       'final_update_norm': loop.last_update_norms(history)}
    if method == 'cgml':
      rho = rho_map(state, test['x'], k_eval, config.eval.num_samples,
                    config.latent.traverse_steps)
    print(f'[toy/{method}] ' + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                           for k, v in results[method].items()}), flush=True)
  out = {'modes': modes.tolist(), 'num_test': int(config.data.num_test),
         'num_samples': int(config.eval.num_samples), 'tau': tau, 'methods': results}
  writer.close()
  if not parallel.is_primary():
    return out
  with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
    json.dump(out, f, indent=2)
  if config.eval.plots:
    plot(workdir, test['x'], samples, modes, rho, test['x'])
  return out
