"""The toy of paper Sec. 4 / Fig. 3: y = s * (x, x^2, x^3) with s drawn from a few modes.

x ~ U[-1, 1]; s is drawn uniformly from `config.data.modes` per example, so every x has
len(modes) valid outputs (branches). A regressor can only hit their median; cGML should
put each of its K samples on some branch (no phantoms) and every branch under some sample
(coverage).

Metrics on held-out x, each with K samples (tau = config.eval.tau_frac * max|s|):
  branch_error   mean over samples of the distance to the nearest true branch;
  coverage       fraction of test x for which every branch has a sample within tau;
  phantom_rate   fraction of samples within tau of no branch.
  mode_frequency_error  total-variation distance between the samples' branch histogram
                 (each sample on its nearest branch within tau, else 'none') and the
                 uniform prior of the modes (`cgml_jax.metrics.modes`).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cgml_jax import cgml
from cgml_jax.data.arrays import BatchIterator
from cgml_jax.metrics import modes as modes_lib
from cgml_jax.models.mlp import MLPEncoder, MLPGenerator, MLPLatentNet
from cgml_jax.tasks import methods as methods_lib
from cgml_jax.tasks import names
from cgml_jax.training import parallel
from cgml_jax.training import workdir as workdir_lib

METHODS = ('l1', 'cgml_no_rho', 'cgml', 'cimle')  # cimle: the one peer with no D (MLP G)


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
      'mode_frequency_error': modes_lib.mode_frequency_error(
          np.where(nearest < tau, dist.argmin(axis=2), modes_lib.NO_MODE),
          np.ones(len(modes))),
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


def method_context(config, data: dict, workdir: str | None = None,
                   writer=None) -> methods_lib.Context:
  """The registry's view of the toy (`cgml_jax.tasks.methods.Context`)."""
  mesh = parallel.make_mesh()
  parallel.process_batch_size(config.data.batch_size, mesh)  # fails early if uneven
  return methods_lib.Context(
      name='toy', config=config, models=lambda cfg, out: _models(cfg, cfg.model.z_dim),
      loss_fn=cgml.ERRORS[config.loss.error],
      example={k: v[:config.data.batch_size] for k, v in data.items()},
      batches=lambda: BatchIterator(data, config.data.batch_size, config.seed,
                                    jax.process_index(), jax.process_count()),
      num_examples=len(data['x']), workdir=workdir, writer=writer)


def train_method(method: str, config, data: dict, key: jax.Array, workdir: str | None = None,
                 writer=None) -> methods_lib.Trained:
  """Trains one of METHODS on `data` (checkpointed and resumed under `workdir`)."""
  if method not in METHODS:
    raise ValueError(f'unknown toy method {method!r}; expected one of {METHODS}')
  return methods_lib.train(method, method_context(config, data, workdir, writer), key)


def rho_map(state, x: np.ndarray, key: jax.Array, num_samples: int, num_steps: int):
  """Mean predicted rho_hat along traversals: (num_steps, N) for a heat map over (t, x)."""
  @jax.jit
  def run(state, x, key):
    b = x.shape[0]
    h = cgml.repeat_batch(cgml.encode(state, x), num_samples)
    z0 = cgml.sample_sphere(key, (b * num_samples, state.hp.z_dim))

    def step(z, _):
      r_hat, rho_hat = cgml.latent_field(state, z, h)
      return cgml.eq4_step(z, r_hat, rho_hat, state.hp.use_momentum,
                           state.hp.clip_step), rho_hat

    _, rhos = jax.lax.scan(step, z0, length=num_steps)
    return rhos.reshape(num_steps, b, num_samples).mean(-1)

  return np.asarray(run(state, jnp.asarray(x), key))


def rho_xy_map(state, x_range: tuple[float, float] = (-1.0, 1.0), num_x: int = 100,
               num_z: int = 1000, num_y: int = 100, key: jax.Array | None = None):
  r"""The learned rho_hat over the (x, y) plane, per output dimension (paper Fig. 3d).

  Construction: for each of `num_x` inputs x on a regular grid, h = H(x); `num_z` fixed
  points z cover the sphere S^{n-1} (uniform samples, the same for every x); each pair
  (x, z) is mapped to the output y = G(h, z) and coloured by Z's step length
  rho_hat(z, h) there. A cell of the (x, y[d]) grid (y[d] in `num_y` bins spanning the
  outputs reached) shows the mean rho_hat over the pairs whose output falls in it, and is
  empty (NaN) where G puts no output. So the map is rho_hat where the model can generate,
  in the coordinates of the data: low along the branches it has learned to come to rest
  on, high where a latent is still on its way.

  Args:
    state: a trained `cgml.CGMLState` of the toy.
    x_range: the inputs' interval.
    num_x: inputs on the grid.
    num_z: points on the sphere per input.
    num_y: bins of each output dimension.
    key: PRNG key of the sphere points (default key 0, so the map is reproducible).

  Returns:
    (xs (num_x,), y_edges (D, num_y + 1), rho (D, num_y, num_x)) with D output dimensions;
    rho[d, j, i] is the mean rho_hat at x = xs[i] over outputs y[d] in bin j.
  """
  key = jax.random.key(0) if key is None else key
  xs = np.linspace(x_range[0], x_range[1], num_x, dtype=np.float32)

  @jax.jit
  def run(state, x, z):
    h = cgml.repeat_batch(cgml.encode(state, x), z.shape[0])  # (num_x * num_z, ...)
    z = jnp.tile(z, (x.shape[0], 1))
    y = cgml.generate(state, h, z)
    return y, cgml.latent_field(state, z, h)[1]

  z = cgml.sample_sphere(key, (num_z, state.hp.z_dim))
  y, rho = (np.asarray(a) for a in run(state, jnp.asarray(xs[:, None]), z))
  y = y.reshape(num_x, num_z, -1)
  rho = rho.reshape(num_x, num_z)
  dims = y.shape[-1]
  edges = np.stack([np.linspace(y[..., d].min(), y[..., d].max() + 1e-6, num_y + 1)
                    for d in range(dims)])
  out = np.full((dims, num_y, num_x), np.nan, np.float32)
  for d in range(dims):
    bins = np.clip(np.searchsorted(edges[d], y[..., d], side='right') - 1, 0, num_y - 1)
    for i in range(num_x):
      total = np.bincount(bins[i], weights=rho[i], minlength=num_y)
      count = np.bincount(bins[i], minlength=num_y)
      out[d, :, i] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
  return xs, edges, out


def samples_image(x: np.ndarray, samples: np.ndarray, modes: np.ndarray,
                  method: str | None = None) -> np.ndarray:
  """The K samples per x (red) over the true branches (grey), y[0] and y[2]: (H, W, 3),
  titled with the display name of `method` when given."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  xs = np.linspace(-1, 1, 200)[:, None]
  truth = branches(xs, modes)
  fig, axes = plt.subplots(1, 2, figsize=(6, 2.6), dpi=100)
  for ax, d in zip(axes, (0, 2)):
    ax.plot(xs[:, 0], truth[:, :, d], color='0.7', lw=2)
    ax.scatter(np.repeat(x[:, 0], samples.shape[1]), samples[:, :, d].ravel(), s=1, color='C3')
    ax.set_title(f'y[{d}], K = {samples.shape[1]} samples per x', fontsize=9)
    ax.set_xlabel('x', fontsize=8)
    ax.tick_params(labelsize=7)
  if method is not None:
    fig.suptitle(names.display(method), fontsize=10)
  fig.tight_layout()
  fig.canvas.draw()
  img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  plt.close(fig)
  return img


def plot(workdir: str, x: np.ndarray, samples: dict, modes: np.ndarray, rho: np.ndarray | None,
         x_rho: np.ndarray | None, rho_xy: tuple | None = None):
  """fig3_toy.png (per output dimension: truth, L1, w/o rho, with rho), rho_heatmap.png
  (rho_hat over traversal step and x) and rho_xy.png (rho_hat over the (x, y) plane, Fig.
  3d; `rho_xy` is the output of `rho_xy_map`)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  cols = ['truth'] + [m for m in METHODS if m in samples]
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
        ax.set_title('ground truth' if name == 'truth' else names.display(name))
      if c == 0:
        ax.set_ylabel(f'y[{d}] = s·x^{d + 1}')
      if d == 2:
        ax.set_xlabel('x')
  fig.suptitle('grey: the true branches y = s·(x, x², x³); red: K samples per test x')
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
    ax.set_title(f'{names.display("cgml")}: learned ρ̂ (mean over samples)')
    fig.colorbar(im, ax=ax, label='ρ̂')
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, 'rho_heatmap.png'), dpi=110)
    plt.close(fig)
  if rho_xy is not None:
    xs, edges, rmap = rho_xy
    fig, axes = plt.subplots(1, len(rmap), figsize=(4 * len(rmap), 3.5), squeeze=False,
                             constrained_layout=True)
    vmax = np.nanmax(rmap) if np.isfinite(rmap).any() else 1.0
    for d, ax in enumerate(axes[0]):
      im = ax.imshow(rmap[d], aspect='auto', origin='lower', cmap='viridis', vmin=0, vmax=vmax,
                     extent=[xs[0], xs[-1], edges[d, 0], edges[d, -1]])
      ax.plot(xs, branches(xs[:, None], modes)[:, :, d], color='w', lw=0.8, ls='--')
      ax.set_xlabel('x')
      ax.set_ylabel(f'y[{d}]')
      ax.set_title(f'ρ̂ over (x, y[{d}])', fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), label='ρ̂ (mean over the samples in a bin)')
    fig.suptitle(f'{names.display("cgml")}: ρ̂(z, h) at the output y = G(h, z); '
                 'dashed: the true branches', fontsize=10)
    fig.savefig(os.path.join(workdir, 'rho_xy.png'), dpi=110)
    plt.close(fig)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains every method in `config.methods` with the same budget, evaluates, plots.

  Writes `workdir/metrics.json` ({method: metrics}), `fig3_toy.png`, `rho_heatmap.png`,
  `rho_xy.png` (the last two with eval.plots and a 'cgml' method).
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
  ctx = method_context(config, data, workdir, writer)
  trained = methods_lib.train_all(ctx, k_models)
  results, samples, rho, rho_xy = {}, {}, None, None
  for method, t in trained.items():
    s = methods_lib.sample(t, test['x'], k_eval, config.eval.num_samples)
    samples[method] = s
    if config.logging.images:
      writer.write_images(config.train.steps, {f'toy/{method}/samples':
                                               samples_image(test['x'], s, modes, method)})
    results[method] = {**evaluate_samples(test['x'], s, modes, tau),
                       'train_seconds': t.info['seconds'], 'final_E': t.info['final_E'],
                       'final_update_norm': t.info['final_update_norm']}
    if method == 'cgml':
      rho = rho_map(t.state, test['x'], k_eval, config.eval.num_samples,
                    config.latent.traverse_steps)
      if config.eval.plots and parallel.is_primary():
        rho_xy = rho_xy_map(t.state)
  out = {'modes': modes.tolist(), 'num_test': int(config.data.num_test),
         'num_samples': int(config.eval.num_samples), 'tau': tau, 'methods': results}
  writer.close()
  if not parallel.is_primary():
    return out
  with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
    json.dump(out, f, indent=2)
  if config.eval.plots:
    plot(workdir, test['x'], samples, modes, rho, test['x'], rho_xy)
  return out
