r"""BicycleGAN (Zhu et al. 2017, "Toward Multimodal Image-to-Image Translation"), in the
style of `cgml_jax.peers.methods`: a flax.struct state, a pure jit-able step, a sampler.

Modules: H(x) and G(h, z) are the task's backbones (U-Net G with z injected as the task
configures, e.g. at every decoder block, as the paper's "add to all" variant); E(y) ->
(mu, log sigma^2) is `LatentEncoder`, an encoder of the same family as H on y plus a linear
head; D(x, y) is the task's conditional discriminator. One step optimises Eq. 6 of the
paper (two passes through D, one per cycle):

  cVAE-GAN (y -> z -> y):  z_e = mu + sigma * eps, (mu, log sigma^2) = E(y),
                           L_GAN(D, G(H(x), z_e)) + lambda E(G(H(x), z_e), y)
                           + lambda_KL KL(N(mu, sigma^2) || N(0, I))
  cLR-GAN  (z -> y -> z):  z ~ N(0, I), L_GAN(D, G(H(x), z))
                           + lambda_latent |mu(E(G(H(x), z))) - z|_1

Defaults from the paper (Sec. 4 and its released code): lambda = 10, lambda_latent = 0.5,
lambda_KL = 0.01, |z| = 8, LSGAN losses, Adam(2e-4, beta1 0.5). As in the released code the
latent regression term updates G (and H) only: E is held fixed in it, so E is not pulled
towards codes that G's outputs happen to give. Differences from the released code, for a
small shared backbone: one D serves both cycles (the code's default trains a second D on
the cLR half), and both cycles see the whole batch instead of one half each.

Sampling at test time: z ~ N(0, I), y = G(H(x), z).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from cgml_jax.cgml import LossFn, apply_module, l1_error
from cgml_jax.peers import gan as gan_lib
from cgml_jax.peers import methods as peers

PyTree = Any
stop = jax.lax.stop_gradient
HGE = ('encoder', 'generator', 'latent_encoder')


class LatentEncoder(nn.Module):
  """E: y -> (mu, log sigma^2), each (B, z_dim).

  Attributes:
    backbone: feature extractor on y; its output (or the last entry of a tuple of feature
      maps, e.g. `ConvEncoder`'s bottleneck) is global-average-pooled if spatial.
    z_dim: latent size.
  """
  backbone: nn.Module
  z_dim: int

  @nn.compact
  def __call__(self, y: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
    h = self.backbone(y, train=train)
    if isinstance(h, (tuple, list)):
      h = h[-1]
    if h.ndim == 4:
      h = h.mean(axis=(1, 2))
    out = nn.Dense(2 * self.z_dim, name='head')(h.reshape(h.shape[0], -1))
    return out[:, :self.z_dim], out[:, self.z_dim:]


def kl_divergence(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  r"""KL(N(mu, diag exp(logvar)) || N(0, I)) per example, summed over the latent dims:
  -1/2 sum (1 + logvar - mu^2 - exp(logvar)) (Kingma & Welling 2014, App. B).

  Returns:
    (B,) non-negative values.
  """
  return -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar), axis=-1)


@dataclasses.dataclass(frozen=True)
class BicycleHyper:
  """Static hyper-parameters of `bicyclegan_step` (defaults: Zhu et al. 2017).

  Attributes:
    z_dim: latent size |z|.
    recon_weight: lambda on the task's E of the cVAE-GAN reconstruction.
    latent_weight: lambda_latent on |E(G(x, z)) - z|_1 (cLR-GAN).
    kl_weight: lambda_KL.
    adv_weight: weight of each of the two adversarial terms.
    gan_loss: 'lsgan' (the paper's) or 'ns'.
  """
  z_dim: int = 8
  recon_weight: float = 10.0
  latent_weight: float = 0.5
  kl_weight: float = 0.01
  adv_weight: float = 1.0
  gan_loss: str = 'lsgan'

  def __post_init__(self):
    if self.z_dim < 1:
      raise ValueError(f'BicycleGAN needs a latent: z_dim must be >= 1, got {self.z_dim}')
    gan_lib.gan_losses(self.gan_loss)


class BicycleGANState(struct.PyTreeNode):
  """H, G, E and D of BicycleGAN.

  Array fields: step; params and stats {'encoder', 'generator', 'latent_encoder', 'disc'};
  opt_state {'g': tx_g over (H, G, E), 'd': tx_d over D}.
  Static fields: the modules, tx_g, tx_d, recon_fn (per-example E, (y_hat, batch) -> (B,))
  and hp (`BicycleHyper`).
  """
  step: jax.Array
  params: PyTree
  stats: PyTree
  opt_state: PyTree
  encoder: nn.Module = struct.field(pytree_node=False)
  generator: nn.Module = struct.field(pytree_node=False)
  latent_encoder: nn.Module = struct.field(pytree_node=False)
  disc: nn.Module = struct.field(pytree_node=False)
  tx_g: optax.GradientTransformation = struct.field(pytree_node=False)
  tx_d: optax.GradientTransformation = struct.field(pytree_node=False)
  recon_fn: LossFn = struct.field(pytree_node=False)
  hp: BicycleHyper = struct.field(pytree_node=False)

  @classmethod
  def create(cls, key: jax.Array, x: jax.Array, y: jax.Array, *, encoder: nn.Module,
             generator: nn.Module, latent_encoder: nn.Module, disc: nn.Module | None = None,
             hp: BicycleHyper = BicycleHyper(),
             tx_g: optax.GradientTransformation | None = None,
             tx_d: optax.GradientTransformation | None = None,
             recon_fn: LossFn = l1_error) -> 'BicycleGANState':
    """Initialises H, G, E, D on example batches x, y and both optimisers.

    Defaults: conditional PatchGAN D, Adam(2e-4, beta1 0.5) for both players, L1 E.
    """
    disc = disc or gan_lib.PatchDiscriminator()

    def init(key, x, y):
      k_enc, k_gen, k_lat, k_disc = jax.random.split(key, 4)
      variables = {'encoder': encoder.init(k_enc, x, train=False),
                   'latent_encoder': latent_encoder.init(k_lat, y, train=False),
                   'disc': disc.init(k_disc, x, y, train=False)}
      h = encoder.apply(variables['encoder'], x, train=False)
      z = jnp.zeros((x.shape[0], hp.z_dim), jnp.float32)
      variables['generator'] = generator.init(k_gen, h, z, train=False)
      return variables

    variables = jax.jit(init)(key, x, y)  # one program: eager init compiles op by op
    params = {k: v['params'] for k, v in variables.items()}
    stats = {k: {c: s for c, s in v.items() if c != 'params'} for k, v in variables.items()}
    tx_g = tx_g or peers.adam_gan_optimizer()
    tx_d = tx_d or peers.adam_gan_optimizer()
    opt_state = jax.jit(lambda p: {'g': tx_g.init(_hge(p)), 'd': tx_d.init(p['disc'])})(params)
    return cls(step=jnp.zeros((), jnp.int32), params=params, stats=stats,
               opt_state=opt_state, encoder=encoder, generator=generator,
               latent_encoder=latent_encoder, disc=disc, tx_g=tx_g, tx_d=tx_d,
               recon_fn=recon_fn, hp=hp)


def _hge(tree):
  return {k: tree[k] for k in HGE}


def bicyclegan_step(state: BicycleGANState, batch: dict,
                    key: jax.Array) -> tuple[BicycleGANState, dict]:
  r"""One D step and one (H, G, E) step on BicycleGAN's objective (module docstring).

  Order as in `methods.gan_step`: H, G, E run once (their VJP is kept), D steps on the
  real pairs against both cycles' detached fakes, then the generator side's loss is taken
  through the updated D and pulled back through the saved VJP.

  Args:
    state: `BicycleGANState`.
    batch: {'x': (B, ...), 'y': (B, ...)} plus whatever `state.recon_fn` reads.
    key: PRNG key for eps (reparameterisation) and the cLR latents.

  Returns:
    (new_state, metrics): d_loss, d_real, d_fake_vae, d_fake_lr (mean logits), g_adv_vae,
    g_adv_lr, recon, kl, latent_l1, g_loss (the weighted total), update_norm_d,
    update_norm_g (H, G) and update_norm_e (E) of this step's updates.
  """
  b = peers._check_batch(batch)
  hp = state.hp
  d_loss_fn, g_loss_fn = gan_lib.gan_losses(hp.gan_loss)
  x, y = batch['x'], batch['y']
  k_eps, k_z = jax.random.split(key)
  eps = jax.random.normal(k_eps, (b, hp.z_dim), jnp.float32)
  z_random = jax.random.normal(k_z, (b, hp.z_dim), jnp.float32)
  stats = state.stats

  def generate(params):
    h, enc_stats = apply_module(state.encoder, params['encoder'], stats['encoder'], x, train=True)
    (mu, logvar), lat_stats = apply_module(state.latent_encoder, params['latent_encoder'],
                                     stats['latent_encoder'], y, train=True)
    z_enc = mu + jnp.exp(0.5 * logvar) * eps
    y_hat, gen_stats = apply_module(state.generator, params['generator'], stats['generator'],
                              jax.tree.map(lambda a: jnp.concatenate([a, a]), h),
                              jnp.concatenate([z_enc, z_random]), train=True)
    new_stats = {'encoder': enc_stats, 'generator': gen_stats, 'latent_encoder': lat_stats}
    return (y_hat[:b], y_hat[b:], mu, logvar), new_stats

  outs, vjp, hge_stats = jax.vjp(generate, _hge(state.params), has_aux=True)
  fake_vae, fake_lr = outs[0], outs[1]

  # D: both cycles' fakes against the real pairs (the released code sums the two losses).
  def d_objective(p):
    real, s = apply_module(state.disc, p, stats['disc'], x, y, train=True)
    f_vae, s = apply_module(state.disc, p, s, x, stop(fake_vae), train=True)
    f_lr, s = apply_module(state.disc, p, s, x, stop(fake_lr), train=True)
    return d_loss_fn(real, f_vae) + d_loss_fn(real, f_lr), (s, real, f_vae, f_lr)

  (ld, (stats_d, real, f_vae, f_lr)), grads_d = jax.value_and_grad(
      d_objective, has_aux=True)(state.params['disc'])
  upd_d, opt_d = state.tx_d.update(grads_d, state.opt_state['d'], state.params['disc'],
                                   batch_step=state.step)
  params_d = optax.apply_updates(state.params['disc'], upd_d)

  # E's parameters as constants: the latent regression trains G (and H) only.
  lat_vars = {'params': stop(state.params['latent_encoder']), **stats['latent_encoder']}

  def g_objective(outs):
    fake_vae, fake_lr, mu, logvar = outs
    l_vae, s = apply_module(state.disc, params_d, stats_d, x, fake_vae, train=True)
    l_lr, s = apply_module(state.disc, params_d, s, x, fake_lr, train=True)
    adv_vae, adv_lr = g_loss_fn(l_vae), g_loss_fn(l_lr)
    recon = jnp.mean(state.recon_fn(fake_vae, batch))
    kl = jnp.mean(kl_divergence(mu, logvar))
    mu_lr, _ = state.latent_encoder.apply(lat_vars, fake_lr, train=False)
    latent = jnp.mean(jnp.abs(mu_lr - z_random))
    total = (hp.adv_weight * (adv_vae + adv_lr) + hp.recon_weight * recon
             + hp.kl_weight * kl + hp.latent_weight * latent)
    return total, (s, adv_vae, adv_lr, recon, kl, latent)

  (g_total, (stats_d, adv_vae, adv_lr, recon, kl, latent)), d_outs = jax.value_and_grad(
      g_objective, has_aux=True)(outs)
  (grads,) = vjp(d_outs)
  updates, opt_g = state.tx_g.update(grads, state.opt_state['g'], _hge(state.params),
                                     batch_step=state.step)
  params = {**optax.apply_updates(_hge(state.params), updates), 'disc': params_d}
  new_state = state.replace(step=state.step + 1, params=params,
                            stats={**hge_stats, 'disc': stats_d},
                            opt_state={'g': opt_g, 'd': opt_d})
  metrics = {'d_loss': ld, 'd_real': jnp.mean(real), 'd_fake_vae': jnp.mean(f_vae),
             'd_fake_lr': jnp.mean(f_lr), 'g_adv_vae': adv_vae, 'g_adv_lr': adv_lr,
             'recon': recon, 'kl': kl, 'latent_l1': latent, 'g_loss': g_total,
             'update_norm_d': optax.global_norm(upd_d),
             'update_norm_g': optax.global_norm({k: updates[k] for k in HGE[:2]}),
             'update_norm_e': optax.global_norm(updates['latent_encoder'])}
  return new_state, metrics


def bicyclegan_sample(state: BicycleGANState, x: jax.Array, key: jax.Array,
                      num_samples: int) -> jax.Array:
  """K outputs per input, G(H(x), z_k) with z_k ~ N(0, I) (the paper's test-time
  sampling): (B, K, ...)."""
  return peers._generate_k(state.encoder, state.generator, state.params, state.stats, x,
                           key, num_samples, state.hp.z_dim)


def encode(state: BicycleGANState, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mu, log sigma^2) = E(y), without statistics updates."""
  return apply_module(state.latent_encoder, state.params['latent_encoder'],
                state.stats['latent_encoder'], y, train=False)[0]
