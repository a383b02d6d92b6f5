r"""Image-to-image translation (paper Sec. 5.3.1): facades label map -> photo.

  x = the input image (B, S, S, 3) in [-1, 1],  y = the target image (B, S, S, 3)
  E = mean |y_hat - y| (`cgml_jax.cgml.l1_error`)

Data: the offline pix2pix facades (`facades`: 'input' = label map, 'target' = photo, 128px),
or any paired folder in the pix2pix layout (`--config.data.name=pix2pix:PATH`, one file per
pair with A left and B right; `data.direction` says which half is the input, 'BtoA' for
the facades release whose right half is the label map).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from cgml_jax import cgml
from cgml_jax.data import load_source, transforms
from cgml_jax.tasks import image


def source(config, split: str):
  """Local facades npz, or a pix2pix folder (`pix2pix:PATH`; PATH/<split> if it exists)."""
  d = config.data
  if d.name.startswith('pix2pix:'):
    import pathlib

    from cgml_jax.data import resolve_data_dir
    root = pathlib.Path(d.name.partition(':')[2]).expanduser()
    if not root.is_absolute():
      root = resolve_data_dir(d.data_dir or None) / root
    base = split.split('[')[0]
    folder = root / base if (root / base).is_dir() else root
    return load_source(f'pix2pix:{folder}', split, direction=d.direction)
  return image.default_source(config, split)


def transform(config, protocol=None):
  """uint8 {'input', 'target'} -> {'x', 'y'} in [-1, 1] at data.image_size.

  Random flips (`data.flip`) augment training only; evaluation (protocol set) sees the
  test images as they are.
  """
  keys = ('input', 'target')
  steps = [image.resize(config.data.image_size, keys)]
  if protocol is None and config.data.get('flip', False):
    steps.append(transforms.random_flip(keys))
  return transforms.compose(*steps, transforms.paired(*keys))


def loss_fn(config):
  del config
  return cgml.l1_error


def to_image(x, y):
  del x
  return jnp.asarray(y)


def input_image(x):
  return jnp.asarray(x)


TASK = image.ImageTask(name='translate', in_channels=3, out_channels=3, transform=transform,
                       loss_fn=loss_fn, to_image=to_image, input_image=input_image,
                       source=source)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains L1 and cGML translators with the same budget; writes metrics and grids."""
  return image.run(TASK, config, workdir)
