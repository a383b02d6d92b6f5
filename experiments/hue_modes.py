"""Hue modes: a grey photo -> its chroma rotated by one of M angles in the (a, b) plane,
drawn per example from a prior, so every input has M known answers
(cgml_jax/tasks/hue_modes.py).

  python -m experiments.run --config=experiments/hue_modes.py --workdir=runs/hue
  python -m experiments.run --config=experiments/hue_modes.py:paper --workdir=runs/hue_paper
  python -m experiments.run --config=experiments/hue_modes.py:cifar --workdir=runs/hue_cifar
  python -m experiments.run --config=experiments/hue_modes.py:variant=embedded3_skew \
      --workdir=runs/hue_skew
  python -m experiments.run --config=experiments/hue_modes.py:smoke --workdir=runs/hue_smoke

The default draws crops of scikit-image's photos (no files), M = 3 modes at 0, 120 and 240
degrees with a uniform prior, and trains L1 and cGML with each batch's z_0 the best of 16
sphere points (`latent.init_candidates`, as experiments/colour_modes.py ships it; not in
the paper); `paper` is cGML as the paper writes it (z_0 one random point); `cifar` reads
CIFAR-10 from $CGML_DATA_DIR. `variant=NAME` picks an entry of `SUITE`. Besides the
generic image metrics, metrics.json's 'task_metrics' holds the known-mode metrics per
method (docs/multimodality.md, "Hue modes on photos").

Cost and result: not measured yet beyond the smoke run (the budget below mirrors
colour_modes.py's 1500 steps of 16; on photos it may need more).
"""

import ml_collections

from cgml_jax import configs
from cgml_jax.tasks import image
from experiments import colour_modes

SKEW3 = (0.6, 0.3, 0.1)
# The hue-mode variants: name -> (source, M, prior); angles evenly spaced. `variant=NAME`
# selects one. M from 2 to 4, uniform and skewed (a mode at 10 %), embedded crops and
# CIFAR-10.
SUITE = {
    'embedded2': ('embedded', 2, ()),
    'embedded3': ('embedded', 3, ()),
    'embedded3_skew': ('embedded', 3, SKEW3),
    'embedded4': ('embedded', 4, ()),
    'cifar3': ('cifar10', 3, ()),
    'cifar3_skew': ('cifar10', 3, SKEW3),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, smoke=False, cifar=False, paper=False, variant='')
  if a.variant and a.variant not in SUITE:
    raise ValueError(f'unknown variant {a.variant!r}; expected one of {sorted(SUITE)}')
  source, num_modes, prior = SUITE[a.variant] if a.variant else (
      'cifar10' if a.cifar else 'embedded', 3, ())
  c = image.base_config('hue_modes')
  c.data.name = source         # 'embedded' (scikit-image crops, no files) or 'cifar10'
  c.data.image_size = 32       # S; CIFAR-10's native side
  c.data.num_train = 4096      # embedded only: crops in the training split
  c.data.flip = True           # random horizontal flips while training
  c.data.num_modes = num_modes  # M, 2..6
  c.data.angles = ()           # the M rotation angles in degrees; () = 360 m / M
  c.data.prior = prior         # p over the M modes, normalised; () = uniform
  c.data.batch_size = 16

  c.loss = ml_collections.ConfigDict()
  # E of every method, 'l2' (mean squared) as on colour modes, where under 'l1' cGML
  # collapsed to L1's median on some seeds (docs/multimodality.md).
  c.loss.error = 'l2'

  colour_modes.known_mode_backbone(c)
  # Linear output: a rotated target keeps each pixel's chroma, up to ~1.2 in ab / 110
  # units, which a tanh output could not reach in every direction.
  c.model.out_activation = 'none'
  # Not in the paper: z_0 of each batch is the best of 16 random sphere points by E, as
  # colour_modes.py ships cGML; `paper` is one random point.
  c.latent.init_candidates = 1 if a.paper else 16

  c.eval.num_test = 128        # first N test images (grey ones are then skipped)
  c.eval.num_samples = 16      # K samples per input, for the image and the mode metrics
  c.eval.lpips = False         # the mode metrics and PSNR against the rotated truths suffice
  # The mode rule (cgml_jax/tasks/hue_modes.py); chroma in CIE ab units.
  c.eval.pixel_chroma = 5.0    # truth pixels at least this chromatic are fitted
  c.eval.min_chroma = 5.0      # inputs whose truth has a lower mean chroma are skipped
  c.eval.min_chromatic_fraction = 0.1  # ... or fewer chromatic pixels than this share
  c.eval.residual_tol = 0.5    # a mode needs ||v - s e^{i phi} u|| / ||v|| below this
  c.eval.min_scale = 0.5       # ... and the fitted scale s at least this (not desaturated)
  if a.smoke:
    image.smoke(c, image_size=16)
    c.data.flip = False
    if source == 'cifar10':
      c.data.train_split = 'train[:256]'
    c.eval.num_samples = max(4, num_modes)  # K >= M, so coverage can be 1
  return c
