r"""Train steps and samplers of the peer methods, in the style of `cgml_jax.cgml`.

Every method is a `flax.struct.PyTreeNode` state (arrays as leaves; modules, optimisers
and hyper-parameters as static fields), a pure `step(state, batch, key) -> (state,
metrics)` that `jax.jit` compiles as is, and a sampler `sample(state, x, key, K)` giving
(B, K, ...) outputs. The modules follow the project's contract:

  encoder(x, train=bool) -> h                  (h: any pytree, e.g. U-Net features)
  generator(h, z, train=bool) -> y_hat         (z: (B, z_dim); (B, 0) for no noise)
  disc(x, y, train=bool) -> logits (B, ...)    (`cgml_jax.peers.gan`)
  predictor(x, train=bool) -> (centre, log-dispersion)      (MR-GAN only)

so the project's conv backbones (H returning a tuple of features, a U-Net G(h, z)) plug in
unchanged. BasisGAN takes pix2pix's ResNet generator split at its residual blocks
(`basisgan.BasisResNetEncoder` as H, `basisgan.BasisResNetGenerator` as G) or a U-Net
decoder on the project's h (`basisgan.BasisUNetGenerator`); its z is the concatenation of
the basis generators' latents (`basisgan.noise_dim`).

  method             state / step / sample                     losses (defaults)
  L1 regression      RegressionState / l1_step / l1_sample     E = L1 (cgml_jax.regression)
  Context Encoder    GANState / gan_step / gan_sample          0.999 L2 + 0.001 NS-GAN, z_dim 0
  pix2pix + noise    GANState / gan_step / gan_sample          NS-GAN + 100 L1, z ~ N(0, I)
  BasisGAN           GANState / gan_step / gan_sample          as pix2pix, G with BasisConvs
  MR-GAN             MRGANState / mrgan_step / mrgan_sample    NS-GAN + 10 MR loss, K = 10,
                                                               D on 16, G on 8 x K inputs
                     PredictorState / predictor_step           Gaussian or Laplace NLL,
                     / train_predictor                         kept at its best val. NLL

Any GAN method takes a DSGAN or MSGAN term (`hp.diversity`); for it gan_step draws two
noises per input (pairs of consecutive rows) and MR-GAN uses its first two samples.

Order inside a GAN step, as in pix2pix's PyTorch code: H and G run once (their VJP is
kept), D takes a step on real pairs and the detached fakes, then the G loss is computed
through the *updated* D and pulled back through the saved VJP to H and G.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from cgml_jax import regression
from cgml_jax.cgml import LossFn, apply_module, hg_params, l1_error, l2_error, repeat_batch
from cgml_jax.peers import diversity as div_lib
from cgml_jax.peers import gan as gan_lib
from cgml_jax.peers import mrgan as mr_lib
from cgml_jax.training import optim

PyTree = Any
stop = jax.lax.stop_gradient


# ---------------------------------------------------------------------------------------
# (1) L1 regression: the project's deterministic baseline.

RegressionState = regression.RegressionState
l1_step = regression.train_step


def l1_sample(state: RegressionState, x: jax.Array, key: jax.Array,
              num_samples: int) -> jax.Array:
  """K copies of the deterministic prediction G(H(x)), (B, K, ...); `key` is unused."""
  del key
  y = regression.predict(state, x)
  return jnp.repeat(y[:, None], num_samples, axis=1)


def adam_gan_optimizer(lr: float = 2e-4, b1: float = 0.5,
                       b2: float = 0.999) -> optax.GradientTransformation:
  """Adam(2e-4, beta1 = 0.5): pix2pix Sec. 3.3 / DCGAN, also used here for CE and BasisGAN."""
  return optim.make_optimizer(lr, b1=b1, b2=b2)


# ---------------------------------------------------------------------------------------
# Shared pieces.


def _leading(x) -> int:
  return jax.tree.leaves(x)[0].shape[0]


def _noise(key, n: int, z_dim: int) -> jax.Array:
  # The GAN peers draw z ~ N(0, I) (pix2pix-with-noise, BasisGAN, MR-GAN), not the sphere.
  return jax.random.normal(key, (n, z_dim), jnp.float32)


def _init_variables(key, x, y, z_dim, encoder, generator, disc):
  """Variables of H, G, D as ({name: params}, {name: other collections}), in one XLA call.

  Jitted because eager `init` dispatches (and compiles) every op of every layer one by one,
  which on CPU costs seconds even for tiny models.
  """
  def init(key, x, y):
    k_enc, k_gen, k_disc = jax.random.split(key, 3)
    variables = {'encoder': encoder.init(k_enc, x, train=False)}
    h = encoder.apply(variables['encoder'], x, train=False)
    z = jnp.zeros((_leading(x), z_dim), jnp.float32)
    variables['generator'] = generator.init(k_gen, h, z, train=False)
    variables['disc'] = disc.init(k_disc, x, y, train=False)
    return variables

  variables = jax.jit(init)(key, x, y)
  params = {k: v['params'] for k, v in variables.items()}
  stats = {k: {c: s for c, s in v.items() if c != 'params'} for k, v in variables.items()}
  return params, stats


def _init_optimizers(tx_g, tx_d, params):
  return jax.jit(lambda p: {'g': tx_g.init(hg_params(p)), 'd': tx_d.init(p['disc'])})(params)


def _check_batch(batch: dict) -> int:
  if 'x' not in batch or 'y' not in batch:
    raise KeyError(f"a batch needs 'x' and 'y'; got keys {sorted(batch)}")
  b, by = _leading(batch['x']), _leading(batch['y'])
  if b != by:
    raise ValueError(f"batch['x'] has {b} examples but batch['y'] has {by}")
  return b


def _generate_k(encoder, generator, params, stats, x, key, num_samples, z_dim):
  """(B, K, ...) samples of G(H(x), z), z ~ N(0, I); H runs once per input."""
  b = _leading(x)
  h = apply_module(encoder, params['encoder'], stats['encoder'], x, train=False)[0]
  z = _noise(key, b * num_samples, z_dim)
  y = apply_module(generator, params['generator'], stats['generator'],
                   repeat_batch(h, num_samples), z, train=False)[0]
  return y.reshape((b, num_samples) + y.shape[1:])


def _d_step(disc, tx_d, d_loss, params_d, stats_d, opt_d, x_real, y_real, x_fake, y_fake,
            step):
  """One D step on real pairs and detached fakes; returns new (params, stats, opt, metrics).

  `step` is the batch index, for the optimiser's schedule.
  """
  def loss(p):
    real, s = apply_module(disc, p, stats_d, x_real, y_real, train=True)
    fake, s = apply_module(disc, p, s, x_fake, stop(y_fake), train=True)
    return d_loss(real, fake), (s, real, fake)

  (ld, (stats_d, real, fake)), grads = jax.value_and_grad(loss, has_aux=True)(params_d)
  updates, opt_d = tx_d.update(grads, opt_d, params_d, batch_step=step)
  metrics = {'d_loss': ld, 'd_real': jnp.mean(real), 'd_fake': jnp.mean(fake),
             'update_norm_d': optax.global_norm(updates)}
  return optax.apply_updates(params_d, updates), stats_d, opt_d, metrics


# ---------------------------------------------------------------------------------------
# (2)-(4) Context Encoder, pix2pix + noise, BasisGAN: one GAN step.


@dataclasses.dataclass(frozen=True)
class GANHyper:
  """Static hyper-parameters of `gan_step` (hashable, part of the jit key).

  Attributes:
    z_dim: noise size; 0 for a deterministic generator (Context Encoder).
    recon_weight: weight of the per-example reconstruction error (pix2pix's lambda).
    adv_weight: weight of the generator's adversarial loss.
    gan_loss: 'ns' (non-saturating) or 'lsgan'.
    diversity: None, 'dsgan' or 'msgan' (needs z_dim > 0).
    diversity_weight: lambda of that term; None = its paper's default (8 or 1).
    diversity_tau: DSGAN's bound tau; None = unbounded.
  """
  z_dim: int = 8
  recon_weight: float = 100.0
  adv_weight: float = 1.0
  gan_loss: str = 'ns'
  diversity: str | None = None
  diversity_weight: float | None = None
  diversity_tau: float | None = None

  def __post_init__(self):
    if self.z_dim < 0:
      raise ValueError(f'z_dim must be >= 0, got {self.z_dim}')
    gan_lib.gan_losses(self.gan_loss)  # validates the name
    if self.diversity is not None:
      if self.diversity not in div_lib.KINDS:
        raise ValueError(f'diversity must be None or one of {div_lib.KINDS}, '
                         f'got {self.diversity!r}')
      if self.z_dim == 0:
        raise ValueError(f'diversity={self.diversity!r} compares two noises; needs z_dim > 0')


# Pathak et al. 2016 Sec. 3.3: lambda_rec = 0.999, lambda_adv = 0.001, no noise.
CONTEXT_ENCODER = GANHyper(z_dim=0, recon_weight=0.999, adv_weight=0.001)
# Isola et al. 2017 Sec. 3.1/4: lambda = 100 on L1. Noise is an input of G (z_dim 8 as in
# BicycleGAN's pix2pix+noise baseline).
PIX2PIX = GANHyper(z_dim=8, recon_weight=100.0, adv_weight=1.0)
# Wang et al. 2020 train BasisGAN with the losses of the cGAN it modifies (pix2pix here);
# z_dim must be the generator's `basisgan.noise_dim` (replace() it).
BASISGAN = PIX2PIX


class GANState(struct.PyTreeNode):
  """H, G and D of a conditional GAN with a reconstruction term.

  Array fields: step; params and stats {'encoder', 'generator', 'disc'}; opt_state
  {'g': state of tx_g over (H, G), 'd': state of tx_d over D}.
  Static fields: the modules, tx_g, tx_d, recon_fn (per-example E, (y_hat, batch) ->
  (B,)) and hp (`GANHyper`).
  """
  step: jax.Array
  params: PyTree
  stats: PyTree
  opt_state: PyTree
  encoder: nn.Module = struct.field(pytree_node=False)
  generator: nn.Module = struct.field(pytree_node=False)
  disc: nn.Module = struct.field(pytree_node=False)
  tx_g: optax.GradientTransformation = struct.field(pytree_node=False)
  tx_d: optax.GradientTransformation = struct.field(pytree_node=False)
  recon_fn: LossFn = struct.field(pytree_node=False)
  hp: GANHyper = struct.field(pytree_node=False)

  @classmethod
  def create(cls, key: jax.Array, x: jax.Array, y: jax.Array, *, encoder: nn.Module,
             generator: nn.Module, disc: nn.Module, hp: GANHyper = PIX2PIX,
             tx_g: optax.GradientTransformation | None = None,
             tx_d: optax.GradientTransformation | None = None,
             recon_fn: LossFn = l1_error) -> 'GANState':
    """Initialises H, G, D on example batches x (B, ...), y (B, ...) and both optimisers.

    Defaults: Adam(2e-4, beta1 = 0.5) for both players, L1 reconstruction.
    """
    params, stats = _init_variables(key, x, y, hp.z_dim, encoder, generator, disc)
    tx_g = tx_g or adam_gan_optimizer()
    tx_d = tx_d or adam_gan_optimizer()
    opt_state = _init_optimizers(tx_g, tx_d, params)
    return cls(step=jnp.zeros((), jnp.int32), params=params, stats=stats,
               opt_state=opt_state, encoder=encoder, generator=generator, disc=disc,
               tx_g=tx_g, tx_d=tx_d, recon_fn=recon_fn, hp=hp)


def context_encoder_state(key, x, y, *, encoder, generator, disc=None, **kw) -> GANState:
  """`GANState` with Pathak et al.'s defaults: no noise, 0.999 masked L2 + 0.001 adversarial.

  D defaults to `gan.ContextEncoderDiscriminator()` (unconditional, one logit per image).
  """
  kw.setdefault('hp', CONTEXT_ENCODER)
  kw.setdefault('recon_fn', l2_error)
  return GANState.create(key, x, y, encoder=encoder, generator=generator,
                         disc=disc or gan_lib.ContextEncoderDiscriminator(), **kw)


def pix2pix_state(key, x, y, *, encoder, generator, disc=None, **kw) -> GANState:
  """`GANState` with pix2pix defaults: z_dim 8, NS-GAN + 100 L1, conditional PatchGAN D.

  For BasisGAN pass a `basisgan.BasisResNetEncoder` and `BasisResNetGenerator` (or a
  `BasisUNetGenerator`) and `hp=GANHyper(z_dim=basisgan.noise_dim(encoder, generator, x))`.
  """
  kw.setdefault('hp', PIX2PIX)
  return GANState.create(key, x, y, encoder=encoder, generator=generator,
                         disc=disc or gan_lib.PatchDiscriminator(), **kw)


basisgan_state = pix2pix_state


def gan_step(state: GANState, batch: dict, key: jax.Array) -> tuple[GANState, dict]:
  r"""One D step and one (H, G) step of a conditional GAN with reconstruction.

  D: min d_loss(D(x, y), D(x, sg(G(H(x), z)))).
  G: min adv_weight * g_loss(D'(x, G(H(x), z))) + recon_weight * mean E(G(H(x), z), batch)
     + diversity term,  D' the updated D.

  This is pix2pix's objective (Isola et al. 2017, Eq. 4) with z ~ N(0, I); with z_dim 0,
  L2 error and weights (0.999, 0.001) it is the Context Encoder's (Pathak et al. 2016,
  Eq. 3); with a BasisConv generator it is BasisGAN. With `hp.diversity` each input is
  generated twice and the DSGAN/MSGAN term compares the two.

  Args:
    state: `GANState`.
    batch: {'x': (B, ...), 'y': (B, ...)} plus whatever `state.recon_fn` reads.
    key: PRNG key for the noise.

  Returns:
    (new_state, metrics): d_loss, d_real, d_fake (mean logits), g_adv, recon, diversity,
    g_loss (the weighted total).
  """
  b = _check_batch(batch)
  hp = state.hp
  d_loss_fn, g_loss_fn = gan_lib.gan_losses(hp.gan_loss)
  reps = 2 if hp.diversity else 1
  x = batch['x']
  x_g, batch_g = repeat_batch(x, reps), repeat_batch(batch, reps)
  z = _noise(key, b * reps, hp.z_dim)
  stats = state.stats

  def generate(params_hg):
    h, enc_stats = apply_module(state.encoder, params_hg['encoder'], stats['encoder'], x,
                                train=True)
    y_hat, gen_stats = apply_module(state.generator, params_hg['generator'], stats['generator'],
                                    repeat_batch(h, reps), z, train=True)
    return y_hat, {'encoder': enc_stats, 'generator': gen_stats}

  fake, gen_vjp, hg_stats = jax.vjp(generate, hg_params(state.params), has_aux=True)

  params_d, stats_d, opt_d, d_metrics = _d_step(
      state.disc, state.tx_d, d_loss_fn, state.params['disc'], stats['disc'],
      state.opt_state['d'], x, batch['y'], x_g, fake, state.step)

  def g_objective(fake):
    logits, s = apply_module(state.disc, params_d, stats_d, x_g, fake, train=True)
    adv = g_loss_fn(logits)
    recon = jnp.mean(state.recon_fn(fake, batch_g))
    if hp.diversity:
      pairs = fake.reshape((b, 2) + fake.shape[1:])
      zp = z.reshape(b, 2, hp.z_dim)
      div = div_lib.diversity_loss(hp.diversity, pairs[:, 0], pairs[:, 1], zp[:, 0],
                                   zp[:, 1], hp.diversity_weight, hp.diversity_tau)
    else:
      div = jnp.zeros((), fake.dtype)
    total = hp.adv_weight * adv + hp.recon_weight * recon + div
    return total, (s, adv, recon, div)

  (g_total, (stats_d, adv, recon, div)), d_fake = jax.value_and_grad(
      g_objective, has_aux=True)(fake)
  (grads_hg,) = gen_vjp(d_fake)
  updates, opt_g = state.tx_g.update(grads_hg, state.opt_state['g'], hg_params(state.params),
                                     batch_step=state.step)
  d_metrics['update_norm_g'] = optax.global_norm(updates)
  params = {**optax.apply_updates(hg_params(state.params), updates), 'disc': params_d}
  new_state = state.replace(step=state.step + 1, params=params,
                            stats={**hg_stats, 'disc': stats_d},
                            opt_state={'g': opt_g, 'd': opt_d})
  metrics = {**d_metrics, 'g_adv': adv, 'recon': recon, 'diversity': div, 'g_loss': g_total}
  return new_state, metrics


def gan_sample(state: GANState, x: jax.Array, key: jax.Array, num_samples: int) -> jax.Array:
  """K outputs per input, G(H(x), z_k) with z_k ~ N(0, I): (B, K, ...)."""
  return _generate_k(state.encoder, state.generator, state.params, state.stats, x, key,
                     num_samples, state.hp.z_dim)


# ---------------------------------------------------------------------------------------
# (5) MR-GAN: predictor, then the generator with the frozen predictor.


def _take(batch: dict, n: int | None) -> dict:
  """The first n examples of every array of a batch (all of them for n None)."""
  b = _check_batch(batch)
  if n is None:
    return batch
  if n > b:
    raise ValueError(f'a sub-batch of {n} examples does not fit a batch of {b}')
  return jax.tree.map(lambda a: a[:n], batch)


class PredictorState(struct.PyTreeNode):
  """The MR-GAN predictor P(x) -> (centre, log-dispersion), trained by maximum likelihood.

  Array fields: step, params, stats, opt_state, input_norm (the per-channel statistics of
  `mrgan.normalize_inputs`, or None: P reads normalised inputs).
  Static fields: predictor (module, e.g. `mrgan.Predictor(encoder, generator)`), tx, dist
  ('gaussian': mean and log-variance; 'laplace': median and log-MAD) and batch_size (P
  trains on the first batch_size examples of each batch; None: all; the paper's 16).
  """
  step: jax.Array
  params: PyTree
  stats: PyTree
  opt_state: PyTree
  input_norm: PyTree | None
  predictor: nn.Module = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  dist: str = struct.field(pytree_node=False, default='gaussian')
  batch_size: int | None = struct.field(pytree_node=False, default=None)

  @classmethod
  def create(cls, key, x, *, predictor: nn.Module, dist: str = 'gaussian',
             tx: optax.GradientTransformation | None = None, input_norm: dict | None = None,
             batch_size: int | None = None) -> 'PredictorState':
    """Initialises P on an example input; default optimiser `mrgan.optimizer()`."""
    if dist not in mr_lib.DISTRIBUTIONS:
      raise ValueError(f'dist must be one of {mr_lib.DISTRIBUTIONS}, got {dist!r}')
    if batch_size is not None and batch_size < 1:
      raise ValueError(f'batch_size must be >= 1 or None, got {batch_size}')
    variables = jax.jit(lambda k, x: predictor.init(k, x, train=False))(key, x)
    params = variables['params']
    stats = {c: s for c, s in variables.items() if c != 'params'}
    tx = tx or mr_lib.optimizer()
    return cls(step=jnp.zeros((), jnp.int32), params=params, stats=stats,
               opt_state=jax.jit(tx.init)(params), input_norm=input_norm,
               predictor=predictor, tx=tx, dist=dist, batch_size=batch_size)


def predictor_step(state: PredictorState, batch: dict,
                   key: jax.Array) -> tuple[PredictorState, dict]:
  """One step on the predictor's NLL (`mrgan.gaussian_nll` / `laplace_nll`). `key` unused.

  Reads the first `state.batch_size` examples of the batch, inputs normalised.
  """
  del key
  batch = _take(batch, state.batch_size)
  x = mr_lib.normalize_inputs(batch['x'], state.input_norm)

  def loss(params):
    (centre, log_disp), stats = apply_module(state.predictor, params, state.stats, x,
                                             train=True)
    return jnp.mean(mr_lib.predictor_nll(state.dist, centre, log_disp, batch['y'])), stats

  (nll, stats), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params,
                                       batch_step=state.step)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       stats=stats, opt_state=opt_state), {
                           'nll': nll, 'update_norm': optax.global_norm(updates)}


def predict_moments(state: PredictorState, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(centre, log-dispersion) = P(x) for raw inputs x, without statistics updates."""
  x = mr_lib.normalize_inputs(x, state.input_norm)
  return apply_module(state.predictor, state.params, state.stats, x, train=False)[0]


def predictor_nll(state: PredictorState, batch: dict) -> jax.Array:
  """Mean NLL of P on a batch (no statistics updates): the validation loss."""
  centre, log_disp = predict_moments(state, batch['x'])
  return jnp.mean(mr_lib.predictor_nll(state.dist, centre, log_disp, batch['y']))


def train_predictor(state: PredictorState, batches, val_batch: dict, *, max_steps: int,
                    eval_every: int, patience: int, key: jax.Array | None = None,
                    step_fn=predictor_step) -> tuple[PredictorState, dict]:
  """Trains P and keeps the parameters of lowest validation NLL (MR-GAN, App. B.2).

  "In case of MLMM, we train the predictor until it is overfitted, and use the checkpoint
  with the lowest validation loss." The validation NLL is measured every `eval_every`
  steps and after the last one; training stops after `max_steps` steps or once `patience`
  measurements in a row have not improved on the best.

  Args:
    state: initial `PredictorState`.
    batches: iterator of training batches {'x', 'y'}.
    val_batch: held-out examples {'x', 'y'}, scored in one call.
    max_steps: step budget.
    eval_every: steps between validation measurements.
    patience: measurements without improvement before stopping.
    key: PRNG key handed to `step_fn` (unused by `predictor_step`).
    step_fn: the step (a wrapper of `predictor_step`, e.g. with a corruption).

  Returns:
    (the state at the best measurement, info): info has predictor_steps (steps run),
    predictor_best_step, predictor_val_nll (its validation NLL) and predictor_val_curve
    ([step, NLL] per measurement).
  """
  if min(max_steps, eval_every, patience) < 1:
    raise ValueError(f'max_steps, eval_every and patience must be >= 1, got {max_steps}, '
                     f'{eval_every}, {patience}')
  key = jax.random.key(0) if key is None else key
  step = jax.jit(step_fn)
  score = jax.jit(predictor_nll)
  best, best_nll, best_step, since, curve = state, float('inf'), 0, 0, []
  for i in range(1, max_steps + 1):
    state, _ = step(state, next(batches), jax.random.fold_in(key, i))
    if i % eval_every and i != max_steps:
      continue
    nll = float(score(state, val_batch))
    curve.append([i, nll])
    if nll < best_nll:
      best, best_nll, best_step, since = state, nll, i, 0
    else:
      since += 1
      if since >= patience:
        break
  return best, {'predictor_steps': i, 'predictor_best_step': best_step,
                'predictor_val_nll': best_nll, 'predictor_val_curve': curve}


@dataclasses.dataclass(frozen=True)
class MRHyper:
  """Static hyper-parameters of `mrgan_step`; defaults of the released MR-GAN configs.

  Attributes:
    z_dim: noise size of G (for a spatial-noise G, the total size of its noise tensors).
    loss: 'mlmm1', 'mlmm12' (need a predictor), 'mcmle1' or 'mcmle12'.
    dist: 'gaussian' or 'laplace'.
    num_samples: K samples per input for the moments.
    mr_weight: lambda on the MR loss.
    adv_weight: weight of G's adversarial loss.
    gan_loss: 'ns' or 'lsgan'.
    diversity, diversity_weight, diversity_tau: optional DSGAN / MSGAN term on the first
      two of the K samples.
    disc_batch, gen_batch: D's step reads the first disc_batch examples of a batch, G's
      step the first gen_batch (K samples each); None = the whole batch. The paper's 16
      and 8 (App. B.2; the released code's `batch_size` and `num_mm`, G on x[:num_mm]).
  """
  z_dim: int = 8
  loss: str = 'mlmm12'
  dist: str = 'gaussian'
  num_samples: int = mr_lib.NUM_SAMPLES
  mr_weight: float = mr_lib.MR_WEIGHT
  adv_weight: float = 1.0
  gan_loss: str = 'ns'
  diversity: str | None = None
  diversity_weight: float | None = None
  diversity_tau: float | None = None
  disc_batch: int | None = None
  gen_batch: int | None = None

  def __post_init__(self):
    if self.loss not in mr_lib.LOSSES or self.dist not in mr_lib.DISTRIBUTIONS:
      raise ValueError(f'unknown MR loss ({self.loss!r}, {self.dist!r}); expected one of '
                       f'{mr_lib.LOSSES} x {mr_lib.DISTRIBUTIONS}')
    if self.num_samples < 2:
      raise ValueError(f'num_samples (K) must be >= 2, got {self.num_samples}')
    if self.loss == 'mcmle12' and self.num_samples < mr_lib.MIN_SAMPLES_MCMLE12:
      # MR_2 divides by the sample dispersion; with K <= 3 its inverse has an infinite
      # mean (Gaussian: 1 / chi^2_{K-1}), and single pixels with near-equal samples blow
      # the loss up to ~1e5-1e6 (seen with K = 2 in a smoke run).
      raise ValueError(f"loss 'mcmle12' needs num_samples (K) >= "
                       f'{mr_lib.MIN_SAMPLES_MCMLE12}, got {self.num_samples}')
    if self.z_dim < 1:
      raise ValueError(f'MR-GAN needs noise: z_dim must be >= 1, got {self.z_dim}')
    for name in ('disc_batch', 'gen_batch'):
      v = getattr(self, name)
      if v is not None and v < 1:
        raise ValueError(f'{name} must be >= 1 or None, got {v}')
    gan_lib.gan_losses(self.gan_loss)
    if self.diversity is not None and self.diversity not in div_lib.KINDS:
      raise ValueError(f'diversity must be None or one of {div_lib.KINDS}, '
                       f'got {self.diversity!r}')


class MRGANState(struct.PyTreeNode):
  """H, G, D of MR-GAN plus the frozen predictor's variables.

  Array fields: step; params, stats {'encoder', 'generator', 'disc'}; opt_state {'g', 'd'};
  predictor_vars: {'params', ...} of P, never updated here (None for MCMLE losses);
  input_norm: per-channel input statistics (`mrgan.normalize_inputs`) or None. H, D and P
  read normalised inputs; the sampler normalises too, so callers pass raw x.
  Static fields: modules, predictor (or None), tx_g, tx_d, hp (`MRHyper`).
  """
  step: jax.Array
  params: PyTree
  stats: PyTree
  opt_state: PyTree
  predictor_vars: PyTree | None
  input_norm: PyTree | None
  encoder: nn.Module = struct.field(pytree_node=False)
  generator: nn.Module = struct.field(pytree_node=False)
  disc: nn.Module = struct.field(pytree_node=False)
  predictor: nn.Module | None = struct.field(pytree_node=False)
  tx_g: optax.GradientTransformation = struct.field(pytree_node=False)
  tx_d: optax.GradientTransformation = struct.field(pytree_node=False)
  hp: MRHyper = struct.field(pytree_node=False)

  @classmethod
  def create(cls, key: jax.Array, x: jax.Array, y: jax.Array, *, encoder: nn.Module,
             generator: nn.Module, disc: nn.Module | None = None, hp: MRHyper = MRHyper(),
             predictor_state: PredictorState | None = None,
             tx_g: optax.GradientTransformation | None = None,
             tx_d: optax.GradientTransformation | None = None,
             input_norm: dict | None = None) -> 'MRGANState':
    """Initialises H, G, D; takes P (trained with `predictor_step`) from `predictor_state`.

    Defaults: conditional PatchGAN D, `mrgan.optimizer()` (AMSGrad 1e-4, beta1 0.5,
    weight decay 1e-4, clip 0.5) for G and D; `input_norm` the predictor's if not given
    (P must read inputs normalised as it was trained).
    """
    if hp.loss in mr_lib.PREDICTOR_LOSSES and predictor_state is None:
      raise ValueError(f'MR loss {hp.loss!r} matches predicted moments; pass predictor_state')
    if predictor_state is not None and predictor_state.dist != hp.dist:
      raise ValueError(f'predictor was trained for {predictor_state.dist!r} but hp.dist is '
                       f'{hp.dist!r}')
    if predictor_state is not None and input_norm is None:
      input_norm = predictor_state.input_norm
    disc = disc or gan_lib.PatchDiscriminator()
    params, stats = _init_variables(key, x, y, hp.z_dim, encoder, generator, disc)
    tx_g = tx_g or mr_lib.optimizer()
    tx_d = tx_d or mr_lib.optimizer()
    pred_vars, pred = None, None
    if predictor_state is not None:
      pred_vars = {'params': predictor_state.params, **predictor_state.stats}
      pred = predictor_state.predictor
    return cls(step=jnp.zeros((), jnp.int32), params=params, stats=stats,
               opt_state=_init_optimizers(tx_g, tx_d, params),
               predictor_vars=pred_vars, input_norm=input_norm, encoder=encoder,
               generator=generator, disc=disc, predictor=pred, tx_g=tx_g, tx_d=tx_d, hp=hp)


def mrgan_step(state: MRGANState, batch: dict, key: jax.Array) -> tuple[MRGANState, dict]:
  r"""One D step and one (H, G) step of MR-GAN with the predictor frozen.

  Inputs are normalised per channel (`state.input_norm`). D reads the first
  `hp.disc_batch` examples, G the first `hp.gen_batch` (the paper's 16 and 8; the
  released code also takes G's from the front of D's batch):
    D: min d_loss(D(x, y), D(x, sg(G(H(x), z)))), one fresh sample per input, as in the
       released code;
    G: min adv_weight * g_loss(D'(x, y~_{1..K})) + mr_weight * mean_b MR(y~_{b,1..K}, y_b,
       P(x_b)) + diversity term on (y~_1, y~_2), D' the updated D; K samples per input
       (8 x 10 = 80 in the paper).

  Args:
    state: `MRGANState`.
    batch: {'x': (B, ...), 'y': (B, ...)}, B >= both sub-batches.
    key: PRNG key for the noise.

  Returns:
    (new_state, metrics): d_loss, d_real, d_fake, g_adv, mr, diversity, g_loss,
    sample_std (mean per-pixel std over the K samples, a collapse monitor), update norms.
  """
  hp = state.hp
  k = hp.num_samples
  d_loss_fn, g_loss_fn = gan_lib.gan_losses(hp.gan_loss)
  norm = {'x': mr_lib.normalize_inputs(batch['x'], state.input_norm), 'y': batch['y']}
  d_batch, g_batch = _take(norm, hp.disc_batch), _take(norm, hp.gen_batch)
  b = _leading(g_batch['x'])
  key_d, key_g = jax.random.split(key)
  z = _noise(key_g, b * k, hp.z_dim)
  prediction = None
  if state.predictor is not None:
    prediction = stop(state.predictor.apply(state.predictor_vars, g_batch['x'], train=False))

  def generate(params_hg, stats, x, z, reps):
    h, enc_stats = apply_module(state.encoder, params_hg['encoder'], stats['encoder'], x,
                                train=True)
    y_hat, gen_stats = apply_module(state.generator, params_hg['generator'], stats['generator'],
                                    repeat_batch(h, reps), z, train=True)
    return y_hat, {**stats, 'encoder': enc_stats, 'generator': gen_stats}

  # D's fakes: one fresh sample per input of D's batch (detached in `_d_step`).
  fake_d, stats = generate(hg_params(state.params), state.stats, d_batch['x'],
                           _noise(key_d, _leading(d_batch['x']), hp.z_dim), 1)
  params_d, stats_d, opt_d, d_metrics = _d_step(
      state.disc, state.tx_d, d_loss_fn, state.params['disc'], stats['disc'],
      state.opt_state['d'], d_batch['x'], d_batch['y'], d_batch['x'], fake_d, state.step)

  x_k = repeat_batch(g_batch['x'], k)

  def g_objective(params_hg):
    fake, new_stats = generate(params_hg, stats, g_batch['x'], z, k)
    logits, s = apply_module(state.disc, params_d, stats_d, x_k, fake, train=True)
    adv = g_loss_fn(logits)
    samples = fake.reshape((b, k) + fake.shape[1:])
    mr = jnp.mean(mr_lib.mr_loss(hp.loss, hp.dist, samples, g_batch['y'], prediction))
    if hp.diversity:
      zs = z.reshape(b, k, hp.z_dim)
      div = div_lib.diversity_loss(hp.diversity, samples[:, 0], samples[:, 1], zs[:, 0],
                                   zs[:, 1], hp.diversity_weight, hp.diversity_tau)
    else:
      div = jnp.zeros((), fake.dtype)
    total = hp.adv_weight * adv + hp.mr_weight * mr + div
    return total, (new_stats, s, adv, mr, div, jnp.mean(jnp.std(samples, axis=1)))

  (g_total, (hg_stats, stats_d, adv, mr, div, sample_std)), grads_hg = jax.value_and_grad(
      g_objective, has_aux=True)(hg_params(state.params))
  updates, opt_g = state.tx_g.update(grads_hg, state.opt_state['g'], hg_params(state.params),
                                     batch_step=state.step)
  d_metrics['update_norm_g'] = optax.global_norm(updates)
  params = {**optax.apply_updates(hg_params(state.params), updates), 'disc': params_d}
  new_state = state.replace(step=state.step + 1, params=params,
                            stats={**hg_stats, 'disc': stats_d},
                            opt_state={'g': opt_g, 'd': opt_d})
  metrics = {**d_metrics, 'g_adv': adv, 'mr': mr, 'diversity': div, 'g_loss': g_total,
             'sample_std': sample_std}
  return new_state, metrics


def mrgan_sample(state: MRGANState, x: jax.Array, key: jax.Array,
                 num_samples: int) -> jax.Array:
  """K outputs per raw input, G(H(x~), z_k), x~ normalised, z_k ~ N(0, I): (B, K, ...).

  Each output gets its own noise (for a spatial-noise G, its own tensors at every map).
  """
  x = mr_lib.normalize_inputs(x, state.input_norm)
  return _generate_k(state.encoder, state.generator, state.params, state.stats, x, key,
                     num_samples, state.hp.z_dim)
