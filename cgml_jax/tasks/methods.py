r"""Every method a task can train, by name: one registry, one way to build and train them.

  name              state / step / sampler                       K at evaluation
  l1                regression.RegressionState / train_step      1 (deterministic)
  cgml              cgml.CGMLState / train_step / sample (Eq. 4) eval.num_samples
  cgml_no_rho       as cgml with use_momentum=False ("w/o rho")  eval.num_samples
  context_encoder   peers: 0.999 masked L2 + 0.001 adversarial,  1 (no noise)
                    H and G with gan.context_encoder_norm (BatchNorm)
  pix2pix           peers: NS-GAN + gan.recon_weight * E         eval.num_samples
  basisgan          as pix2pix, H and G from the task's BasisGAN    eval.num_samples
  mrgan             peers: predictor (MLMM losses) then MR-GAN   eval.num_samples
  bicyclegan        peers.bicyclegan: cVAE-GAN + cLR-GAN, E(y)   eval.num_samples
  cimle             peers.cimle: nearest of m samples, E on it   eval.num_samples
  <gan>+dsgan, <gan>+msgan   pix2pix, basisgan, mrgan with that diversity term

A task describes its models and data once in a `Context`; `build(name, ctx)` returns a
`Built` (initial state, jit-able step, sampler), `train(name, ctx, key)` trains it for
`config.train.steps` batches with checkpoints and resume, and `hyper(config, method)` is
the one place where a config becomes `cgml.Hyper`.

Every peer's G is built as its paper builds it: without cGML's spectral norm unless
`gan.generator_spectral_norm` (`peer_generator`); cGML's G and Z keep it.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cgml_jax import cgml, regression
from cgml_jax.models import conv, layers
from cgml_jax.peers import basisgan as basis_lib
from cgml_jax.peers import bicyclegan as bicycle_lib
from cgml_jax.peers import cimle as cimle_lib
from cgml_jax.peers import methods as peers
from cgml_jax.peers import mrgan as mr_lib
from cgml_jax.training import loop, optim
from cgml_jax.training import workdir as workdir_lib

BASE_METHODS = ('l1', 'cgml', 'cgml_no_rho', 'context_encoder', 'pix2pix', 'basisgan',
                'mrgan', 'bicyclegan', 'cimle')
DETERMINISTIC = ('l1', 'context_encoder')
DIVERSITY_TERMS = ('dsgan', 'msgan')
DIVERSITY_OK = ('pix2pix', 'basisgan', 'mrgan')


def parse(name: str) -> tuple[str, str | None]:
  """'pix2pix+msgan' -> ('pix2pix', 'msgan'); raises naming the allowed values."""
  base, _, extra = name.partition('+')
  if base not in BASE_METHODS:
    raise ValueError(f'unknown method {name!r}; expected one of {BASE_METHODS} '
                     f'(optionally +dsgan / +msgan on {DIVERSITY_OK})')
  if extra:
    if extra not in DIVERSITY_TERMS or base not in DIVERSITY_OK:
      raise ValueError(f'unknown method {name!r}: +dsgan / +msgan go on {DIVERSITY_OK}')
    return base, extra
  return base, None


def is_deterministic(name: str) -> bool:
  """True for methods with one output per input (evaluated with K = 1)."""
  return parse(name)[0] in DETERMINISTIC


UNROLL_VALUES = ('auto', True, False)


def resolve_unroll(value) -> bool:
  """`train.unroll`: True or False as given; 'auto' unrolls on CPU only.

  XLA:CPU runs convolutions inside a `while` loop through a slow generic path, so the
  inner scan is unrolled there. GPU and TPU run loop bodies at full speed, so one rolled
  copy keeps compile time independent of l. The same rule picks the conv layers' form
  (`cgml_jax.models.layers.platform`).
  """
  if isinstance(value, bool):
    return value
  if value == 'auto':
    return layers.platform() == 'cpu'
  raise ValueError(f'train.unroll must be one of {UNROLL_VALUES}, got {value!r}')


def hyper(config: ml_collections.ConfigDict, method: str = 'cgml') -> cgml.Hyper:
  """`cgml.Hyper` of a config's latent, train and model blocks (see cgml_jax.configs).

  `train.unroll='auto'` is resolved here, for the backend in use (`resolve_unroll`).
  """
  lat, t = config.latent, config.train
  return cgml.Hyper(
      z_dim=int(config.model.z_dim), step_size=lat.step_size, alpha=lat.alpha,
      inner_steps=t.inner_steps,
      use_momentum=lat.use_momentum and parse(method)[0] != 'cgml_no_rho',
      generator_update=t.generator_update, latent_init=lat.init, clip_step=lat.clip_step,
      step_size_decay=lat.step_size_decay, unroll=resolve_unroll(t.unroll),
      init_candidates=lat.init_candidates, latent_target=lat.target,
      redraw_rho=lat.redraw_rho, redraw_rounds=lat.redraw_rounds, z_loss=lat.z_loss,
      flow_init=lat.flow_init, redraw_quantile=lat.redraw_quantile)


@dataclasses.dataclass
class Context:
  """What the registry needs to know of a task.

  Attributes:
    name: task name (console prefix, metric names).
    config: the experiment config.
    models: (config, out_channels or None) -> (H, G, Z) modules; out_channels overrides
      the task's (MR-GAN's predictor outputs a centre and a log-dispersion per channel).
    loss_fn: E, (y_hat, batch) -> (B,) per-example errors.
    example: one training batch {'x', 'y', ...} (shapes and dtypes for initialisation).
    batches: () -> a fresh iterator of training batches (checkpointable if it has
      get_state/set_state).
    num_examples: size of the training set (the persistent z table), if known.
    discriminator: kind ('patch' or 'context_encoder') -> D module.
    basis_generator: (H, example x, per_layer_latents) -> BasisGAN's (H', G), for tasks
      that offer it (`cgml_jax.peers.basisgan`; H' may be H).
    rbg_keys: draw initial parameters from an RBG key (compiles much faster on CPU for
      conv nets; parameters are still a deterministic function of the seed).
    workdir, writer: where checkpoints and metrics go (None: no checkpoints).
    step_wrapper: optional step_fn -> step_fn applied to every method's step (e.g. a
      corruption drawn inside the jitted step).
    extra_metrics: optional (name, sample_fn) -> (state -> dict) traced into every step
      (e.g. budget curves).
    holdout: optional n -> (a `batches` without the last n training examples, those n
      examples as one fixed batch): MR-GAN's predictor is selected on them.
  """
  name: str
  config: ml_collections.ConfigDict
  models: Callable[[Any, int | None], tuple]
  loss_fn: Callable
  example: dict
  batches: Callable[[], Iterator[dict]]
  num_examples: int | None = None
  discriminator: Callable[[str], Any] | None = None
  basis_generator: Callable | None = None
  rbg_keys: bool = False
  workdir: str | None = None
  writer: Any = None
  step_wrapper: Callable | None = None
  extra_metrics: Callable | None = None
  holdout: Callable[[int], tuple[Callable[[], Iterator[dict]], dict]] | None = None


@dataclasses.dataclass
class Built:
  """A method ready to train: state, jit-able step, sampler (state, x, key, K) -> (B, K, ...)."""
  state: Any
  step_fn: Callable
  sample_fn: Callable
  info: dict = dataclasses.field(default_factory=dict)


def rbg_key(key: jax.Array) -> jax.Array:
  """An RBG key drawn from `key`: XLA:CPU compiles threefry-based initialisers of many
  kernel shapes slowly; parameters only need to be a deterministic function of the seed,
  which RBG keys are on a given backend."""
  return jax.random.key(int(jax.random.randint(key, (), 0, 2**31 - 1)), impl='unsafe_rbg')


def _key(ctx: Context, key):
  return rbg_key(key) if ctx.rbg_keys else key


def _gan_optimizer(config, lr=None):
  return peers.adam_gan_optimizer(config.gan.lr if lr is None else lr)


def _div_weight(config):
  w = config.gan.diversity_weight
  return None if w is None or w < 0 else float(w)


COMMON_GENERATOR = ('l1', 'cgml', 'cgml_no_rho')  # cGML and its baseline: the task's G as is


def peer_generator(generator, config):
  """A peer's G with spectral norm only if `gan.generator_spectral_norm` (default off).

  The task's G is cGML's, spectrally normalised with constant C = `model.lipschitz` so
  that it is Lipschitz in z (cGML Eq. 3); none of the peers' papers constrains G that way.
  Modules without a `spectral_norm` field are returned as they are.
  """
  gan = config.get('gan')
  enabled = bool(gan.get('generator_spectral_norm', False)) if gan is not None else False
  if getattr(generator, 'spectral_norm', enabled) == enabled:
    return generator
  return generator.clone(spectral_norm=enabled)


def basis_latents_per_layer(config, extra: str | None) -> bool:
  """`basisgan.latent`: one latent per basis generator, unless 'shared' or (for 'auto')
  under +dsgan, where BasisGAN feeds them all the same code (Wang et al. 2020, Sec. 5)."""
  mode = config.basisgan.latent
  if mode not in basis_lib.LATENTS:
    raise ValueError(f'basisgan.latent must be one of {basis_lib.LATENTS}, got {mode!r}')
  if mode == 'auto':
    return extra != 'dsgan'
  return mode == 'per_layer'


def build(name: str, ctx: Context, key: jax.Array) -> Built:
  """The initial state, step and sampler of method `name` (see the module docstring).

  For 'mrgan' with an MLMM loss this trains the predictor first and keeps the parameters
  of lowest validation NLL (`peers.methods.train_predictor`; not checkpointed: a resumed
  run trains it again, from the same seed and data order); `info` then holds its steps,
  the selected step, its validation NLL and seconds.
  """
  base, extra = parse(name)
  config = ctx.config
  x, y = jnp.asarray(ctx.example['x']), jnp.asarray(ctx.example['y'])
  key = _key(ctx, key)
  enc, gen, lat = ctx.models(config, None)
  if base not in COMMON_GENERATOR:
    gen = peer_generator(gen, config)
  tx_hg = optim.from_config(config.train, config.train.lr)
  if base == 'l1':
    state = regression.RegressionState.create(key, x, encoder=enc, generator=gen, tx=tx_hg,
                                              loss_fn=ctx.loss_fn)
    return Built(state, regression.train_step, peers.l1_sample)
  if base in ('cgml', 'cgml_no_rho'):
    hp = hyper(config, name)
    tx_lat = optim.from_config(config.train, config.train.lr_latent)
    state = cgml.CGMLState.create(key, x, encoder=enc, generator=gen, latent_net=lat,
                                  tx_hg=tx_hg, tx_latent=tx_lat, hp=hp, loss_fn=ctx.loss_fn,
                                  num_examples=ctx.num_examples)
    t = int(config.latent.traverse_steps)
    return Built(state, cgml.train_step, lambda s, x, k, n: cgml.sample(s, x, k, n, t))
  if base == 'cimle':
    if 'cimle' not in config:
      raise ValueError("method 'cimle' needs its fields (cgml_jax.configs.add_cimle_fields) "
                       'in the config')
    # No discriminator: the same optimiser and schedule as L1 and cGML (train block).
    c = config.cimle
    tx = optim.from_config(config.train, config.train.lr if c.lr < 0 else c.lr)
    hp = cimle_lib.CIMLEHyper(z_dim=int(config.model.z_dim), num_latents=int(c.num_latents))
    state = cimle_lib.CIMLEState.create(key, x, encoder=enc, generator=gen, tx=tx, hp=hp,
                                        loss_fn=ctx.loss_fn)
    return Built(state, cimle_lib.cimle_step, cimle_lib.cimle_sample)
  if 'gan' not in config:
    raise ValueError(f'method {name!r} needs the peer fields (cgml_jax.configs.'
                     'add_peer_fields) in the config')
  if ctx.discriminator is None:
    raise ValueError(f'task {ctx.name!r} does not offer the GAN peers (no discriminator)')
  g = config.gan
  if base == 'context_encoder':
    norm = g.get('context_encoder_norm', 'none')
    if 'norm' in config.model and norm != config.model.norm:  # Pathak et al.'s BatchNorm
      ce_config = config.copy_and_resolve_references()
      ce_config.model.norm = norm
      enc, gen, _ = ctx.models(ce_config, None)
      gen = peer_generator(gen, config)
    tx = _gan_optimizer(config)
    state = peers.context_encoder_state(key, x, y, encoder=enc, generator=gen,
                                        disc=ctx.discriminator('context_encoder'),
                                        tx_g=tx, tx_d=tx)
    return Built(state, peers.gan_step, peers.gan_sample)
  disc = ctx.discriminator('patch')
  z_dim = int(config.model.z_dim)
  if base == 'bicyclegan':
    c = config.bicyclegan
    hp = bicycle_lib.BicycleHyper(z_dim=z_dim, recon_weight=c.recon_weight,
                                  latent_weight=c.latent_weight, kl_weight=c.kl_weight,
                                  gan_loss=c.gan_loss)
    # E(y): an encoder of H's family (its own parameters) with a (mu, log sigma^2) head.
    lat_enc = bicycle_lib.LatentEncoder(backbone=enc.clone(), z_dim=z_dim)
    tx = peers.adam_gan_optimizer(c.lr)
    state = bicycle_lib.BicycleGANState.create(key, x, y, encoder=enc, generator=gen,
                                               latent_encoder=lat_enc, disc=disc, hp=hp,
                                               tx_g=tx, tx_d=tx, recon_fn=ctx.loss_fn)
    return Built(state, bicycle_lib.bicyclegan_step, bicycle_lib.bicyclegan_sample)
  if base in ('pix2pix', 'basisgan'):
    if base == 'basisgan':
      if ctx.basis_generator is None:
        raise ValueError(f'task {ctx.name!r} does not offer basisgan')
      enc, gen = ctx.basis_generator(enc, x, basis_latents_per_layer(config, extra))
      gen = peer_generator(gen, config)
      z_dim = basis_lib.noise_dim(enc, gen, x)  # the latents of every basis generator
    hp = peers.GANHyper(z_dim=z_dim, recon_weight=g.recon_weight, diversity=extra,
                        diversity_weight=_div_weight(config))
    tx = _gan_optimizer(config)
    state = peers.pix2pix_state(key, x, y, encoder=enc, generator=gen, disc=disc, hp=hp,
                                tx_g=tx, tx_d=tx, recon_fn=ctx.loss_fn)
    return Built(state, peers.gan_step, peers.gan_sample)
  # MR-GAN.
  return _build_mrgan(name, extra, ctx, key, enc, gen, disc, x, y)


def _mrgan_noise(config, enc, gen, x) -> tuple[Any, int]:
  """MR-GAN's G and noise size: spatial tensors at the coarsest decoder maps, or a vector.

  Lee et al. 2019, App. B.2: "Gaussian noise tensors of size H x W x 32 at the 1 x 1,
  2 x 2, 4 x 4 feature map of the decoder". Our decoders start at model.bottleneck_size,
  so these are its three coarsest maps (e.g. 2, 4, 8 for bottleneck 2), fewer if it has
  fewer layers; the tensors are one flat N(0, I) vector z that G cuts into maps.
  """
  m = config.mrgan
  if m.noise == 'vector':
    return gen, int(config.model.z_dim)
  if not hasattr(gen, 'z_maps'):
    raise ValueError(f'mrgan.noise = spatial needs a U-Net generator with z_maps '
                     f'(cgml_jax.models.conv.ConvGenerator), got {type(gen).__name__}')
  h = jax.eval_shape(lambda x: enc.init_with_output(jax.random.key(0), x, train=False)[0], x)
  sizes = conv.z_map_sizes(h, int(m.noise_maps))
  z_dim = int(m.noise_channels) * sum(a * b for a, b in sizes)
  return gen.clone(z_maps=int(m.noise_maps)), z_dim


def _build_mrgan(name, extra, ctx, key, enc, gen, disc, x, y) -> Built:
  """MR-GAN as its App. B.2 builds it: normalised inputs, spatial noise, D / P / G batch
  sizes, and (MLMM losses) the predictor selected by validation NLL on held-out data."""
  config = ctx.config
  m = config.mrgan
  if ctx.step_wrapper is not None:
    # The input statistics and the held-out set read the pipeline's x.
    raise ValueError(f'task {ctx.name!r} changes batches inside the step; MR-GAN reads them '
                     'before it')
  k_pred, k_gan = jax.random.split(key)
  tx = mr_lib.optimizer(m.lr)
  norm, info = None, {}
  if m.normalize_inputs:
    it = ctx.batches()
    norm = mr_lib.channel_stats(next(it)['x'] for _ in range(int(m.norm_batches)))
    info['input_mean'] = [round(float(v), 4) for v in norm['mean']]
    info['input_std'] = [round(float(v), 4) for v in norm['std']]
  pred_state = None
  if m.loss in mr_lib.PREDICTOR_LOSSES:
    if ctx.holdout is None:
      raise ValueError(f'task {ctx.name!r} offers no held-out data to select the predictor')
    # P's G has no output activation: the task's activation goes on the centre only, the
    # log-dispersion stays unbounded (mrgan.Predictor).
    p_config = config.copy_and_resolve_references()
    p_config.model.out_activation = 'none'
    p_enc, p_gen, _ = ctx.models(p_config, 2 * int(y.shape[-1]))
    p_gen = peer_generator(p_gen, config)
    predictor = mr_lib.Predictor(p_enc, p_gen, centre_activation=config.model.out_activation)
    pred_state = peers.PredictorState.create(k_pred, x, predictor=predictor, dist=m.dist,
                                             tx=tx, input_norm=norm,
                                             batch_size=int(m.predictor_batch_size))
    batches, val = ctx.holdout(int(m.predictor_val_size))
    t0 = time.perf_counter()
    pred_state, p_info = peers.train_predictor(
        pred_state, batches(), val, max_steps=int(m.predictor_steps),
        eval_every=int(m.predictor_eval_every), patience=int(m.predictor_patience),
        key=jax.random.fold_in(k_pred, 1))
    info.update(p_info, predictor_seconds=round(time.perf_counter() - t0, 2))
  gen, z_dim = _mrgan_noise(config, enc, gen, x)
  hp = peers.MRHyper(z_dim=z_dim, loss=m.loss, dist=m.dist, num_samples=m.num_samples,
                     mr_weight=m.mr_weight, diversity=extra,
                     diversity_weight=_div_weight(config),
                     disc_batch=int(m.disc_batch_size), gen_batch=int(m.gen_batch_size))
  state = peers.MRGANState.create(k_gan, x, y, encoder=enc, generator=gen, disc=disc, hp=hp,
                                  predictor_state=pred_state, tx_g=tx, tx_d=tx,
                                  input_norm=norm)
  return Built(state, peers.mrgan_step, peers.mrgan_sample, info)


def fit(name: str, state, step_fn, ctx: Context, num_steps: int, key, extra_metrics=None):
  """`num_steps` batches of `step_fn` from `ctx.batches()`, checkpointed under
  `checkpoints/<name>` (resumed from there); returns (state, history, seconds)."""
  if ctx.step_wrapper is not None:
    step_fn = ctx.step_wrapper(step_fn)
  curves = ctx.config.get('compare')
  return workdir_lib.fit_method(state, step_fn, ctx.batches(), ctx.config, ctx.workdir,
                                name.replace('+', '_'), f'{ctx.name}/{name}', key,
                                num_steps=num_steps, writer=ctx.writer,
                                extra_metrics=extra_metrics,
                                history_every=curves.curve_every if curves else None)


@dataclasses.dataclass
class Trained:
  """A trained method: final state, its sampler, and what training recorded."""
  state: Any
  sample_fn: Callable
  history: list
  info: dict

  @functools.cached_property
  def jitted_sample_fn(self) -> Callable:
    """`sample_fn` jitted with K static; compiled once per input shape and K, and freed
    with this object (not kept by a module-level cache)."""
    return jax.jit(self.sample_fn, static_argnums=3)


def sample(trained: Trained, x, key: jax.Array, num_samples: int) -> np.ndarray:
  """(B, K, ...) outputs of a trained method for inputs x (B, ...), as NumPy.

  The sampler is jitted once per method (K static), so repeated calls over chunks of a
  test set compile once per chunk shape.
  """
  return np.asarray(trained.jitted_sample_fn(trained.state, jnp.asarray(x), key,
                                             int(num_samples)))


def train(name: str, ctx: Context, key: jax.Array) -> Trained:
  """Builds method `name` and trains it for `config.train.steps` batches (resumable)."""
  k_init, k_train = jax.random.split(key)
  built = build(name, ctx, k_init)
  extra = ctx.extra_metrics(name, built.sample_fn) if ctx.extra_metrics else None
  state, history, seconds = fit(name, built.state, built.step_fn, ctx,
                                int(ctx.config.train.steps), k_train, extra_metrics=extra)
  p_steps = built.info.get('predictor_steps')
  info = {'seconds': round(seconds + built.info.get('predictor_seconds', 0.0), 2),
          'steps': (f'{ctx.config.train.steps}+{p_steps}' if p_steps
                    else int(ctx.config.train.steps)),
          'final_E': history[-1].get('E', history[-1].get('g_loss')) if history else None,
          'final_update_norm': loop.last_update_norms(history), **built.info}
  return Trained(state, built.sample_fn, history, info)


def train_all(ctx: Context, key: jax.Array) -> dict[str, Trained]:
  """Every method of `config.methods`, in order, with the same budget; method i trains
  with `fold_in(key, i)`."""
  for name in ctx.config.methods:
    parse(name)  # every name checked before anything trains
  return {name: train(name, ctx, jax.random.fold_in(key, i))
          for i, name in enumerate(ctx.config.methods)}
