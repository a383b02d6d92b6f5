"""The learning rate follows the batch step, however many updates a batch makes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cgml_jax import cgml, regression
from cgml_jax.models.mlp import MLPEncoder, MLPGenerator, MLPLatentNet
from cgml_jax.training import optim

PEAK = 1e-2


def _cgml_state(tx, inner_steps, generator_update='every'):
  enc = MLPEncoder(width=16, depth=2, h_dim=8)
  gen = MLPGenerator(out_dim=3, width=16, depth=2)
  lat = MLPLatentNet(width=16, depth=2)
  hp = cgml.Hyper(z_dim=3, inner_steps=inner_steps, generator_update=generator_update)
  x = jnp.zeros((32, 1))
  return cgml.CGMLState.create(jax.random.key(0), x, encoder=enc, generator=gen,
                               latent_net=lat, tx_hg=tx, tx_latent=tx, hp=hp)


def _batch(i):
  rng = np.random.default_rng(i)
  x = rng.uniform(-1, 1, (32, 1)).astype(np.float32)
  s = rng.choice([-4.0, 4.0], (32, 1)).astype(np.float32)
  return {'x': x, 'y': s * np.concatenate([x, x ** 2, x ** 3], -1)}


@pytest.mark.parametrize('generator_update', ['every', 'last'])
def test_cosine_over_batches_with_inner_steps(generator_update):
  """Cosine over S batches, l = 4 updates per batch: half the peak at S/2, still moving
  at S - 1 (a schedule counting updates would have reached 0 at batch S/4)."""
  s_batches, l = 8, 4
  tx = optim.make_optimizer(PEAK, schedule='cosine', total_steps=s_batches)
  state = _cgml_state(tx, l, generator_update)
  step = jax.jit(cgml.train_step)
  for i in range(s_batches):
    before = state.params
    state, metrics = step(state, _batch(i), jax.random.key(i))
    rates = optim.learning_rates(state.opt_state)
    expected = 0.5 * PEAK * (1 + np.cos(np.pi * i / s_batches))
    np.testing.assert_allclose(float(rates['lr_hg']), expected, rtol=1e-5)
    np.testing.assert_allclose(float(rates['lr_latent']), expected, rtol=1e-5)
    if i == s_batches // 2:
      np.testing.assert_allclose(float(rates['lr_hg']), PEAK / 2, rtol=1e-5)
  # The last batch still changes every parameter group, and the metrics say so.
  for name in ('encoder', 'generator', 'latent'):
    delta = optax.global_norm(jax.tree.map(jnp.subtract, state.params[name], before[name]))
    assert float(delta) > 0, name
  assert float(metrics['update_norm_hg']) > 0
  assert float(metrics['update_norm_latent']) > 0


def test_update_norm_is_the_applied_update():
  tx = optim.make_optimizer(PEAK)
  enc, gen = MLPEncoder(width=8, depth=1, h_dim=4), MLPGenerator(out_dim=3, width=8, depth=1)
  state = regression.RegressionState.create(jax.random.key(1), jnp.zeros((32, 1)),
                                            encoder=enc, generator=gen, tx=tx)
  new, metrics = jax.jit(regression.train_step)(state, _batch(0), None)
  moved = optax.global_norm(jax.tree.map(jnp.subtract, new.params, state.params))
  np.testing.assert_allclose(float(metrics['update_norm']), float(moved), rtol=1e-4)


def test_schedule_needs_the_batch_step():
  tx = optim.make_optimizer(PEAK, schedule='cosine', total_steps=10)
  params = {'w': jnp.ones(3)}
  with pytest.raises(TypeError, match='batch_step'):
    tx.update(params, tx.init(params), params)


def test_same_rate_for_every_update_of_a_batch():
  tx = optim.make_optimizer(PEAK, schedule='warmup_cosine', total_steps=10, warmup_steps=4)
  params = {'w': jnp.ones(3)}
  opt = tx.init(params)
  rates = []
  for _ in range(5):   # five updates, one batch
    _, opt = tx.update(params, opt, params, batch_step=jnp.asarray(2))
    rates.append(float(optim.learning_rates(opt)['lr']))
  np.testing.assert_allclose(rates, PEAK / 2, rtol=1e-6)


def test_bad_schedule_arguments_raise():
  with pytest.raises(ValueError, match='unknown schedule'):
    optim.make_optimizer(PEAK, schedule='linear')
  with pytest.raises(ValueError, match='warmup_steps'):
    optim.make_optimizer(PEAK, schedule='warmup_cosine', total_steps=10, warmup_steps=10)
  with pytest.raises(ValueError, match='learning rate'):
    optim.make_optimizer(0.0)


def test_matches_optax_adam_with_a_constant_rate():
  """Apart from where the step comes from, the chain is optax's Adam / AMSGrad."""
  params = {'w': jnp.arange(4.0)}
  grads = {'w': jnp.asarray([0.3, -1.0, 2.0, 0.0])}
  for ours, ref in [(optim.make_optimizer(PEAK), optax.adam(PEAK)),
                    (optim.make_optimizer(PEAK, amsgrad=True), optax.amsgrad(PEAK))]:
    s1, s2 = ours.init(params), ref.init(params)
    for i in range(3):
      u1, s1 = ours.update(grads, s1, params, batch_step=i)
      u2, s2 = ref.update(grads, s2, params)
      np.testing.assert_allclose(u1['w'], u2['w'], rtol=1e-6)
