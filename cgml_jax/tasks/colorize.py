r"""Colorization (paper Sec. 5.2): from the lightness L predict the chroma ab in CIE-LAB.

  x = L / 50 - 1 (B, S, S, 1),  y = ab / 110 (B, S, S, 2)   (cgml_jax.data.color scaling)
  E = |a - a_hat| + |b - b_hat| + the colour-balance term of config.loss.hist_form
      (`cgml_jax.losses.colorization_loss`: 'rebalance' weights each pixel's error by the
      rarity of its true colour in the training set, Zhang et al. 2016; 'batch' and
      'per_image' add lam * KL(hist || U) of the batch's or of each image's histogram,
      lam = config.loss.hist_weight; 'none' is the plain L1)

Besides the image metrics of `cgml_jax.tasks.image`, the evaluation reports
  chroma, chroma_gt   mean chroma sqrt(a^2 + b^2) (CIE ab units) of the raw outputs (over
                      the K samples) and of the ground truth
  colorfulness        chroma / chroma_gt (a ratio of means over inputs): below 1 the
                      outputs are greyer (sepia) than the photos

Outputs are scored as RGB images (L of the input with the predicted ab, converted back
with `cgml_jax.data.color.l_ab_to_rgb`), see `cgml_jax.tasks.image` for the metric protocol.
Default data: the embedded scikit-image crops (no files needed); any RGB source works
(`--config.data.name=cifar10`, 'celeba', 'tfds:stl10', 'folder:PATH').
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

from cgml_jax import losses
from cgml_jax.data import color, transforms
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


_PRIORS: dict = {}


def ab_prior(config) -> np.ndarray:
  """Empirical (bins, bins) ab distribution of up to `loss.prior_examples` training images.

  The images are spread evenly over the training split and transformed as for training
  (without flips, which do not change the distribution). Cached per data configuration:
  the loss is built once per method and once more for evaluation.
  """
  d, l = config.data, config.loss
  key = (d.name, d.data_dir, d.train_split, d.image_size, d.num_train, config.seed, l.bins,
         l.prior_examples)
  if key not in _PRIORS:
    src = image.default_source(config, d.train_split)
    n = min(int(l.prior_examples), len(src))
    fn = transforms.compose(image.resize(d.image_size), transforms.colorization())
    rows = np.unique(np.linspace(0, len(src) - 1, n).round().astype(int))
    ab = np.stack([fn(src[int(i)], None)['y'] for i in rows])
    _PRIORS[key] = losses.ab_histogram(ab, l.bins)
  return _PRIORS[key]


def loss_fn(config):
  """E of the paper's colorization: L1 on ab plus the term of `loss.hist_form`."""
  l = config.loss
  # Configs written before hist_form existed meant the per-image KL.
  form = l.get('hist_form', 'per_image')
  weights = None
  if form == 'rebalance':
    weights = losses.rebalance_weights(ab_prior(config), mix=l.rebalance_mix)
  return losses.colorization_loss(lam=l.hist_weight, bins=l.bins, kernel=l.kernel, form=form,
                                  weights=weights)


def chroma_scores(batch, outputs) -> dict[str, np.ndarray]:
  """Per input: mean chroma (ab units) of the outputs (B, K, H, W, 2) and of batch['y'].

  Raw outputs, before the LAB -> RGB conversion clips them to the sRGB gamut, so the
  number is what the model predicts rather than what the display can show.
  """
  def chroma(ab):
    ab = np.asarray(ab, np.float64) * color.AB_SCALE
    return np.sqrt((ab ** 2).sum(axis=-1))
  b = outputs.shape[0]
  return {'chroma': chroma(outputs).reshape(b, -1).mean(axis=1),
          'chroma_gt': chroma(batch['y']).reshape(b, -1).mean(axis=1)}


def colorfulness(summary: dict) -> dict[str, float]:
  """Mean output chroma over mean true chroma (a ratio of means: grey crops weigh little)."""
  return {'colorfulness': summary['chroma'] / max(summary['chroma_gt'], 1e-8)}


def to_image(x, ab):
  """(L, ab) -> RGB in [-1, 1]."""
  return color.l_ab_to_rgb(jnp.asarray(x), jnp.asarray(ab)) * 2.0 - 1.0


def input_image(x):
  """The grey input, shown as its RGB rendering with zero chroma."""
  x = jnp.asarray(x)
  return to_image(x, jnp.zeros(x.shape[:-1] + (2,), x.dtype))


TASK = image.ImageTask(name='colorize', in_channels=1, out_channels=2, transform=transform,
                       loss_fn=loss_fn, to_image=to_image, input_image=input_image,
                       extra_scores=chroma_scores, extra_summary=colorfulness)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains L1 and cGML colorizers with the same budget; writes metrics and grids."""
  return image.run(TASK, config, workdir)
