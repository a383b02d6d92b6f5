r"""Spectral-map recovery and representation learning on ModelNet10 (cGML Sec. 5.4).

A shape is a spherical-harmonic map (`cgml_jax.spectral3d.sh_maps`): channel 0 is the
radial extent, channels 1..S the point density per radial shell, each a (L+1) x (2L+1)
array of coefficients (row l, column m + L). The task corrupts a map and learns to
recover it:

  corruption  per example, with probability `corrupt.mask_prob` the coefficients inside
              `corrupt.num_rects` random rectangles are masked (set to 0, the training
              mean), otherwise Gaussian noise of std `corrupt.noise_std` is added inside
              them. Rectangles span up to `corrupt.max_frac` of the rows and columns and
              cover every channel; only valid entries (|m| <= l) are touched.
  input x     the corrupted map and a channel holding the valid-entry mask (the model is
              not told where the corruption is), zero-padded to a (2L+1) square.
  error E     weighted L1 over the valid entries, weight 1 + `train.region_weight` inside
              the corrupted region (`losses.masked_l1` with a weight mask).

Channels are normalised so that L1 is meaningful across degrees: per entry (c, l, m) the
training mean is subtracted and per (channel, degree) the result is divided by its
training standard deviation over shapes and m. All recovery errors below are in these
normalised units.

Evaluation (test split, corruptions fixed by `seed` and the example index, so every method
sees the same inputs):

  recovery/<method>   mean |y_hat - y| per degree band `eval.bands` (inclusive l ranges),
                      over all valid entries ('all') and over the corrupted ones only
                      ('region'), pooled over the test set. 'input' scores the corrupted
                      map itself, 'cgml' the mean over its K samples, 'cgml_best' per
                      shape the sample with the smallest error over the whole map.
  reconstruction mAP  (our definition; the paper's Table 6 does not define its metric.)
                      The descriptor of a map is its rotation-invariant energy per channel
                      and degree, ||f_cl|| = sqrt(sum_m f_clm^2) of the de-normalised
                      coefficients (`sh_invariants`), standardised with the clean training
                      descriptors. Each test shape's *recovered* descriptor is a query
                      against the *clean* descriptors of all other test shapes, ranked by
                      Euclidean distance; relevant = same class. mAP = mean over queries of
                      the average precision (for cGML, AP averaged over the K samples).
                      'clean' (clean query) is the ceiling, 'input' (corrupted query) the
                      floor.
  classification      (paper Table 4) the frozen encoder H of each trained method maps the
                      clean training/test maps to bottleneck features (the flattened last
                      feature map); a linear classifier (multinomial logistic regression on
                      standardised features, L2 penalty chosen on a held-out
                      `probe.val_frac` of the training set, full-batch L-BFGS) is fitted on
                      the training split and scored on the test split. Baselines: the raw
                      rotation-invariant 3D Zernike descriptor ||Omega_nl||
                      (`zernike_invariants`, order `data.zernike_order`), the SH energies
                      of the clean maps, and an untrained (random) encoder.

Outputs in the workdir: metrics.json, metrics.md, fig20_spectral3d.png (corrupted /
L1 / cGML samples / ground truth, channel 0 rendered as point clouds through `sh_to_points`)
and the map cache maps_*.npz.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cgml_jax import spectral3d as s3d
from cgml_jax.data.arrays import BatchIterator
from cgml_jax.losses import masked_l1
from cgml_jax.metrics import probe as probe_lib
from cgml_jax.metrics.probe import chunked, encoder_features, linear_probe
from cgml_jax.models.conv import build_conv_models
from cgml_jax.peers import gan as gan_lib
from cgml_jax.tasks import methods as methods_lib
from cgml_jax.tasks import names
from cgml_jax.training import parallel
from cgml_jax.training import workdir as workdir_lib

METHODS = ('l1', 'cgml', 'context_encoder')


# ---------------------------------------------------------------------------------------
# Data: maps, their cache, normalisation and the image layout.


def _cache_path(config, workdir: str) -> str:
  d = config.data
  return os.path.join(workdir, f'maps_L{d.l_max}_S{d.n_shells}_N{d.zernike_order}'
                               f'_tr{d.num_train}_te{d.num_test}_s{config.seed}.npz')


def _subset(n: int, num: int, seed: int) -> np.ndarray:
  """All indices (num <= 0) or a seeded random subset of `num`, sorted (rows are by class)."""
  if num <= 0 or num >= n:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).permutation(n)[:num])


def compute_maps(points: np.ndarray, config) -> dict[str, np.ndarray]:
  """SH maps (N, 1 + S, L+1, 2L+1) and valid Zernike invariants (N, D) of point clouds."""
  d = config.data
  sh = s3d.sh_maps(points, l_max=d.l_max, n_shells=d.n_shells)
  zm = s3d.zernike_maps(points, n_max=d.zernike_order)
  zi = np.asarray(s3d.zernike_invariants(jnp.asarray(zm)))
  valid = s3d.zernike.valid_mask(d.zernike_order)
  return {'sh': sh.astype(np.float32), 'zernike': zi[:, valid].astype(np.float32)}


def load_data(config, workdir: str) -> dict[str, dict[str, np.ndarray]]:
  """{'train', 'test'} -> {'sh', 'zernike', 'labels'}, computed once and cached as npz."""
  path = _cache_path(config, workdir)
  if os.path.exists(path):
    with np.load(path) as f:
      flat = {k: f[k] for k in f.files}
    print(f'[spectral3d] maps from cache {path}', flush=True)
  else:
    root = config.data.data_dir or None
    flat, t0 = {}, time.perf_counter()
    points, sizes = [], []
    for split, num in (('train', config.data.num_train), ('test', config.data.num_test)):
      pts, labels, _ = s3d.load_modelnet10(split, root)
      idx = _subset(len(pts), num, config.seed)
      points.append(pts[idx])
      sizes.append(len(idx))
      flat[f'{split}_labels'] = labels[idx]
    # Both splits in one call: one compilation of each transform.
    maps = compute_maps(np.concatenate(points), config)
    for k, v in maps.items():
      flat[f'train_{k}'], flat[f'test_{k}'] = v[:sizes[0]], v[sizes[0]:]
    tmp = path + '.tmp.npz'
    np.savez_compressed(tmp, **flat)
    os.replace(tmp, path)
    print(f'[spectral3d] computed maps in {time.perf_counter() - t0:.1f}s -> {path}', flush=True)
  return {s: {k: flat[f'{s}_{k}'] for k in ('sh', 'zernike', 'labels')} for s in ('train', 'test')}


def valid_entries(l_max: int) -> np.ndarray:
  """(L+1, 2L+1) bool, |m| <= l."""
  return s3d.sph.map_mask(l_max)


class Normalizer:
  """Per-entry mean and per-(channel, degree) scale of the training maps.

  y = (f - mean[c, l, m]) / scale[c, l] on valid entries, 0 elsewhere.
  """

  def __init__(self, maps: np.ndarray, eps: float = 1e-6):
    l_max = maps.shape[-2] - 1
    self.valid = valid_entries(l_max)
    self.mean = maps.mean(0) * self.valid
    centred = (maps - self.mean) * self.valid
    count = self.valid.sum(-1) * maps.shape[0]                      # (L+1,)
    var = np.square(centred).sum(axis=(0, 3)) / count               # (C, L+1)
    self.scale = np.sqrt(var) + eps

  def __call__(self, maps: np.ndarray) -> np.ndarray:
    return ((maps - self.mean) / self.scale[..., None] * self.valid).astype(np.float32)

  def inverse(self, y: np.ndarray) -> np.ndarray:
    return ((y * self.scale[..., None] + self.mean) * self.valid).astype(np.float32)


def to_image(y: np.ndarray) -> np.ndarray:
  """(N, C, L+1, 2L+1) -> (N, S, S, C) with S = 2L+1, rows below L zero."""
  n, c, rows, cols = y.shape
  img = np.zeros((n, cols, cols, c), np.float32)
  img[:, :rows] = np.moveaxis(y, 1, -1)
  return img


def from_image(img: np.ndarray, l_max: int) -> np.ndarray:
  """(..., S, S, C) -> (..., C, L+1, 2L+1)."""
  return np.moveaxis(np.asarray(img)[..., :l_max + 1, :, :], -1, -3)


def valid_image(l_max: int) -> np.ndarray:
  """(S, S, 1) float mask of the valid entries in the image layout."""
  s = 2 * l_max + 1
  v = np.zeros((s, s, 1), np.float32)
  v[:l_max + 1, :, 0] = valid_entries(l_max)
  return v


# ---------------------------------------------------------------------------------------
# Corruption (in JAX, inside the jitted step; per-example keys).


def corrupt(key: jax.Array, y: jax.Array, l_max: int, c) -> tuple[jax.Array, jax.Array]:
  """One example: y (S, S, C) -> (corrupted y, region (S, S, 1) in {0, 1}).

  `c` is the `corrupt` config: mask_prob, num_rects, max_frac, noise_std.
  """
  valid = jnp.asarray(valid_image(l_max))
  rows, cols = l_max + 1, 2 * l_max + 1
  max_h = max(1, math.ceil(c.max_frac * rows))
  max_w = max(1, math.ceil(c.max_frac * cols))
  k_kind, k_noise, *k_rects = jax.random.split(key, 2 + c.num_rects)
  r = jnp.arange(y.shape[0])[:, None]
  q = jnp.arange(y.shape[1])[None, :]
  region = jnp.zeros(y.shape[:2], bool)
  for k in k_rects:
    k0, k1, k2, k3 = jax.random.split(k, 4)
    r0 = jax.random.randint(k0, (), 0, rows)
    h = jax.random.randint(k1, (), 1, max_h + 1)
    c0 = jax.random.randint(k2, (), 0, cols)
    w = jax.random.randint(k3, (), 1, max_w + 1)
    region |= (r >= r0) & (r < r0 + h) & (q >= c0) & (q < c0 + w)
  region = region[..., None].astype(y.dtype) * valid
  masked = y * (1 - region)
  noisy = y + c.noise_std * jax.random.normal(k_noise, y.shape, y.dtype) * region
  use_mask = jax.random.bernoulli(k_kind, c.mask_prob)
  return jnp.where(use_mask, masked, noisy), region


def make_batch(keys: jax.Array, y: jax.Array, l_max: int, config) -> dict:
  """Corrupts clean maps y (B, S, S, C) with per-example keys (B,): a training batch.

  Returns {'x': concat(corrupted, valid), 'y', 'mask': loss weights, 'region'}.
  """
  xc, region = jax.vmap(lambda k, yy: corrupt(k, yy, l_max, config.corrupt))(keys, y)
  valid = jnp.broadcast_to(jnp.asarray(valid_image(l_max)), region.shape)
  x = jnp.concatenate([xc, valid], axis=-1)
  weight = valid * (1.0 + config.train.region_weight * region)
  return {'x': x, 'y': y, 'mask': weight, 'region': region}


def clean_input(y: np.ndarray, l_max: int) -> np.ndarray:
  """The uncorrupted input concat(y, valid), for feature extraction."""
  valid = np.broadcast_to(valid_image(l_max), y.shape[:3] + (1,))
  return np.concatenate([y, valid], axis=-1)


def corrupting_step(base_step, l_max: int, config):
  """step(state, {'y', ...}, key): corrupts the clean batch, then runs `base_step`."""
  def step(state, batch, key):
    k_c, k_s = jax.random.split(key)
    b = make_batch(jax.random.split(k_c, batch['y'].shape[0]), batch['y'], l_max, config)
    return base_step(state, b, k_s)
  return step


# ---------------------------------------------------------------------------------------
# Models and training.


def _models(config, z_dim: int):
  m, d = config.model, config.data
  return build_conv_models(2 * d.l_max + 1, 1 + d.n_shells + 1, 1 + d.n_shells, max(z_dim, 1),
                           base_channels=m.base_channels, max_channels=m.max_channels,
                           bottleneck_size=m.bottleneck_size, spectral_norm=True,
                           lipschitz=m.lipschitz, latent_hidden=tuple(m.latent_hidden),
                           out_activation='none', impl=m.impl)



def method_context(config, y_train: np.ndarray, workdir: str | None = None,
                   writer=None) -> methods_lib.Context:
  """The registry's view of the task: clean maps in, corrupted inside the jitted step."""
  l_max, bs = config.data.l_max, config.data.batch_size
  y0 = y_train[:bs]
  data = {'x': y_train, 'y': y_train, 'index': np.arange(len(y_train))}

  def discriminator(kind):
    del kind  # the Context Encoder's D; the task offers no other GAN peer
    return gan_lib.ContextEncoderDiscriminator(features=config.gan.disc_features,
                                               max_features=config.gan.disc_max_features)

  return methods_lib.Context(
      name='spectral3d', config=config,
      models=lambda cfg, out: _models(cfg, cfg.model.z_dim), loss_fn=masked_l1,
      example={'x': clean_input(y0, l_max), 'y': y0},
      batches=lambda: BatchIterator(data, bs, config.seed, jax.process_index(),
                                    jax.process_count()),
      num_examples=len(y_train), discriminator=discriminator, rbg_keys=True,
      workdir=workdir, writer=writer,
      step_wrapper=lambda step: corrupting_step(step, l_max, config))


def train_method(method: str, config, y_train: np.ndarray, key: jax.Array,
                 workdir: str | None = None, writer=None) -> methods_lib.Trained:
  """Trains one method on clean training maps (corrupted on the fly)."""
  if method not in METHODS:
    raise ValueError(f'unknown spectral3d method {method!r}; expected one of {METHODS}')
  return methods_lib.train(method, method_context(config, y_train, workdir, writer), key)


# ---------------------------------------------------------------------------------------
# Inference.


def predict(method: str, trained: methods_lib.Trained, x: np.ndarray, key: jax.Array,
            config) -> np.ndarray:
  """(N, K, S, S, C) outputs (K = 1 for the deterministic methods)."""
  k = 1 if methods_lib.is_deterministic(method) else int(config.eval.num_samples)
  return chunked(lambda xx: methods_lib.sample(trained, xx, key, k), x,
                 config.eval.batch_size)


def random_encoder_features(config, key: jax.Array, x_train: np.ndarray, x_test: np.ndarray):
  """Bottleneck features of an untrained H (same architecture and initialiser)."""
  enc = _models(config, config.model.z_dim)[0]
  key = methods_lib.rbg_key(key)
  k_enc, _ = jax.random.split(key)  # as `RegressionState.create` draws H's parameters
  variables = jax.jit(enc.init)(k_enc, jnp.asarray(x_train[:1]))
  bs = config.eval.batch_size
  return tuple(probe_lib.features(enc, variables, x, bs) for x in (x_train, x_test))


# ---------------------------------------------------------------------------------------
# Metrics.


def band_errors(y_hat: np.ndarray, y: np.ndarray, region: np.ndarray, l_max: int,
                bands) -> dict[str, float]:
  """Mean |y_hat - y| per degree band over valid entries ('all') and corrupted ones.

  Args:
    y_hat, y: (N, S, S, C) normalised maps in the image layout.
    region: (N, S, S, 1) corrupted entries.
    bands: sequence of (lo, hi) inclusive degree ranges.
  """
  err = np.abs(y_hat - y)
  valid = valid_image(l_max)[None]
  rows = np.arange(y.shape[1])[None, :, None, None]
  out = {}
  for lo, hi in list(bands) + [(0, l_max)]:
    band = ((rows >= lo) & (rows <= hi)).astype(np.float32)
    name = f'l{lo}-{hi}' if (lo, hi) != (0, l_max) else 'all_degrees'
    for what, m in (('all', valid * band), ('region', region * band)):
      m = np.broadcast_to(m, err.shape)
      out[f'{what}/{name}'] = float((err * m).sum() / max(m.sum(), 1.0))
  return out


def descriptors(maps: np.ndarray) -> np.ndarray:
  """Rotation-invariant SH energies ||f_cl|| of (N, C, L+1, 2L+1) maps, flattened (N, C(L+1))."""
  inv = np.sqrt(np.square(maps).sum(-1))
  return inv.reshape(inv.shape[0], -1)


def average_precision(dist: np.ndarray, relevant: np.ndarray) -> np.ndarray:
  """AP per query from distances (Q, G) and relevance (Q, G) (no relevant: AP 0)."""
  order = np.argsort(dist, axis=1, kind='stable')
  rel = np.take_along_axis(relevant, order, axis=1).astype(np.float64)
  hits = np.cumsum(rel, axis=1)
  prec = hits / np.arange(1, rel.shape[1] + 1)[None]
  return (prec * rel).sum(1) / np.maximum(rel.sum(1), 1.0)


def reconstruction_map(query: np.ndarray, gallery: np.ndarray, labels: np.ndarray,
                       mu: np.ndarray, sd: np.ndarray) -> float:
  """Reconstruction mAP (module docstring): recovered descriptor i vs clean others.

  Args:
    query: (N, D) descriptors of the recovered maps of the test shapes.
    gallery: (N, D) clean descriptors of the same shapes (row i is query i's own shape,
      which is excluded).
    labels: (N,) classes.
    mu, sd: standardisation (from the clean training descriptors).
  """
  q = (query - mu) / sd
  g = (gallery - mu) / sd
  dist = np.sqrt(np.maximum(np.square(q).sum(1)[:, None] + np.square(g).sum(1)[None]
                            - 2 * q @ g.T, 0.0))
  n = len(labels)
  dist[np.arange(n), np.arange(n)] = np.inf
  relevant = labels[:, None] == labels[None]
  relevant[np.arange(n), np.arange(n)] = False
  return float(average_precision(dist, relevant).mean())


# ---------------------------------------------------------------------------------------
# Pictures (paper Fig. 20: noisy / recovered / ground truth as point clouds).


def figure_columns(corrupted: np.ndarray, outputs: dict[str, np.ndarray], truth: np.ndarray,
                   samples: int) -> dict[str, np.ndarray]:
  """The titled columns of fig20_spectral3d.png: the input, each method by its display name
  (cGML's first `samples` samples with their index k = 1..K, the others' first output),
  then the ground truth.

  Args:
    corrupted, truth: (R, S, S, C) maps of the shown shapes.
    outputs: method -> (R, K, S, S, C) outputs, in the order of `config.methods`.
    samples: how many of cGML's samples to show.
  """
  cols = {'input (corrupted)': corrupted}
  for m, out in outputs.items():
    if m == 'cgml':
      for k in range(min(samples, out.shape[1])):
        cols[f'{names.display(m)}\nk = {k + 1}'] = out[:, k]
    else:
      cols[names.display(m)] = out[:, 0]
  cols['ground truth'] = truth
  return cols


def render_clouds(workdir: str, columns: dict[str, np.ndarray], l_max: int, normalizer,
                  kinds: list[str], bandwidth: int):
  """fig20_spectral3d.png: one row per shape, one column per entry of `columns`.

  Args:
    columns: column title -> (R, S, S, C) normalised maps in the image layout.
    kinds: per row, 'mask' or 'noise' (shown in the row label).
  """
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  titles = list(columns)
  rows = len(kinds)
  fig = plt.figure(figsize=(2.2 * len(titles), 2.2 * rows + 0.4))
  for j, name in enumerate(titles):
    maps = normalizer.inverse(from_image(columns[name], l_max))
    pts = np.asarray(s3d.sh_to_points(jnp.asarray(maps[:, 0]), bandwidth))
    for i in range(rows):
      ax = fig.add_subplot(rows, len(titles), i * len(titles) + j + 1, projection='3d')
      p = pts[i]
      ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=1.5, c=p[:, 2], cmap='viridis', linewidths=0)
      ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
      ax.set_axis_off()
      ax.view_init(elev=20, azim=-60)
      if i == 0:
        ax.set_title(name, fontsize=9)
      if j == 0:
        ax.text2D(-0.05, 0.5, kinds[i], transform=ax.transAxes, rotation=90, fontsize=8,
                  va='center')
  fig.suptitle('channel 0 of each SH map as a point cloud; rows: the corruption of the input',
               fontsize=9)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'fig20_spectral3d.png'), dpi=100)
  plt.close(fig)


# ---------------------------------------------------------------------------------------
# The experiment.


def markdown(out: dict) -> str:
  """metrics.md: recovery per band, reconstruction mAP, linear-probe accuracy."""
  rec = out['recovery']
  methods = list(rec)
  cols = list(rec[methods[0]])
  lines = ['### Recovery error (mean |y_hat - y|, normalised units; lower is better)', '',
           '| method | ' + ' | '.join(cols) + ' |', '|---' * (len(cols) + 1) + '|']
  for m in methods:
    lines.append(f'| {m} | ' + ' | '.join(f'{rec[m][c]:.4f}' for c in cols) + ' |')
  lines += ['', '### Reconstruction mAP (recovered query vs clean gallery, same class)', '',
            '| query | mAP |', '|---|---|']
  lines += [f'| {k} | {v:.4f} |' for k, v in out['reconstruction_map'].items()]
  lines += ['', '### Linear probe, ModelNet10 test accuracy', '',
            '| features | dim | L2 | val acc | test acc |', '|---|---|---|---|---|']
  for k, v in out['classification'].items():
    lines.append(f"| {k} | {v['dim']} | {v['l2']:g} | {v['val_acc']:.4f} | {v['test_acc']:.4f} |")
  return '\n'.join(lines) + '\n'


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Pre-trains every method by recovery, evaluates recovery, mAP and the linear probe.

  Writes `metrics.json`, `metrics.md` and `fig20_spectral3d.png` into `workdir`.
  """
  for m in config.methods:
    if m not in METHODS:
      raise ValueError(f'unknown spectral3d method {m!r} in config.methods; expected {METHODS}')
  t_start = time.perf_counter()
  writer = workdir_lib.prepare(config, workdir)
  l_max = config.data.l_max
  data = load_data(config, workdir)
  norm = Normalizer(data['train']['sh'])
  y_train = to_image(norm(data['train']['sh']))
  y_test = to_image(norm(data['test']['sh']))
  labels_tr, labels_te = data['train']['labels'], data['test']['labels']

  key = jax.random.key(config.seed)
  k_models, k_eval, k_corrupt = jax.random.split(key, 3)
  # Fixed test corruptions: the key of example i is fold_in(k_corrupt, i).
  keys = jax.vmap(lambda i: jax.random.fold_in(k_corrupt, i))(jnp.arange(len(y_test)))
  test_batch = jax.device_get(jax.jit(lambda k, y: make_batch(k, y, l_max, config))(
      keys, jnp.asarray(y_test)))
  x_test, region = test_batch['x'], test_batch['region']
  kinds = np.asarray(jax.vmap(lambda k: jax.random.bernoulli(
      jax.random.split(k, 2 + config.corrupt.num_rects)[0], config.corrupt.mask_prob))(keys))

  bands = [tuple(b) for b in config.eval.bands]
  c_in = x_test[..., :-1]
  recovery = {'input': band_errors(c_in, y_test, region, l_max, bands)}
  d_train = descriptors(data['train']['sh'])
  mu, sd = d_train.mean(0), d_train.std(0) + 1e-8
  d_clean = descriptors(data['test']['sh'])
  rmap = {'clean': reconstruction_map(d_clean, d_clean, labels_te, mu, sd),
          'input': reconstruction_map(descriptors(norm.inverse(from_image(c_in, l_max))),
                                      d_clean, labels_te, mu, sd)}
  feats_tr, feats_te = {}, {}
  x_train_clean = clean_input(y_train, l_max)
  x_test_clean = clean_input(y_test, l_max)
  bs = config.eval.batch_size
  outputs, timing = {}, {}
  for method in config.methods:
    if method not in METHODS:
      raise ValueError(f'unknown spectral3d method {method!r}; expected some of {METHODS}')
  trained = methods_lib.train_all(method_context(config, y_train, workdir, writer), k_models)
  for method, t in trained.items():
    state = t.state
    timing[method] = {'train_seconds': round(t.info['seconds'], 1),
                      'final_loss': t.info['final_E'],
                      'final_update_norm': t.info['final_update_norm']}
    t0 = time.perf_counter()
    out = predict(method, t, x_test, k_eval, config)             # (N, K, S, S, C)
    outputs[method] = out
    if method != 'cgml':
      recovery[method] = band_errors(out[:, 0], y_test, region, l_max, bands)
    else:
      # 'cgml': mean over the K samples of each sample's error; 'cgml_best': oracle pick.
      per = [band_errors(out[:, k], y_test, region, l_max, bands) for k in range(out.shape[1])]
      recovery['cgml'] = {c: float(np.mean([p[c] for p in per])) for c in per[0]}
      valid = valid_image(l_max)[None, None]
      e = (np.abs(out - y_test[:, None]) * valid).sum(axis=(2, 3, 4))
      best = out[np.arange(len(out)), np.argmin(e, 1)]
      recovery['cgml_best'] = band_errors(best, y_test, region, l_max, bands)
    aps = [reconstruction_map(descriptors(norm.inverse(from_image(out[:, k], l_max))),
                              d_clean, labels_te, mu, sd) for k in range(out.shape[1])]
    rmap[method] = float(np.mean(aps))
    feats_tr[method] = encoder_features(state, x_train_clean, bs)
    feats_te[method] = encoder_features(state, x_test_clean, bs)
    timing[method]['eval_seconds'] = round(time.perf_counter() - t0, 1)
    print(f'[spectral3d/{method}] recovery all={recovery[method]["all/all_degrees"]:.4f} '
          f'region={recovery[method]["region/all_degrees"]:.4f} mAP={rmap[method]:.4f}',
          flush=True)

  # Untrained encoder: what the architecture gives without pre-training.
  feats_tr['random_encoder'], feats_te['random_encoder'] = random_encoder_features(
      config, jax.random.fold_in(k_models, 99), x_train_clean, x_test_clean)
  feats_tr['zernike_invariants'] = data['train']['zernike']
  feats_te['zernike_invariants'] = data['test']['zernike']
  feats_tr['sh_invariants'], feats_te['sh_invariants'] = d_train, d_clean
  t0 = time.perf_counter()
  classification = {}
  for name in feats_tr:
    classification[name] = linear_probe(feats_tr[name], labels_tr, feats_te[name], labels_te,
                                        config)
    print(f'[spectral3d/probe] {name}: {classification[name]}', flush=True)
  probe_seconds = time.perf_counter() - t0

  out = {'num_train': int(len(y_train)), 'num_test': int(len(y_test)), 'l_max': l_max,
         'channels': 1 + config.data.n_shells, 'num_samples': int(config.eval.num_samples),
         'test_corruption': {'mask': int(kinds.sum()), 'noise': int((~kinds).sum()),
                             'region_fraction_of_valid': float(
                                 region.sum() / (valid_image(l_max).sum() * len(region)))},
         'recovery': recovery, 'reconstruction_map': rmap, 'classification': classification,
         'timing': {**timing, 'probe_seconds': round(probe_seconds, 1)}}
  writer.close()
  if not parallel.is_primary():
    return out
  if config.eval.plots:
    n = min(config.eval.figure_rows, len(y_test))
    # Half masked, half noisy examples, spread over the classes.
    picks = []
    for want in (True, False):
      cand = np.flatnonzero(kinds == want)
      picks += list(cand[np.linspace(0, len(cand) - 1, max(1, n // 2)).astype(int)]
                    if len(cand) else [])
    picks = np.asarray(picks[:n])
    cols = figure_columns(c_in[picks], {m: outputs[m][picks] for m in config.methods},
                          y_test[picks], config.eval.figure_samples)
    render_clouds(workdir, cols, l_max, norm, ['masked' if kinds[p] else 'noisy' for p in picks],
                  config.eval.render_bandwidth)
  out['timing']['total_seconds'] = round(time.perf_counter() - t_start, 1)
  with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
    json.dump(out, f, indent=2)
  with open(os.path.join(workdir, 'metrics.md'), 'w') as f:
    f.write(markdown(out))
  return out
