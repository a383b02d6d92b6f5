"""Image-to-image translation (paper Sec. 5.3.1): facades label map -> photo, 128px.

  python -m experiments.run --config=experiments/translate.py --workdir=runs/facades
  python -m experiments.run --config=experiments/translate.py:cpu --workdir=runs/facades_cpu
  python -m experiments.run --config=experiments/translate.py:smoke --workdir=runs/t_smoke
  python -m experiments.run --config=experiments/translate.py --workdir=runs/edges2shoes \
      --config.data.name=pix2pix:/path/to/edges2shoes --config.data.direction=AtoB

Default: the offline facades (train = 360 of the 400 train pairs, test = the official 106).
A pix2pix folder is read as PATH/<split> when such a subfolder exists (train/, test/).
"""

import ml_collections

from cgml_jax import configs
from cgml_jax.tasks import image


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, cpu=False, smoke=False)
  c = image.base_config('translate')
  c.data.name = 'facades'      # or 'pix2pix:PATH'
  c.data.direction = 'BtoA'    # pix2pix folders only: which half is the input
  c.data.image_size = 128
  c.data.flip = True
  c.data.batch_size = 8

  c.model.base_channels = 32
  c.model.max_channels = 128
  c.model.bottleneck_size = 4
  c.model.z_dim = 8
  c.model.latent_hidden = (128, 128)

  c.train.steps = 2000
  c.train.inner_steps = 2
  c.train.lr = 1e-3
  c.train.log_every = 100
  c.latent.traverse_steps = 10

  c.eval.num_test = 106
  c.eval.num_samples = 10
  c.eval.batch_size = 16
  if a.cpu:
    # A real but CPU-sized run: half the widths, fewer steps.
    c.model.base_channels = 16
    c.model.max_channels = 64
    c.train.steps = 600
  if a.smoke:
    image.smoke(c)
    c.data.flip = False
    c.data.train_split = 'train[:32]'
  return c
