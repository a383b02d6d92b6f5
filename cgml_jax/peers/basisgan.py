r"""BasisGAN: stochastic convolutions with sampled filter bases (Wang et al., ICLR 2020).

"Stochastic Conditional Generative Networks with Basis Decomposition" makes a conditional
generator stochastic without feeding noise to its activations: a convolution's filters
are decomposed (their Sec. 3, filter basis decomposition) as

  w[:, :, c, o] = sum_k psi_k * a[k, c, o],   psi in R^{L x L x K},  a in R^{K x C x C'}

where the K spatial bases psi are *sampled* at every forward pass by a tiny basis generator
psi = T(theta, z), z ~ N(0, I), and the coefficients a are ordinary
deterministic parameters. Different z give different filters, hence different outputs,
from one set of learned weights (theta, a); the diversity comes from the generator that
produced the bases, not from an extra input channel. Training is that of the underlying
cGAN (pix2pix here), see `cgml_jax.peers.methods`.

Implementation: instead of materialising per-example filters, each input channel is
convolved depthwise with each sampled basis (B x C x K maps, as L*L shifted slices) and a
1x1 mixing with a sums them; this is exactly the conv with w = psi . a.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cgml_jax.peers.gan import norm_layer


class BasisGenerator(nn.Module):
  r"""T(theta, z): z (B, n) -> psi (B, L, L, K), one set of K spatial bases per example.

  A two-layer MLP: n*h + h + h*L*L*K + L*L*K parameters, 477 for n = h = 8, L = 3, K = 5,
  matching the paper's "a few hundred parameters per basis generator".
  """
  kernel_size: int = 3
  num_bases: int = 5
  hidden: int = 8

  @nn.compact
  def __call__(self, z):
    if z.ndim != 2:
      raise ValueError(f'basis generator expects z of shape (B, n), got {z.shape}')
    size = self.kernel_size * self.kernel_size * self.num_bases
    h = nn.leaky_relu(nn.Dense(self.hidden, name='hidden')(z), 0.2)
    psi = nn.Dense(size, name='bases')(h)
    return psi.reshape(z.shape[0], self.kernel_size, self.kernel_size, self.num_bases)


class BasisConv(nn.Module):
  r"""Stochastic convolution with filters w = psi(z) . a (BasisGAN Sec. 3).

  Attributes:
    features: C', output channels.
    kernel_size: L, spatial size of the bases (and filters).
    num_bases: K (paper default 5).
    strides: spatial stride.
    basis_hidden: width of the basis generator's hidden layer.
    use_bias: add a deterministic per-channel bias.

  Call: `BasisConv(...)(x, z)` with x (B, H, W, C) and z (B, n); returns (B, H', W', C')
  with 'SAME' padding. Example b uses the bases sampled from z[b].
  """
  features: int
  kernel_size: int = 3
  num_bases: int = 5
  strides: int = 1
  basis_hidden: int = 8
  use_bias: bool = True

  @nn.compact
  def __call__(self, x, z):
    if x.ndim != 4 or z.ndim != 2 or x.shape[0] != z.shape[0]:
      raise ValueError(f'BasisConv expects x (B, H, W, C) and z (B, n), got {x.shape}, '
                       f'{z.shape}')
    c, k = x.shape[-1], self.num_bases
    psi = BasisGenerator(self.kernel_size, k, self.basis_hidden, name='basis_generator')(z)
    # fan_in = K * C: the K basis responses of every input channel are what a mixes.
    a = self.param('coefficients',
                   nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal',
                                                    in_axis=(0, 1), out_axis=2),
                   (k, c, self.features), jnp.float32)

    # Per-example depthwise responses r[b, i, j, c, k] = sum_{u,v} x[b, s i + u, s j + v, c]
    # psi[b, u, v, k] ('SAME' padding) as a sum over the L*L taps of shifted slices: a
    # vmapped per-example conv becomes a grouped conv with B*C groups, which XLA:CPU
    # compiles and runs very slowly (minutes for a 28px U-Net step).
    b, h, w = x.shape[:3]
    size, st = self.kernel_size, self.strides
    ho, wo = -(-h // st), -(-w // st)
    pad_h, pad_w = max((ho - 1) * st + size - h, 0), max((wo - 1) * st + size - w, 0)
    xp = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                     (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    psi = psi.astype(x.dtype)
    responses = 0.0
    for u in range(size):
      for v in range(size):
        tap = jax.lax.slice(xp, (0, u, v, 0), (b, u + st * (ho - 1) + 1,
                                               v + st * (wo - 1) + 1, c), (1, st, st, 1))
        responses = responses + tap[..., None] * psi[:, None, None, None, u, v, :]
    y = jnp.einsum('bhwck,kco->bhwo', responses, a.astype(x.dtype))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    return y


def explicit_filters(psi: jax.Array, coefficients: jax.Array) -> jax.Array:
  r"""w = psi . a materialised: (B, L, L, K) x (K, C, C') -> (B, L, L, C, C').

  For checks and visualisation; `BasisConv` never builds these.
  """
  return jnp.einsum('blmk,kco->blmco', psi, coefficients)


def _upsample(x, size):
  """Nearest-neighbour resize to `size` (H, W); integer factors as a cheap repeat."""
  (h, w), (th, tw) = x.shape[1:3], size
  if th % h == 0 and tw % w == 0:
    return jnp.repeat(jnp.repeat(x, th // h, axis=1), tw // w, axis=2)
  return jax.image.resize(x, (x.shape[0], th, tw, x.shape[3]), 'nearest')


class BasisUNetGenerator(nn.Module):
  r"""pix2pix-style U-Net decoder whose convolutions alternate BasisConv and plain conv.

  G(h, z) in the project's generator contract: `h` is the tuple of encoder feature maps
  (any order; they are sorted by resolution here, coarsest = bottleneck) and `z` (B, n) is
  the noise of every basis generator. Starting from the bottleneck, each level upsamples
  2x (nearest), applies a 3x3 conv (BasisConv on levels 0, `basis_every`, 2*basis_every,
  ..., plain `nn.Conv` otherwise), norm, ReLU, and concatenates the encoder's skip at that
  resolution, as in pix2pix's U-Net (Isola et al. 2017, Sec. 3.2.1). A last upsampling by
  `final_upsample` (2 when the finest feature is at half the output size, as after
  pix2pix's stride-2 first layer) and a plain conv give the output.

  z enters only through the sampled bases: there is no noise channel, which is the point
  of BasisGAN. Every BasisConv sees the same z through its own basis generator.

  Attributes:
    out_channels: channels of y.
    kernel_size, num_bases, basis_hidden: of every BasisConv (paper: K = 5).
    basis_every: every `basis_every`-th decoder conv is a BasisConv (1 = all of them).
    norm: 'batch' (pix2pix), 'instance' or 'none'.
    final_upsample: spatial factor between the finest feature and the output.
    final_activation: 'tanh' (images in [-1, 1]) or 'none'.
    output_size: if set, the output is centre-cropped to this side (the project's H pads
      e.g. 28 -> 32; the crop is the one of `models.conv`'s G).
  """
  out_channels: int
  kernel_size: int = 3
  num_bases: int = 5
  basis_hidden: int = 8
  basis_every: int = 2
  norm: str = 'batch'
  final_upsample: int = 2
  final_activation: str = 'tanh'
  output_size: int | None = None

  @nn.compact
  def __call__(self, h, z, *, train: bool = False):
    feats: Sequence[jax.Array] = h if isinstance(h, (tuple, list)) else (h,)
    if any(f.ndim != 4 for f in feats):
      raise ValueError(f'BasisUNetGenerator expects (B, H, W, C) features, got '
                       f'{[f.shape for f in feats]}')
    if self.basis_every < 1:
      raise ValueError(f'basis_every must be >= 1, got {self.basis_every}')
    feats = sorted(feats, key=lambda f: f.shape[1] * f.shape[2])  # coarsest first
    u = feats[0]
    layer = 0

    def conv(x, features, use_basis):
      if use_basis:
        return BasisConv(features, self.kernel_size, self.num_bases,
                         basis_hidden=self.basis_hidden)(x, z)
      return nn.Conv(features, (self.kernel_size, self.kernel_size))(x)

    for skip in feats[1:]:
      u = _upsample(u, skip.shape[1:3])
      u = conv(u, skip.shape[-1], layer % self.basis_every == 0)
      u = nn.relu(norm_layer(self.norm, train)(u))
      u = jnp.concatenate([u, skip], axis=-1)
      layer += 1
    if self.final_upsample != 1:
      u = _upsample(u, (u.shape[1] * self.final_upsample, u.shape[2] * self.final_upsample))
      u = conv(u, u.shape[-1] // 2 or 1, layer % self.basis_every == 0)
      u = nn.relu(norm_layer(self.norm, train)(u))
    y = nn.Conv(self.out_channels, (self.kernel_size, self.kernel_size))(u)
    if self.output_size is not None and self.output_size != y.shape[1]:
      if self.output_size > y.shape[1]:
        raise ValueError(f'output_size {self.output_size} exceeds the decoded size '
                         f'{y.shape[1]}; raise final_upsample')
      lo = (y.shape[1] - self.output_size) // 2
      y = y[:, lo:lo + self.output_size, lo:lo + self.output_size]
    if self.final_activation == 'tanh':
      return jnp.tanh(y)
    if self.final_activation == 'none':
      return y
    raise ValueError(f"final_activation must be 'tanh' or 'none', got "
                     f'{self.final_activation!r}')
