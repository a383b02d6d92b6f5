"""The fast 4x4 layers compute the plain flax layers' function, values and gradients."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgml_jax.models.layers import (
  Conv4x4Down,
  ConvTranspose4x4Up,
  conv4x4_down,
  conv4x4_up,
  conv4x4_up_terms,
)
from cgml_jax.models.lipschitz import SpectralNorm

TOL = 1e-5


def plain_down(features):
  return nn.Conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))


def plain_up(features):
  return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)))


PAIRS = {'down': (plain_down, Conv4x4Down), 'up': (plain_up, ConvTranspose4x4Up)}
# (B, H, W, C, O): tiny maps (matmul path under 'auto'), larger ones (conv path), non-square.
SHAPES = [(2, 2, 2, 5, 3), (2, 4, 4, 3, 4), (2, 6, 4, 3, 2)]


@jax.jit
def _random_like(key, tree):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten([jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])


def _assert_close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=TOL, rtol=TOL)


@pytest.mark.parametrize('kind', ['down', 'up'])
@pytest.mark.parametrize('impl', ['matmul', 'conv'])  # 'auto' picks one of these
@pytest.mark.parametrize('shape', SHAPES)
def test_matches_plain_layer(kind, impl, shape):
  b, h, w, c, o = shape
  plain_cls, fast_cls = PAIRS[kind]
  plain, fast = plain_cls(o), fast_cls(o, impl=impl)
  kx, kp, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (b, h, w, c))
  v_plain = jax.jit(plain.init)(kp, x)
  v_fast = jax.jit(fast.init)(kp, x)
  # Same names, shapes and initial values: SpectralNorm and checkpoints see no difference.
  _assert_close(v_plain, v_fast)
  assert jax.tree.structure(v_plain) == jax.tree.structure(v_fast)
  # Random (not initial) weights, so zero biases cannot hide a bias bug.
  v = _random_like(kp, v_plain)
  cot = jax.random.normal(kg, jax.eval_shape(plain.apply, v, x).shape)

  # One compilation per module instead of one per eager op.
  @functools.partial(jax.jit, static_argnums=2)
  def value_and_grads(v, x, fast_layer: bool):
    module = fast if fast_layer else plain
    y, vjp = jax.vjp(module.apply, v, x)
    return y, vjp(cot)

  y_plain, g_plain = value_and_grads(v, x, False)
  y_fast, g_fast = value_and_grads(v, x, True)
  assert y_fast.shape == y_plain.shape
  _assert_close(y_plain, y_fast)
  _assert_close(g_plain, g_fast)


@pytest.mark.parametrize('kind', ['down', 'up'])
@pytest.mark.parametrize('impl', ['matmul', 'conv'])
def test_matches_plain_layer_under_spectral_norm(kind, impl):
  plain_cls, fast_cls = PAIRS[kind]
  plain = SpectralNorm(plain_cls(4), lipschitz=2.0)
  fast = SpectralNorm(fast_cls(4, impl=impl), lipschitz=2.0)
  kx, kp, kg = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(kx, (2, 4, 4, 3))
  v = jax.jit(lambda k, x: plain.init(k, x, update_stats=False))(kp, x)
  v = {'params': _random_like(kp, v['params']), 'batch_stats': v['batch_stats']}
  assert jax.tree.structure(jax.eval_shape(
      lambda k, x: fast.init(k, x, update_stats=False), kp, x)) == jax.tree.structure(v)

  def loss(module, params, x):
    y, stats = module.apply({'params': params, 'batch_stats': v['batch_stats']}, x,
                            update_stats=True, mutable=['batch_stats'])
    return jnp.sum(y * jax.random.normal(kg, y.shape)), stats

  run = jax.jit(lambda m, p, x: jax.value_and_grad(lambda p, x: loss(m, p, x), argnums=(0, 1),
                                                    has_aux=True)(p, x), static_argnums=0)
  (l_p, s_p), g_p = run(plain, v['params'], x)
  (l_f, s_f), g_f = run(fast, v['params'], x)
  _assert_close(l_p, l_f)
  _assert_close(s_p, s_f)  # power-iteration updates
  _assert_close(g_p, g_f)


def test_up_is_pytorch_conv_transpose_shape():
  # PyTorch ConvTranspose2d(4, stride 2, padding 1) doubles the size.
  y = conv4x4_up(jnp.ones((1, 3, 5, 2)), jnp.ones((4, 4, 2, 7)))
  assert y.shape == (1, 6, 10, 7)


def test_shape_errors_name_the_shape():
  with pytest.raises(ValueError, match=r'\(1, 5, 4, 2\)'):
    conv4x4_down(jnp.ones((1, 5, 4, 2)), jnp.ones((4, 4, 2, 3)))
  with pytest.raises(ValueError, match=r'\(4, 4, 3, 3\)'):
    conv4x4_up(jnp.ones((1, 4, 4, 2)), jnp.ones((4, 4, 3, 3)))
  with pytest.raises(ValueError, match=r'\(4, 4, 2\)'):
    Conv4x4Down(3).init(jax.random.key(0), jnp.ones((4, 4, 2)))
  with pytest.raises(ValueError, match='impl'):
    conv4x4_up(jnp.ones((1, 4, 4, 2)), jnp.ones((4, 4, 2, 3)), impl='fft')


@pytest.mark.parametrize('impl', ['matmul', 'conv', 'plain'])
def test_up_channel_parts_with_broadcast_batch_match_concat(impl):
  # Parts (B K, ...), (B, ...) and a spatially constant (B K, ...) map, as G passes them:
  # the same function as the plain layer on concat(part_1, repeat(part_2, K), part_3).
  b, k, h, w = 2, 3, 2, 3
  keys = jax.random.split(jax.random.key(2), 5)
  parts = [jax.random.normal(keys[0], (b * k, h, w, 4)), jax.random.normal(keys[1], (b, h, w, 5)),
           jnp.broadcast_to(jax.random.normal(keys[2], (b * k, 1, 1, 2)), (b * k, h, w, 2))]
  kernel = jax.random.normal(keys[3], (4, 4, 11, 3))
  cot = jax.random.normal(keys[4], (b * k, 2 * h, 2 * w, 3))

  @jax.jit
  def run(parts, kernel):
    def fast(parts, kernel):
      return jnp.sum(conv4x4_up(parts, kernel, impl) * cot)

    def plain(parts, kernel):
      full = jnp.concatenate([parts[0], jnp.repeat(parts[1], k, axis=0), parts[2]], axis=-1)
      return jnp.sum(conv4x4_up(full, kernel, 'plain') * cot)

    return [jax.value_and_grad(f, argnums=(0, 1))(parts, kernel) for f in (fast, plain)]

  fast, plain = run(parts, kernel)
  _assert_close(fast, plain)


@pytest.mark.parametrize('impl', ['matmul', 'conv', 'plain'])
@pytest.mark.parametrize('hw', [2, 8])
def test_up_with_an_empty_part_ignores_it(impl, hw):
  # The L1 baseline's z map has 0 channels; every form (including the dot kernel gradient
  # on maps <= 8x8) must treat it as absent, values and gradients.
  keys = jax.random.split(jax.random.key(3), 3)
  x = jax.random.normal(keys[0], (2, hw, hw, 3))
  empty = jnp.zeros((2, hw, hw, 0))
  kernel = jax.random.normal(keys[1], (4, 4, 3, 2))
  cot = jax.random.normal(keys[2], (2, 2 * hw, 2 * hw, 2))

  def loss(parts, kernel):
    return jnp.sum(conv4x4_up(parts, kernel, impl) * cot)

  got = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))([x, empty], kernel)
  want = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))([x], kernel)
  _assert_close((got[0], got[1][0][0], got[1][1]), (want[0], want[1][0][0], want[1][1]))


def test_up_module_takes_parts_with_the_concat_parameters():
  x, s = jnp.ones((2, 2, 2, 3)), jnp.ones((2, 2, 2, 4))
  v_parts = jax.eval_shape(ConvTranspose4x4Up(5).init, jax.random.key(0), [x, s])
  v_concat = jax.eval_shape(ConvTranspose4x4Up(5).init, jax.random.key(0),
                            jnp.concatenate([x, s], -1))
  assert jax.tree.map(lambda a: a.shape, v_parts) == jax.tree.map(lambda a: a.shape, v_concat)
  with pytest.raises(ValueError, match='divide'):
    conv4x4_up([jnp.ones((3, 2, 2, 1)), jnp.ones((2, 2, 2, 1))], jnp.ones((4, 4, 2, 1)))
  with pytest.raises(ValueError, match='share H and W'):
    conv4x4_up([jnp.ones((2, 2, 2, 1)), jnp.ones((2, 4, 4, 1))], jnp.ones((4, 4, 2, 1)))


@pytest.mark.parametrize('impl', ['matmul', 'conv', 'plain'])
def test_up_reused_terms_give_the_same_values_and_gradients(impl):
  # A part's term from conv4x4_up_terms, passed back as terms=, must give the layer's
  # output; gradients then reach the kernel and that part through the term.
  keys = jax.random.split(jax.random.key(5), 4)
  parts = [jax.random.normal(keys[0], (2, 4, 4, 3)), jax.random.normal(keys[1], (2, 4, 4, 5))]
  kernel = jax.random.normal(keys[2], (4, 4, 8, 3))
  cot = jax.random.normal(keys[3], (2, 8, 8, 3))

  @jax.jit
  def run(parts, kernel):
    def reused(parts, kernel):
      terms = conv4x4_up_terms(parts, kernel, [False, True], impl)
      assert terms[0] is None
      return jnp.sum(conv4x4_up(parts, kernel, impl, terms=terms) * cot)

    def direct(parts, kernel):
      return jnp.sum(conv4x4_up(parts, kernel, impl) * cot)

    return [jax.value_and_grad(f, argnums=(0, 1))(parts, kernel) for f in (reused, direct)]

  reused, direct = run(parts, kernel)
  _assert_close(reused, direct)
  with pytest.raises(ValueError, match='does not fit part'):
    conv4x4_up(parts, kernel, impl, terms=[None, jnp.ones((2, 3, 3, 3))])
  with pytest.raises(ValueError, match='2 input parts'):
    conv4x4_up(parts, kernel, impl, terms=[None])


@pytest.mark.parametrize('hw', [(4, 6), (10, 8)])
def test_forms_on_non_square_maps_composed_match_plain(hw):
  # The up layer's custom VJP (exact-FLOP dx and dkernel from the 16 tap slices of g) and
  # the down layer's patches, on non-square maps, composed: values and gradients of every
  # form match the plain layers.
  keys = jax.random.split(jax.random.key(11), 5)
  x = jax.random.normal(keys[0], (2,) + hw + (3,))
  # Kernels scaled ~1/sqrt(fan-in), so that the composed values stay O(1) for the 1e-5 check.
  k_down = 0.15 * jax.random.normal(keys[1], (4, 4, 3, 4))
  k_up = 0.15 * jax.random.normal(keys[2], (4, 4, 4, 2))
  cot = jax.random.normal(keys[4], (2,) + hw + (2,))

  @jax.jit
  def run(x, k_down, k_up):
    def loss(x, k_down, k_up, impl):
      return jnp.sum(conv4x4_up(jnp.tanh(conv4x4_down(x, k_down, impl)), k_up, impl) * cot)

    return [jax.value_and_grad(loss, argnums=(0, 1, 2))(x, k_down, k_up, impl)
            for impl in ('matmul', 'conv', 'plain')]

  matmul, conv, plain = run(x, k_down, k_up)
  _assert_close(matmul, plain)
  _assert_close(conv, plain)


@pytest.mark.parametrize('impl', ['matmul', 'conv'])
def test_up_second_order_gradients_match_plain(impl):
  # Reverse over reverse (e.g. a gradient penalty) differentiates the custom VJP itself.
  keys = jax.random.split(jax.random.key(12), 3)
  x = jax.random.normal(keys[0], (2, 4, 4, 3))
  kernel = 0.2 * jax.random.normal(keys[1], (4, 4, 3, 2))  # ~1/sqrt(fan-in): values O(1)
  cot = jax.random.normal(keys[2], (2, 8, 8, 2))

  @functools.partial(jax.jit, static_argnums=2)
  def penalty(x, kernel, impl):
    gx = jax.grad(lambda x: jnp.sum(jnp.tanh(conv4x4_up(x, kernel, impl)) * cot))(x)
    return jnp.sum(gx ** 2)

  got = jax.grad(penalty, argnums=(0, 1))(x, kernel, impl)
  want = jax.grad(penalty, argnums=(0, 1))(x, kernel, 'plain')
  _assert_close(got, want)
