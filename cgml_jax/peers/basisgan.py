r"""BasisGAN: stochastic convolutions with sampled filter bases (Wang et al., ICLR 2020).

"Stochastic Conditional Generative Networks with Basis Decomposition" makes a conditional
generator stochastic without feeding noise to its activations: a convolution's filters
are decomposed (their Sec. 3, filter basis decomposition) as

  w[:, :, c, o] = sum_k psi_k * a[k, c, o],   psi in R^{L x L x K},  a in R^{K x C x C'}

where the K spatial bases psi are *sampled* at every forward pass by a tiny basis generator
psi = T(theta, z), z ~ N(0, I), and the coefficients a are ordinary deterministic
parameters. Every basis generator has a latent of its own (their Sec. 5:
only "when combining BasisGAN with DSGAN, we feed all the basis generator in BasisGAN with
the same latent code"), of size 64 with a hidden layer of 64 ("we use the 64 + 64 setting
in all the experiments", Appendix E, Table A.1). Different z give different filters, hence
different outputs, from one set of learned weights (theta, a); the diversity comes from the
generator that produced the bases, not from an extra input channel. Training is that of
the underlying cGAN (pix2pix here), see `cgml_jax.peers.methods`.

Two generators carry the BasisConvs:

  BasisResNetEncoder + BasisResNetGenerator   pix2pix's ResNet generator split at its
      residual blocks (the default, `basisgan.generator = 'resnet'`): "stochasticity in the
      successive residual blocks, where regular convolutional layers and convolutional
      layers with basis generators convolve alternatively" (their Pix2Pix -> BasisGAN).
  BasisUNetGenerator   a U-Net decoder on the project's encoder (`'unet'`).

Both split z (B, n) into one latent per BasisConv (`split_latents`); `noise_dim` gives n.

Implementation: instead of materialising per-example filters, each input channel is
convolved depthwise with each sampled basis (B x C x K maps, as L*L shifted slices) and a
1x1 mixing with a sums them; this is exactly the conv with w = psi . a.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cgml_jax.models.lipschitz import maybe_spectral_norm
from cgml_jax.peers.gan import norm_layer

# Appendix E, Table A.1: "we use the 64 + 64 setting in all the experiments".
LATENT_DIM = 64   # latent size of each basis generator
HIDDEN = 64       # hidden width of each basis generator
GENERATORS = ('resnet', 'unet')
LATENTS = ('auto', 'per_layer', 'shared')


class BasisGenerator(nn.Module):
  r"""T(theta, z): z (B, n) -> psi (B, L, L, K), one set of K spatial bases per example.

  A two-layer MLP: n*h + h + h*L*L*K + L*L*K parameters, 7085 for the paper's n = h = 64
  (Appendix E, Table A.1), L = 3, K = 5.
  """
  kernel_size: int = 3
  num_bases: int = 5
  hidden: int = HIDDEN

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
    padding: 'SAME' (zeros) or 'VALID' (none; e.g. after a reflection pad, as pix2pix's
      residual blocks pad).

  Call: `BasisConv(...)(x, z)` with x (B, H, W, C) and z (B, n); returns (B, H', W', C').
  Example b uses the bases sampled from z[b].
  """
  features: int
  kernel_size: int = 3
  num_bases: int = 5
  strides: int = 1
  basis_hidden: int = HIDDEN
  use_bias: bool = True
  padding: str = 'SAME'

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
    if self.padding == 'SAME':
      ho, wo = -(-h // st), -(-w // st)
      pad_h, pad_w = max((ho - 1) * st + size - h, 0), max((wo - 1) * st + size - w, 0)
    elif self.padding == 'VALID':
      (ho, wo), pad_h, pad_w = ((h - size) // st + 1, (w - size) // st + 1), 0, 0
    else:
      raise ValueError(f"padding must be 'SAME' or 'VALID', got {self.padding!r}")
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


def split_latents(z: jax.Array, num_layers: int, latent_dim: int,
                  per_layer: bool) -> list[jax.Array]:
  r"""The latent of each of `num_layers` basis generators, from one z (B, n).

  per_layer: n = num_layers * latent_dim and layer i reads z[:, i*d:(i+1)*d], so every
  basis generator has its own N(0, I) latent (BasisGAN's default); otherwise n = latent_dim
  and every layer reads all of z (their Sec. 5, BasisGAN + DSGAN).
  """
  n = num_layers * latent_dim if per_layer else latent_dim
  if z.ndim != 2 or z.shape[1] != n:
    raise ValueError(f'{num_layers} basis generators with {latent_dim}-d '
                     f"{'own' if per_layer else 'shared'} latents need z of shape (B, {n}), "
                     f'got {z.shape}')
  if not per_layer:
    return [z] * num_layers
  return [z[:, i * latent_dim:(i + 1) * latent_dim] for i in range(num_layers)]


def noise_dim(encoder: nn.Module, generator: nn.Module, x: jax.Array) -> int:
  """n, the width of the z that `generator(encoder(x), z)` takes (shapes only, no compute)."""
  h = jax.eval_shape(lambda x: encoder.init_with_output(jax.random.key(0), x,
                                                        train=False)[0], x)
  per = generator.num_basis_convs(h) if generator.per_layer_latents else 1
  return per * generator.latent_dim


def _upsample(x, size):
  """Nearest-neighbour resize to `size` (H, W); integer factors as a cheap repeat."""
  (h, w), (th, tw) = x.shape[1:3], size
  if th % h == 0 and tw % w == 0:
    return jnp.repeat(jnp.repeat(x, th // h, axis=1), tw // w, axis=2)
  return jax.image.resize(x, (x.shape[0], th, tw, x.shape[3]), 'nearest')


def _features(h) -> list:
  feats = list(h) if isinstance(h, (tuple, list)) else [h]
  if any(f.ndim != 4 for f in feats):
    raise ValueError(f'expected (B, H, W, C) features, got {[f.shape for f in feats]}')
  return feats


def _centre_crop(y, size):
  if size is None or size == y.shape[1]:
    return y
  if size > y.shape[1]:
    raise ValueError(f'output_size {size} exceeds the decoded size {y.shape[1]}')
  lo = (y.shape[1] - size) // 2
  return y[:, lo:lo + size, lo:lo + size]


def _activate(y, kind):
  if kind == 'tanh':
    return jnp.tanh(y)
  if kind == 'none':
    return y
  raise ValueError(f"final_activation must be 'tanh' or 'none', got {kind!r}")


class BasisUNetGenerator(nn.Module):
  r"""pix2pix-style U-Net decoder whose convolutions alternate BasisConv and plain conv.

  G(h, z) in the project's generator contract: `h` is the tuple of encoder feature maps
  (any order; they are sorted by resolution here, coarsest = bottleneck) and `z` (B, n)
  holds the latents of the basis generators (`split_latents`). Starting from the
  bottleneck, each level upsamples 2x (nearest), applies a 3x3 conv (BasisConv on levels
  0, `basis_every`, 2*basis_every, ..., plain `nn.Conv` otherwise), norm, ReLU, and
  concatenates the encoder's skip at that resolution, as in pix2pix's U-Net (Isola et al.
  2017, Sec. 3.2.1). A last upsampling by `final_upsample` (2 when the finest feature is at
  half the output size, as after pix2pix's stride-2 first layer) and a plain conv give the
  output.

  z enters only through the sampled bases: there is no noise channel, which is the point
  of BasisGAN. The paper's pix2pix model is the ResNet one (`BasisResNetGenerator`); this
  U-Net variant is `basisgan.generator = 'unet'`.

  Attributes:
    out_channels: channels of y.
    kernel_size, num_bases: of every BasisConv (paper: K = 5).
    latent_dim, basis_hidden: latent size and hidden width of each basis generator.
    per_layer_latents: one latent per BasisConv (True, the paper) or one shared by all.
    basis_every: every `basis_every`-th decoder conv is a BasisConv (1 = all of them).
    norm: 'batch' (pix2pix), 'instance' or 'none'.
    final_upsample: spatial factor between the finest feature and the output.
    final_activation: 'tanh' (images in [-1, 1]) or 'none'.
    output_size: if set, the output is centre-cropped to this side (the project's H pads
      e.g. 28 -> 32; the crop is the one of `models.conv`'s G).
    spectral_norm, lipschitz: spectrally normalise the plain convs (not in the paper;
      `gan.generator_spectral_norm`). BasisConv filters depend on z and are left alone.
  """
  out_channels: int
  kernel_size: int = 3
  num_bases: int = 5
  latent_dim: int = LATENT_DIM
  basis_hidden: int = HIDDEN
  per_layer_latents: bool = True
  basis_every: int = 2
  norm: str = 'batch'
  final_upsample: int = 2
  final_activation: str = 'tanh'
  output_size: int | None = None
  spectral_norm: bool = False
  lipschitz: float = 1.0

  def num_basis_convs(self, h) -> int:
    """BasisConvs of the decoder for features h (arrays or shapes)."""
    if self.basis_every < 1:
      raise ValueError(f'basis_every must be >= 1, got {self.basis_every}')
    levels = len(_features(h)) - 1 + (self.final_upsample != 1)
    return -(-levels // self.basis_every)

  @nn.compact
  def __call__(self, h, z, *, train: bool = False):
    feats = sorted(_features(h), key=lambda f: f.shape[1] * f.shape[2])  # coarsest first
    zs = iter(split_latents(z, self.num_basis_convs(feats), self.latent_dim,
                            self.per_layer_latents))
    u = feats[0]
    layer = 0

    def conv(x, features, use_basis):
      if use_basis:
        return BasisConv(features, self.kernel_size, self.num_bases,
                         basis_hidden=self.basis_hidden)(x, next(zs))
      return maybe_spectral_norm(nn.Conv(features, (self.kernel_size, self.kernel_size)),
                                 self.spectral_norm, self.lipschitz)(x, train=train)

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
    y = conv(u, self.out_channels, False)
    if self.output_size is not None and self.output_size > y.shape[1]:
      raise ValueError(f'output_size {self.output_size} exceeds the decoded size '
                       f'{y.shape[1]}; raise final_upsample')
    return _activate(_centre_crop(y, self.output_size), self.final_activation)


# ---------------------------------------------------------------------------------------
# pix2pix's ResNet generator (Johnson et al. 2016, as in pix2pix / CycleGAN's code): a 7x7
# conv, two stride-2 convs, residual blocks, two stride-2 transposed convs, a 7x7 conv.
# BasisGAN makes the residual blocks stochastic; the front half is deterministic and
# plays the registry's H, so K samples of one input share it.

RESNET_DOWN = 2   # stride-2 convs before the residual blocks (pix2pix: 2)


def _reflect_conv(x, features, size, name=None, wrap=None, train=False):
  """Reflection-padded 'VALID' conv (pix2pix's ReflectionPad2d + Conv2d); `wrap` is an
  optional `maybe_spectral_norm`-style wrapper."""
  p = size // 2
  x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')
  layer = nn.Conv(features, (size, size), padding='VALID', name=name)
  return wrap(layer)(x, train=train) if wrap else layer(x)


class BasisResNetEncoder(nn.Module):
  r"""The deterministic front of pix2pix's ResNet generator, as the registry's H.

  x (B, S, S, C) -> (h,) with h (B, P/4, P/4, 4 * features): a reflection-padded 7x7 conv
  to `features`, then `RESNET_DOWN` 3x3 stride-2 convs doubling the width, each followed by
  norm and ReLU (pix2pix's `ResnetGenerator`, ngf = `features`). S is zero-padded
  (centred) to P, the next multiple of 4; `BasisResNetGenerator(output_size=S)` crops back.
  A tuple of one map, so `h[-1]` is the bottleneck as for the project's encoder.
  """
  features: int = 64
  norm: str = 'batch'

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if x.ndim != 4:
      raise ValueError(f'BasisResNetEncoder expects (B, H, W, C), got {x.shape}')
    m = 2 ** RESNET_DOWN
    pads = [(0, 0)] + [((-s % m) // 2, (-s % m) - (-s % m) // 2) for s in x.shape[1:3]]
    x = jnp.pad(x, pads + [(0, 0)])
    u = nn.relu(norm_layer(self.norm, train)(_reflect_conv(x, self.features, 7)))
    for i in range(RESNET_DOWN):
      u = nn.Conv(self.features * 2 ** (i + 1), (3, 3), strides=2, padding=((1, 1), (1, 1)))(u)
      u = nn.relu(norm_layer(self.norm, train)(u))
    return (u,)


class BasisResidualBlock(nn.Module):
  r"""x + norm(conv(relu(norm(BasisConv(x, z))))): a BasisConv, then a regular conv.

  BasisGAN's stochastic residual block ("regular convolutional layers and convolutional
  layers with basis generators convolve alternatively"); both 3x3 with reflection padding,
  as pix2pix's `ResnetBlock`.
  """
  num_bases: int = 5
  basis_hidden: int = HIDDEN
  norm: str = 'batch'
  spectral_norm: bool = False
  lipschitz: float = 1.0

  @nn.compact
  def __call__(self, x, z, *, train: bool = False):
    c = x.shape[-1]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
    u = BasisConv(c, 3, self.num_bases, basis_hidden=self.basis_hidden, padding='VALID',
                  name='basis_conv')(xp, z)
    u = nn.relu(norm_layer(self.norm, train)(u))
    wrap = lambda layer: maybe_spectral_norm(layer, self.spectral_norm, self.lipschitz)
    u = _reflect_conv(u, c, 3, name='conv', wrap=wrap, train=train)
    return x + norm_layer(self.norm, train)(u)


class BasisResNetGenerator(nn.Module):
  r"""The stochastic back of pix2pix's ResNet generator: G(h, z) of the registry.

  h = `BasisResNetEncoder`'s (features,) ; `num_blocks` `BasisResidualBlock`s (block i
  reads latent i of `split_latents`), then `RESNET_DOWN` 3x3 stride-2 transposed convs
  halving the width with norm and ReLU, a reflection-padded 7x7 conv to `out_channels`,
  `final_activation`, and a centre crop to `output_size`. pix2pix uses 9 blocks at 256 px
  and 6 at 128 px; `basisgan.num_blocks` sets it here.

  Attributes:
    out_channels: channels of y.
    num_blocks: residual blocks, one BasisConv each.
    num_bases, latent_dim, basis_hidden, per_layer_latents: as `BasisUNetGenerator`.
    norm: 'batch' (pix2pix), 'instance' or 'none'.
    final_activation: 'tanh' or 'none'.
    output_size: side of y (the encoder pads to a multiple of 4); None: no crop.
    spectral_norm, lipschitz: on the regular convs (not in the paper).
  """
  out_channels: int
  num_blocks: int = 6
  num_bases: int = 5
  latent_dim: int = LATENT_DIM
  basis_hidden: int = HIDDEN
  per_layer_latents: bool = True
  norm: str = 'batch'
  final_activation: str = 'tanh'
  output_size: int | None = None
  spectral_norm: bool = False
  lipschitz: float = 1.0

  def num_basis_convs(self, h=None) -> int:
    """One BasisConv per residual block (h is not needed; kept for a common signature)."""
    del h
    if self.num_blocks < 1:
      raise ValueError(f'num_blocks must be >= 1, got {self.num_blocks}')
    return self.num_blocks

  @nn.compact
  def __call__(self, h, z, *, train: bool = False):
    u = _features(h)[-1]
    zs = split_latents(z, self.num_basis_convs(), self.latent_dim, self.per_layer_latents)
    for i in range(self.num_blocks):
      u = BasisResidualBlock(self.num_bases, self.basis_hidden, self.norm, self.spectral_norm,
                             self.lipschitz, name=f'block_{i}')(u, zs[i], train=train)
    wrap = lambda layer: maybe_spectral_norm(layer, self.spectral_norm, self.lipschitz)
    for _ in range(RESNET_DOWN):
      up = nn.ConvTranspose(max(u.shape[-1] // 2, 1), (3, 3), strides=(2, 2), padding='SAME')
      u = nn.relu(norm_layer(self.norm, train)(wrap(up)(u, train=train)))
    y = _reflect_conv(u, self.out_channels, 7, wrap=wrap, train=train)
    return _activate(_centre_crop(y, self.output_size), self.final_activation)
