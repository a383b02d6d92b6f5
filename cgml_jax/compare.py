r"""One comparison command (issue 4): cGML and its peers on one image task, equal budgets.

`compare(config, workdir)` trains every method of `config.methods` on the task named by
`config.task` (its `ImageTask`: data pipeline, error E, images), each for `train.steps`
batches of `data.batch_size` (the same grain pipeline and seed for every method), on the
project's conv backbones (`tasks.image.build_models`), and scores them with the pinned
protocol of `cgml_jax.tasks.image` (PSNR, SSIM, LPIPS, LPIPS diversity; K =
`eval.num_samples` samples per input, 1 for the deterministic methods).

  method            state / step / sampler (cgml_jax.peers.methods unless noted)
  l1                RegressionState / l1_step / l1_sample, E = the task's error
  cgml              cgml_jax.cgml: Algorithm 1 (train.inner_steps), Eq. 4 sampling (T steps)
  context_encoder   context_encoder_state / gan_step: 0.999 masked L2 + 0.001 adv., no z
  pix2pix           pix2pix_state / gan_step: NS-GAN + recon_weight * E, z ~ N(0, I)
  basisgan          as pix2pix with G = peers.basisgan.BasisUNetGenerator
  mrgan             PredictorState (P = H + G with 2C outputs, `mrgan.predictor_steps`
                    steps of its NLL, then frozen) and MRGANState / mrgan_step
  <gan>+dsgan, <gan>+msgan   any of pix2pix, basisgan, mrgan with that diversity term

The reconstruction term of pix2pix, BasisGAN is the task's own E (e.g. the masked L1 of
the hole), so every method is pulled towards the same target. MR-GAN's predictor steps
are extra and are reported separately (`steps` column: "G steps + P steps").

Budget curves: every `compare.curve_every` steps, inside the jitted train step, each
method's outputs on a fixed probe batch (the first `compare.probe_size` evaluation inputs
of the first protocol, `compare.curve_samples` samples with a fixed key) are scored with
the task's E (best of the samples, mean over the probe). `steps_to_target` is the first
recorded step with probe E <= `compare.target_error` (empty if never reached). These
curves are the analogue of the paper's Fig. 18 (loss vs. iterations).

Representation probe (paper Table 5; `config.probe.datasets`, off when empty): each
method's frozen H, and an untrained H of the same architecture (the floor), map labelled
images (`probe_rows`: the first `probe.train_per_class` / `probe.test_per_class` rows of
each class of `probe.train_split` / `probe.test_split`, e.g. CIFAR-10 train10k rows 0:800
/ 900:1000 of each class) to flattened bottleneck features, after `probe_preprocess` maps
them onto the task's input format; a multinomial logistic regression (`cgml_jax.metrics.probe`,
L2 picked on a held-out part of probe-train) is scored on probe-test.

Outputs in `workdir`:
  compare.json, compare.md, compare.csv   one row per (protocol, method): psnr/ssim/lpips
                                          (mean and best of K), diversity, pixel_diversity,
                                          E, train seconds (incl. compilation), steps,
                                          steps_to_target, final probe E, probe_<dataset>
                                          (linear-probe test accuracy); compare.md also
                                          has one probe table per dataset
  curves.png                              probe E vs. step, one line per method
  compare_<protocol>.png                  input | ground truth | each method's samples
  checkpoints/<method>/                   resume per method (loop.fit)
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cgml_jax import cgml
from cgml_jax.tasks import viz
from cgml_jax.training import checkpoint, loop, parallel
from cgml_jax.metrics import probe as probe_lib
from cgml_jax.training import workdir as workdir_lib
from cgml_jax.peers import basisgan as basis_lib
from cgml_jax.peers import gan as gan_lib
from cgml_jax.peers import methods as peers
from cgml_jax.peers import mrgan as mr_lib
from cgml_jax.tasks import image

BASE_METHODS = ('l1', 'cgml', 'context_encoder', 'pix2pix', 'basisgan', 'mrgan')
DIVERSITY_OK = ('pix2pix', 'basisgan', 'mrgan')
# task name -> module holding `TASK` (an image.ImageTask).
TASK_MODULES = {
    'mnist_corrupted': 'cgml_jax.tasks.mnist_corrupted',
    'translate': 'cgml_jax.tasks.translate',
    'complete': 'cgml_jax.tasks.complete',
    'colorize': 'cgml_jax.tasks.colorize',
}


def add_compare_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds the peer and comparison fields to an image-task config (experiments/*.py)."""
  c.gan = ml_collections.ConfigDict()
  c.gan.lr = 2e-4              # Adam(lr, beta1 0.5) for G and D (pix2pix, CE, BasisGAN)
  c.gan.disc_features = 64     # width of the first D layer (PatchGAN / CE discriminator)
  c.gan.recon_weight = 100.0   # pix2pix / BasisGAN lambda on the task's E
  c.gan.diversity_weight = -1.0  # DSGAN / MSGAN lambda; < 0 = that paper's default

  c.basisgan = ml_collections.ConfigDict()
  c.basisgan.num_bases = 5
  c.basisgan.basis_every = 2   # every n-th decoder conv is a BasisConv

  c.mrgan = ml_collections.ConfigDict()
  c.mrgan.loss = 'mlmm12'      # 'mlmm1', 'mlmm12' (predictor), 'mcmle1', 'mcmle12'
  c.mrgan.dist = 'gaussian'    # or 'laplace'
  c.mrgan.num_samples = 10     # K samples per input in the MR loss
  c.mrgan.mr_weight = 10.0
  c.mrgan.lr = 1e-4            # AMSGrad (released configs) for P, G, D
  c.mrgan.predictor_steps = 500  # extra steps of P before G (MLMM losses only)

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


def parse_method(name: str) -> tuple[str, str | None]:
  """'pix2pix+msgan' -> ('pix2pix', 'msgan'); validates both parts."""
  base, _, extra = name.partition('+')
  if base not in BASE_METHODS:
    raise ValueError(f'unknown method {name!r}; expected one of {BASE_METHODS} '
                     f'(optionally +dsgan / +msgan on {DIVERSITY_OK})')
  if extra:
    if extra not in ('dsgan', 'msgan') or base not in DIVERSITY_OK:
      raise ValueError(f'unknown variant {name!r}: +dsgan / +msgan go on {DIVERSITY_OK}')
    return base, extra
  return base, None


# ---------------------------------------------------------------------------------------
# Methods: initial state, step, sampler.


def _div_weight(config):
  w = config.gan.diversity_weight
  return None if w is None or w < 0 else float(w)


def _rbg(key):
  # As in image.create_state: RBG keys compile initialisers much faster on CPU.
  return jax.random.key(int(jax.random.randint(key, (), 0, 2**31 - 1)), impl='unsafe_rbg')


def make_method(name: str, task: image.ImageTask, config, batch: dict, key, workdir=None,
                writer=None):
  """(state, step_fn, sample_fn, info) of a method; sample_fn(state, x, key, K) -> (B, K, ...).

  For 'mrgan' with an MLMM loss this trains the predictor first (checkpointed under
  checkpoints/<name>_predictor); info holds its steps and seconds.
  """
  base, extra = parse_method(name)
  x, y = jnp.asarray(batch['x']), jnp.asarray(batch['y'])
  info = {}
  if base in ('l1', 'cgml'):
    state, step_fn = image.create_state(base, task, config, x, key)
    if base == 'l1':
      return state, step_fn, peers.l1_sample, info
    t = config.latent.traverse_steps
    return state, step_fn, lambda s, x, k, n: cgml.sample(s, x, k, n, t), info
  enc, gen, _ = image.build_models(task, config)
  loss_fn = task.loss_fn(config)
  key = _rbg(key)
  z_dim = config.model.z_dim
  g = config.gan
  if base == 'context_encoder':
    tx = peers.adam_gan_optimizer(g.lr)
    disc = gan_lib.ContextEncoderDiscriminator(features=g.disc_features)
    state = peers.context_encoder_state(key, x, y, encoder=enc, generator=gen, disc=disc,
                                        tx_g=tx, tx_d=tx)
    return state, peers.gan_step, peers.gan_sample, info
  disc = gan_lib.PatchDiscriminator(features=g.disc_features)
  if base in ('pix2pix', 'basisgan'):
    if base == 'basisgan':
      b = config.basisgan
      act = config.model.out_activation
      gen = basis_lib.BasisUNetGenerator(
          out_channels=task.out_channels, num_bases=b.num_bases, basis_every=b.basis_every,
          final_upsample=_final_upsample(enc, x), final_activation=act if act == 'tanh'
          else 'none', output_size=int(x.shape[1]))
    hp = peers.GANHyper(z_dim=z_dim, recon_weight=g.recon_weight, diversity=extra,
                        diversity_weight=_div_weight(config))
    tx = peers.adam_gan_optimizer(g.lr)
    state = peers.pix2pix_state(key, x, y, encoder=enc, generator=gen, disc=disc, hp=hp,
                                tx_g=tx, tx_d=tx, recon_fn=loss_fn)
    return state, peers.gan_step, peers.gan_sample, info
  # MR-GAN.
  m = config.mrgan
  k_pred, k_gan = jax.random.split(key)
  tx = mr_lib.optimizer(m.lr)
  pred_state = None
  if m.loss in mr_lib.PREDICTOR_LOSSES:
    # P's G has no output activation: the task's activation goes on the centre only, the
    # log-dispersion stays unbounded (mrgan.Predictor).
    p_config = config.copy_and_resolve_references()
    p_config.model.out_activation = 'none'
    p_enc, p_gen, _ = image.build_models(
        dataclasses.replace(task, out_channels=2 * task.out_channels), p_config)
    predictor = mr_lib.Predictor(p_enc, p_gen,
                                 centre_activation=config.model.out_activation)
    pred_state = peers.PredictorState.create(k_pred, x, predictor=predictor, dist=m.dist,
                                             tx=tx)
    t0 = time.perf_counter()
    pred_state, _ = _fit(f'{name}_predictor', pred_state, peers.predictor_step, task,
                         config, m.predictor_steps, jax.random.fold_in(k_pred, 1), workdir,
                         writer)
    info = {'predictor_steps': int(m.predictor_steps),
            'predictor_seconds': round(time.perf_counter() - t0, 2)}
  hp = peers.MRHyper(z_dim=z_dim, loss=m.loss, dist=m.dist, num_samples=m.num_samples,
                     mr_weight=m.mr_weight, diversity=extra,
                     diversity_weight=_div_weight(config))
  state = peers.MRGANState.create(k_gan, x, y, encoder=enc, generator=gen, disc=disc, hp=hp,
                                  predictor_state=pred_state, tx_g=tx, tx_d=tx)
  return state, peers.mrgan_step, peers.mrgan_sample, info


def _final_upsample(enc, x) -> int:
  """BasisUNetGenerator's final_upsample: output size / finest encoder feature size.

  The encoder may pad the input (28 -> 32); the factor is rounded up so the decoded map
  covers the image, and the generator crops it back (`output_size`).
  """
  shapes = jax.eval_shape(lambda x: enc.init_with_output(jax.random.key(0), x,
                                                         train=False)[0], x)
  finest = max(s.shape[1] for s in jax.tree.leaves(shapes))
  return max(1, -(-x.shape[1] // finest))


# ---------------------------------------------------------------------------------------
# Training.


def _fit(name, state, step_fn, task, config, num_steps, key, workdir, writer,
         extra_metrics=None, history_every=None):
  """loop.fit on the task's training pipeline, checkpointed under checkpoints/<name>."""
  batches = image._Numeric(image.train_iterator(task, config))  # noqa: SLF001
  ckpt = None
  if workdir is not None:
    c = config.checkpoint
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints', name.replace('+', '_')),
                                   every=c.every, keep=c.keep, async_save=c.async_save)
  try:
    state, history = loop.fit(state, step_fn, batches, num_steps=num_steps, key=key,
                              log_every=config.train.log_every,
                              name=f'{task.name}/{name}', extra_metrics=extra_metrics,
                              history_every=history_every, checkpointer=ckpt, writer=writer)
  finally:
    if ckpt is not None:
      ckpt.close()
  return parallel.to_local(state), history


def probe_metric(task, config, sample_fn, probe: dict, num_steps: int):
  """state -> {'probe_E': mean over the probe of the best-of-samples task error E}.

  jnp code, traced into every train step by loop.fit; a `lax.cond` runs the sampler only
  on the steps that the history records (multiples of `compare.curve_every` and the last),
  and gives -1 on the others (loop.fit requires finite metrics every step).
  """
  loss_fn = task.loss_fn(config)
  every = int(config.compare.curve_every)
  k = int(config.compare.curve_samples)
  probe = {n: jnp.asarray(v) for n, v in probe.items()}
  b = probe['x'].shape[0]
  key = jax.random.key(12345)
  rep = jax.tree.map(lambda a: jnp.repeat(a, k, axis=0), probe)

  def probe_e(state):
    out = sample_fn(state, probe['x'], key, k)               # (B, K, ...)
    e = loss_fn(out.reshape((b * k,) + out.shape[2:]), rep).reshape(b, k)
    return jnp.mean(jnp.min(e, axis=1)).astype(jnp.float32)

  def fn(state):
    due = (state.step % every == 0) | (state.step == num_steps)
    return {'probe_E': jax.lax.cond(due, probe_e, lambda s: jnp.float32(-1.0), state)}
  return fn


# ---------------------------------------------------------------------------------------
# Representation probe (paper Table 5).


@functools.lru_cache(maxsize=None)
def probe_preprocess(size: int, in_channels: int):
  """uint8 images (B, h, w, 1 or 3) -> inputs (B, size, size, in_channels) in [-1, 1].

  A generic mapping of a labelled image set onto a task's input format: grey (ITU-R 601
  luma) for 1-2 channel inputs, RGB for 3-4 (grey sources repeated), bilinear resize to
  the task's size, and extra channels (the mask of mnist_corrupted, complete) all zero:
  "nothing is missing". One function object per (size, channels), so one compilation.
  """
  def fn(images):
    x = images.astype(jnp.float32) / 127.5 - 1.0
    if in_channels <= 2:
      if x.shape[-1] == 3:
        x = x @ jnp.asarray([0.299, 0.587, 0.114], jnp.float32)[:, None]
    elif x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    x = jax.image.resize(x, (x.shape[0], size, size, x.shape[-1]), 'linear')
    extra = in_channels - x.shape[-1]
    if extra > 0:
      x = jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (extra,), x.dtype)], axis=-1)
    return x
  return fn


def probe_rows(config, dataset: str, split: str, per_class: int):
  """(uint8 images, labels, description): the first `per_class` rows of each class of split."""
  from cgml_jax import data as data_lib
  src = data_lib.load_source(dataset, split, data_dir=config.data.data_dir or None)
  arrays = getattr(src, 'arrays', None)
  if arrays is None or 'label' not in arrays:
    raise ValueError(f'probe dataset {dataset!r} has no labels; use a labelled local '
                     "dataset such as 'cifar10' or 'mnist'")
  rows = np.asarray(src.indices)
  labels = np.asarray(arrays['label'])[rows]
  pick = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
  if len(pick) == 0:
    raise ValueError(f'probe split {split!r} of {dataset!r} is empty')
  desc = (f"{dataset} split '{split}': first {per_class} of each class "
          f'({len(pick)} images, {len(np.unique(labels))} classes)')
  return np.asarray(arrays['image'])[rows[pick]], labels[pick].astype(np.int32), desc


def representation_probe(task, config, states: dict, key) -> dict:
  """Linear-probe accuracy of every method's frozen H and of an untrained H.

  For each dataset of `config.probe.datasets`: bottleneck features (`cgml_jax.metrics.probe`) of
  the probe-train and probe-test rows (`probe_rows`, mapped to the task's inputs by
  `probe_preprocess`), then `probe.linear_probe` (l2 chosen on a held-out part of
  probe-train).

  Returns:
    {dataset: {'train_rows', 'test_rows', 'seconds', 'results': {method: probe dict}}}.
  """
  p = config.probe
  pre = probe_preprocess(int(config.data.image_size), int(task.in_channels))
  encoders = {m: probe_lib.state_encoder(s) for m, s in states.items()}
  enc0 = image.build_models(task, config)[0]
  out = {}
  for dataset in p.datasets:
    t0 = time.perf_counter()
    x_tr, y_tr, d_tr = probe_rows(config, dataset, p.train_split, p.train_per_class)
    x_te, y_te, d_te = probe_rows(config, dataset, p.test_split, p.test_per_class)
    if 'untrained_encoder' not in encoders:
      # The floor: the same H at initialisation (as image.create_state draws it).
      x0 = jax.jit(pre)(jnp.asarray(x_tr[:1]))
      encoders['untrained_encoder'] = (enc0, jax.jit(enc0.init)(_rbg(key), x0))
    results = {}
    for name, (enc, variables) in encoders.items():
      f_tr = probe_lib.features(enc, variables, x_tr, p.batch_size, pre)
      f_te = probe_lib.features(enc, variables, x_te, p.batch_size, pre)
      results[name] = probe_lib.linear_probe(f_tr, y_tr, f_te, y_te, config)
      print(f'[compare/probe {dataset}] {name}: test_acc={results[name]["test_acc"]:.4f} '
            f'(dim {results[name]["dim"]}, l2 {results[name]["l2"]:g})', flush=True)
    out[dataset] = {'train_rows': d_tr, 'test_rows': d_te,
                    'seconds': round(time.perf_counter() - t0, 2), 'results': results}
  return out


# ---------------------------------------------------------------------------------------
# Evaluation and reports.


def evaluate(task, config, samplers: dict, states: dict, key, lpips=None):
  """Like image.evaluate, for any sampler: (metrics per protocol and method, shown)."""
  metrics, shown = {}, {}
  bs = config.eval.batch_size
  pixel_fn = image._pixel_scores(task, task.loss_fn(config))  # noqa: SLF001
  for p_i, protocol in enumerate(task.protocols(config)):
    data = image.load_eval_set(task, config, protocol)
    n = len(data['x'])
    per_method, outs_shown = {}, {}
    for method, state in states.items():
      k = 1 if parse_method(method)[0] in ('l1', 'context_encoder') else config.eval.num_samples
      sample = jax.jit(samplers[method], static_argnums=3)
      acc = []
      for start in range(0, n, bs):
        batch = {kk: v[start:start + bs] for kk, v in data.items()}
        k_b = jax.random.fold_in(jax.random.fold_in(key, p_i), start)
        out = np.asarray(sample(state, jnp.asarray(batch['x']), k_b, k))
        scores, imgs = image.score(task, config, batch, out, lpips, pixel_fn)
        acc.append(scores)
        if start == 0:
          outs_shown[method] = imgs[:config.eval.grid_rows]
      per_input = {kk: np.concatenate([a[kk] for a in acc]) for kk in acc[0]}
      per_method[method] = {**image.summarize(per_input), 'num_inputs': n, 'num_samples': k}
    metrics[protocol] = per_method
    shown[protocol] = ({kk: v[:config.eval.grid_rows] for kk, v in data.items()}, outs_shown)
  return metrics, shown


COLUMNS = ('psnr_mean', 'psnr_best', 'ssim_mean', 'ssim_best', 'lpips_mean', 'lpips_best',
           'diversity', 'pixel_diversity', 'E_mean', 'E_best')
TRAIN_COLUMNS = ('seconds', 'steps', 'steps_to_target', 'final_probe_E')


def rows(results: dict) -> list[dict]:
  """Flat table rows: one per (protocol, method)."""
  out = []
  for protocol, per_method in results['eval'].items():
    for method, m in per_method.items():
      t = results['train'][method]
      probe = {f'probe_{ds}': r['results'].get(method, {}).get('test_acc', '')
               for ds, r in results.get('probe', {}).items()}
      out.append({'protocol': protocol, 'method': method,
                  **{c: m.get(c, '') for c in COLUMNS},
                  **{c: t.get(c, '') for c in TRAIN_COLUMNS}, **probe})
  return out


def _fmt(v):
  if v is None or v == '':
    return ''
  if isinstance(v, float):
    return 'nan' if not np.isfinite(v) else f'{v:.4g}'
  return str(v)


def markdown(results: dict) -> str:
  """compare.md: one table per protocol, methods as rows."""
  lines = [f"# Comparison on {results['task']} ({results['dataset']}, "
           f"{results['image_size']}px)", '',
           f"Every method: {results['train_steps']} steps of batch {results['batch_size']} "
           f"(MR-GAN: + predictor steps). K = {results['num_samples']} samples per input "
           '(1 for l1, context_encoder). "best" = best of K per input. seconds = training '
           'wall time incl. compilation. steps_to_target: first step with probe E <= '
           f"{results['target_error']} (probe: {results['probe_size']} inputs, best of "
           f"{results['curve_samples']} samples, every {results['curve_every']} steps).", '']
  table = rows(results)
  for protocol in results['eval']:
    sel = [r for r in table if r['protocol'] == protocol]
    probe_cols = [f'probe_{ds}' for ds in results.get('probe', {})]
    cols = ([c for c in COLUMNS if any(r[c] != '' for r in sel)] + list(TRAIN_COLUMNS) +
            probe_cols)
    lines += [f'## {protocol}', '', '| method | ' + ' | '.join(cols) + ' |',
              '|---|' + '---|' * len(cols)]
    for r in sel:
      lines.append(f"| {r['method']} | " + ' | '.join(_fmt(r[c]) for c in cols) + ' |')
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
  if results.get('grid_columns'):
    lines += ['Grids compare_<protocol>.png, columns: input | ground truth | ' +
              ' | '.join(f'{m} x{k}' for m, k in results['grid_columns'].items()),
              'curves.png: probe E vs. step.', '']
  return '\n'.join(lines)


def plot_curves(path: str, curves: dict, target: float):
  """curves.png: probe E vs. step per method (paper Fig. 18 analogue)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
  for method, (steps, values) in curves.items():
    ax.plot(steps, values, marker='.', label=method)
  ax.axhline(target, color='grey', ls='--', lw=0.8, label='target')
  ax.set_xlabel('training step (batches)')
  ax.set_ylabel('probe error E (best of samples)')
  ax.set_yscale('log')
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def write_grids(task, config, workdir, shown) -> list[str]:
  """compare_<protocol>.png: input | ground truth | each method's samples, same inputs."""
  g = config.eval.grid_samples
  paths = []
  for protocol, (data, outs) in shown.items():
    inputs = np.asarray(jax.jit(task.input_image)(data['x']))
    truth = np.asarray(jax.jit(task.to_image)(data['x'], data['y']))
    path = os.path.join(workdir, f'compare_{protocol}.png')
    viz.save_png(path, viz.samples_grid(inputs, truth, {m: o[:, :g] for m, o in outs.items()}),
                 scale=image._scale(config))  # noqa: SLF001
    paths.append(path)
  return paths


def get_task(config) -> image.ImageTask:
  if config.task not in TASK_MODULES:
    raise ValueError(f'compare supports the image tasks {sorted(TASK_MODULES)}, '
                     f'got {config.task!r}')
  return importlib.import_module(TASK_MODULES[config.task]).TASK


def compare(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config.methods` with equal budgets, evaluates, writes tables, curves, grids.

  Running again in the same workdir resumes every method from its checkpoints.

  Returns:
    The dict written to `workdir/compare.json`.
  """
  task = get_task(config)
  for m in config.methods:
    parse_method(m)
  writer = workdir_lib.prepare(config, workdir)
  t_start = time.perf_counter()
  key = jax.random.key(config.seed)
  k_models, k_train, k_eval = jax.random.split(key, 3)
  first = next(image._Numeric(image.train_iterator(task, config)))  # noqa: SLF001
  protocol0 = task.protocols(config)[0]
  probe_all = image.load_eval_set(task, config, protocol0)
  probe = {k: v[:config.compare.probe_size] for k, v in probe_all.items()}
  cc = config.compare
  states, samplers, train_info, curves = {}, {}, {}, {}
  for i, method in enumerate(config.methods):
    state, step_fn, sample_fn, info = make_method(
        method, task, config, first, jax.random.fold_in(k_models, i), workdir, writer)
    t0 = time.perf_counter()
    state, history = _fit(method, state, step_fn, task, config, config.train.steps,
                          jax.random.fold_in(k_train, i), workdir, writer,
                          extra_metrics=probe_metric(task, config, sample_fn, probe,
                                                       config.train.steps),
                          history_every=cc.curve_every)
    seconds = time.perf_counter() - t0
    states[method], samplers[method] = state, sample_fn
    recorded = [h for h in history if h.get('probe_E', -1.0) >= 0]
    steps = [h['step'] for h in recorded]
    values = [h['probe_E'] for h in recorded]
    curves[method] = (steps, values)
    hit = [s for s, v in zip(steps, values) if v <= cc.target_error]
    p_steps = info.get('predictor_steps')
    train_info[method] = {
        'seconds': round(seconds + info.get('predictor_seconds', 0.0), 2),
        'steps': f'{config.train.steps}+{p_steps}' if p_steps else int(config.train.steps),
        'steps_to_target': hit[0] if hit else '',
        'final_probe_E': values[-1] if values else float('nan'),
        'curve': {'step': steps, 'probe_E': values},
        'final_update_norm': loop.last_update_norms(history), **info}
  writer.close()
  lpips, lpips_note = image._lpips(config)  # noqa: SLF001
  metrics, shown = evaluate(task, config, samplers, states, k_eval, lpips)
  results = {'task': task.name, 'dataset': config.data.name or 'embedded',
             'image_size': int(config.data.image_size),
             'num_samples': int(config.eval.num_samples),
             'train_steps': int(config.train.steps), 'batch_size': int(config.data.batch_size),
             'target_error': float(cc.target_error), 'probe_size': len(probe['x']),
             'curve_samples': int(cc.curve_samples), 'curve_every': int(cc.curve_every),
             'methods': list(config.methods), 'train': train_info, 'eval': metrics}
  if lpips_note:
    results['lpips'] = lpips_note
  if config.probe.datasets:
    results['probe'] = representation_probe(task, config, states,
                                            jax.random.fold_in(k_models, 10_000))
  if parallel.is_primary():
    images = write_grids(task, config, workdir, shown)
    path = os.path.join(workdir, 'curves.png')
    plot_curves(path, curves, cc.target_error)
    results['images'] = [os.path.basename(p) for p in images + [path]]
    first_shown = next(iter(shown.values()))[1]
    results['grid_columns'] = {m: int(min(o.shape[1], config.eval.grid_samples))
                               for m, o in first_shown.items()}
    results['total_seconds'] = round(time.perf_counter() - t_start, 2)
    with open(os.path.join(workdir, 'compare.json'), 'w') as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(workdir, 'compare.md'), 'w') as f:
      f.write(markdown(results))
    table = rows(results)
    with open(os.path.join(workdir, 'compare.csv'), 'w', newline='') as f:
      w = csv.DictWriter(f, fieldnames=list(table[0]))
      w.writeheader()
      w.writerows(table)
    print(markdown(results), flush=True)
  return results
