"""BicycleGAN and conditional IMLE (cgml_jax.peers.bicyclegan / cimle): shapes, that a
step moves every optimiser and lowers the loss on a tiny batch, BicycleGAN's KL against
the closed form, and cIMLE's choice of the nearest latent on a hand-built generator."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgml_jax.models.conv import build_conv_models
from cgml_jax.peers import bicyclegan as bg
from cgml_jax.peers import cimle
from cgml_jax.peers import gan as gan_lib
from cgml_jax.training import optim

S, B, Z = 8, 4, 4


def _models():
  return build_conv_models(S, 1, 3, Z, base_channels=4, max_channels=8, bottleneck_size=2,
                           z_injection='all', latent_hidden=(8,))


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, (B, S, S, 1)).astype(np.float32)
  y = np.tanh(np.concatenate([x, -x, 0.5 * x], -1)).astype(np.float32)
  return {'x': jnp.asarray(x), 'y': jnp.asarray(y)}


def _bicycle_state(hp=None, lr=2e-4):
  hp = hp or bg.BicycleHyper(z_dim=Z)
  enc, gen, _ = _models()
  batch = _batch()
  tx = optim.make_optimizer(lr, b1=0.5)
  return bg.BicycleGANState.create(
      jax.random.key(0), batch['x'], batch['y'], encoder=enc, generator=gen,
      latent_encoder=bg.LatentEncoder(enc.clone(), Z), disc=gan_lib.PatchDiscriminator(4),
      hp=hp, tx_g=tx, tx_d=tx), batch


def _changed(a, b):
  return any(not np.allclose(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_kl_matches_the_closed_form():
  mu = jnp.array([[0.0, 1.0], [-2.0, 0.5]])
  sigma = jnp.array([[1.0, 0.5], [2.0, 1.5]])
  # KL(N(mu, s^2) || N(0, 1)) = log(1 / s) + (s^2 + mu^2) / 2 - 1/2 per dimension.
  expected = (jnp.log(1 / sigma) + (sigma ** 2 + mu ** 2) / 2 - 0.5).sum(-1)
  np.testing.assert_allclose(bg.kl_divergence(mu, 2 * jnp.log(sigma)), expected, rtol=1e-6)
  assert float(bg.kl_divergence(jnp.zeros((1, 3)), jnp.zeros((1, 3)))[0]) == 0.0


@pytest.mark.slow  # long; run with -m slow
def test_bicyclegan_shapes_step_sampler_and_lower_reconstruction():
  state, batch = _bicycle_state(lr=2e-3)
  mu, logvar = bg.encode(state, batch['y'])
  assert mu.shape == logvar.shape == (B, Z)
  out = jax.jit(bg.bicyclegan_sample, static_argnums=3)(state, batch['x'], jax.random.key(1), 3)
  assert out.shape == (B, 3, S, S, 3)
  step = jax.jit(bg.bicyclegan_step)  # one compilation for the whole test
  new, m = step(state, batch, jax.random.key(2))
  for k in ('encoder', 'generator', 'latent_encoder', 'disc'):
    assert _changed(state.params[k], new.params[k]), k
  assert all(np.isfinite(float(v)) for v in m.values())
  assert min(float(m[k]) for k in ('update_norm_d', 'update_norm_g', 'update_norm_e')) > 0
  assert int(new.step) == 1
  # A few more steps on the same tiny batch: the cVAE-GAN reconstruction goes down.
  recon = [float(m['recon'])]
  for i in range(14):
    new, m = step(new, batch, jax.random.key(3 + i))
    recon.append(float(m['recon']))
  assert np.mean(recon[-3:]) < 0.95 * np.mean(recon[:3]), recon


@pytest.mark.slow  # long; run with -m slow
def test_bicyclegan_latent_regression_leaves_e_alone():
  """With only the latent term on, G moves and E does not (E held fixed in that term)."""
  hp = bg.BicycleHyper(z_dim=Z, recon_weight=0.0, latent_weight=1.0, kl_weight=0.0,
                       adv_weight=0.0)
  state, batch = _bicycle_state(hp)
  _, m = jax.jit(bg.bicyclegan_step)(state, batch, jax.random.key(0))
  assert float(m['update_norm_g']) > 0 and float(m['update_norm_e']) == 0.0


class _Identity(nn.Module):
  @nn.compact
  def __call__(self, x, *, train=False):
    return x


class _FirstLatent(nn.Module):
  """G(h, z) = a * z[:, 0] at every pixel: output and latent in plain sight."""
  @nn.compact
  def __call__(self, h, z, *, train=False):
    a = self.param('a', nn.initializers.ones, ())
    return jnp.broadcast_to(a * z[:, None, None, :1], h.shape[:3] + (1,))


def test_cimle_picks_the_nearest_latent_on_a_hand_built_case():
  errors = jnp.array([[0.5, 0.1, 0.3], [0.2, 0.9, 0.05]])
  z = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
  z_star, idx = cimle.select_nearest(errors, z)
  assert idx.tolist() == [1, 2]
  np.testing.assert_array_equal(z_star, z[jnp.array([0, 1]), jnp.array([1, 2])])
  # Through the real candidate pass: the target 0.7 everywhere, G outputs z[:, 0].
  x = jnp.zeros((2, 4, 4, 1))
  batch = {'x': x, 'y': jnp.full((2, 4, 4, 1), 0.7)}
  state = cimle.CIMLEState.create(jax.random.key(0), x, encoder=_Identity(),
                                  generator=_FirstLatent(), tx=optim.make_optimizer(0.1),
                                  hp=cimle.CIMLEHyper(z_dim=2, num_latents=3))
  cand = jnp.array([[[0.0, 9.0], [0.6, -9.0], [1.0, 0.0]],
                    [[0.7, 0.0], [-1.0, 0.0], [2.0, 0.0]]])
  errs = cimle.candidate_errors(state, batch, cand)
  np.testing.assert_allclose(errs, jnp.abs(cand[..., 0] - 0.7), atol=1e-6)
  assert cimle.select_nearest(errs, cand)[1].tolist() == [1, 0]


def test_cimle_shapes_step_and_lower_error():
  enc, gen, _ = _models()
  batch = _batch()
  hp = cimle.CIMLEHyper(z_dim=Z, num_latents=5)
  state = cimle.CIMLEState.create(jax.random.key(0), batch['x'], encoder=enc, generator=gen,
                                  tx=optim.make_optimizer(3e-3), hp=hp)
  out = jax.jit(cimle.cimle_sample, static_argnums=3)(state, batch['x'], jax.random.key(1), 3)
  assert out.shape == (B, 3, S, S, 3)
  step = jax.jit(cimle.cimle_step)
  new, m = step(state, batch, jax.random.key(2))
  assert _changed(state.params, new.params) and float(m['update_norm']) > 0
  assert float(m['E']) <= float(m['E_candidates'])         # the picked one is the nearest
  errs = [float(m['E'])]
  for i in range(15):
    new, m = step(new, batch, jax.random.key(3 + i))
    errs.append(float(m['E']))
  assert np.mean(errs[-3:]) < 0.95 * np.mean(errs[:3]), errs


@pytest.mark.parametrize('bad', [dict(z_dim=0), dict(num_latents=0)])
def test_cimle_hyper_checks(bad):
  with pytest.raises(ValueError):
    cimle.CIMLEHyper(**bad)
