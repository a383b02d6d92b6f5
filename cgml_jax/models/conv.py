r"""Convolutional H, G and Z for image tasks (paper Sec. 5, Fig. 2).

  H  ConvEncoder     Context-Encoder style: 4x4 stride-2 convs with LeakyReLU(0.2), channels
                     doubling from `base_channels` (capped at `max_channels`), down to a
                     `bottleneck_size` x `bottleneck_size` map. h is the tuple of every
                     block's features, the last one being the bottleneck, so G can use them
                     as U-Net skips.
  G  ConvGenerator   the mirror image: z broadcast and concatenated to the bottleneck, 4x4
                     stride-2 transposed convs with ReLU, each but the last followed by a
                     concat of the encoder features of that scale; `out_channels` with tanh.
                     The concats are passed to the layers as channel parts (same function
                     and parameters); G also takes z with a sample axis (B, K, n) and then
                     runs the h-only parts once per input (used by `cgml.sample`).
  Z  ConvLatentNet   an MLP on concat(z, global-average-pool(bottleneck)) -> (r_hat, rho_hat).

All three follow the module contract of `cgml_jax.cgml`. G and Z are spectrally normalised
(constant `lipschitz`) because cGML needs them Lipschitz in z (see `lipschitz.py`).

`norm='batch'` (not in cGML's description of H and G; the encoder-decoders of Context
Encoder and pix2pix have it) puts BatchNorm after every conv of H but the first and after
every transposed conv of G but the last, as in those papers. Its statistics live in the
`batch_stats` collection next to the spectral-norm vectors: `train=True` normalises by the
batch and updates the running averages, `train=False` uses the running averages and
updates nothing. BatchNorm's per-channel scale is not bounded, so G is then no longer
C^depth-Lipschitz in z.

The number of blocks follows the image size: an S x S image is zero-padded (centred) to
the next size of the form bottleneck_size * 2^k and G crops its output back, so 28 x 28
MNIST runs as 32 x 32 with k = 4. Inputs and outputs are NHWC.

The convolutions are the layers of `layers.py` (same function and parameters as the
plain flax layers); with impl='auto' they take the fast forms on CPU and XLA's own
convolutions on GPU and TPU.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cgml_jax.models.layers import Conv4x4Down, ConvTranspose4x4Up
from cgml_jax.models.lipschitz import maybe_spectral_norm
from cgml_jax.models.mlp import MLP

Z_INJECTIONS = ('bottleneck', 'all')
NORMS = ('none', 'batch')
_OUT_ACTIVATIONS = {'tanh': jnp.tanh, 'sigmoid': jax.nn.sigmoid, 'none': lambda y: y}


def padded_size(image_size: int, bottleneck_size: int = 2) -> tuple[int, int]:
  """The size an image is padded to, and the number of stride-2 blocks to the bottleneck.

  Args:
    image_size: S, the side of a square image.
    bottleneck_size: side of the bottleneck map.

  Returns:
    (P, k) with P = bottleneck_size * 2^k the smallest such size >= S, k >= 1.
  """
  if image_size < 1 or bottleneck_size < 1:
    raise ValueError(f'image_size and bottleneck_size must be >= 1, got {image_size}, '
                     f'{bottleneck_size}')
  k = max(1, math.ceil(math.log2(image_size / bottleneck_size)))
  return bottleneck_size * 2 ** k, k


def _pad_amounts(size: int, bottleneck_size: int) -> tuple[int, int]:
  total = padded_size(size, bottleneck_size)[0] - size
  return total // 2, total - total // 2


def channel_widths(num_blocks: int, base_channels: int, max_channels: int) -> list[int]:
  """Encoder widths: base_channels doubling per block, capped at max_channels."""
  return [min(base_channels * 2 ** i, max_channels) for i in range(num_blocks)]


def z_map_sizes(h: Sequence, num_maps: int) -> list[tuple[int, int]]:
  """(H, W) of the `num_maps` coarsest decoder inputs of `ConvGenerator`, coarsest first.

  The decoder's i-th transposed conv reads a map the size of h[-1 - i] (the bottleneck,
  then each skip), so these are the maps where spatial noise goes (`z_maps`). Fewer than
  `num_maps` when the decoder has fewer layers.

  Args:
    h: the encoder's tuple of feature maps (or their shapes), coarsest last.
    num_maps: how many maps.
  """
  return [tuple(f.shape[1:3]) for f in list(h)[::-1][:num_maps]]


def _spatial_z(z: jax.Array, sizes: Sequence[tuple[int, int]]) -> list[jax.Array]:
  """z (B', n) cut into one (B', H_i, W_i, C) tensor per map, C = n / sum H_i W_i."""
  area = sum(a * b for a, b in sizes)
  if z.shape[-1] % area:
    raise ValueError(f'spatial z of size {z.shape[-1]} does not split into maps {sizes} '
                     f'(needs a multiple of {area})')
  c = z.shape[-1] // area
  cuts = [0]
  for a, b in sizes:
    cuts.append(cuts[-1] + a * b * c)
  return [z[:, lo:hi].reshape(z.shape[0], a, b, c)
          for (a, b), lo, hi in zip(sizes, cuts, cuts[1:])]


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
  """BatchNorm as in pix2pix / Context Encoder (momentum 0.9 of the running averages)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


def _check_norm(norm: str):
  if norm not in NORMS:
    raise ValueError(f'norm must be one of {NORMS}, got {norm!r}')


def _broadcast_to_map(z: jax.Array, x: jax.Array) -> jax.Array:
  """z (B', n) tiled to x's spatial shape: (B', H, W, n)."""
  return jnp.broadcast_to(z[:, None, None, :], z.shape[:1] + x.shape[1:3] + z.shape[-1:])


class ConvEncoder(nn.Module):
  """H: x (B, S, S, C) -> h, the tuple of block features (B, S_i, S_i, C_i), coarsest last.

  Attributes:
    base_channels: width of the first block; doubles each block.
    max_channels: cap on the width.
    bottleneck_size: side of the last feature map.
    spectral_norm: spectrally normalise every conv (off in the paper's H).
    lipschitz: constant of the spectral norm.
    impl: convolution form, see `layers.conv4x4_down`.
    norm: 'none' or 'batch': BatchNorm after every conv but the first (module docstring).
  """
  base_channels: int = 64
  max_channels: int = 512
  bottleneck_size: int = 2
  spectral_norm: bool = False
  lipschitz: float = 1.0
  impl: str = 'auto'
  norm: str = 'none'

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, ...]:
    """Encodes an image batch.

    Args:
      x: (B, S, S, C) images, square.
      train: update spectral-norm statistics; with norm='batch', normalise by the batch and
        update the running averages (otherwise use them).

    Returns:
      Tuple of k feature maps, the i-th of shape (B, P / 2^(i+1), P / 2^(i+1), C_i) where P
      is `padded_size(S)`; the last is the bottleneck.
    """
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
      raise ValueError(f'ConvEncoder expects square NHWC images (B, S, S, C), got {x.shape}')
    lo, hi = _pad_amounts(x.shape[1], self.bottleneck_size)
    if lo or hi:
      x = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    _, num_blocks = padded_size(x.shape[1], self.bottleneck_size)
    _check_norm(self.norm)
    feats = []
    for i, width in enumerate(channel_widths(num_blocks, self.base_channels,
                                             self.max_channels)):
      conv = Conv4x4Down(width, impl=self.impl)
      x = maybe_spectral_norm(conv, self.spectral_norm, self.lipschitz)(x, train=train)
      if self.norm == 'batch' and i > 0:
        x = _batch_norm(train, f'norm_{i}')(x)
      x = nn.leaky_relu(x, 0.2)
      feats.append(x)
    return tuple(feats)


class ConvGenerator(nn.Module):
  """G: (h, z) -> y (B, S, S, out_channels), the mirrored U-Net decoder of `ConvEncoder`.

  Attributes:
    out_channels: channels of y.
    image_size: S; the output is centre-cropped to S x S (None: no crop, y has the
      padded size).
    bottleneck_size: must match the encoder's, for the crop.
    z_injection: 'bottleneck' concatenates z to the bottleneck only; 'all' also to the
      input of every later transposed conv.
    spectral_norm: spectrally normalise every layer (cGML needs G Lipschitz in z).
    lipschitz: constant of the spectral norm.
    out_activation: 'tanh', 'sigmoid' or 'none'.
    impl: convolution form, see `layers.conv4x4_up`.
    z_maps: 0 uses z as `z_injection` says. m > 0 instead reads z (B, n) as spatial noise
      tensors, one at each of the m coarsest decoder inputs (`z_map_sizes`, bottleneck
      first), each (B, H_i, W_i, n / sum_i H_i W_i) and concatenated like a skip; no map
      gets z broadcast. MR-GAN's noise (Lee et al. 2019, App. B.2: H x W x 32 tensors at
      the decoder's 1x1, 2x2 and 4x4 maps).
    norm: 'none' or 'batch': BatchNorm after every transposed conv but the last (module
      docstring). It follows the sum of the channel parts, so the h-only terms are the
      same with and without it.
    shares_h_terms: let `cgml.train_step` compute the h-only terms once per inner step
      (`only_h_terms`) and pass them to the z step's and the (H, G) step's calls
      (`h_terms`); False recomputes them in each call (same function, e.g. to count the
      unshared FLOPs or to test the sharing: `generator.clone(shares_h_terms=False)`).
  """
  out_channels: int
  image_size: int | None = None
  bottleneck_size: int = 2
  z_injection: str = 'bottleneck'
  spectral_norm: bool = True
  lipschitz: float = 1.0
  out_activation: str = 'tanh'
  impl: str = 'auto'
  shares_h_terms: bool = True
  z_maps: int = 0
  norm: str = 'none'

  # cgml.sample may pass z with a sample axis (B, K, n) and the un-repeated h (see
  # `__call__`); modules without this attribute get h repeated K times instead.
  accepts_sample_axis = True

  @nn.compact
  def __call__(self, h: Sequence[jax.Array], z: jax.Array, *, train: bool = False,
               h_terms=None, only_h_terms: bool = False):
    """Decodes features and a latent.

    Every transposed conv reads the concatenation [decoder feature, skip (, z map)] as
    channel parts (`layers.conv4x4_up`): the same function and parameters as the
    concatenated input, but the gradient wrt z does not flow through the skip half, and
    the parts that depend on h alone are computed once per input even when each input
    has K latents.

    Those h-only parts (the bottleneck into the first layer, the skip into each later
    one) can also be computed once and reused: `only_h_terms=True` returns their
    convolutions (`layers.conv4x4_up_terms`, one per layer, a function of h and the
    parameters only), and `h_terms=` those terms gives the same y without recomputing
    them (cGML's z step and (H, G) step read the same h at the same parameters).

    Args:
      h: the encoder's tuple of feature maps (B, ...), coarsest last.
      z: (B, n) latents, or (B, K, n): K latents per input (only its shape is read when
        `only_h_terms`).
      train: update spectral-norm statistics; with norm='batch', normalise by the batch
        and update the running averages (otherwise use them).
      h_terms: optional, the result of `only_h_terms=True` for the same h, parameters,
        spectral-norm statistics and `train=False`.
      only_h_terms: return the h-only terms instead of y.

    Returns:
      y (B, S, S, out_channels), or (B, K, S, S, out_channels) for z of shape (B, K, n);
      y[:, k] equals the output for h and z[:, k]. With `only_h_terms`, a tuple of one
      array per layer.
    """
    if self.z_injection not in Z_INJECTIONS:
      raise ValueError(f'z_injection must be one of {Z_INJECTIONS}, got {self.z_injection!r}')
    if self.out_activation not in _OUT_ACTIVATIONS:
      raise ValueError(f'out_activation must be one of {tuple(_OUT_ACTIVATIONS)}, '
                       f'got {self.out_activation!r}')
    _check_norm(self.norm)
    h = tuple(h)
    b = h[-1].shape[0]
    if z.ndim not in (2, 3) or z.shape[0] != b:
      raise ValueError(f'ConvGenerator expects z of shape (B, n) or (B, K, n) with B = '
                       f'{b}, got {z.shape}')
    k = z.shape[1] if z.ndim == 3 else None
    # (B K, n), rows grouped by input; n may be 0 (the L1 baseline's empty z), hence no -1.
    z = z.reshape(b * (k or 1), z.shape[-1])

    num_layers = len(h)
    if h_terms is not None and len(h_terms) != num_layers:
      raise ValueError(f'h_terms has {len(h_terms)} entries for a generator of {num_layers} '
                       'layers')
    terms_out = []

    def up(i, features, parts, h_only):
      layer = maybe_spectral_norm(ConvTranspose4x4Up(features, impl=self.impl),
                                  self.spectral_norm, self.lipschitz)
      if only_h_terms:
        terms = layer(parts, train=train, terms_of=h_only)
        terms_out.append(next(t for t in terms if t is not None))
        # The decoder feature's value is not needed for the h-only terms, only its shape.
        s = parts[0].shape
        return jnp.zeros((s[0], 2 * s[1], 2 * s[2], features), parts[0].dtype)
      terms = None
      if h_terms is not None:
        terms = [h_terms[i] if o else None for o in h_only]
      return layer(parts, train=train, terms=terms)

    if self.z_maps:
      spatial = _spatial_z(z, z_map_sizes(h, self.z_maps))
    # Which parts depend on h alone: the bottleneck, then each skip.
    parts, h_only = [h[-1], spatial[0] if self.z_maps else _broadcast_to_map(z, h[-1])], [
        True, False]
    for i, skip in enumerate(reversed(h[:-1])):
      x = up(i, skip.shape[-1], parts, h_only)
      if self.norm == 'batch' and not only_h_terms:  # (only the shape of x is used there)
        x = _batch_norm(train, f'norm_{i}')(x)
      x = nn.relu(x)
      if x.shape[1:] != skip.shape[1:]:
        raise ValueError(f'skip feature of shape {skip.shape} does not match decoder '
                         f'feature {x.shape}')
      parts, h_only = [x, skip], [False, True]
      if self.z_maps and i + 1 < len(spatial):
        parts.append(spatial[i + 1])
        h_only.append(False)
      elif self.z_injection == 'all' and not self.z_maps:
        parts.append(_broadcast_to_map(z, x))
        h_only.append(False)
    y = up(num_layers - 1, self.out_channels, parts, h_only)
    if only_h_terms:
      return tuple(terms_out)
    y = _OUT_ACTIVATIONS[self.out_activation](y)
    if self.image_size is not None and self.image_size != y.shape[1]:
      lo, _ = _pad_amounts(self.image_size, self.bottleneck_size)
      y = y[:, lo:lo + self.image_size, lo:lo + self.image_size]
    return y if k is None else y.reshape((b, k) + y.shape[1:])


class ConvLatentNet(nn.Module):
  """Z: (z, h) -> (r_hat (B, n), rho_hat (B,)), an MLP on concat(z, GAP(bottleneck)).

  Attributes:
    hidden: widths of the hidden layers.
    spectral_norm: spectrally normalise every layer.
    lipschitz: constant of the spectral norm.
  """
  hidden: Sequence[int] = (256, 256)
  spectral_norm: bool = True
  lipschitz: float = 1.0

  @nn.compact
  def __call__(self, z: jax.Array, h: Sequence[jax.Array], *, train: bool = False):
    """Predicts the next latent and the step length.

    Args:
      z: (B, n) latents.
      h: the encoder's features; only the last (bottleneck, (B, s, s, C)) is used.
      train: update spectral-norm statistics.

    Returns:
      (r_hat (B, n), rho_hat (B,)), rho_hat = softplus(last output) >= 0.
    """
    bottleneck = h[-1]
    if bottleneck.ndim != 4:
      raise ValueError(f'ConvLatentNet expects an NHWC bottleneck, got {bottleneck.shape}')
    n = z.shape[-1]
    pooled = bottleneck.mean(axis=(1, 2))
    out = MLP(list(self.hidden) + [n + 1], 'relu', self.spectral_norm, self.lipschitz)(
        jnp.concatenate([z, pooled], axis=-1), train=train)
    return out[..., :n], jax.nn.softplus(out[..., n])


def build_conv_models(image_size: int, in_channels: int, out_channels: int, z_dim: int, *,
                      base_channels: int = 64, max_channels: int = 512,
                      bottleneck_size: int = 2, z_injection: str = 'bottleneck',
                      spectral_norm: bool = True, lipschitz: float = 1.0,
                      latent_hidden: Sequence[int] = (256, 256),
                      out_activation: str = 'tanh', impl: str = 'auto', norm: str = 'none'):
  """H, G, Z for S x S images with `in_channels` -> `out_channels` (Fig. 2 of the paper).

  Args:
    image_size: S.
    in_channels: channels of x (e.g. 1 for colorization's L, 4 for completion's RGB+mask).
    out_channels: channels of y (2 for colorization's ab, 3 for completion).
    z_dim: n; only checked here, the modules read it from z.
    base_channels, max_channels, bottleneck_size: encoder widths and depth.
    z_injection: 'bottleneck' or 'all', see `ConvGenerator`.
    spectral_norm, lipschitz: for G and Z (H is not normalised, as in the paper).
    latent_hidden: hidden widths of Z.
    out_activation: G's output non-linearity.
    impl: convolution form for H and G, see `layers.py`.
    norm: 'none' (cGML's H and G) or 'batch' (BatchNorm in H and G; module docstring).

  Returns:
    (encoder, generator, latent_net).
  """
  del in_channels  # H infers it from x; kept so call sites read like the task description
  if z_dim < 1:
    raise ValueError(f'z_dim must be >= 1, got {z_dim}')
  padded_size(image_size, bottleneck_size)  # validates
  _check_norm(norm)
  encoder = ConvEncoder(base_channels, max_channels, bottleneck_size, impl=impl, norm=norm)
  generator = ConvGenerator(out_channels, image_size, bottleneck_size, z_injection,
                            spectral_norm, lipschitz, out_activation, impl, norm=norm)
  latent_net = ConvLatentNet(tuple(latent_hidden), spectral_norm, lipschitz)
  return encoder, generator, latent_net
