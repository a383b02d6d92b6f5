"""Toy of paper Sec. 4 / Fig. 3: y = s * (x, x^2, x^3), s from `data.modes`.

  python -m experiments.run --config=experiments/toy.py --workdir=runs/toy
  python -m experiments.run --config=experiments/toy.py:smoke --workdir=runs/toy_smoke
  python -m experiments.run --config=experiments/toy.py:best --config.data.modes='(-4.,0.,4.)'
  python -m experiments.seeds --config=experiments/toy.py:paper --seeds=0-4 \
      --name=toy/paper_modes3 --config.data.modes='(-4.,0.,4.)'

Presets (docs/toy.md has their seed tables):
  paper (= no argument): Algorithm 1 and Eq. 4 as written; constant beta, plain Z, plain
    Eq. 4 step, random z_0.
  best: paper + z_0 the best of 16 random points by E (`latent.init_candidates`) and a
    shorter z step, beta = 0.3 (`latent.step_size`).
  smoke: a few training steps, for tests (about a minute on a CPU, mostly compilation).
"""

import ml_collections

from cgml_jax import configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, paper=False, best=False, smoke=False)
  c = configs.base('toy', methods=('l1', 'cgml_no_rho', 'cgml'))
  # Of the peers, cIMLE (no discriminator) runs on the toy's MLPs, with
  # `--config.methods="('cgml', 'cimle')"`; it uses the train block's optimiser.
  configs.add_cimle_fields(c)

  c.data = ml_collections.ConfigDict()
  c.data.modes = (4.0, -4.0)   # the scales s; y = s * (x, x^2, x^3), up to 4 distinct values
  c.data.num_train = 4096      # fixed training set (persistent z needs example ids)
  c.data.num_test = 200        # held-out x ~ U[-1, 1]
  c.data.batch_size = 256

  c.loss = ml_collections.ConfigDict()
  c.loss.error = 'l1'           # E: 'l1' (mean |y_hat - y|) or 'l2' (mean squared)

  c.model.width = 128          # hidden width of the three-layer MLPs H, G, Z
  c.model.depth = 3
  c.model.h_dim = 64           # size of h = H(x)
  c.model.z_dim = 3            # z on S^{z_dim - 1}; shared by G and Z
  c.model.activation = 'relu'
  c.model.spectral_norm = True  # Lipschitz G (paper Eq. 3)
  c.model.lipschitz = 4.0       # C per layer of G; G is then at most C^depth-Lipschitz
  c.model.latent_spectral_norm = True
  c.model.latent_lipschitz = 4.0
  c.model.latent_residual = False  # not in the paper: Z predicts r_hat - z instead of r_hat

  c.latent.traverse_steps = 50  # T of Eq. 4 at inference

  c.train.steps = 2000
  c.train.inner_steps = 8       # l of Algorithm 1
  c.train.log_every = 500       # console line, metric writers and history every N steps

  c.checkpoint.every = 500      # Orbax checkpoint every N steps (and at the end, and on SIGTERM)
  c.checkpoint.keep = 3         # newest checkpoints kept per method

  c.logging.tensorboard = True  # event files in workdir/logs (metrics.jsonl is always written)
  c.logging.images = True       # image summary of the K samples per method after training

  c.eval = ml_collections.ConfigDict()
  c.eval.num_samples = 32       # K samples per test x
  c.eval.tau_frac = 0.05        # tau = tau_frac * max|s|
  c.eval.plots = True

  if a.best:
    # Not in the paper: z_0 of each batch is the best of 16 random sphere points by E
    # instead of one (cgml.initial_latents). A random z_0 often starts in the basin of a
    # wrong mode that l = 8 z steps do not leave, and G is then trained towards a phantom
    # between modes; everything else is the paper preset.
    c.latent.init_candidates = 16
    # beta = 0.3 instead of 1: at beta = 1 the z steps overshoot the good z_0 that the
    # candidates find, and G is trained at the overshot z (docs/toy.md).
    c.latent.step_size = 0.3
  if a.smoke:
    c.data.num_train = 512
    c.data.num_test = 32
    c.data.batch_size = 64
    c.model.width = 32
    c.model.h_dim = 16
    c.train.steps = 30
    c.train.inner_steps = 2
    c.train.log_every = 10
    c.latent.traverse_steps = 5
    c.eval.num_samples = 4
    c.eval.plots = False
    c.checkpoint.every = 10
    c.logging.images = False
  return c
