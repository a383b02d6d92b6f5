"""Corrupted-MNIST recovery (paper Sec. 5.1), two settings:

  python -m experiments.run --config=experiments/mnist_corrupted.py --workdir=runs/mnist_overlap
  python -m experiments.run --config=experiments/mnist_corrupted.py:box --workdir=runs/mnist_box
  python -m experiments.run --config=experiments/mnist_corrupted.py:box,best --workdir=runs/box_best
  python -m experiments.run --config=experiments/mnist_corrupted.py:smoke --workdir=runs/m_smoke

'overlap' (default): 20% of training targets have their top half overlapped with another
digit; 'box': a white box in the hole of 30% of the targets. Offline MNIST from
$CGML_DATA_DIR (or ../shared/data); test = the official 10k test set (first eval.num_test).
`best` (not in the paper): E = L2 and z_0 the best of 16 sphere points, as colour modes'
`best`; the run reports cGML with Eq. 4 and at T = 0 (docs/multimodality.md).
"""

import ml_collections

from cgml_jax import configs
from cgml_jax.tasks import image


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, overlap=False, box=False, smoke=False, best=False)
  if a.overlap and a.box:
    raise ValueError("config arguments 'overlap' and 'box' exclude each other")
  c = image.base_config('mnist_corrupted')
  c.data.name = 'mnist'
  c.data.image_size = 28
  c.data.corruption = 'box' if a.box else 'overlap'
  c.data.overlap_rate = 0.2    # fraction of targets overlapped (fresh every epoch)
  c.data.overlap_region = 'top_half'  # 'top_half': visible around the hole too; 'hole'
  c.data.box_rate = 0.3        # p: fraction of targets with a white box in the hole
  c.data.box_size = 4          # side of the box, pixels
  c.data.mask_min = 8          # hole sides in [mask_min, mask_max] pixels, in rows 0..13
  c.data.mask_max = 14
  c.data.batch_size = 32

  c.loss = ml_collections.ConfigDict()
  c.loss.error = 'l1'           # E on the hole: 'l1' (masked mean |y_hat - y|) or 'l2'

  c.model.base_channels = 16
  c.model.max_channels = 64
  c.model.bottleneck_size = 4
  c.model.z_dim = 8
  c.model.latent_hidden = (128, 128)
  # Linear output: with tanh, the sign gradients of the hole L1 on mostly black digits
  # drive G into saturation at -1, where it stops learning and fills holes with black.
  c.model.out_activation = 'none'

  c.train.steps = 3000         # per model
  c.train.inner_steps = 2
  c.train.lr = 1e-3
  c.train.log_every = 200
  c.latent.traverse_steps = 10

  c.eval.num_test = 300
  c.eval.lpips = False         # MNIST: pixel metrics and the mode measurements only
  c.eval.num_samples = 16 if a.box else 10  # K (the box's mode target is set at K = 16)
  c.eval.batch_size = 50
  c.eval.clean_tau = 0.1       # overlap: a sample is on the clean mode if its hole error < tau
  c.eval.box_threshold = 0.5   # box: a sample has the box if its mean on the box pixels
                               # the clean digit leaves dark exceeds this ([0, 1] units)
  if a.best:
    # Not in the paper: the colour-modes `best` (experiments/colour_modes.py), E = L2 and
    # z_0 of each batch the best of 16 random sphere points by E.
    c.loss.error = 'l2'
    c.latent.init_candidates = 16
  if a.smoke:
    image.smoke(c, image_size=28)
    c.data.train_split = 'train[:256]'
    c.data.mask_min = 8
    c.data.mask_max = 10
  return c
