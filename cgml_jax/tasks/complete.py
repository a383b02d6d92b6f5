r"""Image completion (paper Sec. 5.3): fill a masked hole; several plausible fillings.

  x = image with the hole set to 0, plus the mask as a 4th channel (B, S, S, C + 1)
  y = the full image (B, S, S, C),  mask = 1 in the hole
  E = mean |y_hat - y| over the hole (`cgml_jax.losses.masked_l1`)

Training masks are random squares of side in [data.mask_min, data.mask_max] (fractions of
S), fresh every epoch. Evaluation protocols (`eval.protocols`):

  area10, area15, area25   a square covering 10 / 15 / 25 % of the image at a random
                           position (the paper's Table 3 protocol)
  center                   the centred square covering 25 %
  irregular                free-form strokes (`cgml_jax.data.masks.irregular_mask`)

Outputs are scored after compositing with the observed pixels (y_hat in the hole, x
elsewhere), see `cgml_jax.tasks.image`. Data: CelebA 64px (`celeba`), facades photos
(`--config.data.name=facades --config.data.image_key=target`), or any image source.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from cgml_jax import losses
from cgml_jax.data import masks, transforms
from cgml_jax.tasks import image

PROTOCOLS = ('area10', 'area15', 'area25', 'center', 'irregular')
_FRACTIONS = {'area10': 0.10, 'area15': 0.15, 'area25': 0.25}


def mask_fn(config, protocol: str | None):
  """(rng, H, W) -> (H, W, 1) mask for training (None) or an evaluation protocol."""
  s = config.data.image_size
  if protocol is None:
    lo = max(1, int(round(config.data.mask_min * s)))
    hi = max(lo, int(round(config.data.mask_max * s)))
    return transforms.square_masks(lo, hi)
  if protocol in _FRACTIONS:
    return transforms.fraction_masks(_FRACTIONS[protocol])
  if protocol == 'center':
    return lambda rng, h, w: masks.center_mask(h, w, 0.25)
  if protocol == 'irregular':
    return transforms.irregular_masks()
  raise ValueError(f'unknown completion protocol {protocol!r}; expected one of {PROTOCOLS}')


def transform(config, protocol=None):
  """uint8 image -> {'x': masked image + mask channel, 'y': image, 'mask'}."""
  key = config.data.image_key
  crop = int(config.data.get('center_crop', 0))
  steps = [image.resize(config.data.image_size, (key,), crop), transforms.to_float((key,))]
  if protocol is None and config.data.get('flip', False):
    steps.insert(1, transforms.random_flip((key,)))
  return transforms.compose(*steps, transforms.completion(mask_fn(config, protocol), key=key))


def loss_fn(config):
  del config
  return losses.masked_l1


def to_image(x, y):
  """The observed pixels of x with y in the hole (x's last channel is the mask)."""
  x, y = jnp.asarray(x), jnp.asarray(y)
  m = x[..., -1:]
  return x[..., :-1] * (1.0 - m) + y * m


def input_image(x):
  """The masked input; the hole shows as mid grey."""
  return jnp.asarray(x)[..., :-1]


def protocols(config):
  bad = [p for p in config.eval.protocols if p not in PROTOCOLS]
  if bad:
    raise ValueError(f'unknown completion protocols {bad}; expected some of {PROTOCOLS}')
  return tuple(config.eval.protocols)


def make_task(channels: int = 3) -> image.ImageTask:
  return image.ImageTask(name='complete', in_channels=channels + 1, out_channels=channels,
                         transform=transform, loss_fn=loss_fn, to_image=to_image,
                         input_image=input_image, protocols=protocols)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains L1 and cGML inpainters with the same budget; evaluates every mask protocol."""
  return image.run(make_task(config.data.channels), config, workdir)
