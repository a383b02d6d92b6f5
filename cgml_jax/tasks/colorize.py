r"""Colorization (paper Sec. 5.2): from the lightness L predict the chroma ab in CIE-LAB.

  x = L / 50 - 1 (B, S, S, 1),  y = ab / 110 (B, S, S, 2)   (cgml_jax.data.color scaling)
  E = |a - a_hat| + |b - b_hat| + lam (KL(hist(a_hat) || U) + KL(hist(b_hat) || U))
      (`cgml_jax.losses.colorization_loss`, lam = config.loss.hist_weight)

Outputs are scored as RGB images (L of the input with the predicted ab, converted back
with `cgml_jax.data.color.l_ab_to_rgb`), see `cgml_jax.tasks.image` for the metric protocol.
Default data: the embedded scikit-image crops (no files needed); any RGB source works
(`--config.data.name=cifar10`, 'celeba', 'tfds:stl10', 'folder:PATH').
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from cgml_jax import losses
from cgml_jax.data import color
from cgml_jax.data import transforms
from cgml_jax.tasks import image


def transform(config, protocol=None):
  """uint8 RGB 'image' -> {'x': L, 'y': ab}.

  Random flips (`data.flip`) augment training only; evaluation (protocol set) sees the
  test images as they are.
  """
  steps = [image.resize(config.data.image_size)]
  if protocol is None and config.data.get('flip', False):
    steps.append(transforms.random_flip())
  return transforms.compose(*steps, transforms.colorization())


def loss_fn(config):
  """E of the paper's colorization: L1 on ab plus lam times the histogram KL terms."""
  l = config.loss
  return losses.colorization_loss(lam=l.hist_weight, bins=l.bins, kernel=l.kernel)


def to_image(x, ab):
  """(L, ab) -> RGB in [-1, 1]."""
  return color.l_ab_to_rgb(jnp.asarray(x), jnp.asarray(ab)) * 2.0 - 1.0


def input_image(x):
  """The grey input, shown as its RGB rendering with zero chroma."""
  x = jnp.asarray(x)
  return to_image(x, jnp.zeros(x.shape[:-1] + (2,), x.dtype))


TASK = image.ImageTask(name='colorize', in_channels=1, out_channels=2, transform=transform,
                       loss_fn=loss_fn, to_image=to_image, input_image=input_image)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains L1 and cGML colorizers with the same budget; writes metrics and grids."""
  return image.run(TASK, config, workdir)
