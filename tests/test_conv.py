"""Shapes and behaviour of the conv H, G, Z (build_conv_models)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cgml_jax import cgml
from cgml_jax.models.conv import ConvEncoder, ConvGenerator, build_conv_models, padded_size

B, Z_DIM = 2, 3
SMALL = dict(base_channels=4, max_channels=16, latent_hidden=(8,))


def _init_and_shapes(image_size, c_in, c_out, **kw):
  """Output shapes of H, G, Z for an S x S batch (abstract evaluation: no compilation)."""
  enc, gen, lat = build_conv_models(image_size, c_in, c_out, Z_DIM, **SMALL, **kw)
  x = jax.ShapeDtypeStruct((B, image_size, image_size, c_in), jnp.float32)
  z = jax.ShapeDtypeStruct((B, Z_DIM), jnp.float32)
  key = jax.random.key(0)

  def run(x, z):
    ve = enc.init(key, x)
    h = enc.apply(ve, x)
    vg = gen.init(key, h, z)
    vl = lat.init(key, z, h)
    return h, gen.apply(vg, h, z), lat.apply(vl, z, h), vg

  return jax.eval_shape(run, x, z)


@pytest.mark.parametrize('image_size,blocks', [(28, 4), (32, 4), (64, 5), (128, 6)])
@pytest.mark.parametrize('c_in,c_out', [(1, 2), (4, 3)])  # colorization, completion
def test_shapes(image_size, blocks, c_in, c_out):
  h, y, (r_hat, rho_hat), _ = _init_and_shapes(image_size, c_in, c_out)
  p, k = padded_size(image_size)
  assert (p, k) == (2 ** (blocks + 1), blocks)
  assert [f.shape for f in h] == [
      (B, p >> (i + 1), p >> (i + 1), min(4 * 2 ** i, 16)) for i in range(blocks)]
  assert y.shape == (B, image_size, image_size, c_out)
  assert r_hat.shape == (B, Z_DIM) and rho_hat.shape == (B,)


def test_bottleneck_size_and_z_injection():
  h, y, _, vg = _init_and_shapes(32, 1, 2, bottleneck_size=4, z_injection='all')
  assert h[-1].shape[1:3] == (4, 4) and len(h) == 3
  assert y.shape == (B, 32, 32, 2)
  # With 'all', every transposed conv after the first also reads z (Z_DIM more channels).
  kernels = [vg['params'][f'ConvTranspose4x4Up_{i}']['kernel'].shape
             for i in range(3)]
  assert kernels[1][2] == 2 * 8 + Z_DIM and kernels[2][2] == 2 * 4 + Z_DIM


def test_28_is_padded_to_32_and_cropped_back():
  # Bottleneck 8: two blocks (32 -> 16 -> 8) instead of four; the padding and the crop are
  # the first and last layers' business, and a third as much program compiles.
  enc, gen, _ = build_conv_models(28, 1, 2, Z_DIM, bottleneck_size=8, **SMALL)
  assert padded_size(28, 8) == (32, 2)
  key = jax.random.key(0)
  x = jax.random.normal(key, (B, 28, 28, 1))
  z = jax.random.normal(key, (B, Z_DIM))

  @jax.jit
  def run(x, z):
    ve = enc.init(key, x)
    h = enc.apply(ve, x)
    h32 = enc.apply(ve, jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))))
    g32 = gen.clone(image_size=None)  # same layers, no crop
    vg = gen.init(key, h, z)
    return h, h32, gen.apply(vg, h, z), g32.apply(vg, h, z)

  h, h32, y, y32 = run(x, z)
  for a, b in zip(h, h32):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert y32.shape == (B, 32, 32, 2)
  np.testing.assert_allclose(y, y32[:, 2:30, 2:30], atol=1e-6)


def test_fast_layers_are_the_default_and_match_plain():
  key = jax.random.key(1)
  x = jax.random.normal(key, (B, 8, 8, 1))
  z = jax.random.normal(key, (B, Z_DIM))
  assert ConvEncoder().impl == 'auto' and ConvGenerator(2).impl == 'auto'

  @jax.jit
  def run(x, z):
    outs = []
    for impl in ('auto', 'plain'):
      enc, gen, _ = build_conv_models(8, 1, 2, Z_DIM, impl=impl, **SMALL)
      ve = enc.init(key, x)  # same key: same weights for both forms
      vg = gen.init(key, enc.apply(ve, x), z)

      def loss(ve, vg, z):
        return jnp.sum(jnp.sin(gen.apply(vg, enc.apply(ve, x), z)))

      outs.append(jax.value_and_grad(loss, argnums=(0, 1, 2))(ve, vg, z))
    return outs

  fast, plain = run(x, z)
  for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(plain)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_errors_name_the_shape():
  enc = ConvEncoder(4, 8)
  with pytest.raises(ValueError, match=r'\(2, 8, 6, 1\)'):
    enc.init(jax.random.key(0), jnp.ones((2, 8, 6, 1)))
  with pytest.raises(ValueError, match='z_injection'):
    build_conv_models(8, 1, 2, Z_DIM, z_injection='none', **SMALL)[1].init(
        jax.random.key(0), (jnp.ones((2, 4, 4, 4)), jnp.ones((2, 2, 2, 8))), jnp.ones((2, 3)))


@pytest.mark.parametrize('z_injection', ['bottleneck', 'all'])
def test_sample_axis_matches_repeated_inputs(z_injection):
  # G(h, z (B, K, n)) runs the h-only parts once per input; it must equal G on h repeated
  # K times, values and gradients (wrt G's parameters, h and z).
  k = 3
  enc, gen, _ = build_conv_models(8, 1, 2, Z_DIM, z_injection=z_injection, **SMALL)
  assert gen.accepts_sample_axis
  key = jax.random.key(3)
  x = jax.random.normal(key, (B, 8, 8, 1))
  z = jax.random.normal(jax.random.key(4), (B, k, Z_DIM))

  @jax.jit
  def run(x, z):
    h = enc.apply(enc.init(key, x), x)
    vg = gen.init(key, h, z[:, 0])
    cot = jax.random.normal(key, (B, k, 8, 8, 2))

    def with_axis(vg, h, z):
      return jnp.sum(gen.apply(vg, h, z) * cot)

    def repeated(vg, h, z):
      h_k = jax.tree.map(lambda a: jnp.repeat(a, k, axis=0), h)
      y = gen.apply(vg, h_k, z.reshape(B * k, Z_DIM))
      return jnp.sum(y.reshape(B, k, 8, 8, 2) * cot)

    return [jax.value_and_grad(f, argnums=(0, 1, 2))(vg, h, z) for f in (with_axis, repeated)]

  a, b = run(x, z)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(u, v, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('z_injection', ['bottleneck', 'all'])
def test_empty_z_of_the_l1_baseline(z_injection):
  # The L1 baseline (regression.py) calls G with z of shape (B, 0); reshaping it with -1
  # once raised ZeroDivisionError and broke every image task's L1 run.
  enc, gen, _ = build_conv_models(32, 1, 2, Z_DIM, **SMALL, z_injection=z_injection)
  x = jax.ShapeDtypeStruct((B, 32, 32, 1), jnp.float32)
  z = jax.ShapeDtypeStruct((B, 0), jnp.float32)

  def run(x, z):
    h = enc.apply(enc.init(jax.random.key(0), x), x)
    return gen.apply(gen.init(jax.random.key(1), h, z), h, z)

  assert jax.eval_shape(run, x, z).shape == (B, 32, 32, 2)


def _apply(module, params, stats, *args, train):
  """module(*args) with its params and collections; train=True returns updated ones."""
  if train and stats:
    out, new = module.apply({'params': params, **stats}, *args, train=True, mutable=list(stats))
    return out, dict(new)
  return module.apply({'params': params, **stats}, *args, train=train), stats


def _reference_train_step(state, batch, key, tx):
  """Algorithm 1 written out plainly, for the conv H, G, Z, E = L1 and an optimiser `tx`
  that needs no batch step: a Python loop, G's h-only terms recomputed in every call (no
  sharing), and step 4 one `value_and_grad` through H and G together (no VJP of H).
  """
  hp, enc, lat = state.hp, state.encoder, state.latent_net
  gen = state.generator.clone(shares_h_terms=False)
  x, y = batch['x'], batch['y']
  params, stats, opt = state.params, state.stats, state.opt_state

  def errors(y_hat):
    return jnp.abs(y_hat - y).reshape(y.shape[0], -1).mean(axis=1)

  z = cgml.sample_sphere(key, (x.shape[0], hp.z_dim))
  m = {k: [] for k in ('E', 'E_z', 'latent_loss', 'rho', 'rho_hat', 'dz', 'norm_hg',
                       'norm_lat')}
  for t in range(hp.inner_steps):
    update_hg = hp.generator_update == 'every' or t == hp.inner_steps - 1
    # H in train mode when H, G are trained in this iteration: with BatchNorm, h of the
    # z step is normalised by the batch, as in the (H, G) step; otherwise running averages.
    h, s_enc = _apply(enc, params['encoder'], stats['encoder'], x, train=update_hg)
    gen_vars = {'params': params['generator'], **stats['generator']}
    # 1. z step, everything but z frozen.
    def e_of_z(z):
      return errors(gen.apply(gen_vars, h, z, train=False))

    grad_z = jax.grad(lambda z: e_of_z(z).sum())(z)
    z_next = z - hp.step_size * grad_z
    z_next = z_next / jnp.linalg.norm(z_next, axis=-1, keepdims=True)
    # 2. momentum target.
    rho = hp.alpha * jnp.linalg.norm(z_next - z, axis=-1)
    # 3. Z step.
    def z_loss(p):
      (r_hat, rho_hat), s = lat.apply({'params': p, **stats['latent']}, z, h, train=True,
                                      mutable=['batch_stats'])
      return jnp.mean(jnp.abs(r_hat - z_next)) + jnp.mean(jnp.abs(rho_hat - rho)), (s, rho_hat)

    (loss_z, (s_lat, rho_hat)), g = jax.value_and_grad(z_loss, has_aux=True)(params['latent'])
    upd, opt_lat = tx.update(g, opt['latent'], params['latent'])
    params = {**params, 'latent': optax.apply_updates(params['latent'], upd)}
    stats, opt = {**stats, 'latent': dict(s_lat)}, {**opt, 'latent': opt_lat}
    m['norm_lat'].append(optax.global_norm(upd))
    # 4. H, G step at z'.
    if update_hg:
      def hg_loss(p):
        h = _apply(enc, p['encoder'], stats['encoder'], x, train=True)[0]
        y_hat, s = gen.apply({'params': p['generator'], **stats['generator']}, h, z_next,
                             train=True, mutable=['batch_stats'])
        return errors(y_hat).mean(), s

      p_hg = {'encoder': params['encoder'], 'generator': params['generator']}
      (loss_e, s_gen), g = jax.value_and_grad(hg_loss, has_aux=True)(p_hg)
      upd, opt_hg = tx.update(g, opt['hg'], p_hg)
      params = {**params, **optax.apply_updates(p_hg, upd)}
      stats = {**stats, 'encoder': s_enc, 'generator': dict(s_gen)}
      opt = {**opt, 'hg': opt_hg}
      m['norm_hg'].append(optax.global_norm(upd))
    else:
      loss_e = e_of_z(z).mean()
      m['norm_hg'].append(jnp.zeros(()))
    for k, v in (('E', loss_e), ('E_z', e_of_z(z).mean()), ('latent_loss', loss_z),
                 ('rho', rho.mean()), ('rho_hat', rho_hat.mean()),
                 ('dz', jnp.linalg.norm(z_next - z, axis=-1).mean())):
      m[k].append(v)
    z = z_next
  metrics = {'E': m['E'][-1], 'E_z0': m['E_z'][0], 'update_norm_hg': m['norm_hg'][-1],
             'update_norm_latent': m['norm_lat'][-1],
             **{k: jnp.mean(jnp.stack(m[k])) for k in ('latent_loss', 'rho', 'rho_hat', 'dz')}}
  return params, stats, opt, metrics


@pytest.mark.parametrize('generator_update,norm', [
    ('every', 'none'),
    pytest.param('every', 'batch', marks=pytest.mark.slow),
    pytest.param('last', 'none', marks=pytest.mark.slow),
    pytest.param('last', 'batch', marks=pytest.mark.slow)])  # the default run: 1 of 4
def test_train_step_matches_a_plain_reference_with_and_without_shared_h_terms(
    generator_update, norm):
  # cgml.train_step runs H once per inner step with its VJP and, for a generator with
  # shares_h_terms, G's h-only terms (the bottleneck's and the skips' contributions) once
  # for the z step and the (H, G) step; with shares_h_terms=False, G recomputes them in
  # each call. Both must give the new state and metrics of Algorithm 1 written out plainly
  # (so the shared terms carry their share of every gradient). z goes into every layer,
  # next to each h-only part; l = 2 runs the scan ('every') and the direct calls ('last').
  # With BatchNorm (norm='batch'), the running averages move in the (H, G) steps only: the
  # reference's z steps run G with train=False, which updates nothing.
  enc, gen, lat = build_conv_models(8, 1, 2, Z_DIM, z_injection='all', norm=norm, **SMALL)
  assert gen.shares_h_terms
  hp = cgml.Hyper(z_dim=Z_DIM, step_size=0.5, inner_steps=2, generator_update=generator_update)
  kx, ky = jax.random.split(jax.random.key(8))
  b = {'x': jax.random.normal(kx, (4, 8, 8, 1)), 'y': jax.random.normal(ky, (4, 8, 8, 2))}
  tx = optax.sgd(0.1)
  state = cgml.CGMLState.create(jax.random.key(9), b['x'], encoder=enc, generator=gen,
                                latent_net=lat, tx_hg=tx, tx_latent=tx, hp=hp)
  key = jax.random.key(10)
  want = jax.jit(lambda s, b, k: _reference_train_step(s, b, k, tx))(state, b, key)
  assert not np.allclose(want[0]['generator']['ConvTranspose4x4Up_0']['kernel'],
                         state.params['generator']['ConvTranspose4x4Up_0']['kernel'])
  if norm == 'batch':  # H and G have running averages, and the step moves them
    for part in ('encoder', 'generator'):
      names = [k for k in state.stats[part]['batch_stats'] if k.startswith('norm_')]
      assert names, part
      for k in names:
        assert not np.allclose(want[1][part]['batch_stats'][k]['mean'],
                               state.stats[part]['batch_stats'][k]['mean']), (part, k)
  for g in (gen, gen.clone(shares_h_terms=False)):  # same parameters either way
    new, metrics = jax.jit(cgml.train_step)(state.replace(generator=g), b, key)
    got = (new.params, new.stats, new.opt_state, metrics)
    assert jax.tree.structure(got) == jax.tree.structure(want), g.shares_h_terms
    for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(u, v, atol=1e-5, rtol=1e-5, err_msg=str(g.shares_h_terms))
