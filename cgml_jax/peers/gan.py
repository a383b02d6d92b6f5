r"""GAN losses and the two discriminators the peer methods use.

Losses act on discriminator logits of any shape (a PatchGAN gives one logit per patch) and
return scalar means, as in the reference implementations (BCE/MSE averaged over every
logit of the batch).

  non-saturating (Goodfellow et al. 2014, Sec. 3):
    D:  -log D(x, y) - log(1 - D(x, G(x, z)))        = softplus(-l_real) + softplus(l_fake)
    G:  -log D(x, G(x, z))                           = softplus(-l_fake)
  least squares (Mao et al. 2017, the 0-1 coding a = 0, b = c = 1):
    D:  (l_real - 1)^2 + l_fake^2                    G:  (l_fake - 1)^2

pix2pix (Isola et al. 2017, Sec. 3.3) halves the D objective "to slow down the rate at which
D learns relative to G"; `d_loss` does the same, so every D loss here is 0.5 (real + fake).

Discriminator contract: `disc(x, y, train=bool) -> logits` with logits (B, ...); `x` is the
condition and `y` the real or generated output. An unconditional discriminator ignores x.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cgml_jax.models.lipschitz import maybe_spectral_norm

GAN_LOSSES = ('ns', 'lsgan')
NORMS = ('batch', 'instance', 'none')


# ---------------------------------------------------------------------------------------
# Losses.


def ns_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  r"""Non-saturating D loss: the D side of Goodfellow et al. 2014 Eq. 1, halved (pix2pix).

  0.5 * [mean softplus(-l_real) + mean softplus(l_fake)], i.e. the BCE of sigmoid(l)
  against 1 for real and 0 for fake.

  Args:
    real_logits: D logits on real pairs, any shape.
    fake_logits: D logits on generated pairs, any shape.

  Returns:
    Scalar loss; lower when D scores real high and fake low.
  """
  return 0.5 * (jnp.mean(jax.nn.softplus(-real_logits)) +
                jnp.mean(jax.nn.softplus(fake_logits)))


def ns_g_loss(fake_logits: jax.Array) -> jax.Array:
  r"""Non-saturating G loss, Goodfellow et al. 2014 Sec. 3: mean -log sigmoid(l_fake).

  Returns:
    Scalar loss; lower when D is fooled (scores fakes as real).
  """
  return jnp.mean(jax.nn.softplus(-fake_logits))


def lsgan_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  r"""LSGAN D loss (Mao et al. 2017; a = 0, b = 1): 0.5 [mean (l_r - 1)^2 + mean l_f^2]."""
  return 0.5 * (jnp.mean(jnp.square(real_logits - 1.0)) + jnp.mean(jnp.square(fake_logits)))


def lsgan_g_loss(fake_logits: jax.Array) -> jax.Array:
  r"""LSGAN G loss (Mao et al. 2017; c = 1): mean (l_fake - 1)^2."""
  return jnp.mean(jnp.square(fake_logits - 1.0))


def gan_losses(kind: str) -> tuple[Callable, Callable]:
  """(d_loss(real_logits, fake_logits), g_loss(fake_logits)) for 'ns' or 'lsgan'."""
  if kind == 'ns':
    return ns_d_loss, ns_g_loss
  if kind == 'lsgan':
    return lsgan_d_loss, lsgan_g_loss
  raise ValueError(f'unknown GAN loss {kind!r}; expected one of {GAN_LOSSES}')


# ---------------------------------------------------------------------------------------
# Discriminators.


def norm_layer(kind: str, train: bool):
  """The normalisation layer of a discriminator or generator block (pix2pix's choices).

  Args:
    kind: one of `NORMS`: 'batch' (BatchNorm, running averages unless `train`),
      'instance' (GroupNorm with one channel per group) or 'none' (the identity).
    train: use and update batch statistics (BatchNorm only).

  Returns:
    A callable x -> normalised x.
  """
  if kind == 'batch':
    # Momentum 0.9 matches PyTorch's BatchNorm2d default (0.1 there), as in pix2pix.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9)
  if kind == 'instance':
    return nn.GroupNorm(num_groups=None, group_size=1)
  if kind == 'none':
    return lambda x: x
  raise ValueError(f'unknown norm {kind!r}; expected one of {NORMS}')


def patch_receptive_field(num_down: int) -> int:
  """Receptive field of a PatchGAN with `num_down` stride-2 4x4 convs then two stride-1.

  num_down = 1, 2, 3, 4 give 16, 34, 70, 142 pixels (pix2pix Sec. 4.4: 70x70 is n=3).
  """
  rf = 1
  for stride in reversed([2] * num_down + [1, 1]):
    rf = (rf - 1) * stride + 4
  return rf


def patch_num_down(height: int, width: int, max_down: int = 3) -> int:
  """Stride-2 layers for an image of this size: log2(min(H, W) / 8), clipped to [1, max].

  At 256 (and down to 64) this is the classic 70x70 PatchGAN (3 layers, 30x30 logits at
  256); at 32 a 34x34 one and at 16 or less a 16x16 one, so each logit still sees a patch
  of about the image size rather than mostly zero padding, and the logit map stays >= 2x2.
  """
  side = min(height, width)
  if side < 8:
    raise ValueError(f'PatchGAN needs images of at least 8x8, got {height}x{width}')
  return int(max(1, min(max_down, math.floor(math.log2(side / 8)))))


class PatchDiscriminator(nn.Module):
  """Conditional PatchGAN of pix2pix (Isola et al. 2017, Sec. 3.2.2 and App. 6.1.2).

  D(x, y) sees the channel concatenation of condition and output and returns one logit per
  overlapping patch. Layers: C64 (no norm) - C128 - C256 - C512 (stride 1) - conv to 1,
  4x4 kernels, padding 1, LeakyReLU(0.2); the number of stride-2 layers follows the input
  size (`patch_num_down`) unless `num_down` is set.

  Attributes:
    features: width of the first layer; doubles per layer up to 8x.
    num_down: stride-2 layers; None picks them from the input resolution.
    norm: 'batch' (pix2pix), 'instance' or 'none'.
    spectral_norm: wrap every conv in `SpectralNorm` (its vectors in `batch_stats`).
    conditional: False ignores x (an unconditional patch discriminator).
  """
  features: int = 64
  num_down: int | None = None
  norm: str = 'batch'
  spectral_norm: bool = False
  conditional: bool = True

  @nn.compact
  def __call__(self, x, y, *, train: bool = False):
    if y.ndim != 4:
      raise ValueError(f'PatchDiscriminator expects images (B, H, W, C), got y {y.shape}')
    inp = jnp.concatenate([x, y], axis=-1) if self.conditional else y
    n = self.num_down or patch_num_down(y.shape[1], y.shape[2])
    pad = ((1, 1), (1, 1))

    def conv(h, feats, stride, bias=True):
      layer = nn.Conv(feats, (4, 4), strides=(stride, stride), padding=pad, use_bias=bias)
      return maybe_spectral_norm(layer, self.spectral_norm)(h, train=train)

    h = nn.leaky_relu(conv(inp, self.features, 2), 0.2)
    for i in range(1, n + 1):
      stride = 2 if i < n else 1  # the last hidden layer has stride 1 (pix2pix "C512")
      h = conv(h, self.features * min(2 ** i, 8), stride, bias=self.norm == 'none')
      h = nn.leaky_relu(norm_layer(self.norm, train)(h), 0.2)
    return conv(h, 1, 1)


class ContextEncoderDiscriminator(nn.Module):
  """The adversarial discriminator of Context Encoders (Pathak et al. 2016, Sec. 3.3).

  A DCGAN-style classifier of the (generated or real) output alone: 4x4 stride-2 convs
  with BatchNorm and LeakyReLU(0.2), widths 64, 128, ... (capped), until the map is at most
  4x4, then one VALID conv to a single logit per image. Pathak et al.'s adversarial loss
  (their Eq. 2) scores the generated content alone, without the context, hence
  `conditional=False` by default.

  Returns:
    (B,) logits.
  """
  features: int = 64
  max_features: int = 512
  norm: str = 'batch'
  conditional: bool = False

  @nn.compact
  def __call__(self, x, y, *, train: bool = False):
    if y.ndim != 4:
      raise ValueError(f'ContextEncoderDiscriminator expects (B, H, W, C), got y {y.shape}')
    h = jnp.concatenate([x, y], axis=-1) if self.conditional else y
    feats, first = self.features, True
    while min(h.shape[1], h.shape[2]) > 4:
      h = nn.Conv(feats, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                  use_bias=first or self.norm == 'none')(h)
      if not first:  # DCGAN: no norm on the first layer
        h = norm_layer(self.norm, train)(h)
      h = nn.leaky_relu(h, 0.2)
      feats, first = min(2 * feats, self.max_features), False
    h = nn.Conv(1, (h.shape[1], h.shape[2]), padding='VALID')(h)
    return h.reshape(h.shape[0])
