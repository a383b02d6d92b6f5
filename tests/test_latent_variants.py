"""The opt-in multimodality options of cgml.Hyper (not in the paper), each against a
hand-made computation: best-of-N z_0, Z fitted to the descent's end, the rho_hat redraw."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cgml_jax import cgml
from cgml_jax.models.mlp import MLPEncoder, MLPGenerator, MLPLatentNet

TX = optax.adam(3e-3)  # one object: a new optimiser would be a new jit cache key
STEP = jax.jit(cgml.train_step)


def make_state(**hyper):
  """A small MLP cGML state on the two-mode toy batch of `batch()`."""
  hp = cgml.Hyper(**{'z_dim': 3, 'step_size': 0.5, 'inner_steps': 3, **hyper})
  return cgml.CGMLState.create(
      jax.random.key(0), batch()['x'], encoder=MLPEncoder(width=32, h_dim=8),
      generator=MLPGenerator(out_dim=3, width=32, lipschitz=2.0),
      latent_net=MLPLatentNet(width=32, lipschitz=2.0), tx_hg=TX, tx_latent=TX, hp=hp,
      num_examples=64)


def batch(n=64):
  x = np.linspace(-1, 1, n, dtype=np.float32)[:, None]
  s = np.where(np.arange(n) % 2, 4.0, -4.0).astype(np.float32)[:, None]
  return {'x': x, 'y': s * np.concatenate([x, x ** 2, x ** 3], -1), 'index': np.arange(n)}


def test_best_of_candidates_picks_the_argmin_per_example():
  # E_b(z) = ||z - target_b||: example 0 is nearest candidate 2, example 1 candidate 0.
  targets = jnp.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
  cands = jnp.array([[[0.9, 0.1, 0.0], [1.0, 0.0, 0.0]],    # candidate 0
                     [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]],    # candidate 1
                     [[0.0, 0.1, 0.9], [0.0, 0.0, -1.0]]])  # candidate 2
  best = cgml.best_of_candidates(lambda z: jnp.linalg.norm(z - targets, axis=-1), cands)
  np.testing.assert_array_equal(best, jnp.stack([cands[2, 0], cands[0, 1]]))


@pytest.mark.parametrize('n', [1, 8])
def test_initial_latents_are_the_best_of_n_by_error(n):
  state = make_state(init_candidates=n)
  b, key = batch(), jax.random.key(3)
  z0, _ = cgml.initial_latents(state, b, key)
  assert z0.shape == (64, 3)
  h = cgml.encode(state, b['x'])
  error = lambda z: cgml.l1_error(cgml.generate(state, h, z), b)  # noqa: E731
  if n == 1:  # the paper's z_0: one uniform draw, unchanged by the option
    np.testing.assert_array_equal(z0, cgml.sample_sphere(key, (64, 3)))
    return
  cands = cgml.sample_sphere(key, (n, 64, 3))
  errors = np.stack([np.asarray(error(c)) for c in cands])  # (N, B)
  np.testing.assert_allclose(error(z0), errors.min(0), rtol=1e-6)
  # Not trivially the first candidate: the choice varies over the batch.
  assert len(np.unique(errors.argmin(0))) > 1
  with pytest.raises(ValueError, match='init_candidates'):
    cgml.Hyper(z_dim=3, init_candidates=0)


def test_balanced_assignment_is_the_least_total_cost_permutation():
  from scipy.optimize import linear_sum_assignment
  cost = np.asarray(jax.random.uniform(jax.random.key(1), (12, 12)))
  got = np.asarray(cgml.balanced_assignment(jnp.asarray(cost)))
  rows, cols = linear_sum_assignment(cost)
  assert sorted(got) == list(range(12))                       # every candidate once
  np.testing.assert_allclose(cost[np.arange(12), got].sum(), cost[rows, cols].sum(),
                             rtol=1e-6)
  # The independent best per example would reuse candidates: not a permutation here.
  assert len(set(cost.argmin(1))) < 12


def test_balanced_z0_uses_each_candidate_once_and_each_point_flows_to_its_nearest():
  b, key = batch(16), jax.random.key(4)
  b = {k: v[:16] for k, v in b.items()}
  state = make_state(latent_init='balanced', flow_init='nearest')
  z0, (z_flow, flow_index) = cgml.initial_latents(state, b, key)
  cands = np.asarray(cgml.sample_sphere(key, (16, 3)))
  h = cgml.encode(state, b['x'])
  cost = np.stack([np.asarray(cgml.l1_error(cgml.generate(state, h, np.tile(c, (16, 1))), b))
                   for c in cands], axis=1)                  # (example, candidate)
  idx = [int(np.argmin(np.linalg.norm(cands - z, axis=-1))) for z in np.asarray(z0)]
  assert sorted(idx) == list(range(16))
  from scipy.optimize import linear_sum_assignment
  rows, cols = linear_sum_assignment(cost)
  np.testing.assert_allclose(cost[np.arange(16), idx].sum(), cost[rows, cols].sum(),
                             rtol=1e-5)
  np.testing.assert_allclose(z_flow, cands, atol=1e-6)        # the uniform points ...
  np.testing.assert_array_equal(flow_index, cost.argmin(0))   # ... to their best example
  new, m = STEP(state, b, key)                                # the step runs and learns
  assert float(m['update_norm_hg']) > 0 and float(m['update_norm_latent']) > 0
  with pytest.raises(ValueError, match='flow_init'):
    cgml.Hyper(z_dim=3, flow_init='nearest')                  # needs latent_init balanced
  with pytest.raises(ValueError, match='init_candidates'):
    cgml.Hyper(z_dim=3, latent_init='balanced', init_candidates=4)
  with pytest.raises(ValueError, match='latent_target'):
    cgml.Hyper(z_dim=3, latent_init='balanced', flow_init='nearest', latent_target='end')


@pytest.mark.slow  # long; run with -m slow
def test_latent_target_end_fits_z_to_the_end_of_the_descent():
  # With generator_update='last' all z steps of a batch see the initial H, G, so the
  # inner path z_0 .. z_l is l hand-made z steps, and the mean target rho is
  # mean_t ||z_l - z_t|| over t < l for 'end' and mean_t ||z_{t+1} - z_t|| for 'next'.
  b = batch()
  rhos = {}
  for target in ('next', 'end'):
    state = make_state(latent_target=target, generator_update='last', step_size_decay=0.8,
                       latent_init='persistent')
    new, m = STEP(state, b, jax.random.key(0))
    rhos[target] = float(m['rho'])
    h = cgml.encode(state, b['x'])
    zs = [state.z_table[b['index']]]
    for t in range(3):
      zs.append(cgml.z_step(lambda z: cgml.l1_error(cgml.generate(state, h, z), b), zs[-1],
                            0.5 * 0.8 ** t)[0])
    np.testing.assert_allclose(cgml.descent_end(state, b, zs[0]), zs[-1], atol=1e-5)
    if target == 'end':
      want = np.mean([np.linalg.norm(zs[-1] - z, axis=-1).mean() for z in zs[:-1]])
    else:
      want = np.mean([np.linalg.norm(zn - z, axis=-1).mean() for z, zn in zip(zs, zs[1:])])
    np.testing.assert_allclose(rhos[target], want, rtol=1e-4)
  assert abs(rhos['end'] - rhos['next']) > 1e-3
  with pytest.raises(ValueError, match='latent_target'):
    cgml.Hyper(z_dim=3, latent_target='far')


@pytest.mark.slow  # long; run with -m slow
def test_redraw_replaces_only_high_rho_samples_and_only_by_lower_ones():
  b = batch()
  state = make_state()
  for i in range(20):  # some training, so that rho_hat varies over z
    state, _ = STEP(state, b, jax.random.key(i))
  h = cgml.encode(state, b['x'][:16])
  key = jax.random.key(5)
  z = cgml.traverse_latent(state, h, cgml.sample_sphere(key, (16, 3)), 4)
  rho = np.asarray(cgml.latent_field(state, z, h)[1])
  thr = float(np.median(rho))
  on = state.replace(hp=cgml.Hyper(**{**state.hp.__dict__, 'redraw_rho': thr,
                                      'redraw_rounds': 2}))
  z2 = np.asarray(cgml.redraw_high_rho(on, h, z, key, 4))
  rho2 = np.asarray(cgml.latent_field(on, z2, h)[1])
  low = rho <= thr
  np.testing.assert_array_equal(z2[low], np.asarray(z)[low])  # at rest: kept
  assert np.all(rho2 <= rho + 1e-6)                           # never worse
  assert np.any(rho2[~low] < rho[~low])                       # some high ones replaced
  # Off by default: the paper's samples, untouched.
  np.testing.assert_array_equal(cgml.redraw_high_rho(state, h, z, key, 4), z)


def test_redraw_quantile_redraws_only_the_samples_above_it():
  b = batch()
  state = make_state()
  h = cgml.encode(state, b['x'][:32])
  key = jax.random.key(6)
  z = cgml.sample_sphere(key, (32, 3))
  rho = np.asarray(cgml.latent_field(state, z, h)[1])
  on = state.replace(hp=cgml.Hyper(**{**state.hp.__dict__, 'redraw_quantile': 0.5,
                                      'redraw_rounds': 2}))
  z2 = np.asarray(cgml.redraw_high_rho(on, h, z, key, 0))   # T = 0: redraw z_0 itself
  rho2 = np.asarray(cgml.latent_field(on, z2, h)[1])
  low = rho <= np.quantile(rho, 0.5)
  np.testing.assert_array_equal(z2[low], np.asarray(z)[low])
  assert np.all(rho2 <= rho + 1e-6) and np.any(rho2[~low] < rho[~low])
  with pytest.raises(ValueError, match='redraw_quantile'):
    cgml.Hyper(z_dim=3, redraw_quantile=1.0)

