"""Each equation of cgml.py against a hand-written numpy computation, and Algorithm 1."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cgml_jax import cgml
from cgml_jax.models.mlp import MLPEncoder, MLPGenerator, MLPLatentNet

RNG = np.random.default_rng(0)
# One optimiser object for all states: a new one would be a new jit cache key.
TX = optax.adam(3e-3)
STEP = jax.jit(cgml.train_step)


def np_project(z):
  return z / np.linalg.norm(z, axis=-1, keepdims=True)


def test_project_to_sphere_matches_numpy():
  z = RNG.normal(size=(7, 5)).astype(np.float32)
  np.testing.assert_allclose(cgml.project_to_sphere(jnp.asarray(z)), np_project(z), rtol=1e-6)
  # Pi(0) must not be NaN.
  assert np.all(np.isfinite(cgml.project_to_sphere(jnp.zeros((2, 3)))))


def test_sample_sphere_is_unit_norm_and_centred():
  z = np.asarray(cgml.sample_sphere(jax.random.key(0), (20000, 4)))
  np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
  # Uniform on S^3: mean 0, second moment I / n.
  np.testing.assert_allclose(z.mean(0), 0.0, atol=0.02)
  np.testing.assert_allclose(z.T @ z / len(z), np.eye(4) / 4, atol=0.01)
  with pytest.raises(ValueError, match='n >= 1'):
    cgml.sample_sphere(jax.random.key(0), (3, 0))


def test_z_step_matches_hand_gradient():
  # E_i(z) = mean_j |A z_i - y_i|_j has gradient A^T sign(A z_i - y_i) / m.
  a = RNG.normal(size=(6, 4)).astype(np.float32)
  z = np_project(RNG.normal(size=(5, 4))).astype(np.float32)
  y = RNG.normal(size=(5, 6)).astype(np.float32)
  beta = 0.3

  def error_fn(z):
    return jnp.mean(jnp.abs(z @ a.T - y), axis=-1)

  z_next, errors = cgml.z_step(error_fn, jnp.asarray(z), beta)
  grad = np.sign(z @ a.T - y) @ a / 6
  np.testing.assert_allclose(errors, np.abs(z @ a.T - y).mean(-1), rtol=1e-5)
  np.testing.assert_allclose(z_next, np_project(z - beta * grad), rtol=1e-5, atol=1e-6)


def test_rho_target_and_latent_loss_match_numpy():
  z = RNG.normal(size=(5, 3)).astype(np.float32)
  zn = RNG.normal(size=(5, 3)).astype(np.float32)
  rho = cgml.rho_target(jnp.asarray(z), jnp.asarray(zn), 2.5)
  np.testing.assert_allclose(rho, 2.5 * np.linalg.norm(zn - z, axis=-1), rtol=1e-6)
  r_hat = RNG.normal(size=(5, 3)).astype(np.float32)
  rho_hat = RNG.normal(size=(5,)).astype(np.float32)
  want = np.abs(r_hat - zn).mean() + np.abs(rho_hat - np.asarray(rho)).mean()
  np.testing.assert_allclose(cgml.latent_loss(r_hat, rho_hat, zn, rho), want, rtol=1e-6)
  np.testing.assert_allclose(cgml.latent_loss(r_hat, rho_hat, zn, rho, use_momentum=False),
                             np.abs(r_hat - zn).mean(), rtol=1e-6)
  # 'joint': one L1 over the (n + 1)-vector (z', rho), a mean over its 4 entries here.
  joint = np.abs(np.concatenate([r_hat - zn, (rho_hat - np.asarray(rho))[:, None]], 1)).mean()
  np.testing.assert_allclose(cgml.latent_loss(r_hat, rho_hat, zn, rho, form='joint'), joint,
                             rtol=1e-6)
  assert abs(joint - want) > 1e-3  # the two forms weigh rho differently
  np.testing.assert_allclose(
      cgml.latent_loss(r_hat, rho_hat, zn, rho, use_momentum=False, form='joint'),
      np.abs(r_hat - zn).mean(), rtol=1e-6)
  with pytest.raises(ValueError, match='form must be one of'):
    cgml.latent_loss(r_hat, rho_hat, zn, rho, form='sum')


def test_eq4_step_matches_numpy():
  z = np_project(RNG.normal(size=(5, 3))).astype(np.float32)
  r = RNG.normal(size=(5, 3)).astype(np.float32)
  rho = np.abs(RNG.normal(size=(5,))).astype(np.float32)
  d = (r - z) / np.linalg.norm(r - z, axis=-1, keepdims=True)
  np.testing.assert_allclose(cgml.eq4_step(z, r, rho), np_project(z + rho[:, None] * d),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(cgml.eq4_step(z, r, rho, use_momentum=False), np_project(r),
                             rtol=1e-6)
  # clip_step: the step is min(rho_hat, ||r_hat - z||), never past the target.
  dist = np.linalg.norm(r - z, axis=-1)
  np.testing.assert_allclose(cgml.eq4_step(z, r, rho, clip_step=True),
                             np_project(z + np.minimum(rho, dist)[:, None] * d),
                             rtol=1e-5, atol=1e-6)
  near = z + 0.01 * (r - z)  # target 1% of the way: the clipped step stops there
  np.testing.assert_allclose(cgml.eq4_step(z, near, np.full(5, 2.0, np.float32), clip_step=True),
                             np_project(near), rtol=1e-5, atol=1e-6)
  # r_hat == z: no direction, so z must stay put instead of becoming NaN.
  np.testing.assert_allclose(cgml.eq4_step(z, z, rho), z, atol=1e-6)


def make_state(generator_update='every', latent_init='random', inner_steps=3, z_dim=3,
               seed=0, step_size_decay=1.0, unroll=True):
  hp = cgml.Hyper(z_dim=z_dim, step_size=0.5, alpha=1.0, inner_steps=inner_steps,
                  generator_update=generator_update, latent_init=latent_init,
                  step_size_decay=step_size_decay, unroll=unroll)
  x, y = fixed_batch()
  return cgml.CGMLState.create(
      jax.random.key(seed), x, encoder=MLPEncoder(width=32, h_dim=8),
      generator=MLPGenerator(out_dim=3, width=32, lipschitz=2.0),
      latent_net=MLPLatentNet(width=32, lipschitz=2.0), tx_hg=TX,
      tx_latent=TX, hp=hp, num_examples=64)


def fixed_batch(n=64):
  x = np.linspace(-1, 1, n, dtype=np.float32)[:, None]
  s = np.where(np.arange(n) % 2, 4.0, -4.0).astype(np.float32)[:, None]
  return x, s * np.concatenate([x, x ** 2, x ** 3], -1)


def batch():
  x, y = fixed_batch()
  return {'x': x, 'y': y, 'index': np.arange(len(x))}


def test_traverse_matches_manual_eq4_loop():
  state = make_state()
  x = batch()['x'][:8]
  z0 = cgml.sample_sphere(jax.random.key(1), (8, 3))
  y, traj = jax.jit(cgml.traverse, static_argnums=(3, 4))(state, x, z0, 4, True)

  @jax.jit
  def manual(state, x, z):
    h = cgml.encode(state, x)
    zs = [z]
    for _ in range(4):  # a Python loop, unrolled: the reference for the scan
      r, rho = cgml.latent_field(state, zs[-1], h)
      zs.append(cgml.eq4_step(zs[-1], r, rho))
    return jnp.stack(zs), cgml.generate(state, h, zs[-1])

  want_traj, want_y = manual(state, x, z0)
  np.testing.assert_allclose(traj, want_traj, atol=1e-6)
  np.testing.assert_allclose(y, want_y, atol=1e-6)


def test_sample_is_vectorised_over_k_and_matches_traverse():
  state = make_state()
  x = batch()['x'][:5]
  key = jax.random.key(2)
  ys, zs = jax.jit(cgml.sample, static_argnums=(3, 4, 5))(state, x, key, 4, 6, True)
  assert ys.shape == (5, 4, 3) and zs.shape == (5, 4, 3)
  z0 = cgml.sample_sphere(key, (20, 3))
  want = jax.jit(cgml.traverse, static_argnums=3)(state, np.repeat(x, 4, axis=0), z0, 6)
  want = want.reshape(5, 4, 3)
  np.testing.assert_allclose(ys, want, atol=1e-5)
  # Different starting points must give different outputs for the same input.
  assert np.ptp(np.asarray(ys), axis=1).max() > 1e-4


def test_train_step_lowers_error_on_fixed_batch():
  state = make_state()
  step = STEP
  b = batch()
  first = None
  for i in range(150):
    state, m = step(state, b, jax.random.key(i))
    first = first if first is not None else float(m['E'])
  assert float(m['E']) < 0.5 * first, (first, float(m['E']))
  for k in ('E', 'E_z0', 'latent_loss', 'rho', 'rho_hat', 'dz'):
    assert np.isfinite(m[k]), k
  np.testing.assert_allclose(m['rho'], m['dz'], rtol=1e-5)  # alpha = 1
  assert int(state.step) == 150


@pytest.mark.slow  # long; run with -m slow
def test_z_loss_form_reaches_the_z_step():
  """hp.z_loss picks Z's loss in train_step: with one inner step the reported latent_loss
  is latent_loss(Z(z_0, h), z', rho) in that form, at the initial parameters."""
  out = {}
  for form in cgml.Z_LOSSES:
    state = make_state(inner_steps=1)
    state = state.replace(hp=cgml.Hyper(**{**state.hp.__dict__, 'z_loss': form}))
    b, key = batch(), jax.random.key(3)
    _, m = STEP(state, b, key)
    z0, _ = cgml.initial_latents(state, b, key)
    h = cgml.encode(state, b['x'])
    z1, _ = cgml.z_step(lambda z: state.loss_fn(cgml.generate(state, h, z), b), z0,
                        state.hp.step_size)
    r_hat, rho_hat = cgml.latent_field(state, z0, h)
    want = cgml.latent_loss(r_hat, rho_hat, z1, cgml.rho_target(z0, z1, 1.0), form=form)
    np.testing.assert_allclose(m['latent_loss'], want, rtol=1e-4)
    out[form] = float(m['latent_loss'])
  assert abs(out['split'] - out['joint']) > 1e-4, out


def test_whole_inner_loop_is_one_scan_in_one_jitted_step():
  for l in (2, 5):
    state = make_state(inner_steps=l)
    jaxpr = jax.make_jaxpr(cgml.train_step)(state, batch(), jax.random.key(0))
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == 'scan']
    assert [e.params['length'] for e in scans] == [l]


@pytest.mark.slow  # long; run with -m slow
def test_rolled_inner_scan_computes_the_same_step():
  # hp.unroll only changes how XLA runs the l inner iterations, not what they compute.
  new = {}
  for unroll in (True, False):
    state = make_state(step_size_decay=0.7, unroll=unroll)
    new[unroll], metrics = STEP(state, batch(), jax.random.key(0))
    assert np.isfinite(float(metrics['E']))
  for u, v in zip(jax.tree.leaves(new[True].params), jax.tree.leaves(new[False].params)):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
  assert not all(np.allclose(u, v) for u, v in zip(jax.tree.leaves(new[True].params),
                                                   jax.tree.leaves(make_state().params)))


@pytest.mark.parametrize('mode,expected', [('every', 4), ('last', 1)])
def test_generator_update_every_vs_last(mode, expected):
  state = make_state(generator_update=mode, inner_steps=4)
  new, _ = STEP(state, batch(), jax.random.key(0))
  # Adam's step count in the (H, G) optimiser state counts the (H, G) updates.
  assert int(new.opt_state['hg'][0].count) == expected
  assert int(new.opt_state['latent'][0].count) == 4  # Z is trained at every inner step


def test_same_seed_same_parameters_and_different_seed_differs():
  def run(seed):
    state = make_state(seed=seed)
    for i in range(3):
      state, _ = STEP(state, batch(), jax.random.key(i))
    return jax.tree.leaves(state.params)

  a, b, c = run(0), run(0), run(1)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  assert any(not np.array_equal(u, v) for u, v in zip(a, c))


def test_persistent_latents_are_read_and_written_by_index():
  state = make_state(latent_init='persistent')
  table0 = np.asarray(state.z_table)
  b = batch()
  sub = {k: v[:16] for k, v in b.items()}
  new, _ = STEP(state, sub, jax.random.key(0))
  table1 = np.asarray(new.z_table)
  assert not np.allclose(table1[:16], table0[:16])
  np.testing.assert_array_equal(table1[16:], table0[16:])
  np.testing.assert_allclose(np.linalg.norm(table1, axis=-1), 1.0, rtol=1e-5)
  with pytest.raises(KeyError, match='index'):
    cgml.train_step(state, {'x': b['x'], 'y': b['y']}, jax.random.key(0))


@pytest.mark.slow  # long; run with -m slow
def test_step_size_decay_shrinks_beta_per_inner_step():
  # With generator_update='last' every z step of the batch sees the initial H, G, so the
  # final latents (written to the persistent table) are l hand-made z steps with
  # beta * decay^t.
  state = make_state(generator_update='last', latent_init='persistent', step_size_decay=0.5)
  b = batch()
  new, _ = STEP(state, b, jax.random.key(0))
  h = cgml.encode(state, b['x'])
  z = state.z_table[b['index']]
  for t in range(3):
    z, _ = cgml.z_step(lambda z: cgml.l1_error(cgml.generate(state, h, z), b), z, 0.5 * 0.5 ** t)
  np.testing.assert_allclose(new.z_table, z, atol=1e-5)
  const, _ = STEP(make_state(generator_update='last', latent_init='persistent'), b,
                  jax.random.key(0))
  assert not np.allclose(const.z_table, z, atol=1e-3)
  with pytest.raises(ValueError, match='step_size_decay'):
    cgml.Hyper(z_dim=3, step_size_decay=0.0)


def test_bad_inputs_raise_clear_errors():
  state = make_state()
  b = batch()
  with pytest.raises(ValueError, match='64 examples .* 10'):
    cgml.train_step(state, {'x': b['x'], 'y': b['y'][:10]}, jax.random.key(0))
  with pytest.raises(KeyError, match="'x' and 'y'"):
    cgml.train_step(state, {'x': b['x']}, jax.random.key(0))
  with pytest.raises(ValueError, match='generator_update'):
    cgml.Hyper(z_dim=3, generator_update='sometimes')
  with pytest.raises(ValueError, match='inner_steps'):
    cgml.Hyper(z_dim=3, inner_steps=0)
  with pytest.raises(ValueError, match='num_examples'):
    make_state(latent_init='persistent').__class__.create(
        jax.random.key(0), b['x'], encoder=MLPEncoder(), generator=MLPGenerator(3),
        latent_net=MLPLatentNet(), tx_hg=optax.adam(1e-3), tx_latent=optax.adam(1e-3),
        hp=cgml.Hyper(z_dim=3, latent_init='persistent'))


@pytest.mark.parametrize('init_candidates', [1, 4])
def test_scalar_error_function_is_refused_at_trace_time(init_candidates):
  """E must give one error per example: a scalar E (a mean over the batch) is named as
  such while tracing, on the z step and on the best-of-N z_0 alike, and the check is
  Python only: the lowered step of a correct E is the same with or without it."""
  state = make_state().replace(hp=dataclasses.replace(make_state().hp,
                                                      init_candidates=init_candidates))
  scalar = state.replace(loss_fn=lambda y_hat, b: jnp.abs(y_hat - b['y']).mean())
  with pytest.raises(ValueError, match=r'E must return one value per example, shape '
                                       r'\(B,\) = \(64,\), got shape \(\)'):
    jax.eval_shape(cgml.train_step, scalar, batch(), jax.random.key(0))
  lowered = jax.jit(cgml.train_step).lower(state, batch(), jax.random.key(0)).as_text()
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(cgml, '_per_example_errors', lambda errors, z: errors)
    unchecked = jax.jit(cgml.train_step).lower(state, batch(), jax.random.key(0)).as_text()
  assert lowered == unchecked
