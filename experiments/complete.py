"""Image completion (paper Sec. 5.3): random square holes in training; Table 3 protocol.

  python -m experiments.run --config=experiments/complete.py --workdir=runs/complete
  python -m experiments.run --config=experiments/complete.py:cpu --workdir=runs/complete_cpu
  python -m experiments.run --config=experiments/complete.py:smoke --workdir=runs/k_smoke
  python -m experiments.run --config=experiments/complete.py:paper --workdir=runs/complete_paper \
      --config.data.tfds_data_dir=~/tensorflow_datasets     # GPU/TPU; see docs/training.md
  python -m experiments.run --config=experiments/complete.py --workdir=runs/complete_facades \
      --config.data.name=facades --config.data.image_key=target --config.data.image_size=128

Default: CelebA 64px from the offline data folder ($CGML_DATA_DIR or ../shared/data);
train = faces 000001-003000, test = 003501-004000 (see cgml_jax/data/sources.py).

`:paper` is sized for a GPU or TPU: all of CelebA through TFDS (`tfds build celeb_a
--file_format=array_record` once), the usual 140x140 centre crop resized to 128x128,
pix2pix-like widths, 20 epochs. The paper names CelebA and the Table 3 masks but gives no
image size, widths or epochs; these are our choices (docs/training.md#paper-scale-configs).
"""

import ml_collections

from cgml_jax import configs
from cgml_jax.tasks import image

CELEBA_TRAIN = 162_770         # images in TFDS celeb_a's 'train' split


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, cpu=False, paper=False, smoke=False)
  c = image.base_config('complete')
  c.data.name = 'celeba'       # or 'facades' (with image_key='target'), 'cifar10', ...
  c.data.image_key = 'image'   # the example key holding the image ('target' for facades)
  c.data.channels = 3
  c.data.image_size = 64
  c.data.flip = True
  c.data.mask_min = 0.25       # training squares: side in [mask_min, mask_max] * S
  c.data.mask_max = 0.5
  c.data.batch_size = 16

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

  c.eval.num_test = 128
  c.eval.num_samples = 10
  c.eval.protocols = ('area10', 'area15', 'area25', 'center', 'irregular')
  if a.cpu:
    # A real but CPU-sized run: half the widths, fewer steps.
    c.model.base_channels = 16
    c.model.max_channels = 64
    c.train.steps = 1000
    c.eval.num_test = 64
  if a.paper:
    paper(c)
  if a.smoke:
    image.smoke(c)
    c.data.flip = False
    c.data.train_split = 'train[:64]'
    c.eval.protocols = ('area25', 'irregular')
  return c


def paper(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """GPU/TPU scale. The paper is silent on sizes here, so these are pix2pix-like choices."""
  c.data.name = 'tfds:celeb_a'  # a prepared TFDS dataset (no download at run time)
  c.data.train_split = 'train'  # 162,770 aligned faces, 218x178
  c.data.test_split = 'test'   # 19,962 faces; the first eval.num_test are scored
  c.data.center_crop = 140     # centred 140x140 square first (the usual CelebA crop)
  c.data.image_size = 128
  c.data.batch_size = 64       # global batch, split over all devices
  c.data.num_threads = 8       # grain reader threads (JPEG decoding is the data cost)
  c.model.base_channels = 64   # pix2pix's U-Net widths: 64, 128, 256, 512, 512, 512, 512
  c.model.max_channels = 512
  c.model.bottleneck_size = 1  # 128 -> 1: seven stride-2 blocks, as pix2pix's U-Net
  c.model.latent_hidden = (256, 256)
  c.train.steps = 20 * CELEBA_TRAIN // c.data.batch_size  # 20 epochs (50,865 batches)
  c.train.log_every = 500
  c.checkpoint.every = 5000
  c.eval.num_test = 1000
  c.eval.batch_size = 64
  return c
