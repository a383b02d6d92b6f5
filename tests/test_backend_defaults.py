"""impl='auto' and train.unroll='auto' follow the backend: fast CPU forms and an unrolled
inner scan on CPU only; XLA's own convolutions and a rolled scan on GPU and TPU.

The platform is forced by patching `layers.platform`, so these run on a CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cgml_jax import configs
from cgml_jax.models import layers
from cgml_jax.tasks import methods

_DN = ('NHWC', 'HWIO', 'NHWC')


def _ops(fn, *args) -> str:
  return str(jax.make_jaxpr(fn)(*args))


@pytest.mark.parametrize('plat', ['cpu', 'gpu', 'tpu'])
def test_auto_impl_by_platform(monkeypatch, plat):
  monkeypatch.setattr(layers, 'platform', lambda: plat)
  small, large = (2, 4, 4, 3), (2, 32, 32, 3)
  if plat == 'cpu':
    assert layers.resolve_impl('auto', small) == 'matmul'
    assert layers.resolve_impl('auto', large) == 'conv'
    assert layers.resolve_impl('auto', small, up=True) == 'conv'
  else:
    for shape in (small, large):
      assert layers.resolve_impl('auto', shape) == 'plain'
      assert layers.resolve_impl('auto', shape, up=True) == 'plain'
  # An explicit impl is never overridden.
  assert layers.resolve_impl('matmul', large) == 'matmul'


@pytest.mark.parametrize('plat', ['cpu', 'gpu'])
def test_auto_layers_trace_the_chosen_form(monkeypatch, plat):
  monkeypatch.setattr(layers, 'platform', lambda: plat)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(4, 4, 3, 5)), jnp.float32)
  down = _ops(lambda x, k: layers.conv4x4_down(x, k, 'auto'), x, k)
  up = _ops(lambda x, k: layers.conv4x4_up(x, k, 'auto'), x, k)
  if plat == 'cpu':
    assert 'custom_vjp_call' in up     # the fast up layer with its own VJP
    assert 'dot_general' in down       # im2col + one dot on small maps
  else:
    assert 'custom_vjp_call' not in up and 'lhs_dilation=(2, 2)' in up  # XLA's transposed
    assert 'window_strides=(2, 2)' in down                               # XLA's strided
  # Same function either way.
  ref = lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DN)
  np.testing.assert_allclose(layers.conv4x4_down(x, k, 'auto'), ref, atol=1e-5)


@pytest.mark.parametrize('plat,expected', [('cpu', True), ('gpu', False), ('tpu', False)])
def test_unroll_auto_by_platform(monkeypatch, plat, expected):
  monkeypatch.setattr(layers, 'platform', lambda: plat)
  config = configs.base('toy')
  assert config.train.unroll == 'auto'
  assert methods.hyper(config).unroll is expected
  for given in (True, False):  # an explicit choice wins on every platform
    config.train.unroll = given
    assert methods.hyper(config).unroll is given


def test_unroll_rejects_other_values():
  with pytest.raises(ValueError, match='train.unroll must be one of'):
    methods.resolve_unroll('yes')


@pytest.mark.slow  # two conv train-step compiles (~30 s of CPU)
def test_cgml_step_with_gpu_defaults_equals_plain(monkeypatch):
  """The whole cGML step with the GPU/TPU defaults ('plain' layers, rolled scan) is the
  step with impl='plain' and unroll=False given explicitly."""
  from cgml_jax import cgml
  from cgml_jax.models.conv import build_conv_models
  from cgml_jax.training import optim

  monkeypatch.setattr(layers, 'platform', lambda: 'gpu')
  config = configs.base('colorize')
  config.train.inner_steps = 2  # a rolled scan of two iterations; compile time is the cost
  rng = np.random.default_rng(0)
  batch = {'x': jnp.asarray(rng.normal(size=(2, 8, 8, 1)), jnp.float32),
           'y': jnp.asarray(rng.uniform(-1, 1, (2, 8, 8, 2)), jnp.float32)}
  out = {}
  for impl, unroll in (('auto', 'auto'), ('plain', False)):
    config.train.unroll = unroll
    hp = methods.hyper(config)
    enc, gen, lat = build_conv_models(8, 1, 2, 4, base_channels=4, max_channels=8,
                                      latent_hidden=(8,), impl=impl)
    tx = optim.make_optimizer(1e-3)
    state = cgml.CGMLState.create(jax.random.key(0), batch['x'], encoder=enc, generator=gen,
                                  latent_net=lat, tx_hg=tx, tx_latent=tx, hp=hp)
    out[impl] = jax.jit(cgml.train_step)(state, batch, jax.random.key(1))
  assert out['auto'][0].hp.unroll is False
  for a, b in zip(jax.tree.leaves(out['auto'][0].params),
                  jax.tree.leaves(out['plain'][0].params)):
    np.testing.assert_array_equal(a, b)
