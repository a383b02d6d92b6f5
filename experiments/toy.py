"""Toy of paper Sec. 4 / Fig. 3: y = s * (x, x^2, x^3), s from `data.modes`.

  python -m experiments.run --config=experiments/toy.py --workdir=/tmp/toy
  python -m experiments.run --config=experiments/toy.py:smoke --workdir=/tmp/toy_smoke
  python -m experiments.run --config=experiments/toy.py:best --config.data.modes='(-4.,0.,4.)'
  python -m experiments.seeds --config=experiments/toy.py:paper --seeds=0-4 \
      --name=toy/paper_modes3 --config.data.modes='(-4.,0.,4.)'

Presets (docs/toy.md has their seed tables):
  paper (= no argument): Algorithm 1 and Eq. 4 as written; constant beta, plain Z, plain
    Eq. 4 step, random z_0.
  best: paper + z_0 the best of 16 random points by E (`latent.init_candidates`).
  smoke: a few seconds, for tests.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = 'toy'
  c.seed = 0
  c.methods = ('l1', 'cgml_no_rho', 'cgml')  # trained with the same budget, in this order

  c.data = ml_collections.ConfigDict()
  c.data.modes = (4.0, -4.0)   # the scales s; y = s * (x, x^2, x^3), up to 4 distinct values
  c.data.num_train = 4096      # fixed training set (persistent z needs example ids)
  c.data.num_test = 200        # held-out x ~ U[-1, 1]
  c.data.batch_size = 256

  c.model = ml_collections.ConfigDict()
  c.model.width = 128          # hidden width of the three-layer MLPs H, G, Z
  c.model.depth = 3
  c.model.h_dim = 64           # size of h = H(x)
  c.model.z_dim = ml_collections.FieldReference(3)  # z on S^{z_dim - 1}; shared by G and Z
  c.model.activation = 'relu'
  c.model.spectral_norm = True  # Lipschitz G (paper Eq. 3)
  c.model.lipschitz = 4.0       # C per layer of G; G is then at most C^depth-Lipschitz
  c.model.latent_spectral_norm = True
  c.model.latent_lipschitz = 4.0
  c.model.latent_residual = False  # not in the paper: Z predicts r_hat - z instead of r_hat

  c.latent = ml_collections.ConfigDict()
  c.latent.init = 'random'      # 'random': fresh z_0 per batch; 'persistent': per-example table
  c.latent.step_size = 1.0      # beta of the z step (of the first inner step if decayed)
  c.latent.step_size_decay = 1.0  # not in the paper (1 there): inner step t uses beta * decay^t
  c.latent.alpha = 1.0          # rho = alpha * ||z' - z||
  c.latent.use_momentum = True  # False = the "w/o rho" ablation for the 'cgml' method too
  c.latent.traverse_steps = 50  # T of Eq. 4 at inference
  c.latent.clip_step = False    # not in the paper: Eq. 4 step min(rho_hat, ||r_hat - z||)
  # Multimodality options, not in the paper (cgml.Hyper); these defaults are the paper's.
  c.latent.init_candidates = 1  # z_0 = best of N random sphere points by E (1 = random)
  c.latent.target = 'next'      # Z fitted to the next z ('next') or the descent's 'end'
  c.latent.redraw_rho = 0.0     # inference: redraw samples whose final rho_hat > this (0 off)
  c.latent.redraw_rounds = 0    # ... this many times

  c.train = ml_collections.ConfigDict()
  c.train.steps = 2000
  c.train.inner_steps = 8       # l of Algorithm 1
  c.train.generator_update = 'every'  # 'every' inner step (Algorithm 1) or 'last' only
  c.train.unroll = True         # unrolled inner scan; False: the same function rolled
  c.train.lr = 1e-3             # Adam, (H, G)
  c.train.lr_latent = 1e-3      # Adam, Z
  c.train.schedule = 'cosine'
  c.train.warmup_steps = 0
  c.train.grad_clip = 1.0       # global-norm clipping, 0 = off
  c.train.log_every = 500       # console line, metric writers and history every N steps

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 500      # Orbax checkpoint every N steps (and at the end, and on SIGTERM)
  c.checkpoint.keep = 3         # newest checkpoints kept per method
  c.checkpoint.async_save = False  # write in the background (the device->host copy still blocks)
  # The workdir's config.json must match this config, except for the fields in
  # cgml_jax.checkpoint.RESUMABLE_FIELDS (logging, checkpoint cadence, plots). True
  # continues anyway (e.g. to extend train.steps, which also stretches the lr schedule).
  c.checkpoint.allow_config_mismatch = False

  c.logging = ml_collections.ConfigDict()
  c.logging.tensorboard = True  # event files in workdir/logs (metrics.jsonl is always written)
  c.logging.images = True       # image summary of the K samples per method after training

  c.distributed = ml_collections.ConfigDict()  # multi-host; empty/0/-1 = from the environment
  c.distributed.coordinator_address = ''  # host:port of process 0 (JAX_COORDINATOR_ADDRESS)
  c.distributed.num_processes = 0         # JAX_NUM_PROCESSES
  c.distributed.process_id = -1           # JAX_PROCESS_ID

  c.eval = ml_collections.ConfigDict()
  c.eval.num_samples = 32       # K samples per test x
  c.eval.tau_frac = 0.05        # tau = tau_frac * max|s|
  c.eval.plots = True

  if arg in (None, '', 'paper'):
    pass  # Algorithm 1 and Eq. 4 as written: the defaults above
  elif arg == 'smoke':
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
  elif arg == 'best':
    # Not in the paper: z_0 of each batch is the best of 16 random sphere points by E
    # instead of one (cgml.initial_latents). A random z_0 often starts in the basin of a
    # wrong mode that l = 8 z steps do not leave, and G is then trained towards a phantom
    # between modes; everything else is the paper preset.
    c.latent.init_candidates = 16
  elif arg == 'multimode':
    raise ValueError('the "multimode" preset was tuned with a broken learning-rate '
                     'schedule and is gone; use "best" (docs/toy.md)')
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}; expected nothing, "paper", "best" '
                     'or "smoke"')
  return c
