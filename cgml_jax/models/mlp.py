"""MLP versions of H, G and Z for low-dimensional problems (the toy of paper Sec. 4)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cgml_jax.models.lipschitz import maybe_spectral_norm


def _activation(name: str):
  try:
    return {'relu': nn.relu, 'leaky_relu': nn.leaky_relu, 'elu': nn.elu, 'gelu': nn.gelu,
            'tanh': jnp.tanh, 'silu': nn.silu}[name]
  except KeyError:
    raise ValueError(f'unknown activation {name!r}') from None


class MLP(nn.Module):
  """Dense layers with an activation between them, optionally spectrally normalised.

  Attributes:
    features: widths of every layer, the last one being the output width.
    spectral_norm: wrap every Dense in `SpectralNorm` with constant `lipschitz`.
  """
  features: Sequence[int]
  activation: str = 'relu'
  spectral_norm: bool = False
  lipschitz: float = 1.0

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    act = _activation(self.activation)
    for i, width in enumerate(self.features):
      x = maybe_spectral_norm(nn.Dense(width), self.spectral_norm, self.lipschitz)(x, train=train)
      if i < len(self.features) - 1:
        x = act(x)
    return x


class MLPEncoder(nn.Module):
  """H: x (B, d_in) -> h (B, h_dim)."""
  width: int = 128
  depth: int = 3
  h_dim: int = 64
  activation: str = 'relu'

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    return MLP([self.width] * (self.depth - 1) + [self.h_dim], self.activation)(x, train=train)


class MLPGenerator(nn.Module):
  """G: (h, z) -> y. With z_dim == 0 (z of shape (B, 0)) this is a plain regressor of h."""
  out_dim: int
  width: int = 128
  depth: int = 3
  activation: str = 'relu'
  spectral_norm: bool = True
  lipschitz: float = 1.0

  @nn.compact
  def __call__(self, h, z, *, train: bool = False):
    return MLP([self.width] * (self.depth - 1) + [self.out_dim], self.activation,
               self.spectral_norm, self.lipschitz)(jnp.concatenate([h, z], -1), train=train)


class MLPLatentNet(nn.Module):
  """Z: (z, h) -> (r_hat (B, n), rho_hat (B,)), rho_hat = softplus(last output) >= 0.

  Attributes:
    residual: r_hat = z + MLP(z, h)[:n], i.e. Z predicts the displacement r_hat - z
      rather than r_hat itself, so "stay where you are" is the zero output and does not
      have to be fitted through z's coordinates (the toy's `model.latent_residual`).
  """
  width: int = 128
  depth: int = 3
  activation: str = 'relu'
  spectral_norm: bool = True
  lipschitz: float = 1.0
  residual: bool = False

  @nn.compact
  def __call__(self, z, h, *, train: bool = False):
    n = z.shape[-1]
    out = MLP([self.width] * (self.depth - 1) + [n + 1], self.activation, self.spectral_norm,
              self.lipschitz)(jnp.concatenate([z, h], -1), train=train)
    r_hat = z + out[..., :n] if self.residual else out[..., :n]
    return r_hat, jax.nn.softplus(out[..., n])
