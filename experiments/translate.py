"""Image-to-image translation (paper Sec. 5.3.1): facades label map -> photo, 128px.

  python -m experiments.run --config=experiments/translate.py --workdir=runs/facades
  python -m experiments.run --config=experiments/translate.py:cpu --workdir=runs/facades_cpu
  python -m experiments.run --config=experiments/translate.py:smoke --workdir=runs/t_smoke
  python -m experiments.run --config=experiments/translate.py:paper --workdir=runs/facades_paper \
      --config.data.name=pix2pix:/path/to/facades        # GPU/TPU; see docs/training.md
  python -m experiments.run --config=experiments/translate.py --workdir=runs/edges2shoes \
      --config.data.name=pix2pix:/path/to/edges2shoes --config.data.direction=AtoB

Default: the offline facades (train = 360 of the 400 train pairs, test = the official 106).
A pix2pix folder is read as PATH/<split> when such a subfolder exists (train/, test/).

`:paper` is pix2pix's facades setting: the released 256x256 pairs (facades.tar.gz unpacked
to <data folder>/pix2pix/facades, or pix2pix:PATH; TFDS has no facades), its U-Net widths
down to 1x1, 200 epochs. The paper names facades but gives no image size, widths or epochs;
we follow pix2pix (docs/training.md#paper-scale-configs).
"""

import ml_collections

from cgml_jax import configs
from cgml_jax.tasks import image

FACADES_TRAIN = 400            # pairs in pix2pix's facades/train


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, cpu=False, paper=False, smoke=False)
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
  if a.paper:
    paper(c)
  if a.smoke:
    image.smoke(c)
    c.data.flip = False
    c.data.train_split = 'train[:32]'
  return c


def paper(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """pix2pix's facades scale (the paper is silent on sizes here)."""
  c.data.name = 'pix2pix:pix2pix/facades'  # <data folder>/pix2pix/facades/{train,test}/;
                               # or an absolute pix2pix:PATH
  c.data.direction = 'BtoA'    # facades: A = photo (left), B = label map: map -> photo
  c.data.image_size = 256      # pix2pix's size: each half of the 512x256 files
  c.data.batch_size = 8        # global batch (pix2pix: 1), split over all devices
  c.model.base_channels = 64   # pix2pix's U-Net widths: 64, 128, 256, then 512 x 5
  c.model.max_channels = 512
  c.model.bottleneck_size = 1  # 256 -> 1: eight stride-2 blocks, as pix2pix's U-Net
  c.model.latent_hidden = (256, 256)
  c.train.steps = 200 * FACADES_TRAIN // c.data.batch_size  # 200 epochs (10,000 batches)
  c.train.log_every = 200
  c.checkpoint.every = 2000
  return c
