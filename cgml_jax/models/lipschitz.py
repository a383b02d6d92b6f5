"""Lipschitz constraints as Flax wrappers (paper Eq. 3, Sec. 3).

cGML needs G and Z to be Lipschitz in z: nearby latents must give nearby outputs, otherwise
a trajectory on the sphere can jump between modes and the learned latent flow means nothing.
Spectral normalisation (Miyato et al. 2018) divides every weight matrix by an estimate of
its largest singular value; here the result is then multiplied by a configurable constant
C, so each wrapped layer is C-Lipschitz and a depth-k stack of them with 1-Lipschitz
activations is C^k-Lipschitz.

Why C at all: with C = 1 every layer is 1-Lipschitz, so G can move its output by at most
2 (the sphere's diameter) over all of z, which on the toy problem is far less than the
distance between branches; C > 1 trades smoothness for reach.
"""

from __future__ import annotations

import flax.linen as nn


class SpectralNorm(nn.SpectralNorm):
  """`flax.linen.SpectralNorm` whose normalised kernels have spectral norm `lipschitz`.

  Call it exactly like `nn.SpectralNorm`: `SpectralNorm(nn.Dense(8), lipschitz=4.)(x,
  update_stats=train)`. The power-iteration vector `u` and the estimate `sigma` live in
  the `batch_stats` collection; pass `mutable=['batch_stats']` when `update_stats=True`.
  Kernels of rank > 2 (convolutions) are flattened to (-1, out_features) as in Miyato et
  al. and PyTorch's `spectral_norm`, so the bound holds for that matrix.
  """

  lipschitz: float = 1.0

  def _spectral_normalize(self, path, vs, update_stats):
    value = super()._spectral_normalize(path, vs, update_stats)
    if value.ndim <= 1 or self.n_steps < 1 or self.lipschitz == 1.0:
      return value  # biases are left alone, as in nn.SpectralNorm
    return value * self.lipschitz


def maybe_spectral_norm(layer: nn.Module, enabled: bool, lipschitz: float = 1.0):
  """Returns a callable `f(*args, train, **kwargs)` applying `layer`, spectrally normalised
  if enabled (with `train=False` the power iteration runs but its vectors are not stored,
  so train and eval calls between two updates see the same normalised kernel)."""
  if not enabled:
    return lambda *args, train, **kwargs: layer(*args, **kwargs)
  wrapped = SpectralNorm(layer, lipschitz=lipschitz)
  return lambda *args, train, **kwargs: wrapped(*args, update_stats=train, **kwargs)
