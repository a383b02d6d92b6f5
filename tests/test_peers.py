"""Tests of cgml_jax.peers: each loss against a hand-written numpy formula, BasisGAN's
stochastic filters, GAN loss directions, and every train step jitted on tiny modules."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cgml_jax.peers import basisgan, diversity, gan, methods, mrgan

EPS = 1e-9


def _key(seed):
  # RBG keys: threefry's initialisers cost seconds of XLA compile per module on CPU, and
  # these tests are compile-bound.
  return jax.random.key(seed, impl='rbg')


def _rng(seed=0):
  return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------
# MR-GAN losses against numpy.


def _np_gaussian(name, s, y, pm, plv):
  mu, var = s.mean(1), s.var(1, ddof=1)
  per_pixel = {
      'mcmle1': (mu - y) ** 2,
      'mcmle12': 0.5 * ((y - mu) ** 2 / (var + EPS) + np.log(var + EPS)),
      'mlmm1': (mu - pm) ** 2,
      'mlmm12': (mu - pm) ** 2 + (var - np.exp(plv)) ** 2,
  }[name]
  return per_pixel.reshape(len(s), -1).mean(1)


def _np_laplace(name, s, y, pm, pls):
  med = np.sort(s, axis=1)[:, (s.shape[1] - 1) // 2]   # lower middle value, as torch.median
  mad = np.abs(s - med[:, None]).mean(1)
  per_pixel = {
      'mcmle1': np.abs(y - med),
      'mcmle12': np.abs(y - med) / (mad + EPS) + np.log(mad + EPS),
      'mlmm1': (pm - med) ** 2,
      'mlmm12': (pm - med) ** 2 + (mad - np.exp(pls)) ** 2,
  }[name]
  return per_pixel.reshape(len(s), -1).mean(1)


@pytest.mark.parametrize('num_samples', [4, 5])   # even K: the lower of the two middle ones
@pytest.mark.parametrize('dist', mrgan.DISTRIBUTIONS)
@pytest.mark.parametrize('name', mrgan.LOSSES)
def test_mr_losses_match_numpy(name, dist, num_samples):
  r = _rng(1)
  s = r.normal(size=(3, num_samples, 4, 2)).astype(np.float32)
  y = r.normal(size=(3, 4, 2)).astype(np.float32)
  pm = r.normal(size=(3, 4, 2)).astype(np.float32)
  pl = r.normal(size=(3, 4, 2)).astype(np.float32) * 0.5
  ref = (_np_gaussian if dist == 'gaussian' else _np_laplace)(name, s, y, pm, pl)
  got = mrgan.mr_loss(name, dist, jnp.asarray(s), jnp.asarray(y), (jnp.asarray(pm),
                                                                    jnp.asarray(pl)))
  assert got.shape == (3,)
  np.testing.assert_allclose(np.asarray(got), ref, rtol=2e-5, atol=1e-6)


def test_laplace_detached_target_moves_every_sample():
  # The median alone would send gradient to one sample per pixel; the paper's target
  # t = sg(mean + m_target - median) sends the same gradient to all K of them.
  r = _rng(2)
  k, n = 5, 6
  s = jnp.asarray(r.normal(size=(1, k, n)), jnp.float32)
  y = jnp.asarray(r.normal(size=(1, n)), jnp.float32)
  med = np.median(np.asarray(s), axis=1)

  g1 = jax.jit(jax.grad(lambda s: mrgan.mlmm1_laplace(s, y).sum()))(s)
  np.testing.assert_allclose(np.asarray(g1), np.broadcast_to(2 * (med - y) / (k * n), (1, k, n)),
                             rtol=1e-5, atol=1e-7)
  g2 = jax.jit(jax.grad(lambda s: mrgan.mcmle1_laplace(s, y).sum()))(s)
  np.testing.assert_allclose(np.asarray(g2),
                             np.broadcast_to(np.sign(med - y) / (k * n), (1, k, n)), rtol=1e-5)


def test_laplace_even_k_uses_the_lower_median_and_its_gradient_sign():
  # One pixel, K = 4, samples {0, 1, 3, 4} (shuffled), y = 1.2 between the middle two.
  # Released code (torch.median): m = 1; numpy's convention: m = (1 + 3) / 2 = 2.
  # b = mean |s - m| = 6 / 4 = 1.5 for both; y~bar = 2.
  # MCMLE_1 = |y~bar - t| with t = sg(y~bar + y - m): value |y - m|, and each sample gets
  # sign(m - y) / K: lower m = 1 < y gives -1/4 (samples pushed up, towards y);
  # m = 2 > y gives +1/4 -- the opposite sign.
  s = jnp.asarray([3.0, 0.0, 4.0, 1.0]).reshape(1, 4, 1)
  y = jnp.asarray([[1.2]])
  k, b = 4, 1.5
  sorted_pos = np.array([2, 0, 3, 1])      # rank of each sample in s (0, 1, 3, 4 sorted)
  np.testing.assert_allclose(mrgan.sample_median(s), [[1.0]])
  np.testing.assert_allclose(mrgan.sample_median(s, 'mean'), [[2.0]])
  np.testing.assert_allclose(mrgan.sample_median(s[:, :3]), [[3.0]])   # odd K: one middle

  def grad(fn, **kw):
    v, g = jax.value_and_grad(lambda s: fn(s, y, **kw).sum())(s)
    return float(v), np.asarray(g).reshape(-1)

  for median, m, sign in (('lower', 1.0, -1.0), ('mean', 2.0, 1.0)):
    kw = {} if median == 'lower' else {'median': median}
    v1, g1 = grad(mrgan.mcmle1_laplace, **kw)
    np.testing.assert_allclose(v1, abs(1.2 - m), rtol=1e-6)
    np.testing.assert_allclose(g1, np.full(4, sign / k), rtol=1e-6)
    # MCMLE_1/2 = a / b + log b, a = |y~bar - t| (value |y - m|), gradient
    #   da/ds_k / b + (1/b - a/b^2) db/ds_k,  da/ds_k = sign / K,
    #   db/ds_k = (-1, -1, +1, +1) / 4 for the samples 0, 1, 3, 4 with either median
    #   (b is flat between the middle two; with m = 1 the sample 1 gets -1/4 through m).
    a = abs(1.2 - m)
    db = np.array([-1.0, -1.0, 1.0, 1.0]) / 4
    g12_sorted = (sign / k) / b + (1 / b - a / b ** 2) * db
    v12, g12 = grad(mrgan.mcmle12_laplace, **kw)
    np.testing.assert_allclose(v12, a / b + np.log(b), rtol=1e-6)
    np.testing.assert_allclose(g12, g12_sorted[sorted_pos], rtol=1e-5)
    # Default (released) median: every sample pushed up (-28/90, -2/90); numpy's: down.
    assert np.all(np.sign(g12) == sign), (median, g12)
  # The default is the released one, also through mr_loss.
  g = jax.grad(lambda s: mrgan.mr_loss('mcmle12', 'laplace', s, y).sum())(s)
  np.testing.assert_allclose(np.asarray(g).reshape(-1),
                             (np.array([-28.0, -28.0, -2.0, -2.0]) / 90)[sorted_pos],
                             rtol=1e-5)
  with pytest.raises(ValueError, match='median'):
    mrgan.mr_loss('mcmle1', 'laplace', s, y, median='upper')


def test_mlmm_does_not_train_the_predictor():
  r = _rng(3)
  s = jnp.asarray(r.normal(size=(2, 4, 3)), jnp.float32)
  pm, pl = jnp.zeros((2, 3)), jnp.zeros((2, 3))
  for dist in mrgan.DISTRIBUTIONS:
    g = jax.jit(jax.grad(lambda pm, pl: mrgan.mr_loss('mlmm12', dist, s, pm, (pm, pl)).sum(),
                         argnums=(0, 1)))(pm, pl)
    assert all(float(jnp.abs(a).max()) == 0.0 for a in g)


def test_mr_loss_rejects_bad_inputs():
  s, y = jnp.zeros((2, 1, 3)), jnp.zeros((2, 3))
  with pytest.raises(ValueError, match='K >= 2'):
    mrgan.mcmle1_gaussian(s, y)
  with pytest.raises(ValueError, match='prediction'):
    mrgan.mr_loss('mlmm1', 'gaussian', jnp.zeros((2, 3, 3)), y)


def test_predictor_nll_matches_numpy():
  r = _rng(4)
  c, s, y = (r.normal(size=(2, 3, 3)).astype(np.float32) for _ in range(3))
  gauss = (0.5 * ((y - c) ** 2 / np.exp(s) + s)).reshape(2, -1).mean(1)
  lap = (np.abs(y - c) / np.exp(s) + s).reshape(2, -1).mean(1)
  np.testing.assert_allclose(mrgan.gaussian_nll(c, s, y), gauss, rtol=1e-5)
  np.testing.assert_allclose(mrgan.laplace_nll(c, s, y), lap, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# DSGAN / MSGAN.


def test_dsgan_and_msgan_match_numpy():
  r = _rng(5)
  y1, y2 = (r.normal(size=(3, 4, 4, 2)).astype(np.float32) for _ in range(2))
  z1, z2 = (r.normal(size=(3, 5)).astype(np.float32) for _ in range(2))
  ratio = (np.abs(y1 - y2).reshape(3, -1).mean(1) /
           (np.abs(z1 - z2).mean(1) + 1e-5))
  np.testing.assert_allclose(diversity.dsgan_ratio(y1, y2, z1, z2), ratio, rtol=1e-5)
  tau = float(np.median(ratio))
  np.testing.assert_allclose(diversity.dsgan_loss(y1, y2, z1, z2, weight=2.0, tau=tau),
                             -2.0 * np.minimum(ratio, tau).mean(), rtol=1e-5)
  ms = np.abs(y1 - y2).mean() / np.abs(z1 - z2).mean()
  np.testing.assert_allclose(diversity.msgan_loss(y1, y2, z1, z2, weight=3.0),
                             3.0 / (ms + 1e-5), rtol=1e-5)
  # Both terms reward outputs that differ more: lower loss for a larger |y1 - y2|.
  for kind in diversity.KINDS:
    lo = diversity.diversity_loss(kind, y1, y1 + 0.1, z1, z2)
    hi = diversity.diversity_loss(kind, y1, y1 + 1.0, z1, z2)
    assert float(hi) < float(lo), kind


def test_dsgan_gradient_reaches_g_through_the_first_sample_only():
  # B = 1, three pixels: |y1 - y2| = (1, 3, 1), mean 5/3; |z1 - z2| = (1, 3), mean 2.
  # loss = -8 * (5/3) / (2 + 1e-5); d/dy1 = -8 * sign(y1 - y2) / (3 * (2 + 1e-5)),
  # with sign(y1 - y2) = (+1, -1, -1); y2 is detached as in the released code.
  y1 = jnp.asarray([[1.0, -2.0, 0.5]])
  y2 = jnp.asarray([[0.0, 1.0, 1.5]])
  z1, z2 = jnp.asarray([[0.0, 0.0]]), jnp.asarray([[1.0, 3.0]])
  denom = 2.0 + 1e-5
  hand_g1 = -8.0 * np.array([[1.0, -1.0, -1.0]]) / (3 * denom)
  for fn in (lambda a, b: diversity.dsgan_loss(a, b, z1, z2),
             lambda a, b: diversity.diversity_loss('dsgan', a, b, z1, z2)):
    v, (g1, g2) = jax.value_and_grad(fn, argnums=(0, 1))(y1, y2)
    np.testing.assert_allclose(float(v), -8.0 * (5 / 3) / denom, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g1), hand_g1, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(g2), np.zeros((1, 3)))
  # The literal Eq. 3 reading, kept as an option: the mirror gradient on y2 as well.
  g1, g2 = jax.grad(lambda a, b: diversity.dsgan_loss(a, b, z1, z2, detach_second=False),
                    argnums=(0, 1))(y1, y2)
  np.testing.assert_allclose(np.asarray(g1), hand_g1, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g2), -hand_g1, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# GAN losses and discriminators.


@pytest.mark.parametrize('kind', gan.GAN_LOSSES)
def test_gan_loss_directions(kind):
  d_loss, g_loss = gan.gan_losses(kind)
  right, wrong = jnp.full((2, 3), 4.0), jnp.full((2, 3), -4.0)
  # D is right when it scores real high and fake low.
  assert float(d_loss(right, wrong)) < float(d_loss(wrong, right))
  # G is better off when D scores its fakes as real.
  assert float(g_loss(right)) < float(g_loss(wrong))


def test_ns_losses_match_bce():
  r = _rng(6)
  lr, lf = r.normal(size=(2, 3, 3, 1)), r.normal(size=(2, 3, 3, 1))
  sig = lambda a: 1 / (1 + np.exp(-a))
  d = 0.5 * (-np.log(sig(lr)).mean() - np.log(1 - sig(lf)).mean())
  np.testing.assert_allclose(gan.ns_d_loss(lr, lf), d, rtol=1e-5)
  np.testing.assert_allclose(gan.ns_g_loss(lf), -np.log(sig(lf)).mean(), rtol=1e-5)


def test_patchgan_is_resolution_aware():
  assert [gan.patch_receptive_field(n) for n in (1, 2, 3)] == [16, 34, 70]
  for size, n, out in [(256, 3, 30), (64, 3, 6), (32, 2, 6), (16, 1, 6), (8, 1, 2)]:
    assert gan.patch_num_down(size, size) == n
    d = gan.PatchDiscriminator(features=2, norm='none')
    img = jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
    logits, _ = jax.eval_shape(
        lambda a, b: d.init_with_output(_key(0), a, b), img, img)
    assert logits.shape == (1, out, out, 1), (size, logits.shape)
  ce = gan.ContextEncoderDiscriminator(features=2)
  img = jax.ShapeDtypeStruct((3, 64, 64, 3), jnp.float32)
  logits, _ = jax.eval_shape(
      lambda a: ce.init_with_output(_key(0), a, a), img)
  assert logits.shape == (3,)


def test_patchgan_conditions_on_x_only_when_asked():
  r = _rng(11)
  x1, x2, y = (jnp.asarray(r.normal(size=(2, 8, 8, 1)), jnp.float32) for _ in range(3))
  for conditional in (True, False):
    d = gan.PatchDiscriminator(features=2, norm='none', conditional=conditional)
    v = jax.jit(d.init)(_key(0), x1, y)
    apply = jax.jit(d.apply)
    moved = float(jnp.abs(apply(v, x1, y) - apply(v, x2, y)).max())
    assert (moved > 0) == conditional


def test_hyper_validation():
  with pytest.raises(ValueError, match='z_dim > 0'):
    methods.GANHyper(z_dim=0, diversity='msgan')
  with pytest.raises(ValueError, match='unknown GAN loss'):
    methods.GANHyper(gan_loss='wgan')
  with pytest.raises(ValueError, match='unknown MR loss'):
    methods.MRHyper(loss='mlmm2')
  # MR_2 with K <= 3: E[1 / sample variance] is infinite (the 4.5e5 smoke loss).
  for dist in mrgan.DISTRIBUTIONS:
    with pytest.raises(ValueError, match='num_samples'):
      methods.MRHyper(loss='mcmle12', dist=dist, num_samples=3)
  methods.MRHyper(loss='mcmle12', num_samples=4)
  methods.MRHyper(loss='mlmm12', num_samples=2)    # no division: K = 2 is fine


def test_mcmle12_with_two_samples_is_heavy_tailed_and_four_is_not():
  # Samples and target from the same N(0, 0.03^2): the loss should be about
  # 1/2 (1 + 1/K) + log 0.03 ~ -2.9 ... but for K = 2 a few near-coincident pairs dominate.
  r = _rng(3)
  y = r.normal(0, 0.03, (16, 784)).astype(np.float32)
  l2 = float(jnp.mean(mrgan.mcmle12_gaussian(jnp.asarray(r.normal(0, 0.03, (16, 2, 784)),
                                                         jnp.float32), y)))
  l4 = float(jnp.mean(mrgan.mcmle12_gaussian(jnp.asarray(r.normal(0, 0.03, (16, 4, 784)),
                                                         jnp.float32), y)))
  assert l2 > 50.0 and -3.0 < l4 < 0.0, (l2, l4)


class _ConstGenerator(nn.Module):
  """G that outputs the constant 3 in every channel (and has one parameter)."""
  out: int = 2

  @nn.compact
  def __call__(self, h, z, *, train=False):
    b = self.param('b', nn.initializers.zeros, ())
    return jnp.full(h[0].shape[:3] + (self.out,), 3.0) + b


def test_predictor_squashes_the_centre_only():
  x = jnp.zeros((2, 8, 8, 1))
  p = mrgan.Predictor(TinyEncoder(), _ConstGenerator(), centre_activation='tanh')
  centre, log_disp = p.apply(p.init(_key(0), x), x)
  np.testing.assert_allclose(centre, np.tanh(3.0), rtol=1e-6)
  np.testing.assert_allclose(log_disp, 3.0)      # unbounded: sigma^2 = e^3 is reachable
  with pytest.raises(ValueError, match='centre_activation'):
    bad = mrgan.Predictor(TinyEncoder(), _ConstGenerator(), centre_activation='relu')
    bad.init(_key(0), x)


# ---------------------------------------------------------------------------------------
# BasisGAN.


def test_basis_conv_is_stochastic_in_z_only():
  r = _rng(7)
  x = jnp.asarray(r.normal(size=(2, 6, 6, 2)), jnp.float32)
  z1, z2 = (jnp.asarray(r.normal(size=(2, 64)), jnp.float32) for _ in range(2))
  conv = basisgan.BasisConv(features=3, kernel_size=3, num_bases=5)
  variables = jax.jit(conv.init)(_key(0), x, z1)
  apply = jax.jit(conv.apply)
  out1, out1b, out2 = (apply(variables, x, z) for z in (z1, z1, z2))
  np.testing.assert_array_equal(out1, out1b)                 # same z, same weights
  assert float(jnp.abs(out1 - out2).mean()) > 1e-2 * float(jnp.abs(out1).mean())
  # Example 0 uses z[0] only.
  out_mixed = apply(variables, x, z1.at[1].set(z2[1]))
  np.testing.assert_allclose(out_mixed[0], out1[0], rtol=1e-6)
  # The paper's 64 + 64 basis generator (Wang et al. 2020, Appendix E, Table A.1).
  n_basis = sum(a.size for a in jax.tree.leaves(variables['params']['basis_generator']))
  assert n_basis == 64 * 64 + 64 + 64 * 45 + 45


def test_basis_conv_equals_conv_with_filters_psi_times_a():
  r = _rng(8)
  x = jnp.asarray(r.normal(size=(2, 5, 5, 3)), jnp.float32)
  z = jnp.asarray(r.normal(size=(2, 4)), jnp.float32)
  conv = basisgan.BasisConv(features=2, kernel_size=3, num_bases=4, strides=2)
  variables = jax.jit(conv.init)(_key(1), x, z)
  p = variables['params']
  p = {**p, 'bias': jnp.asarray(r.normal(size=(2,)), jnp.float32)}
  psi = basisgan.BasisGenerator(3, 4).apply({'params': p['basis_generator']}, z)
  w = basisgan.explicit_filters(psi, p['coefficients'])     # (B, 3, 3, C, C')
  ref = jnp.stack([
      jax.lax.conv_general_dilated(x[i:i + 1], w[i], (2, 2), 'SAME',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))[0]
      for i in range(2)]) + p['bias']
  np.testing.assert_allclose(jax.jit(conv.apply)({'params': p}, x, z), ref, rtol=1e-4,
                             atol=1e-5)
  # 'VALID': no padding, as the conv of the same filters without padding.
  valid = conv.clone(padding='VALID')
  ref = jnp.stack([
      jax.lax.conv_general_dilated(x[i:i + 1], w[i], (2, 2), 'VALID',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))[0]
      for i in range(2)]) + p['bias']
  out = jax.jit(valid.apply)({'params': p}, x, z)
  assert out.shape == (2, 2, 2, 2)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_basis_unet_generator_diverse_in_z():
  r = _rng(9)
  h = (jnp.asarray(r.normal(size=(2, 2, 2, 8)), jnp.float32),
       jnp.asarray(r.normal(size=(2, 4, 4, 4)), jnp.float32))   # any order
  z1, z2 = (jnp.asarray(r.normal(size=(2, 8)), jnp.float32) for _ in range(2))
  g = basisgan.BasisUNetGenerator(out_channels=3, norm='none', latent_dim=8, basis_hidden=8)
  assert g.num_basis_convs(h) == 1          # 2 decoder convs, every 2nd a BasisConv
  v = jax.jit(g.init)(_key(0), h, z1)
  apply = jax.jit(g.apply)
  y1, y1b, y2 = (apply(v, h, z) for z in (z1, z1, z2))
  assert y1.shape == (2, 8, 8, 3)
  np.testing.assert_array_equal(y1, y1b)
  assert float(jnp.abs(y1 - y2).mean()) > 1e-3
  assert 'BasisConv_0' in v['params'] and 'Conv_0' in v['params']   # they alternate
  # A padded encoder (e.g. 28 -> 32): the decoded map is centre-cropped to output_size.
  g6 = g.clone(output_size=6)
  y6 = jax.jit(g6.apply)(v, h, z1)
  np.testing.assert_allclose(y6, y1[:, 1:7, 1:7], rtol=1e-6)


def _has_spectral_norm(variables) -> bool:
  """Whether any variable lives under a SpectralNorm wrapper (its u and sigma)."""
  return any('SpectralNorm' in jax.tree_util.keystr(path)
             for path, _ in jax.tree_util.tree_leaves_with_path(variables))


def _calls(module_types):
  """An interceptor recording (module, args) of every __call__ of the given types."""
  seen = []

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and isinstance(context.module, module_types):
      seen.append((context.module, args))
    return next_fun(*args, **kwargs)
  return seen, interceptor


@pytest.mark.parametrize('per_layer', [True, False])
def test_each_basis_generator_reads_its_own_latent_unless_shared(per_layer):
  r = _rng(11)
  h = (jnp.asarray(r.normal(size=(2, 4, 4, 8)), jnp.float32),)
  g = basisgan.BasisResNetGenerator(out_channels=1, num_blocks=3, latent_dim=4, basis_hidden=4,
                                    per_layer_latents=per_layer, norm='none')
  n = 3 * 4 if per_layer else 4
  assert basisgan.noise_dim(basisgan.BasisResNetEncoder(features=2), g,
                            jnp.zeros((2, 16, 16, 1))) == n
  z = jnp.asarray(r.normal(size=(2, n)), jnp.float32)
  v = jax.jit(g.init)(_key(0), h, z)
  seen, interceptor = _calls(basisgan.BasisGenerator)
  with nn.intercept_methods(interceptor):
    g.apply(v, h, z)
  latents = [args[0] for _, args in seen]
  assert len(latents) == 3
  for i, zi in enumerate(latents):
    np.testing.assert_array_equal(zi, z[:, 4 * i:4 * i + 4] if per_layer else z)
  differ = [float(jnp.abs(latents[i] - latents[j]).max()) > 0 for i, j in ((0, 1), (1, 2))]
  assert differ == [per_layer, per_layer]
  with pytest.raises(ValueError, match=f'z of shape \\(B, {n}\\)'):
    g.apply(v, h, jnp.zeros((2, n + 1)))


def test_resnet_generator_shapes_and_alternating_convs():
  r = _rng(12)
  x = jnp.asarray(r.normal(size=(2, 10, 10, 3)), jnp.float32)   # padded to 12, cropped back
  enc = basisgan.BasisResNetEncoder(features=2)
  h = jax.jit(lambda x: enc.init_with_output(_key(0), x)[0])(x)
  assert len(h) == 1 and h[0].shape == (2, 3, 3, 8)            # 2 stride-2 convs, 4 ngf
  g = basisgan.BasisResNetGenerator(out_channels=2, num_blocks=3, latent_dim=4, basis_hidden=4,
                                    output_size=10)
  z = jnp.asarray(r.normal(size=(2, 12)), jnp.float32)
  v = jax.jit(g.init)(_key(1), h, z)
  seen, interceptor = _calls((basisgan.BasisConv, nn.Conv, nn.ConvTranspose))
  with nn.intercept_methods(interceptor):
    y = g.apply(v, h, z)
  assert y.shape == (2, 10, 10, 2) and float(jnp.abs(y).max()) <= 1.0
  kinds = [type(m).__name__ for m, _ in seen]
  # Inside every residual block a BasisConv then a regular conv, then the up-sampling.
  assert kinds == ['BasisConv', 'Conv'] * 3 + ['ConvTranspose', 'ConvTranspose', 'Conv']
  assert not _has_spectral_norm(v)
  g_sn = g.clone(spectral_norm=True, lipschitz=2.0)
  v_sn = jax.jit(g_sn.init)(_key(1), h, z)
  assert _has_spectral_norm(v_sn)


def test_basisgan_resnet_k_samples_differ_per_input():
  batch = _batch()
  enc = basisgan.BasisResNetEncoder(features=2, norm='none')
  gen = basisgan.BasisResNetGenerator(out_channels=1, num_blocks=2, latent_dim=4,
                                      basis_hidden=4, norm='none', output_size=8)
  z_dim = basisgan.noise_dim(enc, gen, batch['x'])
  assert z_dim == 8
  st = methods.basisgan_state(_key(0), batch['x'], batch['y'], encoder=enc, generator=gen,
                              disc=gan.PatchDiscriminator(features=2, norm='none'),
                              hp=methods.GANHyper(z_dim=z_dim), tx_g=FAST, tx_d=FAST)
  st, first, last = _run(methods.gan_step, st, batch, 6, 'recon')
  assert last < first
  s = _sample(methods.gan_sample, st, batch['x'], 3)
  assert s.shape == (4, 3, 8, 8, 1)
  spread = jnp.abs(s[:, :, None] - s[:, None]).reshape(4, 9, -1).max(axis=-1)
  assert float(spread[:, [1, 2, 5]].min()) > 0                # every pair of the K differs


# ---------------------------------------------------------------------------------------
# Train steps on tiny modules.


class TinyEncoder(nn.Module):
  """H: (B, 8, 8, C) -> (h1 at 4x4, h2 at 2x2), like the project's U-Net encoder."""

  @nn.compact
  def __call__(self, x, *, train=False):
    h1 = nn.relu(nn.Conv(4, (3, 3), strides=2)(x))
    return h1, nn.relu(nn.Conv(4, (3, 3), strides=2)(h1))


class TinyGenerator(nn.Module):
  """G(h, z): noise broadcast onto the bottleneck, two upsamplings, tanh."""
  out: int = 1

  @nn.compact
  def __call__(self, h, z, *, train=False):
    h1, h2 = h
    u = jnp.concatenate([h2, jnp.broadcast_to(z[:, None, None], h2.shape[:3] + z.shape[-1:])],
                        -1)
    u = jnp.repeat(jnp.repeat(u, 2, axis=1), 2, axis=2)
    u = nn.relu(nn.Conv(4, (3, 3))(jnp.concatenate([u, h1], -1)))
    u = jnp.repeat(jnp.repeat(u, 2, axis=1), 2, axis=2)
    return jnp.tanh(nn.Conv(self.out, (3, 3))(u))


def _batch(b=4):
  r = _rng(10)
  x = jnp.asarray(r.normal(size=(b, 8, 8, 1)), jnp.float32)
  mask = jnp.zeros((b, 8, 8, 1)).at[:, 2:6, 2:6].set(1.0)
  return {'x': x, 'y': jnp.tanh(2 * x), 'mask': mask}


def _run(step, state, batch, n, metric):
  """n jitted steps with one fixed key (fixed noise), returns (state, first, last metric)."""
  step = jax.jit(step)
  key = _key(3)
  values = []
  for _ in range(n):
    state, m = step(state, batch, key)
    assert all(np.isfinite(float(v)) for v in m.values()), m
    values.append(float(m[metric]))
  return state, values[0], values[-1]


FAST = optax.adam(1e-2)


def _sample(sampler, state, x, k):
  return jax.jit(sampler, static_argnums=3)(state, x, _key(0), k)


def test_l1_regression_step_and_sample():
  batch = _batch()
  st = methods.RegressionState.create(_key(0), batch['x'], encoder=TinyEncoder(),
                                      generator=TinyGenerator(), tx=FAST)
  st, first, last = _run(methods.l1_step, st, batch, 8, 'E')
  assert last < 0.9 * first
  s = _sample(methods.l1_sample, st, batch['x'], 3)
  assert s.shape == (4, 3, 8, 8, 1)
  np.testing.assert_array_equal(s[:, 0], s[:, 2])


def test_context_encoder_step_lowers_masked_l2():
  batch = _batch()
  st = methods.context_encoder_state(
      _key(0), batch['x'], batch['y'], encoder=TinyEncoder(),
      generator=TinyGenerator(), disc=gan.ContextEncoderDiscriminator(features=2),
      tx_g=FAST, tx_d=FAST)
  assert st.hp.z_dim == 0 and st.recon_fn is methods.l2_error
  st, first, last = _run(methods.gan_step, st, batch, 8, 'recon')
  assert last < 0.9 * first
  s = _sample(methods.gan_sample, st, batch['x'], 2)
  np.testing.assert_array_equal(s[:, 0], s[:, 1])            # no noise, no diversity


def test_masked_l2_ignores_context():
  y = jnp.zeros((1, 4, 4, 1))
  mask = jnp.zeros((1, 4, 4, 1)).at[:, :2].set(1.0)
  y_hat = jnp.ones_like(y).at[:, :2].set(0.5)                # error 0.25 in, 1 outside
  np.testing.assert_allclose(methods.l2_error(y_hat, {'y': y, 'mask': mask}), [0.25])


def test_pix2pix_step_with_dsgan_and_batchnorm_patchgan():
  batch = _batch()
  hp = methods.GANHyper(z_dim=2, diversity='dsgan')
  st = methods.pix2pix_state(
      _key(0), batch['x'], batch['y'], encoder=TinyEncoder(),
      generator=TinyGenerator(), disc=gan.PatchDiscriminator(features=2, norm='batch'),
      hp=hp, tx_g=FAST, tx_d=FAST)
  mean_before = st.stats['disc']['batch_stats']
  st, first, last = _run(methods.gan_step, st, batch, 8, 'recon')
  assert last < 0.9 * first
  # D's BatchNorm statistics were threaded through the step.
  changed = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), mean_before,
                         st.stats['disc']['batch_stats'])
  assert max(jax.tree.leaves(changed)) > 0
  _, m = jax.jit(methods.gan_step)(st, batch, _key(4))
  assert float(m['diversity']) < 0                           # -lambda * ratio
  s = _sample(methods.gan_sample, st, batch['x'], 3)
  assert s.shape == (4, 3, 8, 8, 1) and float(jnp.abs(s[:, 0] - s[:, 1]).max()) > 0


def test_basisgan_step_lowers_l1_and_samples_differ():
  batch = _batch()
  st = methods.basisgan_state(
      _key(0), batch['x'], batch['y'], encoder=TinyEncoder(),
      generator=basisgan.BasisUNetGenerator(out_channels=1, norm='none', latent_dim=8,
                                            basis_hidden=4),
      disc=gan.PatchDiscriminator(features=2, norm='none'), tx_g=FAST, tx_d=FAST)
  st, first, last = _run(methods.gan_step, st, batch, 8, 'recon')
  assert last < 0.9 * first
  s = _sample(methods.gan_sample, st, batch['x'], 3)
  assert s.shape == (4, 3, 8, 8, 1) and float(jnp.abs(s[:, 0] - s[:, 1]).max()) > 0


def test_mrgan_predictor_then_generator_steps():
  batch = _batch()
  pst = methods.PredictorState.create(
      _key(0), batch['x'], dist='laplace',
      predictor=mrgan.Predictor(TinyEncoder(), TinyGenerator(out=2)), tx=FAST)
  pst, first, last = _run(methods.predictor_step, pst, batch, 8, 'nll')
  assert last < 0.9 * first
  centre, log_scale = jax.jit(methods.predict_moments)(pst, batch['x'])
  assert centre.shape == log_scale.shape == batch['y'].shape

  with pytest.raises(ValueError, match='predictor_state'):
    methods.MRGANState.create(_key(0), batch['x'], batch['y'],
                              encoder=TinyEncoder(), generator=TinyGenerator(),
                              hp=methods.MRHyper(dist='laplace'))
  hp = methods.MRHyper(z_dim=2, loss='mlmm12', dist='laplace', num_samples=4,
                       diversity='msgan')
  st = methods.MRGANState.create(
      _key(1), batch['x'], batch['y'], encoder=TinyEncoder(),
      generator=TinyGenerator(), disc=gan.PatchDiscriminator(features=2, norm='none'),
      hp=hp, predictor_state=pst, tx_g=FAST, tx_d=FAST)
  # 12 steps: with the lower median (released code's) the MR value first rises for a few
  # steps while the MSGAN and GAN terms spread the samples, then falls (0.38 -> 0.28).
  st, first, last = _run(methods.mrgan_step, st, batch, 12, 'mr')
  assert last < 0.9 * first
  # The predictor is frozen: its variables are the ones it was trained to.
  jax.tree.map(np.testing.assert_array_equal, st.predictor_vars['params'], pst.params)
  assert _sample(methods.mrgan_sample, st, batch['x'], 5).shape == (4, 5, 8, 8, 1)


# ---------------------------------------------------------------------------------------
# MR-GAN as its App. B.2 builds it: spatial noise, sub-batches, predictor selection,
# input normalisation.


def test_spatial_noise_maps_of_the_u_net_decoder():
  from cgml_jax.models import conv
  enc, gen, _ = conv.build_conv_models(16, 1, 1, 4, base_channels=4, max_channels=8,
                                       latent_hidden=(4,))
  gen = gen.clone(z_maps=3)
  x = jnp.asarray(_rng(20).normal(size=(2, 16, 16, 1)), jnp.float32)
  h = jax.eval_shape(lambda x: enc.init_with_output(_key(0), x)[0], x)
  # Encoder maps 8, 4, 2: the decoder reads 2x2 (bottleneck), 4x4, 8x8, coarsest first.
  assert conv.z_map_sizes(h, 3) == [(2, 2), (4, 4), (8, 8)]
  assert conv.z_map_sizes(h, 5) == [(2, 2), (4, 4), (8, 8)]   # only three layers here
  z_dim = 32 * (4 + 16 + 64)
  cut = conv._spatial_z(jnp.arange(2 * z_dim, dtype=jnp.float32).reshape(2, z_dim),
                        conv.z_map_sizes(h, 3))
  assert [c.shape for c in cut] == [(2, 2, 2, 32), (2, 4, 4, 32), (2, 8, 8, 32)]
  np.testing.assert_array_equal(cut[1][1].ravel(), np.arange(z_dim + 128, z_dim + 640))
  hv = jax.jit(enc.init_with_output)(_key(0), x)[0]
  v = jax.jit(gen.init)(_key(1), hv, jnp.zeros((2, z_dim)))
  apply = jax.jit(lambda z: gen.apply(v, hv, z))
  z = jnp.asarray(_rng(21).normal(size=(2, z_dim)), jnp.float32)
  y = apply(z)
  for lo, hi in ((0, 128), (128, 640), (640, z_dim)):     # every map reaches the output
    assert float(jnp.abs(apply(z.at[:, lo:hi].set(0.0)) - y).max()) > 1e-6
  with pytest.raises(ValueError, match='does not split into maps'):
    gen.apply(v, hv, jnp.zeros((2, z_dim + 1)))


class _NoiseEcho(nn.Module):
  """G(h, z) = z as a (B, 1, 1, n) image plus a parameter: exposes the noise a sampler draws."""

  @nn.compact
  def __call__(self, h, z, *, train=False):
    del h
    return z[:, None, None, :] + self.param('b', nn.initializers.zeros, ())


def test_mrgan_samples_draw_independent_standard_normal_noise():
  batch = _batch()
  st = methods.MRGANState.create(
      _key(0), batch['x'], batch['y'], encoder=TinyEncoder(), generator=_NoiseEcho(),
      disc=gan.PatchDiscriminator(features=2, norm='none'),
      hp=methods.MRHyper(z_dim=2688, loss='mcmle1'))
  z = np.asarray(_sample(methods.mrgan_sample, st, batch['x'], 5))[:, :, 0, 0]  # (4, 5, n)
  assert z.shape == (4, 5, 2688)
  flat = z.ravel()
  # 53760 draws: mean within 5 sigma of 0, variance and kurtosis of N(0, 1).
  assert abs(flat.mean()) < 5 / np.sqrt(flat.size)
  assert abs(flat.var() - 1) < 0.03 and abs(np.mean(flat ** 4) - 3) < 0.15
  # Samples of one input, and inputs, get different and uncorrelated noise.
  assert abs(np.corrcoef(z[0, 0], z[0, 1])[0, 1]) < 0.1
  assert abs(np.corrcoef(z[0, 0], z[1, 0])[0, 1]) < 0.1
  assert np.all(np.abs(z[:, 0] - z[:, 1]).max(axis=-1) > 0)


_CALLS = {'p': [], 'enc': [], 'disc': []}


class _Recording(nn.Module):
  """Wraps a module and records the batch size of every call in _CALLS[tag] (at trace)."""
  inner: nn.Module
  tag: str

  @nn.compact
  def __call__(self, *args, train=False):
    _CALLS[self.tag].append(jax.tree.leaves(args)[0].shape[0])
    return self.inner(*args, train=train)


def test_mrgan_step_uses_the_papers_sub_batches():
  r = _rng(22)
  x = jnp.asarray(r.normal(size=(16, 8, 8, 1)), jnp.float32)
  batch = {'x': x, 'y': jnp.tanh(2 * x)}
  p_log, enc_log, disc_log = _CALLS['p'], _CALLS['enc'], _CALLS['disc']
  pst = methods.PredictorState.create(
      _key(0), x, predictor=_Recording(mrgan.Predictor(TinyEncoder(), TinyGenerator(out=2)),
                                       'p'), tx=FAST, batch_size=12)
  jax.jit(methods.predictor_step)(pst, batch, _key(1))
  assert p_log[-1] == 12                                       # P: its own batch
  hp = methods.MRHyper(z_dim=2, num_samples=5, disc_batch=10, gen_batch=4)
  st = methods.MRGANState.create(
      _key(1), x, batch['y'], encoder=_Recording(TinyEncoder(), 'enc'),
      generator=TinyGenerator(),
      disc=_Recording(gan.PatchDiscriminator(features=2, norm='none'), 'disc'),
      hp=hp, predictor_state=pst, tx_g=FAST, tx_d=FAST)
  p_log.clear(), enc_log.clear(), disc_log.clear()
  jax.jit(methods.mrgan_step)(st, batch, _key(2))
  assert sorted(enc_log) == [4, 10]                  # H for D's fakes, H for G's samples
  assert sorted(disc_log) == [10, 10, 20]            # D: real, fake; G's loss: 4 x K
  assert p_log == [4]                                # P's moments for G's inputs
  with pytest.raises(ValueError, match='does not fit a batch of 8'):
    jax.jit(methods.mrgan_step)(st, jax.tree.map(lambda a: a[:8], batch), _key(2))


def test_predictor_kept_at_its_lowest_validation_nll():
  # Training targets 1, held-out targets 0.3: the predicted mean passes 0.3 on its way to
  # 1 while the predicted variance shrinks, so the validation NLL falls, then rises.
  r = _rng(23)
  x = jnp.asarray(r.normal(size=(8, 8, 8, 1)), jnp.float32)
  train = {'x': x, 'y': jnp.ones_like(x)}
  val = {'x': x, 'y': jnp.full_like(x, 0.3)}
  pst = methods.PredictorState.create(
      _key(0), x, predictor=mrgan.Predictor(TinyEncoder(), TinyGenerator(out=2)), tx=FAST)

  def batches():
    while True:
      yield train

  best, info = methods.train_predictor(pst, batches(), val, max_steps=400, eval_every=5,
                                       patience=3)
  curve = np.asarray(info['predictor_val_curve'])
  steps, nll = curve[:, 0], curve[:, 1]
  assert info['predictor_steps'] < 400 and info['predictor_steps'] == steps[-1]  # stopped
  assert 5 <= info['predictor_best_step'] < info['predictor_steps']
  assert nll[-1] > info['predictor_val_nll'] == nll.min()
  assert int(best.step) == info['predictor_best_step']
  np.testing.assert_allclose(float(methods.predictor_nll(best, val)),
                             info['predictor_val_nll'], rtol=1e-5)


def test_input_statistics_and_normalisation():
  r = _rng(24)
  xs = [np.stack([r.normal(1.0, 3.0, (5, 4, 4)), r.normal(-2.0, 0.5, (5, 4, 4)),
                  np.full((5, 4, 4), 0.7)], -1) for _ in range(3)]
  stats = mrgan.channel_stats(iter(xs))
  allx = np.concatenate(xs).reshape(-1, 3)
  np.testing.assert_allclose(stats['mean'], allx.mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats['std'][:2], allx.std(0)[:2], rtol=1e-5)
  assert float(stats['std'][2]) == pytest.approx(1e-6)     # constant channel: the floor
  z = np.asarray(mrgan.normalize_inputs(jnp.asarray(np.concatenate(xs), jnp.float32), stats))
  np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(z.reshape(-1, 3).std(0)[:2], 1.0, rtol=1e-4)
  np.testing.assert_allclose(z[..., 2], 0.0, atol=1e-5)
  # The state normalises raw inputs before H: raw x with statistics = normalised x without.
  batch = _batch()
  s1 = {'mean': jnp.asarray([0.5]), 'std': jnp.asarray([2.0])}
  st = methods.MRGANState.create(
      _key(0), batch['x'], batch['y'], encoder=TinyEncoder(), generator=TinyGenerator(),
      disc=gan.PatchDiscriminator(features=2, norm='none'),
      hp=methods.MRHyper(z_dim=2, loss='mcmle1'), input_norm=s1)
  y_raw = _sample(methods.mrgan_sample, st, batch['x'], 2)
  y_pre = _sample(methods.mrgan_sample, st.replace(input_norm=None),
                  (batch['x'] - 0.5) / 2.0, 2)
  np.testing.assert_allclose(y_raw, y_pre, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(y_raw - _sample(methods.mrgan_sample, st.replace(input_norm=None),
                                       batch['x'], 2)).max()) > 1e-4
