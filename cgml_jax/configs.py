"""Config pieces shared by every experiment: the blocks all tasks have, and variant parsing.

A task's `get_config(arg)` (experiments/*.py) starts from `base(task)`, which holds the
blocks every experiment shares (seed, methods, latent, train, checkpoint, logging,
distributed), then sets only what differs, like flax's `configs/v100_x8.py`. Variants are
passed big_vision style, `--config=experiments/toy.py:smoke,seed=2`, and read with
`parse_arg`. `validate(config)` checks every field that can be wrong before any work
starts and raises a one-line `ConfigError` naming the field and its allowed values.
"""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
  """Parses 'a,b=2,c=x' against `spec` (name -> default) into a ConfigDict.

  A bare name sets a bool to True; `name=value` converts value to the default's type.
  Unknown names raise, listing the known ones.

  Example: `parse_arg('smoke,seed=2', smoke=False, seed=0, preset='paper')` gives
  {'smoke': True, 'seed': 2, 'preset': 'paper'}.
  """
  out = ml_collections.ConfigDict(dict(spec))
  for part in (arg or '').split(','):
    part = part.strip()
    if not part:
      continue
    name, has_value, value = part.partition('=')
    if name not in spec:
      raise ValueError(f'unknown config argument {name!r} in {arg!r}; expected some of '
                       f'{sorted(spec)} as name or name=value')
    default = spec[name]
    if not has_value:
      if not isinstance(default, bool):
        raise ValueError(f'config argument {name!r} needs a value ({name}=...)')
      out[name] = True
    elif isinstance(default, bool):
      if value.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(f'config argument {name}={value!r}: expected true or false')
      out[name] = value.lower() in ('true', '1')
    else:
      try:
        out[name] = type(default)(value)
      except ValueError:
        raise ValueError(f'config argument {name}={value!r}: expected a '
                         f'{type(default).__name__}') from None
  return out


def parse_seeds(spec: str) -> list[int]:
  """'0-4' -> [0, 1, 2, 3, 4]; '0,2,5' -> [0, 2, 5]; '0-2,7' -> [0, 1, 2, 7].

  Args:
    spec: comma-separated seeds or inclusive ranges a-b.

  Returns:
    The seeds in order, without repeats.
  """
  seeds = []
  for part in spec.split(','):
    part = part.strip()
    if '-' in part:
      a, b = (int(v) for v in part.split('-'))
      if b < a:
        raise ValueError(f'empty seed range {part!r}')
      seeds.extend(range(a, b + 1))
    elif part:
      seeds.append(int(part))
  if not seeds:
    raise ValueError(f'no seeds in {spec!r}')
  return list(dict.fromkeys(seeds))


def base(task: str, methods: tuple[str, ...] = ('l1', 'cgml')) -> ml_collections.ConfigDict:
  """The blocks every experiment has, with the paper's method as the default."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.seed = 0
  c.methods = methods          # trained with the same budget (steps x batch), in this order

  c.model = ml_collections.ConfigDict()
  c.model.z_dim = ml_collections.FieldReference(8)  # z on S^{z_dim - 1}; shared by G and Z

  # Algorithm 1 and Eq. 4 (cgml_jax.cgml.Hyper; read by cgml_jax.tasks.methods.hyper).
  c.latent = ml_collections.ConfigDict()
  # z_0: 'random' per batch, 'persistent' per-example table, or 'balanced' (not in the
  # paper): the batch's B random points assigned one-to-one to its targets by least E.
  c.latent.init = 'random'
  c.latent.step_size = 1.0     # beta of the z step (of the first inner step if decayed)
  c.latent.step_size_decay = 1.0  # not in the paper (1 there): step t uses beta * decay^t
  c.latent.alpha = 1.0         # rho = alpha * ||z' - z||
  c.latent.use_momentum = True  # False = the "w/o rho" ablation (also method cgml_no_rho)
  c.latent.traverse_steps = 20  # T of Eq. 4 at inference
  c.latent.clip_step = False   # not in the paper: Eq. 4 steps min(rho_hat, ||r_hat - z||)
  # Z's L1 (Algorithm 1, step 3): 'split' = mean|r_hat - z'| + mean|rho_hat - rho|;
  # 'joint' = one mean over the (n + 1)-vector (z', rho), as the paper writes it.
  c.latent.z_loss = 'split'
  # Multimodality options, not in the paper (cgml.Hyper); these defaults are the paper's.
  c.latent.init_candidates = 1  # z_0 = best of N random sphere points by E (1 = random)
  c.latent.target = 'next'     # Z fitted to the next z ('next') or the descent's 'end'
  c.latent.redraw_rho = 0.0    # inference: redraw samples whose final rho_hat > this (0 off)
  c.latent.redraw_rounds = 0   # ... this many times
  c.latent.redraw_quantile = 0.0  # inference: instead of redraw_rho, this quantile of the
                                  # samples' rho_hat (0 off)
  # Z's path ('same': z's own, Algorithm 1), or 'nearest' (with init 'balanced'): the
  # path from each example's best of the batch's points (cgml.Hyper.flow_init).
  c.latent.flow_init = 'same'

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000         # batches per method
  c.train.inner_steps = 3      # l of Algorithm 1
  c.train.generator_update = 'every'  # (H, G) step at 'every' inner step, or the 'last'
  # Inner scan unrolled (True; fast on XLA:CPU) or one rolled copy (False); 'auto' unrolls
  # on CPU only (cgml_jax.tasks.methods.resolve_unroll). Any of the three may be given.
  c.train.unroll = ml_collections.FieldReference('auto', field_type=object)
  c.train.lr = 1e-3            # Adam, (H, G) and the L1 baseline
  c.train.lr_latent = 1e-3     # Adam, Z
  c.train.schedule = 'cosine'  # over train.steps batches: every inner update of a batch
                               # uses the rate of that batch
  c.train.warmup_steps = 0
  c.train.grad_clip = 1.0      # global-norm clipping, 0 = off
  c.train.log_every = 100      # console line, metric writers and history every N steps

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 1000    # Orbax checkpoint every N steps (and at the end, on SIGTERM)
  c.checkpoint.keep = 1        # newest checkpoints kept per method
  c.checkpoint.async_save = False  # write in the background
  # The workdir's config.json must match this config, except for the fields in
  # cgml_jax.training.checkpoint.RESUMABLE_FIELDS. True continues anyway (e.g. to extend
  # train.steps, which also stretches the lr schedule).
  c.checkpoint.allow_config_mismatch = False

  c.logging = ml_collections.ConfigDict()
  c.logging.tensorboard = True  # event files in workdir/logs (metrics.jsonl always)
  c.logging.images = True      # image summaries (logs/images/, TensorBoard) after training

  c.distributed = ml_collections.ConfigDict()  # multi-host; empty/0/-1 = from environment
  c.distributed.coordinator_address = ''  # host:port of process 0 (JAX_COORDINATOR_ADDRESS)
  c.distributed.num_processes = 0         # JAX_NUM_PROCESSES
  c.distributed.process_id = -1           # JAX_PROCESS_ID
  return c


def add_peer_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The peers' hyper-parameters (cgml_jax.tasks.methods), for configs that train them."""
  c.gan = ml_collections.ConfigDict()
  c.gan.lr = 2e-4              # Adam(lr, beta1 0.5) for G and D (pix2pix, CE, BasisGAN)
  c.gan.disc_features = 64     # width of the first D layer (PatchGAN / CE discriminator)
  c.gan.disc_max_features = 512  # CE discriminator: widest layer
  c.gan.recon_weight = 100.0   # pix2pix / BasisGAN lambda on the task's E
  c.gan.diversity_weight = -1.0  # DSGAN / MSGAN lambda; < 0 = that paper's default
  # cGML's spectral norm (constant model.lipschitz) on every peer's G. None of the peers'
  # papers constrains G so; cGML's own G and Z always have it.
  c.gan.generator_spectral_norm = False
  # model.norm of the Context Encoder peer's H and G: 'batch', as in Pathak et al.'s
  # encoder and decoder, or 'none' (then it shares cGML's H and G exactly)
  c.gan.context_encoder_norm = 'batch'

  # BasisGAN (Wang et al. 2020; cgml_jax.peers.basisgan).
  c.basisgan = ml_collections.ConfigDict()
  c.basisgan.generator = 'resnet'  # pix2pix's ResNet generator with stochastic residual
                               # blocks (the paper's), or 'unet' (a U-Net decoder on H)
  c.basisgan.num_blocks = 6    # 'resnet': residual blocks, one BasisConv each (pix2pix: 9
                               # at 256 px, 6 at 128 px); its width is model.base_channels
  c.basisgan.num_bases = 5     # K spatial bases per BasisConv
  c.basisgan.latent_dim = 64   # latent size of each basis generator (Table A.1: 64 + 64)
  c.basisgan.basis_hidden = 64  # hidden width of each basis generator (Table A.1)
  c.basisgan.latent = 'auto'   # 'per_layer': each basis generator its own latent (the
                               # paper); 'shared': one for all; 'auto': shared only under
                               # +dsgan (their Sec. 5), per_layer otherwise
  c.basisgan.basis_every = 2   # 'unet': every n-th decoder conv is a BasisConv

  # MR-GAN (Lee et al. 2019; its App. B.2 is the Pix2Pix setting followed here).
  c.mrgan = ml_collections.ConfigDict()
  c.mrgan.loss = 'mlmm12'      # 'mlmm1', 'mlmm12' (predictor), 'mcmle1', 'mcmle12'
  c.mrgan.dist = 'gaussian'    # or 'laplace'
  c.mrgan.num_samples = 10     # K samples per input in the MR loss
  c.mrgan.mr_weight = 10.0
  c.mrgan.lr = 1e-4            # AMSGrad (released configs) for P, G, D
  c.mrgan.noise = 'spatial'    # 'spatial': N(0, 1) tensors H x W x noise_channels at the
                               # noise_maps coarsest decoder maps (the paper's); 'vector':
                               # model.z_dim broadcast as for pix2pix (model.z_injection)
  c.mrgan.noise_channels = 32  # channels of each spatial noise tensor (paper: 32)
  c.mrgan.noise_maps = 3       # how many of the coarsest decoder maps get one (paper: 3)
  c.mrgan.disc_batch_size = 16  # D's examples per step (paper: 16); <= data.batch_size
  c.mrgan.gen_batch_size = 8   # G's inputs per step, K samples each (paper: 8 x 10 = 80)
  c.mrgan.predictor_batch_size = 16  # P's examples per step (paper: 16)
  # P's step budget before G (MLMM losses only). "Until it is overfitted": on corrupted
  # MNIST (mlmm12) the validation NLL stopped improving at step 2900 (stopped at 3300,
  # 96 s on a 2-core CPU); at 500 steps it was still falling (-1.31 vs the best -2.06).
  c.mrgan.predictor_steps = 5000
  c.mrgan.predictor_eval_every = 100  # steps between P's validation NLL measurements
  c.mrgan.predictor_patience = 4  # stop after this many measurements without a new best
  c.mrgan.predictor_val_size = 64  # last N training examples held out to select P
  c.mrgan.normalize_inputs = True  # x per channel to zero mean, unit variance (paper)
  c.mrgan.norm_batches = 16    # first N training batches give the statistics

  # BicycleGAN (Zhu et al. 2017, Eq. 6 and Sec. 4; cgml_jax.peers.bicyclegan).
  c.bicyclegan = ml_collections.ConfigDict()
  c.bicyclegan.recon_weight = 10.0   # lambda on the task's E of the cVAE-GAN cycle
  c.bicyclegan.latent_weight = 0.5   # lambda_latent on |E(G(x, z)) - z|_1 (cLR-GAN cycle)
  c.bicyclegan.kl_weight = 0.01      # lambda_KL on KL(E(y) || N(0, I))
  c.bicyclegan.gan_loss = 'lsgan'    # the paper's LSGAN; or 'ns'
  c.bicyclegan.lr = 2e-4             # Adam(lr, beta1 0.5) for H, G, E and D

  return add_cimle_fields(c)


def add_cimle_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """cIMLE's hyper-parameters alone: the one peer with no discriminator, so tasks without
  one (the toy) offer it without the GAN peers' fields."""
  # Conditional IMLE (Li et al. 2019; cgml_jax.peers.cimle).
  c.cimle = ml_collections.ConfigDict()
  c.cimle.num_latents = 10     # m latents per input; the nearest sample is trained
  c.cimle.lr = -1.0            # < 0: train.lr (with train's schedule and clipping, as L1)
  return c


# ---------------------------------------------------------------------------------------
# Validation: every field that can be wrong, checked before any work starts.


class ConfigError(ValueError):
  """A config field holds a value the library cannot use; the message is one line."""


_MISSING = object()


def _get(config, field: str):
  node = config
  for part in field.split('.'):
    if node is None or not hasattr(node, 'get') or part not in node:
      return _MISSING
    node = node[part]
  return node


def _fail(field: str, value, allowed: str):
  raise ConfigError(f'config.{field} = {value!r} is not allowed; expected {allowed}')


def _int(config, field: str, lo: int, allowed: str | None = None):
  v = _get(config, field)
  if v is _MISSING:
    return
  if isinstance(v, bool) or not isinstance(v, int) or v < lo:
    _fail(field, v, allowed or f'an integer >= {lo}')


def _num(config, field: str, lo: float, hi: float | None = None, lo_open: bool = True):
  v = _get(config, field)
  if v is _MISSING:
    return
  ok = not isinstance(v, bool) and isinstance(v, (int, float))
  ok = ok and (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
  if not ok:
    rng = f"{'>' if lo_open else '>='} {lo}" + (f' and <= {hi}' if hi is not None else '')
    _fail(field, v, f'a number {rng}')


def _choice(config, field: str, allowed: tuple):
  v = _get(config, field)
  # Types must match too: True == 1 in Python, but 1 is no unroll flag.
  if v is not _MISSING and not any(type(v) is type(a) and v == a for a in allowed):
    _fail(field, v, f'one of {allowed}')


def _bool(config, field: str):
  v = _get(config, field)
  if v is not _MISSING and not isinstance(v, bool):
    _fail(field, v, 'True or False')


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every field that can be wrong, before any work starts.

  Fields a config does not have are skipped (the toy has no images, the image tasks no
  toy modes). `cgml_jax.train.train_and_evaluate` calls this first.

  Args:
    config: an experiment config (experiments/*.py).

  Returns:
    The config, unchanged.

  Raises:
    ConfigError: one line naming the first wrong field and the values it allows.
  """
  # pylint: disable=g-import-not-at-top; these import jax and the models, configs does not.
  from cgml_jax import cgml
  from cgml_jax.models import conv, layers
  from cgml_jax.tasks import methods as methods_lib
  from cgml_jax.train import TASKS
  from cgml_jax.training import optim

  task = _get(config, 'task')
  if task not in TASKS:
    _fail('task', task, f'one of {tuple(sorted(TASKS))}')
  methods = _get(config, 'methods')
  if methods is not _MISSING:
    if isinstance(methods, str) or not methods:
      _fail('methods', methods, "a non-empty tuple of method names, e.g. ('l1', 'cgml')")
    for m in methods:
      try:
        methods_lib.parse(m)
      except ValueError as e:
        raise ConfigError(f'config.methods: {e}') from None
    if len(set(methods)) != len(methods):
      _fail('methods', methods, 'each method at most once')
  _int(config, 'seed', 0)

  # Training.
  _int(config, 'train.steps', 1)
  _int(config, 'train.inner_steps', 1)
  _num(config, 'train.lr', 0.0)
  _num(config, 'train.lr_latent', 0.0)
  _choice(config, 'train.schedule', optim.SCHEDULES)
  _int(config, 'train.warmup_steps', 0)
  _num(config, 'train.grad_clip', 0.0, lo_open=False)
  _int(config, 'train.log_every', 1)
  _choice(config, 'train.generator_update', cgml.GENERATOR_UPDATES)
  _choice(config, 'train.unroll', methods_lib.UNROLL_VALUES)

  # Algorithm 1 and Eq. 4.
  _choice(config, 'latent.init', cgml.LATENT_INITS)
  _num(config, 'latent.step_size', 0.0)
  _num(config, 'latent.step_size_decay', 0.0, 1.0)
  _num(config, 'latent.alpha', 0.0, lo_open=False)
  _bool(config, 'latent.use_momentum')
  _bool(config, 'latent.clip_step')
  _int(config, 'latent.traverse_steps', 0)
  _int(config, 'latent.init_candidates', 1)
  _choice(config, 'latent.target', cgml.LATENT_TARGETS)
  _choice(config, 'latent.z_loss', cgml.Z_LOSSES)
  _num(config, 'latent.redraw_rho', 0.0, lo_open=False)
  _int(config, 'latent.redraw_rounds', 0)
  _choice(config, 'latent.flow_init', cgml.FLOW_INITS)
  _num(config, 'latent.redraw_quantile', 0.0, 0.999, lo_open=False)

  # Data. The global batch is split over every device of the data mesh.
  _int(config, 'data.batch_size', 1)
  batch = _get(config, 'data.batch_size')
  n_dev = _device_count(config)
  if batch is not _MISSING and n_dev and batch % n_dev:
    _fail('data.batch_size', batch, f'a multiple of the {n_dev} devices, e.g. '
          f'{max(n_dev, batch // n_dev * n_dev)}')
  _int(config, 'data.num_train', 0 if task == 'spectral3d' else 1)
  n_train = _generated_train_size(config, task)
  if n_train is not None and isinstance(batch, int) and batch > n_train:
    _fail('data.batch_size', batch, f'at most the {n_train} training examples '
          '(config.data.num_train)')
  _int(config, 'data.num_test', 0 if task == 'spectral3d' else 1)
  _int(config, 'data.num_threads', 1)
  _int(config, 'data.channels', 1)
  _int(config, 'data.center_crop', 0)

  # Model.
  _int(config, 'model.z_dim', 1)
  _choice(config, 'model.impl', layers.IMPLS)
  _choice(config, 'model.z_injection', conv.Z_INJECTIONS)
  _choice(config, 'model.norm', conv.NORMS)
  _choice(config, 'model.out_activation', ('tanh', 'sigmoid', 'none'))
  for f in ('base_channels', 'max_channels', 'bottleneck_size', 'width', 'depth', 'h_dim'):
    _int(config, f'model.{f}', 1)
  _num(config, 'model.lipschitz', 0.0)
  hidden = _get(config, 'model.latent_hidden')
  if hidden is not _MISSING and (isinstance(hidden, (str, int)) or any(
      isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in hidden)):
    _fail('model.latent_hidden', hidden, 'a tuple of widths >= 1, e.g. (128, 128)')
  _check_image_size(config)

  # Checkpoints and evaluation.
  _int(config, 'checkpoint.every', 1)
  _int(config, 'checkpoint.keep', 1)
  for f in ('num_test', 'num_samples', 'batch_size', 'grid_rows', 'grid_samples',
            'trajectory_starts', 'trajectory_frames'):
    _int(config, f'eval.{f}', 1)
  if task == 'complete':
    from cgml_jax.tasks import complete
    protocols = _get(config, 'eval.protocols')
    if protocols is not _MISSING and (isinstance(protocols, str) or not protocols or any(
        p not in complete.PROTOCOLS for p in protocols)):
      _fail('eval.protocols', protocols, f'a non-empty tuple of {complete.PROTOCOLS}')
    _num(config, 'data.mask_min', 0.0, 1.0)
    _num(config, 'data.mask_max', 0.0, 1.0)

  _choice(config, 'loss.error', ('l1', 'l2'))  # cgml.ERRORS (not imported: keep this light)

  # Peers.
  _num(config, 'gan.lr', 0.0)
  _choice(config, 'gan.context_encoder_norm', conv.NORMS)
  _int(config, 'gan.disc_features', 1)
  _bool(config, 'gan.generator_spectral_norm')
  if _get(config, 'basisgan.generator') is not _MISSING:
    from cgml_jax.peers import basisgan
    _choice(config, 'basisgan.generator', basisgan.GENERATORS)
    _choice(config, 'basisgan.latent', basisgan.LATENTS)
  for f in ('num_blocks', 'num_bases', 'latent_dim', 'basis_hidden', 'basis_every'):
    _int(config, f'basisgan.{f}', 1)
  _num(config, 'mrgan.lr', 0.0)
  if _get(config, 'mrgan.loss') is not _MISSING:
    from cgml_jax.peers import mrgan
    _choice(config, 'mrgan.loss', mrgan.LOSSES)
    _choice(config, 'mrgan.dist', mrgan.DISTRIBUTIONS)
  _int(config, 'mrgan.num_samples', 2)
  _int(config, 'cimle.num_latents', 1)
  _choice(config, 'mrgan.noise', ('spatial', 'vector'))
  for f in ('noise_channels', 'noise_maps', 'disc_batch_size', 'gen_batch_size',
            'predictor_batch_size', 'predictor_steps', 'predictor_eval_every',
            'predictor_patience', 'predictor_val_size', 'norm_batches'):
    _int(config, f'mrgan.{f}', 1)
  _bool(config, 'mrgan.normalize_inputs')
  trains_mrgan = methods is not _MISSING and any(
      methods_lib.parse(m)[0] == 'mrgan' for m in methods)
  for f in ('disc_batch_size', 'gen_batch_size', 'predictor_batch_size'):
    v = _get(config, f'mrgan.{f}')
    if trains_mrgan and isinstance(v, int) and isinstance(batch, int) and v > batch:
      _fail(f'mrgan.{f}', v, f'at most data.batch_size = {batch} (a slice of each batch)')
  return config


# Sources whose training set is generated with `data.num_train` examples (no files): the
# embedded photo crops and the colour-mode shapes.
_GENERATED_SOURCES = ('', 'embedded', 'shapes')


def _generated_train_size(config, task) -> int | None:
  """The training set size where the config alone fixes it: the toy's `data.num_train`
  points, the generated image sources' `data.num_train` examples, a spectral3d subset of
  `data.num_train` shapes. None where it depends on files (`train.check_data` counts
  those)."""
  n = _get(config, 'data.num_train')
  if not isinstance(n, int) or isinstance(n, bool) or n < 1:
    return None
  name = _get(config, 'data.name')
  if task in ('toy', 'spectral3d') or (task != 'mnist_corrupted' and (
      name is _MISSING or name in _GENERATED_SOURCES)):
    return n
  return None


def _device_count(config) -> int | None:
  """jax.device_count(), or None where asking would be too early: a multi-process run
  must join (jax.distributed.initialize) before JAX starts its backend, and that happens
  later, in `training.workdir.prepare`; its batch is checked there."""
  import os

  import jax

  from cgml_jax.training import parallel
  if not jax.distributed.is_initialized():
    d = config.get('distributed')
    env = (parallel.ENV_COORDINATOR, parallel.ENV_NUM_PROCESSES, parallel.ENV_PROCESS_ID)
    configured = d is not None and (d.coordinator_address or d.num_processes > 0
                                    or d.process_id >= 0)
    auto = parallel._AUTO_DETECTED  # pylint: disable=protected-access
    if configured or any(k in os.environ for k in env + tuple(auto)):
      return None
  return jax.device_count()


# The largest image side the conv stack is built for: a side needs log2(S / bottleneck)
# stride-2 blocks, and beyond this the 4x4 stride-2 stack's memory is out of reach.
MAX_IMAGE_SIZE = 4096


def _check_image_size(config):
  """data.image_size: the conv stack pads S up to bottleneck_size * 2^k (k >= 1 blocks)."""
  size = _get(config, 'data.image_size')
  if size is _MISSING:
    return
  _int(config, 'data.image_size', 1, f'an integer in [1, {MAX_IMAGE_SIZE}]')
  if size > MAX_IMAGE_SIZE:
    _fail('data.image_size', size, f'an integer in [1, {MAX_IMAGE_SIZE}]')
  bottleneck = _get(config, 'model.bottleneck_size')
  if bottleneck is not _MISSING and isinstance(bottleneck, int) and bottleneck > size:
    _fail('model.bottleneck_size', bottleneck,
          f'an integer in [1, data.image_size = {size}] (H downsamples to it)')
