r"""Shared machinery of the image tasks (paper Sec. 5): data, models, training, evaluation.

A task module (colorize, complete, translate, mnist_corrupted) describes itself as an
`ImageTask`: which source to read, how an example becomes {'x', 'y', ...} for training and
for each evaluation protocol, the error E, and how an output is shown as an RGB image.
`run(task, config, workdir)` then does the rest, the same way for every task:

  1. train every method of `config.methods` with the same budget: `train.steps` batches of
     `data.batch_size` ('l1': the regression baseline `cgml_jax.regression`, G called with
     an empty z; 'cgml': Algorithm 1 with `train.inner_steps` inner iterations per batch);
     H, G (and Z) from `cgml_jax.models.conv.build_conv_models`.
  2. for each evaluation protocol, take the first `eval.num_test` examples of the test split
     (transformed with a fixed per-example rng, so every method sees the same inputs and
     masks), draw K = `eval.num_samples` outputs per input for cGML (Eq. 4 from K random
     z_0, T = `latent.traverse_steps`) and the one prediction of L1, and score them.
  3. write `metrics.json`, `metrics.md` (one Markdown table per protocol) and PNG grids:
     `samples_<protocol>.png` (input | ground truth | L1 | K cGML samples) and
     `trajectory.png` (one input's outputs G(h, z_t) along Eq. 4 trajectories from several
     z_0; the paper's Fig. 6 analogue).

Metric protocol (pinned; every number is computed on RGB (or grey) images in [-1, 1] as
returned by `ImageTask.to_image`, i.e. colorization outputs are converted from LAB and
completion outputs are composited with the observed pixels):

  psnr_mean, ssim_mean, lpips_mean   mean over inputs and over the K samples
  psnr_best, ssim_best, lpips_best   per input the best of the K samples, mean over inputs
                                     (for L1, K = 1 and best = mean)
  diversity                          LPIPS v0.1 AlexNet, mean over the K(K-1)/2 pairs of
                                     each input's samples, mean over inputs (0 for L1)
  pixel_diversity                    same pairs, mean absolute pixel difference in [-1, 1]
  E_mean, E_best                     the task's own error E on the model's raw output
LPIPS needs `lpips/lpips_alexnet_jax.npz` under the data folder; with `eval.lpips = False`
(or no weights found, which is reported) the LPIPS entries are omitted.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cgml_jax import cgml, regression
from cgml_jax.tasks import viz
from cgml_jax.training import loop, optim, parallel
from cgml_jax.training import workdir as workdir_lib
from cgml_jax import data as data_lib
from cgml_jax.metrics import image as image_metrics
from cgml_jax.models.conv import build_conv_models

METHODS = ('l1', 'cgml')
Transform = data_lib.transforms.Transform


@dataclasses.dataclass(frozen=True)
class ImageTask:
  """What differs between image tasks; `run` does the rest.

  Attributes:
    name: task name (console prefix, metrics.json).
    in_channels, out_channels: channels of x and y.
    transform: (config, protocol) -> per-example transform producing 'x', 'y' (+ what E
      reads). protocol is None for training, else one of `protocols(config)`.
    loss_fn: config -> E, (y_hat, batch) -> (B,).
    to_image: (x, y) -> (B, H, W, 1 or 3) image in [-1, 1] for display and metrics; y is the
      ground truth or an output (numpy or jax arrays).
    input_image: x -> (B, H, W, 1 or 3) image in [-1, 1] for the input column of the grids.
    protocols: config -> names of the evaluation protocols (e.g. mask types).
    source: (config, split) -> random-access source; default `default_source`.
    extra_eval: optional (config, states, key, workdir) -> dict of task-specific results,
      stored under 'task' in metrics.json.
    extra_scores: optional (batch, outputs (B, K, ...)) -> {name: (B,) per-input scores},
      averaged over inputs like the pinned scores.
    extra_summary: optional summary -> further summary entries (e.g. ratios of means).
  """
  name: str
  in_channels: int
  out_channels: int
  transform: Callable[[Any, str | None], Transform]
  loss_fn: Callable[[Any], Callable]
  to_image: Callable[[Any, Any], Any]
  input_image: Callable[[Any], Any]
  protocols: Callable[[Any], Sequence[str]] = lambda config: ('test',)
  source: Callable[[Any, str], Any] | None = None
  extra_eval: Callable | None = None
  extra_scores: Callable | None = None
  extra_summary: Callable | None = None


# ---------------------------------------------------------------------------------------
# Config pieces shared by the experiments/*.py of the image tasks.


def base_config(task: str) -> ml_collections.ConfigDict:
  """The fields every image-task config has; experiments/<task>.py fills in the rest."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.seed = 0
  c.methods = METHODS          # trained with the same budget (steps x batch), in this order

  c.data = ml_collections.ConfigDict()
  c.data.name = 'embedded'     # 'embedded', 'mnist', 'cifar10', 'celeba', 'facades',
                               # 'folder:PATH', 'pix2pix:PATH' or 'tfds:NAME'
  c.data.data_dir = ''         # offline data folder ('' = $CGML_DATA_DIR, ../shared/data)
  c.data.tfds_data_dir = ''    # prepared TFDS datasets ('' = TFDS default)
  c.data.train_split = 'train'
  c.data.test_split = 'test'   # evaluation split (carved from train files where needed)
  c.data.image_size = 32       # S; images of another size are resized (bicubic)
  c.data.num_train = 4096      # embedded source only: number of training crops
  c.data.batch_size = 32
  c.data.num_threads = 2       # grain reader threads

  c.model = ml_collections.ConfigDict()
  c.model.base_channels = 32   # encoder width of the first block, doubling per block
  c.model.max_channels = 128
  c.model.bottleneck_size = 2  # side of H's last feature map
  c.model.z_dim = 8            # z on S^{z_dim - 1}
  c.model.z_injection = 'all'  # or 'bottleneck'; 'all': z to every decoder block, so it
                               # reaches the output through few layers
  c.model.lipschitz = 2.0      # spectral-norm constant C of G and Z per layer; with C = 1
                               # G barely depends on z (see latent.step_size)
  c.model.latent_hidden = (128, 128)  # hidden widths of Z
  c.model.out_activation = 'tanh'  # G's output: 'tanh', 'sigmoid' or 'none'
  c.model.impl = 'auto'

  c.latent = ml_collections.ConfigDict()
  c.latent.step_size = 10.0    # beta of the z step. E is a per-example MEAN over pixels,
                               # so grad_z E is small: with beta = 1, C = 1 and z at the
                               # bottleneck, ||z' - z|| was ~1.5e-3 on MNIST and the z step
                               # did nothing; beta = 10, C = 2, z everywhere gives ~0.8
                               # (notes in README "Image tasks")
  c.latent.alpha = 1.0         # rho = alpha * ||z' - z||
  c.latent.use_momentum = True
  c.latent.traverse_steps = 20  # T of Eq. 4 at inference

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000
  c.train.inner_steps = 3      # l of Algorithm 1
  c.train.generator_update = 'every'
  c.train.lr = 1e-3            # Adam, (H, G) (and the L1 baseline)
  c.train.lr_latent = 1e-3     # Adam, Z
  c.train.schedule = 'cosine'
  c.train.warmup_steps = 0
  c.train.grad_clip = 1.0
  c.train.log_every = 100

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 1000    # Orbax checkpoint every N steps (and at the end)
  c.checkpoint.keep = 1
  c.checkpoint.async_save = False
  c.checkpoint.allow_config_mismatch = False

  c.logging = ml_collections.ConfigDict()
  c.logging.tensorboard = False  # metrics.jsonl is always written to workdir/logs

  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ''
  c.distributed.num_processes = 0
  c.distributed.process_id = -1

  c.eval = ml_collections.ConfigDict()
  c.eval.num_test = 128        # first N examples of data.test_split
  c.eval.num_samples = 10      # K outputs per input (cGML)
  c.eval.batch_size = 32       # inputs per evaluation batch
  c.eval.lpips = True          # LPIPS and LPIPS diversity (needs the offline weights)
  c.eval.lpips_weights = ''    # explicit weights file ('' = search the data folder)
  c.eval.grid_rows = 8         # inputs shown in samples_*.png
  c.eval.grid_samples = 6      # cGML samples shown per input
  c.eval.trajectory_starts = 4  # z_0 rows of trajectory.png
  c.eval.trajectory_frames = 8  # frames per row (evenly spaced over t = 0..T)
  c.eval.plots = True
  return c


def smoke(c: ml_collections.ConfigDict, image_size: int = 16) -> ml_collections.ConfigDict:
  """Shrinks an image config to seconds: tiny images, nets, steps and evaluation."""
  c.data.image_size = image_size
  c.data.num_train = 64
  c.data.batch_size = 8
  c.data.num_threads = 1
  c.model.base_channels = 8
  c.model.max_channels = 16
  c.model.bottleneck_size = 8  # one or two blocks: compile time dominates a smoke run
  c.model.z_dim = 4
  c.model.latent_hidden = (16,)
  c.train.steps = 4
  c.train.inner_steps = 2
  c.train.log_every = 2
  c.latent.traverse_steps = 3
  c.checkpoint.every = 100
  c.eval.num_test = 8
  c.eval.num_samples = 3
  c.eval.batch_size = 8
  c.eval.lpips = False
  c.eval.grid_rows = 3
  c.eval.grid_samples = 3
  c.eval.trajectory_starts = 2
  c.eval.trajectory_frames = 3
  return c


# ---------------------------------------------------------------------------------------
# Data.


def default_source(config, split: str):
  """`load_source(config.data.name, split)` with the config's folders and sizes."""
  d = config.data
  name = d.name or 'embedded'
  kwargs = {}
  if name == 'embedded':
    base, _ = data_lib.parse_split(split)
    kwargs = {'size': d.image_size, 'seed': config.seed,
              'num_examples': d.num_train if base == 'train' else config.eval.num_test}
  elif name.startswith('tfds:') and d.tfds_data_dir:
    kwargs = {'tfds_data_dir': d.tfds_data_dir}
  return data_lib.load_source(name, split, data_dir=d.data_dir or None, **kwargs)


def resize(size: int, keys: Sequence[str] = ('image',)) -> Transform:
  """uint8 images of another size -> (size, size) with PIL bicubic (no-op if already)."""
  def fn(example, rng):
    del rng
    out = dict(example)
    for k in keys:
      img = np.asarray(example[k])
      if img.shape[:2] == (size, size):
        continue
      from PIL import Image
      grey = img.ndim == 3 and img.shape[-1] == 1
      im = Image.fromarray(img[..., 0] if grey else img).resize((size, size), Image.BICUBIC)
      img = np.asarray(im)
      out[k] = img[..., None] if grey else img
    return out
  return fn


def _source(task: ImageTask, config, split: str):
  return (task.source or default_source)(config, split)


def load_eval_set(task: ImageTask, config, protocol: str) -> dict[str, np.ndarray]:
  """The first `eval.num_test` test examples, transformed for `protocol`, stacked.

  Example i gets `np.random.default_rng([seed, 7919, i])`, so masks and corruptions are
  the same for every method and run.
  """
  src = _source(task, config, config.data.test_split)
  n = min(config.eval.num_test, len(src))
  if n < 1:
    raise ValueError(f'test split {config.data.test_split!r} of {config.data.name!r} is empty')
  fn = task.transform(config, protocol)
  examples = [fn(src[i], np.random.default_rng([config.seed, 7919, i])) for i in range(n)]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]
          if isinstance(examples[0][k], np.ndarray) and examples[0][k].dtype != object
          and examples[0][k].dtype.kind in 'fiub'}


# ---------------------------------------------------------------------------------------
# Models and training.


def build_models(task: ImageTask, config):
  """H, G, Z for this task and config (cgml_jax.models.conv)."""
  m = config.model
  return build_conv_models(config.data.image_size, task.in_channels, task.out_channels,
                           m.z_dim, base_channels=m.base_channels,
                           max_channels=m.max_channels, bottleneck_size=m.bottleneck_size,
                           z_injection=m.z_injection, spectral_norm=True,
                           lipschitz=m.lipschitz, latent_hidden=tuple(m.latent_hidden),
                           out_activation=m.out_activation, impl=m.impl)



def create_state(method: str, task: ImageTask, config, x0, key):
  """(initial train state, step_fn) of `method` on inputs shaped like x0."""
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; expected one of {METHODS}')
  enc, gen, lat = build_models(task, config)
  loss_fn = task.loss_fn(config)
  tx_hg = optim.from_config(config.train, config.train.lr)
  x0 = jnp.asarray(x0)
  # Initialisation is jitted, with an RBG key: XLA compiles threefry-based initialisers of
  # many kernel shapes slowly on CPU (about 4x longer here); parameters only need to be a
  # deterministic function of the seed, which RBG keys are on a given backend.
  key = jax.random.key(int(jax.random.randint(key, (), 0, 2**31 - 1)), impl='unsafe_rbg')
  if method == 'l1':
    state = regression.RegressionState.create(key, x0, encoder=enc, generator=gen, tx=tx_hg,
                                              loss_fn=loss_fn)
    return state, regression.train_step
  tx_lat = optim.from_config(config.train, config.train.lr_latent)
  hp = cgml.Hyper(z_dim=config.model.z_dim, step_size=config.latent.step_size,
                  alpha=config.latent.alpha, inner_steps=config.train.inner_steps,
                  use_momentum=config.latent.use_momentum,
                  generator_update=config.train.generator_update)
  state = cgml.CGMLState.create(key, x0, encoder=enc, generator=gen, latent_net=lat,
                                tx_hg=tx_hg, tx_latent=tx_lat, hp=hp, loss_fn=loss_fn)
  return state, cgml.train_step


def train_iterator(task: ImageTask, config):
  """Checkpointable grain iterator of training batches (fresh corruptions every epoch)."""
  src = _source(task, config, config.data.train_split)
  mesh = parallel.make_mesh()
  local_batch = parallel.process_batch_size(config.data.batch_size, mesh)
  ds = data_lib.make_pipeline(src, batch_size=local_batch, seed=config.seed,
                              transform=task.transform(config, None),
                              process_index=jax.process_index(),
                              process_count=jax.process_count())
  return data_lib.make_iterator(ds, num_threads=config.data.num_threads)


class _Numeric:
  """Drops non-numeric entries (e.g. file names) from batches before they reach jit."""

  def __init__(self, it):
    self.it = it

  def __iter__(self):
    return self

  def __next__(self):
    b = next(self.it)
    return {k: v for k, v in b.items() if np.asarray(v).dtype.kind in 'fiub'}

  def get_state(self):
    return self.it.get_state()

  def set_state(self, state):
    self.it.set_state(state)


def train_method(method: str, task: ImageTask, config, key, workdir: str | None = None,
                 writer=None):
  """Trains one method; returns (state, history, seconds). Resumes from workdir checkpoints."""
  k_init, k_train = jax.random.split(key)
  batches = _Numeric(train_iterator(task, config))
  first = next(train_iterator(task, config))
  state, step_fn = create_state(method, task, config, first['x'], k_init)
  return workdir_lib.fit_method(state, step_fn, batches, config, workdir, method,
                                f'{task.name}/{method}', k_train, writer=writer)


# ---------------------------------------------------------------------------------------
# Inference.


@jax.jit
def _l1_predict(state, x):
  return regression.predict(state, x)


def predict(method: str, state, x, key, num_samples: int, num_steps: int) -> np.ndarray:
  """(B, K, H, W, C) outputs: K cGML samples (Eq. 4), or L1's one prediction (K = 1)."""
  x = jnp.asarray(x)
  if method == 'l1':
    return np.asarray(_l1_predict(state, x))[:, None]
  return np.asarray(_sample(state, x, key, num_samples, num_steps))


_sample = jax.jit(cgml.sample, static_argnums=(3, 4))


@functools.partial(jax.jit, static_argnums=(3,))
def _trajectory(state, x, z0, num_steps):
  h = cgml.encode(state, x)
  _, traj = cgml.traverse_latent(state, h, z0, num_steps, return_trajectory=True)
  return jax.vmap(lambda z: cgml.generate(state, h, z))(traj)  # (T + 1, S, H, W, C)


def trajectory_outputs(state, x, key, num_starts: int, num_steps: int) -> np.ndarray:
  """G(h, z_t) along Eq. 4 from `num_starts` random z_0 for one input x (1, ...).

  Returns:
    (num_starts, T + 1, H, W, C): row s holds t = 0..T for the s-th starting point.
  """
  xs = jnp.repeat(jnp.asarray(x), num_starts, axis=0)
  z0 = cgml.sample_sphere(key, (num_starts, state.hp.z_dim))
  return np.asarray(_trajectory(state, xs, z0, num_steps)).swapaxes(0, 1)


# ---------------------------------------------------------------------------------------
# Evaluation.


def _lpips(config):
  if not config.eval.lpips:
    return None, 'disabled (eval.lpips = False)'
  from cgml_jax.metrics import LpipsMetric, WeightsNotFoundError
  try:
    return LpipsMetric(config.eval.lpips_weights or None, config.data.data_dir or None), None
  except WeightsNotFoundError as e:
    print(f'[eval] LPIPS skipped: {e}', flush=True)
    return None, f'skipped: {e}'


def _pixel_scores(task: ImageTask, loss_fn):
  """Jitted (flat outputs, repeated batch) -> (E, image, ground-truth image, PSNR, SSIM)."""
  @jax.jit
  def fn(flat, rep):
    e = loss_fn(flat, rep)
    img = task.to_image(rep['x'], flat)
    gt = task.to_image(rep['x'], rep['y'])
    p = image_metrics.psnr(img, gt)
    s = (image_metrics.ssim(img, gt) if min(img.shape[1:3]) >= 11
         else jnp.full(p.shape, jnp.nan))
    return e, img, gt, p, s
  return fn


def score(task: ImageTask, config, batch: dict, outputs: np.ndarray, lpips=None,
          pixel_fn=None) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Per-input scores of outputs (B, K, ...) against batch['y'] (see the module docstring).

  The K samples are scored one slot at a time, so L1 (K = 1) and cGML share one compiled
  scoring function.

  Returns:
    ({score name: (B, K) or (B,) array}, the outputs as images (B, K, H, W, C)).
  """
  b, k = outputs.shape[:2]
  pixel_fn = pixel_fn or _pixel_scores(task, task.loss_fn(config))
  per_slot = [jax.device_get(pixel_fn(outputs[:, j], batch)) for j in range(k)]
  e, img, gt, p, s = (np.stack(v, axis=1) for v in zip(*per_slot))
  gt = gt[:, 0]
  out = {'E': e, 'psnr': p, 'ssim': s}
  if task.extra_scores is not None:
    out.update({k: np.asarray(v) for k, v in task.extra_scores(batch, outputs).items()})
  if lpips is not None:
    out['lpips'] = np.stack([np.asarray(lpips(img[:, j], gt)) for j in range(k)], axis=1)
  if k > 1:
    i, j = np.triu_indices(k, 1)
    out['pixel_diversity'] = np.abs(img[:, i] - img[:, j]).reshape(b, len(i), -1).mean(
        axis=(1, 2))
    if lpips is not None:
      out['diversity'] = np.asarray(lpips.pairwise_mean(jnp.asarray(img)))
  else:
    out['pixel_diversity'] = np.zeros(b)
    if lpips is not None:
      out['diversity'] = np.zeros(b)
  return out, img


def summarize(scores: dict[str, np.ndarray]) -> dict[str, float]:
  """Per-input score arrays -> the pinned summary (means, best of K)."""
  out = {}
  for name, v in scores.items():
    if v.ndim == 1:
      out[name] = float(np.nanmean(v))
      continue
    out[f'{name}_mean'] = float(np.nanmean(v))
    best = v.max(axis=1) if name in ('psnr', 'ssim') else v.min(axis=1)
    out[f'{name}_best'] = float(np.nanmean(best))
  return out


def evaluate(task: ImageTask, config, states: dict, key, lpips=None
             ) -> tuple[dict, dict]:
  """Scores every method on every protocol; returns (metrics, shown) where shown holds the
  first `eval.grid_rows` inputs and outputs of each protocol for the grids."""
  metrics, shown = {}, {}
  bs = config.eval.batch_size
  pixel_fn = _pixel_scores(task, task.loss_fn(config))
  for p_i, protocol in enumerate(task.protocols(config)):
    data = load_eval_set(task, config, protocol)
    n = len(data['x'])
    per_method, outs_shown = {}, {}
    for method, state in states.items():
      acc = []
      for start in range(0, n, bs):
        batch = {k: v[start:start + bs] for k, v in data.items()}
        k_b = jax.random.fold_in(jax.random.fold_in(key, p_i), start)
        out = predict(method, state, batch['x'], k_b, config.eval.num_samples,
                      config.latent.traverse_steps)
        scores, imgs = score(task, config, batch, out, lpips, pixel_fn)
        acc.append(scores)
        if start == 0:
          outs_shown[method] = imgs[:config.eval.grid_rows]
      per_input = {k: np.concatenate([a[k] for a in acc]) for k in acc[0]}
      summary = summarize(per_input)
      if task.extra_summary is not None:
        summary.update(task.extra_summary(summary))
      per_method[method] = {**summary, 'num_inputs': n,
                            'num_samples': 1 if method == 'l1' else config.eval.num_samples}
    metrics[protocol] = per_method
    shown[protocol] = ({k: v[:config.eval.grid_rows] for k, v in data.items()}, outs_shown)
  return metrics, shown


# ---------------------------------------------------------------------------------------
# Reports.

_TABLE_COLUMNS = ('psnr_mean', 'psnr_best', 'ssim_mean', 'ssim_best', 'lpips_mean',
                  'lpips_best', 'diversity', 'pixel_diversity', 'colorfulness', 'E_mean',
                  'E_best')


def markdown(results: dict) -> str:
  """metrics.md: one table per protocol, methods as rows."""
  lines = [f"# {results['task']} ({results['dataset']}, {results['image_size']}px)", '',
           f"K = {results['num_samples']} samples per input for cGML, 1 for L1; "
           f"{results['train_steps']} training steps of batch {results['batch_size']} per "
           'method. "best" = best of K per input. See cgml_jax/tasks/image.py for the '
           'protocol.', '']
  for protocol, per_method in results['eval'].items():
    cols = [c for c in _TABLE_COLUMNS if any(c in m for m in per_method.values())]
    lines += [f'## {protocol}', '', '| method | ' + ' | '.join(cols) + ' | train s |',
              '|---|' + '---|' * (len(cols) + 1)]
    for method, m in per_method.items():
      vals = ' | '.join(f'{m[c]:.4g}' if c in m else '' for c in cols)
      secs = results['train'].get(method, {}).get('seconds', float('nan'))
      lines.append(f'| {method} | {vals} | {secs:.0f} |')
    lines.append('')
  if results.get('task_metrics'):
    lines += ['## task-specific', '', '```json',
              json.dumps(results['task_metrics'], indent=2), '```', '']
  return '\n'.join(lines)


@functools.lru_cache(maxsize=None)
def _jitted(fn):
  """jax.jit(fn), once per function (grids call the task's image functions eagerly
  otherwise, compiling every primitive separately)."""
  return jax.jit(fn)


def _scale(config) -> int:
  """Nearest-neighbour upscaling of the grids so small images stay legible (~96 px cells)."""
  return max(1, 96 // config.data.image_size)


def write_grids(task: ImageTask, config, workdir: str, shown: dict, states: dict, key):
  """samples_<protocol>.png and (with a cGML state) trajectory.png."""
  g = config.eval.grid_samples
  paths = []
  for protocol, (data, outs) in shown.items():
    x, y = data['x'], data['y']
    inputs = np.asarray(_jitted(task.input_image)(x))
    truth = np.asarray(_jitted(task.to_image)(x, y))
    cols = {method: o[:, :g] for method, o in outs.items()}
    path = os.path.join(workdir, f'samples_{protocol}.png')
    viz.save_png(path, viz.samples_grid(inputs, truth, cols), scale=_scale(config))
    paths.append(path)
  if 'cgml' in states:
    data, outs = next(iter(shown.values()))
    # The shown input whose cGML samples differ most: its trajectories are the telling ones.
    spread = outs['cgml'].reshape(outs['cgml'].shape[:2] + (-1,)).std(axis=1).mean(axis=1)
    pick = int(np.argmax(spread))
    x = data['x'][pick:pick + 1]
    t = config.latent.traverse_steps
    traj = trajectory_outputs(states['cgml'], x, key, config.eval.trajectory_starts, t)
    frames = np.unique(np.linspace(0, t, config.eval.trajectory_frames).round().astype(int))
    shown_in = np.asarray(_jitted(task.input_image)(x))[0]
    sel = traj[:, frames]                                   # (S, F, H, W, C)
    flat = sel.reshape((-1,) + sel.shape[2:])
    imgs = np.asarray(_jitted(task.to_image)(np.repeat(x, len(flat), axis=0), flat))
    imgs = imgs.reshape(sel.shape[:2] + imgs.shape[1:])
    rows = [[shown_in] + list(imgs[s]) for s in range(len(imgs))]
    path = os.path.join(workdir, 'trajectory.png')
    viz.save_png(path, viz.grid(rows), scale=_scale(config))
    paths.append(path)
  return paths


def run(task: ImageTask, config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config.methods` with the same budget, evaluates, writes metrics and grids.

  Returns:
    The dict written to `workdir/metrics.json`.
  """
  for m in config.methods:
    if m not in METHODS:
      raise ValueError(f'unknown method {m!r} in config.methods; expected some of {METHODS}')
  writer = workdir_lib.prepare(config, workdir)
  t_start = time.perf_counter()
  key = jax.random.key(config.seed)
  k_models, k_eval, k_traj, k_task = jax.random.split(key, 4)
  states, train_info = {}, {}
  for i, method in enumerate(config.methods):
    state, history, seconds = train_method(method, task, config,
                                           jax.random.fold_in(k_models, i), workdir, writer)
    states[method] = state
    train_info[method] = {'seconds': round(seconds, 2),
                          'final_E': history[-1]['E'] if history else float('nan'),
                          'final_update_norm': loop.last_update_norms(history)}
  writer.close()
  t_eval = time.perf_counter()
  lpips, lpips_note = _lpips(config)
  metrics, shown = evaluate(task, config, states, k_eval, lpips)
  results = {'task': task.name, 'dataset': config.data.name or 'embedded',
             'image_size': int(config.data.image_size),
             'num_samples': int(config.eval.num_samples),
             'traverse_steps': int(config.latent.traverse_steps),
             'train_steps': int(config.train.steps), 'batch_size': int(config.data.batch_size),
             'train': train_info, 'eval': metrics}
  if lpips_note:
    results['lpips'] = lpips_note
  if task.extra_eval is not None:
    results['task_metrics'] = task.extra_eval(config, states, k_task, workdir)
  if parallel.is_primary():
    if config.eval.plots:
      results['images'] = [os.path.basename(p) for p in
                           write_grids(task, config, workdir, shown, states, k_traj)]
    results['eval_seconds'] = round(time.perf_counter() - t_eval, 2)
    results['total_seconds'] = round(time.perf_counter() - t_start, 2)
    with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(workdir, 'metrics.md'), 'w') as f:
      f.write(markdown(results))
    summary = {p: {m: {k: round(v, 4) for k, v in r.items() if k in ('psnr_best', 'E_best',
                                                                    'diversity')}
                   for m, r in pm.items()} for p, pm in metrics.items()}
    print(f'[{task.name}] ' + json.dumps(summary), flush=True)
  return results
