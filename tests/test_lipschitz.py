"""The spectral-norm wrapper bounds each layer by its Lipschitz constant C."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgml_jax.models.lipschitz import SpectralNorm
from cgml_jax.models.mlp import MLP


def converge(module, x, steps=50):
  """Runs power iteration to convergence; returns variables."""
  v = module.init(jax.random.key(0), x)
  for _ in range(steps):
    _, upd = module.apply(v, x, train=True, mutable=['batch_stats'])
    v = {'params': v['params'], **upd}
  return v


@pytest.mark.parametrize('c', [1.0, 3.0])
def test_normalised_kernel_has_spectral_norm_c(c):
  class Layer(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return SpectralNorm(nn.Dense(7), lipschitz=c)(x, update_stats=train)

  x = jnp.ones((2, 5))
  v = converge(Layer(), x)
  kernel = np.asarray(v['params']['Dense_0']['kernel'])
  # The effective map is x -> Layer(x) - Layer(0); its matrix is recovered column by column.
  eye = jnp.eye(5)
  out = Layer().apply(v, eye) - Layer().apply(v, jnp.zeros((1, 5)))
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out), 2), c, rtol=1e-3)
  assert np.linalg.norm(kernel, 2) != pytest.approx(c, rel=1e-2)  # the raw kernel is not


def test_mlp_lipschitz_bound_holds():
  c, depth = 2.0, 3
  mlp = MLP([16, 16, 4], spectral_norm=True, lipschitz=c)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 6)), jnp.float32)
  v = converge(mlp, x)
  a, b = x[:32], x[32:]
  ratio = (np.linalg.norm(mlp.apply(v, a) - mlp.apply(v, b), axis=-1)
           / np.linalg.norm(a - b, axis=-1))
  assert ratio.max() <= c ** depth * (1 + 1e-3)
  # Without spectral norm and with large weights, the same bound is violated.
  big = jax.tree.map(lambda p: 10 * p, v['params'])
  plain = MLP([16, 16, 4])  # same parameter names as the normalised MLP
  ratio = (np.linalg.norm(plain.apply({'params': big}, a) - plain.apply({'params': big}, b),
                          axis=-1)
           / np.linalg.norm(a - b, axis=-1))
  assert ratio.max() > c ** depth

