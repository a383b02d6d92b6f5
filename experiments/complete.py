"""Image completion (paper Sec. 5.3): random square holes in training; Table 3 protocol.

  python -m experiments.run --config=experiments/complete.py --workdir=runs/complete
  python -m experiments.run --config=experiments/complete.py:cpu --workdir=runs/complete_cpu
  python -m experiments.run --config=experiments/complete.py:smoke --workdir=runs/k_smoke
  python -m experiments.run --config=experiments/complete.py --workdir=runs/complete_facades \
      --config.data.name=facades --config.data.image_key=target --config.data.image_size=128

Default: CelebA 64px from the offline data folder ($CGML_DATA_DIR or ../shared/data);
train = faces 000001-003000, test = 003501-004000 (see cgml_jax/data/sources.py).
"""

import ml_collections

from cgml_jax import configs
from cgml_jax.tasks import image


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, cpu=False, smoke=False)
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
  if a.smoke:
    image.smoke(c)
    c.data.flip = False
    c.data.train_split = 'train[:64]'
    c.eval.protocols = ('area25', 'irregular')
  return c
