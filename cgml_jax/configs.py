"""Config pieces shared by every experiment: the blocks all tasks have, and variant parsing.

A task's `get_config(arg)` (experiments/*.py) starts from `base(task)`, which holds the
blocks every experiment shares (seed, methods, latent, train, checkpoint, logging,
distributed), then sets only what differs, like flax's `configs/v100_x8.py`. Variants are
passed big_vision style, `--config=experiments/toy.py:smoke,seed=2`, and read with
`parse_arg`.
"""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
  """Parses 'a,b=2,c=x' against `spec` (name -> default) into a ConfigDict.

  A bare name sets a bool to True; `name=value` converts value to the default's type.
  Unknown names raise, listing the known ones.

  Example: `parse_arg('smoke,seed=2', smoke=False, seed=0, preset='paper')` gives
  {'smoke': True, 'seed': 2, 'preset': 'paper'}.
  """
  out = ml_collections.ConfigDict(dict(spec))
  for part in (arg or '').split(','):
    part = part.strip()
    if not part:
      continue
    name, has_value, value = part.partition('=')
    if name not in spec:
      raise ValueError(f'unknown config argument {name!r} in {arg!r}; expected some of '
                       f'{sorted(spec)} as name or name=value')
    default = spec[name]
    if not has_value:
      if not isinstance(default, bool):
        raise ValueError(f'config argument {name!r} needs a value ({name}=...)')
      out[name] = True
    elif isinstance(default, bool):
      if value.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(f'config argument {name}={value!r}: expected true or false')
      out[name] = value.lower() in ('true', '1')
    else:
      try:
        out[name] = type(default)(value)
      except ValueError:
        raise ValueError(f'config argument {name}={value!r}: expected a '
                         f'{type(default).__name__}') from None
  return out


def base(task: str, methods: tuple[str, ...] = ('l1', 'cgml')) -> ml_collections.ConfigDict:
  """The blocks every experiment has, with the paper's method as the default."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.seed = 0
  c.methods = methods          # trained with the same budget (steps x batch), in this order

  c.model = ml_collections.ConfigDict()
  c.model.z_dim = ml_collections.FieldReference(8)  # z on S^{z_dim - 1}; shared by G and Z

  # Algorithm 1 and Eq. 4 (cgml_jax.cgml.Hyper; read by cgml_jax.tasks.methods.hyper).
  c.latent = ml_collections.ConfigDict()
  c.latent.init = 'random'     # z_0: 'random' per batch, or 'persistent' per-example table
  c.latent.step_size = 1.0     # beta of the z step (of the first inner step if decayed)
  c.latent.step_size_decay = 1.0  # not in the paper (1 there): step t uses beta * decay^t
  c.latent.alpha = 1.0         # rho = alpha * ||z' - z||
  c.latent.use_momentum = True  # False = the "w/o rho" ablation (also method cgml_no_rho)
  c.latent.traverse_steps = 20  # T of Eq. 4 at inference
  c.latent.clip_step = False   # not in the paper: Eq. 4 steps min(rho_hat, ||r_hat - z||)

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000         # batches per method
  c.train.inner_steps = 3      # l of Algorithm 1
  c.train.generator_update = 'every'  # (H, G) step at 'every' inner step, or the 'last'
  c.train.unroll = True        # unrolled inner scan (fast on XLA:CPU); False: one copy
  c.train.lr = 1e-3            # Adam, (H, G) and the L1 baseline
  c.train.lr_latent = 1e-3     # Adam, Z
  c.train.schedule = 'cosine'  # over train.steps batches: every inner update of a batch
                               # uses the rate of that batch
  c.train.warmup_steps = 0
  c.train.grad_clip = 1.0      # global-norm clipping, 0 = off
  c.train.log_every = 100      # console line, metric writers and history every N steps

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 1000    # Orbax checkpoint every N steps (and at the end, on SIGTERM)
  c.checkpoint.keep = 1        # newest checkpoints kept per method
  c.checkpoint.async_save = False  # write in the background
  # The workdir's config.json must match this config, except for the fields in
  # cgml_jax.training.checkpoint.RESUMABLE_FIELDS. True continues anyway (e.g. to extend
  # train.steps, which also stretches the lr schedule).
  c.checkpoint.allow_config_mismatch = False

  c.logging = ml_collections.ConfigDict()
  c.logging.tensorboard = False  # event files in workdir/logs (metrics.jsonl always)

  c.distributed = ml_collections.ConfigDict()  # multi-host; empty/0/-1 = from environment
  c.distributed.coordinator_address = ''  # host:port of process 0 (JAX_COORDINATOR_ADDRESS)
  c.distributed.num_processes = 0         # JAX_NUM_PROCESSES
  c.distributed.process_id = -1           # JAX_PROCESS_ID
  return c


def add_peer_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The peers' hyper-parameters (cgml_jax.tasks.methods), for configs that train them."""
  c.gan = ml_collections.ConfigDict()
  c.gan.lr = 2e-4              # Adam(lr, beta1 0.5) for G and D (pix2pix, CE, BasisGAN)
  c.gan.disc_features = 64     # width of the first D layer (PatchGAN / CE discriminator)
  c.gan.disc_max_features = 512  # CE discriminator: widest layer
  c.gan.recon_weight = 100.0   # pix2pix / BasisGAN lambda on the task's E
  c.gan.diversity_weight = -1.0  # DSGAN / MSGAN lambda; < 0 = that paper's default

  c.basisgan = ml_collections.ConfigDict()
  c.basisgan.num_bases = 5
  c.basisgan.basis_every = 2   # every n-th decoder conv is a BasisConv

  c.mrgan = ml_collections.ConfigDict()
  c.mrgan.loss = 'mlmm12'      # 'mlmm1', 'mlmm12' (predictor), 'mcmle1', 'mcmle12'
  c.mrgan.dist = 'gaussian'    # or 'laplace'
  c.mrgan.num_samples = 10     # K samples per input in the MR loss
  c.mrgan.mr_weight = 10.0
  c.mrgan.lr = 1e-4            # AMSGrad (released configs) for P, G, D
  c.mrgan.predictor_steps = 500  # extra steps of P before G (MLMM losses only)

  # BicycleGAN (Zhu et al. 2017, Eq. 6 and Sec. 4; cgml_jax.peers.bicyclegan).
  c.bicyclegan = ml_collections.ConfigDict()
  c.bicyclegan.recon_weight = 10.0   # lambda on the task's E of the cVAE-GAN cycle
  c.bicyclegan.latent_weight = 0.5   # lambda_latent on |E(G(x, z)) - z|_1 (cLR-GAN cycle)
  c.bicyclegan.kl_weight = 0.01      # lambda_KL on KL(E(y) || N(0, I))
  c.bicyclegan.gan_loss = 'lsgan'    # the paper's LSGAN; or 'ns'
  c.bicyclegan.lr = 2e-4             # Adam(lr, beta1 0.5) for H, G, E and D

  # Conditional IMLE (Li et al. 2019; cgml_jax.peers.cimle).
  c.cimle = ml_collections.ConfigDict()
  c.cimle.num_latents = 10     # m latents per input; the nearest sample is trained
  c.cimle.lr = -1.0            # < 0: train.lr (with train's schedule and clipping, as L1)
  return c
