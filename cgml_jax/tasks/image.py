r"""The image tasks (paper Sec. 5): data, models, and the one experiment driver.

A task module (colorize, complete, translate, mnist_corrupted) describes itself as an
`ImageTask`: which source to read, how an example becomes {'x', 'y', ...} for training and
for each evaluation protocol, the error E, and how an output is shown as an RGB image.
`run(task, config, workdir)` then does the rest, the same way for every task and for any
list of methods (`cgml_jax.tasks.methods`: cGML, L1 and every peer):

  1. train every method of `config.methods` with the same budget: `train.steps` batches of
     `data.batch_size` from the same pipeline and seed; H, G (and Z) from
     `cgml_jax.models.conv.build_conv_models`. Every method checkpoints and resumes.
  2. for each evaluation protocol, take the first `eval.num_test` examples of the test split
     (transformed with a fixed per-example rng, so every method sees the same inputs and
     masks), draw K = `eval.num_samples` outputs per input (1 for deterministic methods;
     cGML: Eq. 4 from K random z_0, T = `latent.traverse_steps`), and score them.
  3. write `metrics.json`, `metrics.md` (one Markdown table per protocol) and PNG grids:
     `samples_<protocol>.png` (input | ground truth | each method's samples, the same
     inputs for every method), `trajectory.png` (one input's outputs G(h, z_t) along Eq. 4
     from several z_0; the paper's Fig. 6 analogue), and for comparison configs (a
     `compare` block) `curves.png`, the task's error on a probe batch against the step.

Metric protocol (pinned; every number is computed on RGB (or grey) images as returned by
`ImageTask.to_image` and clipped to [-1, 1], i.e. colorization outputs are converted from
LAB, and completion and MNIST outputs are composited with the observed pixels):

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
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cgml_jax import cgml, configs
from cgml_jax import data as data_lib
from cgml_jax.metrics import image as image_metrics
from cgml_jax.models.conv import build_conv_models
from cgml_jax.peers import basisgan as basis_lib
from cgml_jax.peers import gan as gan_lib
from cgml_jax.tasks import methods as methods_lib
from cgml_jax.tasks import viz
from cgml_jax.training import parallel
from cgml_jax.training import workdir as workdir_lib

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
    extra_eval: optional (config, trained {method: methods.Trained}, key, workdir) -> dict
      of task-specific results, stored under 'task_metrics' in metrics.json.
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
  c = configs.base(task)
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
  c.model.impl = 'auto'        # fast 4x4 stride-2 layers (cgml_jax.models.layers)
  # 'none' (the paper's H and G) or 'batch': BatchNorm in H and G (cgml_jax.models.conv;
  # the z step and inference use the running averages, only the (H, G) step updates them)
  c.model.norm = 'none'

  # E is a per-example MEAN over pixels, so grad_z E is small: with beta = 1, C = 1 and z
  # at the bottleneck only, ||z' - z|| was ~1e-3 and the z step did nothing; beta = 10,
  # C = 2 and z at every decoder block move z by ~0.8 (docs/method.md).
  c.latent.step_size = 10.0

  c.eval = ml_collections.ConfigDict()
  c.eval.num_test = 128        # first N examples of data.test_split
  c.eval.num_samples = 10      # K outputs per input (stochastic methods)
  c.eval.batch_size = 32       # inputs per evaluation batch
  c.eval.lpips = True          # LPIPS and LPIPS diversity (needs the offline weights)
  c.eval.lpips_weights = ''    # explicit weights file ('' = search the data folder)
  c.eval.grid_rows = 8         # inputs shown in samples_*.png
  c.eval.grid_samples = 6      # samples shown per input and method
  c.eval.trajectory_starts = 4  # z_0 rows of trajectory.png
  c.eval.trajectory_frames = 8  # frames per row (evenly spaced over t = 0..T)
  c.eval.plots = True
  return c


def add_comparison_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The peers' fields, budget curves and representation probe, for comparison configs."""
  configs.add_peer_fields(c)
  c.probe = ml_collections.ConfigDict()
  c.probe.datasets = ()        # labelled sets for the representation probe, e.g.
                               # ('cifar10',) or ('cifar10', 'mnist'); () = no probe
  c.probe.train_split = 'train'  # probe-train: first train_per_class rows of each class
  c.probe.train_per_class = 200  # (cifar10 'train' = rows 0:800 of each class)
  c.probe.test_split = 'test'  # probe-test: first test_per_class rows of each class
  c.probe.test_per_class = 100   # (cifar10 'test' = rows 900:1000 of each class)
  c.probe.l2_grid = (1e-4, 1e-3, 1e-2, 1e-1)  # on mean CE + l2 ||W||^2, picked on val_frac
  c.probe.val_frac = 0.2       # of probe-train, held out to pick l2
  c.probe.steps = 100          # L-BFGS iterations per fit
  c.probe.batch_size = 100     # images per feature-extraction call

  c.compare = ml_collections.ConfigDict()
  c.compare.probe_size = 16    # inputs of the probe batch of the budget curves
  c.compare.curve_samples = 3  # samples per probe input (best of them is scored)
  c.compare.curve_every = 50   # probe E every this many steps (the curves' resolution)
  c.compare.target_error = 0.2  # steps_to_target: first step with probe E <= this
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


def resize(size: int, keys: Sequence[str] = ('image',), center_crop: int = 0) -> Transform:
  """uint8 images of another size -> (size, size) with PIL bicubic (no-op if already).

  Args:
    size: output side S.
    keys: the example keys holding images.
    center_crop: if > 0, first cut the centred min(center_crop, H, W) square (e.g. 140
      for CelebA's 218x178 faces, the usual crop), so non-square images keep their aspect.
  """
  def fn(example, rng):
    del rng
    out = dict(example)
    for k in keys:
      img = np.asarray(example[k])
      if center_crop > 0:
        side = min(center_crop, img.shape[0], img.shape[1])
        top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
        img = img[top:top + side, left:left + side]
      if img.shape[:2] == (size, size):
        out[k] = img
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


def known_mode_samples(task: ImageTask, config, trained: dict, key):
  """For the known-mode evaluations: the first `eval.num_test` test examples and, per
  method, K = `eval.num_samples` samples of each, (N, K, ...) (K copies for deterministic
  methods, so coverage is comparable across methods).

  Returns:
    (data, {method: samples}).
  """
  data = load_eval_set(task, config, 'test')
  n, bs, k = len(data['x']), config.eval.batch_size, int(config.eval.num_samples)
  return data, {
      name: np.concatenate([methods_lib.sample(t, data['x'][s:s + bs],
                                               jax.random.fold_in(key, s), k)
                            for s in range(0, n, bs)])
      for name, t in trained.items()}


# ---------------------------------------------------------------------------------------
# Models and training.


def build_models(task: ImageTask, config, out_channels: int | None = None):
  """H, G, Z for this task and config (cgml_jax.models.conv)."""
  m = config.model
  return build_conv_models(config.data.image_size, task.in_channels,
                           out_channels or task.out_channels,
                           m.z_dim, base_channels=m.base_channels,
                           max_channels=m.max_channels, bottleneck_size=m.bottleneck_size,
                           z_injection=m.z_injection, spectral_norm=True,
                           lipschitz=m.lipschitz, latent_hidden=tuple(m.latent_hidden),
                           out_activation=m.out_activation, impl=m.impl,
                           # configs written before model.norm existed (exports) lack it
                           norm=m.get('norm', 'none'))


def train_iterator(task: ImageTask, config, holdout: int = 0):
  """Checkpointable grain iterator of training batches (fresh corruptions every epoch).

  `holdout` > 0 leaves out the last `holdout` examples of the training split (see
  `holdout_set`).
  """
  src = _source(task, config, config.data.train_split)
  if holdout:
    src = _Prefix(src, len(src) - holdout)
  mesh = parallel.make_mesh()
  local_batch = parallel.process_batch_size(config.data.batch_size, mesh)
  ds = data_lib.make_pipeline(src, batch_size=local_batch, seed=config.seed,
                              transform=task.transform(config, None),
                              process_index=jax.process_index(),
                              process_count=jax.process_count())
  return NumericBatches(data_lib.make_iterator(ds, num_threads=config.data.num_threads))


class _Prefix:
  """The first n examples of a random-access source."""

  def __init__(self, src, n: int):
    if not 1 <= n <= len(src):
      raise ValueError(f'cannot take {n} of the {len(src)} examples of the source')
    self.src, self.n = src, n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    if not -self.n <= i < self.n:
      raise IndexError(i)
    return self.src[i % self.n]


def holdout_set(task: ImageTask, config, n: int) -> dict[str, np.ndarray]:
  """The last n examples of the training split, transformed, stacked: a validation set.

  Example i of the split gets `np.random.default_rng([seed, 4099, i])` (fixed corruptions
  and masks, like `load_eval_set`), so the set is the same in every build;
  `train_iterator(..., holdout=n)` trains without these examples.
  """
  src = _source(task, config, config.data.train_split)
  if not 1 <= n < len(src):
    raise ValueError(f'cannot hold out {n} of the {len(src)} training examples')
  fn = task.transform(config, None)
  examples = [fn(src[i], np.random.default_rng([config.seed, 4099, i]))
              for i in range(len(src) - n, len(src))]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]
          if isinstance(examples[0][k], np.ndarray) and examples[0][k].dtype.kind in 'fiub'}


class NumericBatches:
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


def _final_upsample(enc, x) -> int:
  """BasisUNetGenerator's final_upsample: output size / finest encoder feature size.

  The encoder may pad the input (28 -> 32); the factor is rounded up so the decoded map
  covers the image, and the generator crops it back (`output_size`).
  """
  shapes = jax.eval_shape(lambda x: enc.init_with_output(jax.random.key(0), x,
                                                         train=False)[0], x)
  finest = max(s.shape[1] for s in jax.tree.leaves(shapes))
  return max(1, -(-x.shape[1] // finest))


def basis_models(config, out_channels: int, enc, x, per_layer_latents: bool) -> tuple:
  """BasisGAN's (H, G) for `config.basisgan` (cgml_jax.peers.basisgan).

  'resnet' (the paper's pix2pix model): H = the ResNet generator's front, ngf =
  `model.base_channels`, and G = its `basisgan.num_blocks` stochastic residual blocks and
  up-sampling; 'unet': the task's H and a U-Net decoder on its features. Spectral norm on
  G's plain convs follows `gan.generator_spectral_norm` (set by the registry).
  """
  b, m = config.basisgan, config.model
  act = 'tanh' if m.out_activation == 'tanh' else 'none'
  common = dict(out_channels=out_channels, num_bases=b.num_bases, latent_dim=b.latent_dim,
                basis_hidden=b.basis_hidden, per_layer_latents=per_layer_latents,
                final_activation=act, output_size=int(x.shape[1]), lipschitz=m.lipschitz)
  if b.generator == 'resnet':
    return (basis_lib.BasisResNetEncoder(features=m.base_channels),
            basis_lib.BasisResNetGenerator(num_blocks=b.num_blocks, **common))
  if b.generator == 'unet':
    return enc, basis_lib.BasisUNetGenerator(basis_every=b.basis_every,
                                             final_upsample=_final_upsample(enc, x), **common)
  raise ValueError(f'basisgan.generator must be one of {basis_lib.GENERATORS}, '
                   f'got {b.generator!r}')


def method_context(task: ImageTask, config, workdir: str | None = None, writer=None,
                   extra_metrics=None) -> methods_lib.Context:
  """The registry's view of an image task (`cgml_jax.tasks.methods.Context`)."""
  def discriminator(kind):
    g = config.gan
    if kind == 'context_encoder':
      return gan_lib.ContextEncoderDiscriminator(features=g.disc_features,
                                                 max_features=g.disc_max_features)
    return gan_lib.PatchDiscriminator(features=g.disc_features)

  def basis_generator(enc, x, per_layer_latents):
    return basis_models(config, task.out_channels, enc, x, per_layer_latents)

  return methods_lib.Context(
      name=task.name, config=config,
      models=lambda cfg, out_channels: build_models(task, cfg, out_channels),
      loss_fn=task.loss_fn(config), example=next(train_iterator(task, config)),
      batches=lambda: train_iterator(task, config), discriminator=discriminator,
      holdout=lambda n: (lambda: train_iterator(task, config, n), holdout_set(task, config, n)),
      basis_generator=basis_generator, rbg_keys=True, workdir=workdir, writer=writer,
      extra_metrics=extra_metrics)


def train_method(method: str, task: ImageTask, config, key, workdir: str | None = None,
                 writer=None) -> methods_lib.Trained:
  """Trains one method of the registry on this task; resumes from workdir checkpoints."""
  return methods_lib.train(method, method_context(task, config, workdir, writer), key)


def curve_metric(task: ImageTask, config, probe: dict):
  """(method, sampler) -> (state -> {'probe_E': ...}): the budget curves' probe error.

  jnp code, traced into every train step by loop.fit; a `lax.cond` runs the sampler only
  on the steps that the history records (multiples of `compare.curve_every` and the last),
  and gives -1 on the others (loop.fit requires finite metrics every step). probe_E is the
  task's E on a fixed probe batch, best of `compare.curve_samples` samples with a fixed
  key, mean over the probe.
  """
  loss_fn = task.loss_fn(config)
  every = int(config.compare.curve_every)
  k = int(config.compare.curve_samples)
  num_steps = int(config.train.steps)
  probe = {n: jnp.asarray(v) for n, v in probe.items()}
  b = probe['x'].shape[0]
  key = jax.random.key(12345)
  rep = jax.tree.map(lambda a: jnp.repeat(a, k, axis=0), probe)

  def for_method(name, sample_fn):
    del name

    def probe_e(state):
      out = sample_fn(state, probe['x'], key, k)               # (B, K, ...)
      e = loss_fn(out.reshape((b * k,) + out.shape[2:]), rep).reshape(b, k)
      return jnp.mean(jnp.min(e, axis=1)).astype(jnp.float32)

    def fn(state):
      due = (state.step % every == 0) | (state.step == num_steps)
      return {'probe_E': jax.lax.cond(due, probe_e, lambda s: jnp.float32(-1.0), state)}
    return fn
  return for_method


def curve_of(history: list[dict], target: float) -> dict:
  """The recorded probe errors of a history: steps, values, first step at the target."""
  recorded = [h for h in history if h.get('probe_E', -1.0) >= 0]
  steps = [h['step'] for h in recorded]
  values = [h['probe_E'] for h in recorded]
  hit = [s for s, v in zip(steps, values) if v <= target]
  return {'curve': {'step': steps, 'probe_E': values},
          'steps_to_target': hit[0] if hit else '',
          'final_probe_E': values[-1] if values else float('nan')}


# ---------------------------------------------------------------------------------------
# Inference.


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
    # One scoring rule for every task: the output as the user sees it (composited with
    # the observed pixels where the task has them), clipped to the image range.
    img = jnp.clip(task.to_image(rep['x'], flat), -1.0, 1.0)
    gt = jnp.clip(task.to_image(rep['x'], rep['y']), -1.0, 1.0)
    p = image_metrics.psnr(img, gt)
    s = (image_metrics.ssim(img, gt) if min(img.shape[1:3]) >= 11
         else jnp.full(p.shape, jnp.nan))
    return e, img, gt, p, s
  return fn


def score(task: ImageTask, config, batch: dict, outputs: np.ndarray, lpips=None,
          pixel_fn=None) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Per-input scores of outputs (B, K, ...) against batch['y'] (see the module docstring).

  The K samples are scored one slot at a time, so deterministic methods (K = 1) and
  stochastic ones share one compiled scoring function.

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


def num_samples_of(method: str, config) -> int:
  """K at evaluation: 1 for deterministic methods, `eval.num_samples` otherwise."""
  return 1 if methods_lib.is_deterministic(method) else int(config.eval.num_samples)


def evaluate(task: ImageTask, config, trained: dict, key, lpips=None) -> tuple[dict, dict]:
  """Scores every trained method on every protocol, the same inputs and keys for all.

  Returns:
    (metrics {protocol: {method: summary}}, shown {protocol: (first `eval.grid_rows`
    inputs, {method: their output images})}) for the grids.
  """
  metrics, shown = {}, {}
  bs = config.eval.batch_size
  pixel_fn = _pixel_scores(task, task.loss_fn(config))
  for p_i, protocol in enumerate(task.protocols(config)):
    data = load_eval_set(task, config, protocol)
    n = len(data['x'])
    per_method, outs_shown = {}, {}
    for method, t in trained.items():
      k = num_samples_of(method, config)
      acc = []
      for start in range(0, n, bs):
        batch = {kk: v[start:start + bs] for kk, v in data.items()}
        k_b = jax.random.fold_in(jax.random.fold_in(key, p_i), start)
        scores, imgs = score(task, config, batch, methods_lib.sample(t, batch['x'], k_b, k), lpips,
                             pixel_fn)
        acc.append(scores)
        if start == 0:
          outs_shown[method] = imgs[:config.eval.grid_rows]
      per_input = {kk: np.concatenate([a[kk] for a in acc]) for kk in acc[0]}
      summary = summarize(per_input)
      if task.extra_summary is not None:
        summary.update(task.extra_summary(summary))
      per_method[method] = {**summary, 'num_inputs': n, 'num_samples': k}
    metrics[protocol] = per_method
    shown[protocol] = ({kk: v[:config.eval.grid_rows] for kk, v in data.items()}, outs_shown)
  return metrics, shown


# ---------------------------------------------------------------------------------------
# Reports.

COLUMNS = ('psnr_mean', 'psnr_best', 'ssim_mean', 'ssim_best', 'lpips_mean', 'lpips_best',
           'diversity', 'pixel_diversity', 'colorfulness', 'E_mean', 'E_best')
TRAIN_COLUMNS = ('seconds', 'steps', 'steps_to_target', 'final_probe_E')


def _fmt(v):
  if v is None or v == '':
    return ''
  if isinstance(v, float):
    return 'nan' if not np.isfinite(v) else f'{v:.4g}'
  return str(v)


def markdown(results: dict) -> str:
  """metrics.md: one table per protocol, methods as rows."""
  lines = [f"# {results['task']} ({results['dataset']}, {results['image_size']}px)", '',
           f"Every method: {results['train_steps']} steps of batch {results['batch_size']} "
           f"(MR-GAN: + predictor steps). K = {results['num_samples']} samples per input "
           '(1 for the deterministic methods). "best" = best of K per input. seconds = '
           'training wall time incl. compilation. See cgml_jax/tasks/image.py for the '
           'protocol.', '']
  if 'target_error' in results:
    lines += [f"steps_to_target: first step with probe E <= {results['target_error']} "
              f"(probe: {results['probe_size']} inputs, best of {results['curve_samples']} "
              f"samples, every {results['curve_every']} steps).", '']
  for protocol, per_method in results['eval'].items():
    cols = [c for c in COLUMNS if any(c in m for m in per_method.values())]
    cols += [c for c in TRAIN_COLUMNS
             if any(c in results['train'][m] for m in per_method)]
    probe_cols = [f'probe_{ds}' for ds in results.get('probe', {})]
    lines += [f'## {protocol}', '', '| method | ' + ' | '.join(cols + probe_cols) + ' |',
              '|---|' + '---|' * len(cols + probe_cols)]
    for method, m in per_method.items():
      t = results['train'][method]
      vals = [_fmt(m[c]) if c in m else _fmt(t.get(c, '')) for c in cols]
      vals += [_fmt(r['results'].get(method, {}).get('test_acc', ''))
               for r in results.get('probe', {}).values()]
      lines.append(f'| {method} | ' + ' | '.join(vals) + ' |')
    lines.append('')
  for ds, r in results.get('probe', {}).items():
    lines += [f'## Representation probe: {ds} (linear classifier on the frozen bottleneck)',
              '', f"probe-train: {r['train_rows']}; probe-test: {r['test_rows']}. L2 picked "
              'on a held-out part of probe-train; chance = most frequent test label.', '',
              '| encoder | test acc | train acc | val acc | l2 | dim | chance |',
              '|---|---|---|---|---|---|---|']
    for name, v in r['results'].items():
      lines.append(f"| {name} | {v['test_acc']:.4f} | {v['train_acc']:.4f} | "
                   f"{v['val_acc']:.4f} | {v['l2']:g} | {v['dim']} | {v['chance']:.3f} |")
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


def write_grids(task: ImageTask, config, workdir: str, shown: dict, trained: dict, key):
  """samples_<protocol>.png (input | truth | each method's samples, the same inputs for
  every method) and, with a cGML model, trajectory.png (a row per z_0, a column per t), both
  with their columns labelled (`viz.samples_labels`, `viz.trajectory_labels`)."""
  g = config.eval.grid_samples
  paths = []
  for protocol, (data, outs) in shown.items():
    x, y = data['x'], data['y']
    inputs = np.asarray(_jitted(task.input_image)(x))
    truth = np.asarray(_jitted(task.to_image)(x, y))
    cols = {method: o[:, :g] for method, o in outs.items()}
    path = os.path.join(workdir, f'samples_{protocol}.png')
    viz.save_png(path, viz.samples_grid(inputs, truth, cols, scale=_scale(config)))
    paths.append(path)
  if 'cgml' in trained:
    data, outs = next(iter(shown.values()))
    # The shown input whose cGML samples differ most: its trajectories are the telling ones.
    spread = outs['cgml'].reshape(outs['cgml'].shape[:2] + (-1,)).std(axis=1).mean(axis=1)
    pick = int(np.argmax(spread))
    x = data['x'][pick:pick + 1]
    t = config.latent.traverse_steps
    traj = trajectory_outputs(trained['cgml'].state, x, key, config.eval.trajectory_starts, t)
    frames = np.unique(np.linspace(0, t, config.eval.trajectory_frames).round().astype(int))
    shown_in = np.asarray(_jitted(task.input_image)(x))[0]
    sel = traj[:, frames]                                   # (S, F, H, W, C)
    flat = sel.reshape((-1,) + sel.shape[2:])
    imgs = np.asarray(_jitted(task.to_image)(np.repeat(x, len(flat), axis=0), flat))
    imgs = imgs.reshape(sel.shape[:2] + imgs.shape[1:])
    rows = [[shown_in] + list(imgs[s]) for s in range(len(imgs))]
    path = os.path.join(workdir, 'trajectory.png')
    labels = viz.trajectory_labels(frames, len(rows))
    viz.save_png(path, viz.labelled_grid(rows, labels, scale=_scale(config)))
    paths.append(path)
  return paths


def run(task: ImageTask, config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The experiment driver of the image tasks: trains every method of `config.methods`
  with the same budget, evaluates them with the pinned protocol, writes the tables and
  grids. Running it again in the same workdir resumes every method from its checkpoints.

  With a `compare` block in the config it also records the budget curves (curves.png);
  with `probe.datasets` it runs the representation probe of the frozen encoders.

  Returns:
    The dict written to `workdir/metrics.json`.
  """
  for m in config.methods:
    methods_lib.parse(m)
  writer = workdir_lib.prepare(config, workdir)
  t_start = time.perf_counter()
  key = jax.random.key(config.seed)
  k_models, k_eval, k_traj, k_task = jax.random.split(key, 4)
  cc = config.get('compare')
  extra, probe = None, None
  if cc is not None:
    probe_all = load_eval_set(task, config, task.protocols(config)[0])
    probe = {k: v[:cc.probe_size] for k, v in probe_all.items()}
    extra = curve_metric(task, config, probe)
  ctx = method_context(task, config, workdir, writer, extra_metrics=extra)
  trained = methods_lib.train_all(ctx, k_models)
  writer.close()
  train_info = {}
  for m, t in trained.items():
    train_info[m] = dict(t.info)
    if cc is not None:
      train_info[m].update(curve_of(t.history, cc.target_error))
  t_eval = time.perf_counter()
  lpips, lpips_note = _lpips(config)
  metrics, shown = evaluate(task, config, trained, k_eval, lpips)
  results = {'task': task.name, 'dataset': config.data.name or 'embedded',
             'image_size': int(config.data.image_size),
             'num_samples': int(config.eval.num_samples),
             'traverse_steps': int(config.latent.traverse_steps),
             'train_steps': int(config.train.steps), 'batch_size': int(config.data.batch_size),
             'methods': list(config.methods), 'train': train_info, 'eval': metrics}
  if cc is not None:
    results.update({'target_error': float(cc.target_error), 'probe_size': len(probe['x']),
                    'curve_samples': int(cc.curve_samples),
                    'curve_every': int(cc.curve_every)})
  if lpips_note:
    results['lpips'] = lpips_note
  if task.extra_eval is not None:
    results['task_metrics'] = task.extra_eval(config, trained, k_task, workdir)
  if config.get('probe') is not None and config.probe.datasets:
    from cgml_jax.tasks import representation
    results['probe'] = representation.probe(task, config, trained,
                                            jax.random.fold_in(k_models, 10_000))
  if parallel.is_primary():
    if config.eval.plots:
      paths = write_grids(task, config, workdir, shown, trained, k_traj)
      if cc is not None:
        paths.append(os.path.join(workdir, 'curves.png'))
        viz.plot_curves(paths[-1], {m: (i['curve']['step'], i['curve']['probe_E'])
                                    for m, i in train_info.items()}, cc.target_error)
      results['images'] = [os.path.basename(p) for p in paths]
    results['eval_seconds'] = round(time.perf_counter() - t_eval, 2)
    results['total_seconds'] = round(time.perf_counter() - t_start, 2)
    with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(workdir, 'metrics.md'), 'w') as f:
      f.write(markdown(results))
  return results
