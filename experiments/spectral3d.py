"""Spectral-map recovery and linear-probe classification on ModelNet10 (cGML Sec. 5.4).

  python -m experiments.run --config=experiments/spectral3d.py --workdir=runs/spectral3d
  python -m experiments.run --config=experiments/spectral3d.py:smoke --workdir=runs/s3d_smoke

See cgml_jax/tasks/spectral3d.py for the corruption, the metrics and the probe protocol.
"""

import ml_collections

from cgml_jax import configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, smoke=False)
  # methods: trained with the same budget; 'context_encoder' is also available
  c = configs.base('spectral3d', methods=('l1', 'cgml'))

  c.data = ml_collections.ConfigDict()
  c.data.data_dir = ''         # holds modelnet/modelnet10_*.npz ('' = $CGML_DATA_DIR or default)
  c.data.num_train = 0         # shapes of the train split (0 = all 3991; else a seeded subset)
  c.data.num_test = 0          # shapes of the test split (0 = all 908)
  c.data.l_max = 15            # SH degree L: maps (L+1) x (2L+1), padded to 31 x 31 (32 in H)
  c.data.n_shells = 2          # radial density shells; channels = 1 (extent) + n_shells
  c.data.zernike_order = 16    # N of the raw 3D Zernike descriptor (probe baseline)
  c.data.batch_size = 32

  c.corrupt = ml_collections.ConfigDict()
  c.corrupt.mask_prob = 0.5    # P(mask the rectangles); otherwise add noise inside them
  c.corrupt.num_rects = 2      # rectangles per map (their union is corrupted)
  c.corrupt.max_frac = 0.5     # max side of a rectangle, fraction of the rows / columns
  c.corrupt.noise_std = 1.0    # noise std in normalised units

  c.model.base_channels = 32   # encoder width of the first block, doubling per block
  c.model.max_channels = 128
  c.model.bottleneck_size = 2  # H: 32 -> 2 x 2 x 128 bottleneck (512 features for the probe)
  c.model.z_dim = 8            # z on S^{z_dim - 1}
  c.model.lipschitz = 1.0      # spectral-norm constant of G and Z per layer
  c.model.latent_hidden = (128, 128)
  c.model.impl = 'auto'

  c.latent.step_size = 1000.0  # beta; E is a mean over ~3000 entries, so grad_z is O(1e-4)
  c.latent.traverse_steps = 10  # T of Eq. 4 at inference

  c.train.steps = 2000         # per method
  c.train.inner_steps = 2      # l of Algorithm 1
  c.train.region_weight = 4.0  # E weight 1 + region_weight inside the corrupted entries
  c.checkpoint.every = 500

  configs.add_peer_fields(c)   # the Context Encoder's D and optimiser (gan.*)
  c.gan.disc_features = c.model.get_ref('base_channels')
  c.gan.disc_max_features = c.model.get_ref('max_channels')

  c.eval = ml_collections.ConfigDict()
  c.eval.num_samples = 5       # K cGML samples per test map
  c.eval.batch_size = 64       # maps per inference / feature batch
  c.eval.bands = ((0, 3), (4, 7), (8, 11), (12, 15))  # inclusive degree bands
  c.eval.plots = True
  c.eval.figure_rows = 4       # shapes in fig20_spectral3d.png (half masked, half noisy)
  c.eval.figure_samples = 3    # cGML samples shown per shape
  c.eval.render_bandwidth = 32  # synthesis grid for the point clouds (2B x 2B points)

  c.probe = ml_collections.ConfigDict()
  c.probe.l2_grid = (1e-4, 1e-3, 1e-2, 1e-1)  # on mean CE + l2 ||W||^2
  c.probe.val_frac = 0.2       # held-out fraction of train for choosing l2
  c.probe.steps = 100          # L-BFGS iterations

  if a.smoke:
    c.data.num_train = 64
    c.data.num_test = 32
    c.data.l_max = 6           # 7 x 13 maps, 13 x 13 padded (16 in H)
    c.data.zernike_order = 4
    c.data.batch_size = 8
    c.model.base_channels = 8
    c.model.max_channels = 16
    c.model.bottleneck_size = 4  # 16 -> 4: two blocks
    c.model.z_dim = 4
    c.model.latent_hidden = (16,)
    c.train.steps = 3
    c.train.inner_steps = 1
    c.train.log_every = 1
    c.latent.traverse_steps = 2
    c.eval.num_samples = 2
    c.eval.batch_size = 32
    c.eval.bands = ((0, 2), (3, 6))
    c.eval.figure_rows = 2
    c.eval.figure_samples = 1
    c.eval.render_bandwidth = 8
    c.probe.l2_grid = (1e-2,)
    c.probe.steps = 5
  return c
