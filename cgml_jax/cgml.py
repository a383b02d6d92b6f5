r"""cGML: Conditional Generative Modeling via Learning the Latent Space (ICLR 2021).

This module is the paper's Sec. 2-3 in code, and nothing else: it sees pytrees of arrays
and the `apply` functions of three Flax modules, never images, datasets or flags.

Notation (paper Sec. 2). For an input x with several valid outputs y:

  h = H(x)                       encoder
  y_hat = G(h, z),  z in S^{n-1} generator, z on the unit sphere
  (r_hat, rho_hat) = Z(z, h)     latent network: where z should go next, and how far

Training (Algorithm 1), per batch, z_0 on the sphere, then for l inner steps:

  1. z step, H, G, Z frozen:       z' = Pi(z - beta * grad_z E(G(H(x), z), y))
  2. momentum target:              rho = alpha * ||z' - z||
  3. Z step, H, G, z frozen:       min |Z_r(z, h) - z'|_1 + |Z_rho(z, h) - rho|_1
  4. H, G step, Z and z' fixed:    min E(G(H(x), z'), y)
  z <- z'

Inference (Eq. 4), from a random z_0 on the sphere, T times:

  (r_hat, rho_hat) = Z(z, h),  z <- Pi(z + rho_hat * (r_hat - z) / ||r_hat - z||)

then y_hat = G(h, z). Different z_0 reach different modes.

Module contract. The three modules are called as

  encoder(x, train=bool) -> h                     (h: any pytree, e.g. U-Net features)
  generator(h, z, train=bool) -> y_hat
  latent_net(z, h, train=bool) -> (r_hat, rho_hat)  shapes (B, n) and (B,)

Optionally, a generator with the class attribute `accepts_sample_axis = True` also takes
z of shape (B, K, n) with h of batch B and returns (B, K, ...), the outputs for each input
and each of its K latents; `sample` then uses it instead of repeating h K times.

Optionally, a generator with the attribute `shares_h_terms = True` also takes two
keywords: `generator(h, z, train=False, only_h_terms=True) -> c`, a pytree of what G
computes from h alone (a function of h and G's parameters; z only gives shapes), and
`generator(h, z, train=..., h_terms=c)`, the same y as without `h_terms`, but reading c
instead of recomputing it. `train_step` then computes c once per inner step, with its VJP
like H's, for both the z step and the (H, G) step, which read the same h at the same
parameters (a spectrally normalised G must therefore normalise its kernels the same way
with train=True and train=False, as flax's SpectralNorm does between two updates).

`train=True` lets layers update non-parameter state (spectral-norm power iterations in
the `batch_stats` collection); the z step and inference use `train=False`.

The error E is a function `loss_fn(y_hat, batch) -> (B,)` of per-example errors, so the z
gradient of example i depends on example i alone (the sum over the batch is what
`jax.grad` differentiates; beta is therefore a per-example step size).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

PyTree = Any
LossFn = Callable[[jax.Array, dict], jax.Array]

_EPS = 1e-8
GENERATOR_UPDATES = ('every', 'last')
LATENT_INITS = ('random', 'persistent', 'balanced')
LATENT_TARGETS = ('next', 'end')
Z_LOSSES = ('split', 'joint')
FLOW_INITS = ('same', 'nearest')


# ---------------------------------------------------------------------------------------
# The latent space S^{n-1}.


def project_to_sphere(z: jax.Array, eps: float = _EPS) -> jax.Array:
  r"""Pi(z) = z / ||z||: the projection onto the unit sphere S^{n-1} (Algorithm 1, Eq. 4).

  Args:
    z: (..., n) latents.
    eps: lower bound on the norm, so that Pi(0) is 0 rather than NaN.

  Returns:
    z scaled to unit norm along the last axis.
  """
  return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), eps)


def sample_sphere(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  r"""Uniform samples on S^{n-1}: normalised standard Gaussians (n = shape[-1]).

  Args:
    key: PRNG key.
    shape: (..., n); n must be at least 1.
    dtype: floating dtype of the result.

  Returns:
    Array of `shape`, each row of unit norm.
  """
  if len(shape) == 0 or shape[-1] < 1:
    raise ValueError(f'sample_sphere needs a shape (..., n) with n >= 1, got {shape}')
  return project_to_sphere(jax.random.normal(key, shape, dtype))


# ---------------------------------------------------------------------------------------
# Algorithm 1, steps 1-3 and Eq. 4 as functions of arrays.


def z_step(error_fn: Callable[[jax.Array], jax.Array], z: jax.Array,
           step_size: float) -> tuple[jax.Array, jax.Array]:
  r"""Algorithm 1, step 1: z' = Pi(z - beta * grad_z E), with everything but z frozen.

  `jax.grad` differentiates with respect to z only; H, G and Z enter through the
  closure `error_fn` and receive no gradient.

  Args:
    error_fn: z (B, n) -> per-example errors (B,).
    z: (B, n) current latents on the sphere.
    step_size: beta.

  Returns:
    (z_next, errors): the projected latents (B, n) and E at z (B,).
  """
  def total(z):
    errors = error_fn(z)
    return errors.sum(), errors

  grad_z, errors = jax.grad(total, has_aux=True)(z)
  return project_to_sphere(z - step_size * grad_z), errors


def rho_target(z: jax.Array, z_next: jax.Array, alpha: float) -> jax.Array:
  r"""Algorithm 1, step 2: the momentum target rho = alpha * ||z' - z|| per example.

  Args:
    z: (B, n) latents before the z step.
    z_next: (B, n) latents after it.
    alpha: the scale alpha.

  Returns:
    (B,) non-negative step lengths.
  """
  return alpha * jnp.linalg.norm(z_next - z, axis=-1)


def latent_loss(r_hat: jax.Array, rho_hat: jax.Array, z_next: jax.Array, rho: jax.Array,
                use_momentum: bool = True, form: str = 'split') -> jax.Array:
  r"""Algorithm 1, step 3: L1 between Z(z, h) = (r_hat, rho_hat) and the targets (z', rho).

  Two forms, equal up to how the n + 1 entries are weighted:
    'split': mean |r_hat - z'| + mean |rho_hat - rho|, the mean over the n coordinates of
      r_hat plus the mean over rho; rho then weighs as much as all of r_hat together.
    'joint': the paper's one L1 over the (n + 1)-vector (z', rho) (Algorithm 1, step 3),
      as a mean over the n + 1 entries: (sum_i |r_hat_i - z'_i| + |rho_hat - rho|) / (n + 1),
      averaged over the batch; rho weighs as one coordinate.
  Without momentum (the "w/o rho" ablation) only r_hat is fitted, and both forms are the
  mean |r_hat - z'|.

  Args:
    r_hat: (B, n) predicted next latents.
    rho_hat: (B,) predicted step lengths.
    z_next: (B, n) targets z'.
    rho: (B,) targets rho.
    use_momentum: False for the "w/o rho" ablation.
    form: 'split' or 'joint' (see above).

  Returns:
    Scalar loss.
  """
  if form not in Z_LOSSES:
    raise ValueError(f'form must be one of {Z_LOSSES}, got {form!r}')
  r_err = jnp.abs(r_hat - z_next)
  if not use_momentum:
    return jnp.mean(r_err)
  rho_err = jnp.abs(rho_hat - rho)
  if form == 'joint':
    return jnp.mean((r_err.sum(axis=-1) + rho_err) / (r_err.shape[-1] + 1))
  return jnp.mean(r_err) + jnp.mean(rho_err)


def eq4_step(z: jax.Array, r_hat: jax.Array, rho_hat: jax.Array,
             use_momentum: bool = True, clip_step: bool = False,
             eps: float = _EPS) -> jax.Array:
  r"""Eq. 4: z <- Pi(z + rho_hat * (r_hat - z) / ||r_hat - z||).

  Z predicts a target r_hat and a step length rho_hat; z moves rho_hat along the unit
  direction towards r_hat and is projected back to the sphere. Without momentum the step
  is z <- Pi(r_hat).

  Args:
    z: (B, n) current latents.
    r_hat: (B, n) predicted next latents.
    rho_hat: (B,) predicted step lengths.
    use_momentum: False for the "w/o rho" ablation.
    clip_step: not in the paper, off by default: step min(rho_hat, ||r_hat - z||), so z
      never overshoots the target. Where the training targets of several modes disagree,
      Z's L1 fit of r_hat is close to z while rho_hat stays large, and the plain step then
      walks rho_hat in an almost arbitrary direction; the clip removes that walk.
    eps: guards the direction when r_hat == z.

  Returns:
    (B, n) next latents on the sphere.
  """
  if not use_momentum:
    return project_to_sphere(r_hat)
  d = r_hat - z
  dist = jnp.linalg.norm(d, axis=-1)
  d = d / jnp.maximum(dist, eps)[..., None]
  step = jnp.minimum(rho_hat, dist) if clip_step else rho_hat
  return project_to_sphere(z + step[..., None] * d)


def _per_example_mean(values: jax.Array, batch: dict) -> jax.Array:
  """(B,) mean of `values` (B, ...) per example, over batch['mask'] (1 in the hole,
  broadcastable to values) when the batch has one, else over all elements."""
  b = values.shape[0]
  if 'mask' not in batch:
    return values.reshape(b, -1).mean(axis=1)
  mask = jnp.broadcast_to(batch['mask'], values.shape).astype(values.dtype)
  return ((values * mask).reshape(b, -1).sum(axis=1)
          / jnp.maximum(mask.reshape(b, -1).sum(axis=1), 1.0))


def l1_error(y_hat: jax.Array, batch: dict) -> jax.Array:
  """The default E: per-example mean absolute error against `batch['y']`, over the hole
  when the batch has a mask (then equal to `cgml_jax.losses.masked_l1`)."""
  return _per_example_mean(jnp.abs(y_hat - batch['y']), batch)


def l2_error(y_hat: jax.Array, batch: dict) -> jax.Array:
  r"""Mean squared error per example; masked (Context Encoder's L_rec, Pathak et al. 2016,
  Eq. 1) when the batch has a mask.

  ||M ⊙ (y - y_hat)||^2 averaged over the masked elements, with M = batch['mask'] (1 in
  the hole, broadcastable to y) when present, else over all elements.

  Returns:
    (B,) per-example errors.
  """
  return _per_example_mean(jnp.square(y_hat - batch['y']), batch)


ERRORS = {'l1': l1_error, 'l2': l2_error}  # E by name (config `loss.error`)


# ---------------------------------------------------------------------------------------
# Train state.


@dataclasses.dataclass(frozen=True)
class Hyper:
  """Static hyper-parameters of Algorithm 1 (hashable: they are part of the jit key).

  Attributes:
    z_dim: n, the sphere S^{n-1} lives in R^n.
    step_size: beta of the z step.
    alpha: scale of the momentum target rho = alpha * ||z' - z||.
    inner_steps: l, iterations of steps 1-4 per batch.
    use_momentum: False trains Z on z' only and infers with z <- Pi(r_hat).
    generator_update: 'every' updates H, G at each inner step (Algorithm 1); 'last' only
      after the last one, with z' of that step.
    latent_init: 'random' draws z_0 afresh per batch; 'persistent' reads and writes a
      per-example table indexed by `batch['index']`; 'balanced' (not in the paper) draws
      B points per batch of B and assigns them one-to-one to the batch's targets by least
      total E (`balanced_latents`).
    clip_step: inference only; see `eq4_step` (not in the paper, off by default).
    step_size_decay: not in the paper (1.0, a constant beta, by default): inner iteration
      t = 0, ..., l - 1 uses beta * step_size_decay^t, so z can leave a wrong region with
      long early steps and then settle instead of jumping about its mode.
    unroll: run the l inner iterations as an unrolled `lax.scan` (True, the default:
      XLA:CPU runs convolutions inside a `while` loop through a slow generic path) or as a
      rolled one (False: one copy of the body, so compile time does not grow with l; the
      right choice for MLPs). The two compute the same function.

  Multimodality options, not in the paper; their defaults are the paper's method:
    init_candidates: N; z_0 is the best of N uniform points on the sphere by E (1: one
      random point). Random z_0 start in the basin of a wrong mode, and l steps of z
      descent may not leave it, so G is trained towards a point between modes.
    latent_target: 'next' fits Z to the next inner step z' (Algorithm 1); 'end' to where
      the l z steps end, computed before the inner loop under the batch's initial H, G
      (`descent_end`), with rho = alpha * ||z_end - z|| (Eq. 4 then jumps to the end).
    redraw_rho: inference only (0: off). A sample whose rho_hat at its final z exceeds
      this is redrawn from a new z_0, up to `redraw_rounds` times: Z is trained towards
      rest (small rho) at the modes, so a large final rho_hat marks a phantom.
    redraw_rounds: how many times `sample` redraws the high-rho_hat samples.
    redraw_quantile: inference only (0: off); in (0, 1) it replaces `redraw_rho` by this
      quantile of the rho_hat of all the samples of the call (a scale-free threshold:
      0.5 redraws the half of the samples furthest from rest).
    z_loss: Z's L1 of step 3, 'split' (mean over r_hat plus mean over rho, the default:
      measured on the toy, docs/toy.md) or 'joint' (one mean over the (n + 1)-vector
      (z', rho) as the paper writes it); see `latent_loss`.
    flow_init: 'same' fits Z along the z path of the (H, G) step (Algorithm 1); 'nearest'
      (with latent_init='balanced') along second paths: each of the batch's B points
      descends towards the target it is nearest to (by E, with that target's input).
      The balanced z_0 that a target pulls over from another mode make jumps between
      modes, and Z fitted to them moves inference latents across modes; uniform points
      that each move towards their nearest target teach Z the flow inference needs,
      every z_0 to the mode it is already closest to.
  """
  z_dim: int
  step_size: float = 1.0
  alpha: float = 1.0
  inner_steps: int = 3
  use_momentum: bool = True
  generator_update: str = 'every'
  latent_init: str = 'random'
  clip_step: bool = False
  step_size_decay: float = 1.0
  unroll: bool = True
  init_candidates: int = 1
  latent_target: str = 'next'
  redraw_rho: float = 0.0
  redraw_rounds: int = 0
  redraw_quantile: float = 0.0
  z_loss: str = 'split'
  flow_init: str = 'same'

  def __post_init__(self):
    if self.z_dim < 1:
      raise ValueError(f'z_dim must be >= 1, got {self.z_dim}')
    if self.inner_steps < 1:
      raise ValueError(f'inner_steps must be >= 1, got {self.inner_steps}')
    if self.step_size <= 0:
      raise ValueError(f'step_size (beta) must be > 0, got {self.step_size}')
    if not 0 < self.step_size_decay <= 1:
      raise ValueError(f'step_size_decay must be in (0, 1], got {self.step_size_decay}')
    if self.generator_update not in GENERATOR_UPDATES:
      raise ValueError(f'generator_update must be one of {GENERATOR_UPDATES}, '
                       f'got {self.generator_update!r}')
    if self.latent_init not in LATENT_INITS:
      raise ValueError(f'latent_init must be one of {LATENT_INITS}, got {self.latent_init!r}')
    if self.init_candidates < 1:
      raise ValueError(f'init_candidates must be >= 1, got {self.init_candidates}')
    if self.latent_init != 'random' and self.init_candidates > 1:
      raise ValueError(f'init_candidates > 1 (best of N z_0) needs latent_init=\'random\', '
                       f'got {self.latent_init!r}; set init_candidates=1')
    if self.latent_target not in LATENT_TARGETS:
      raise ValueError(f'latent_target must be one of {LATENT_TARGETS}, '
                       f'got {self.latent_target!r}')
    if self.flow_init not in FLOW_INITS:
      raise ValueError(f'flow_init must be one of {FLOW_INITS}, got {self.flow_init!r}')
    if self.flow_init == 'nearest' and self.latent_init != 'balanced':
      raise ValueError("flow_init='nearest' needs latent_init='balanced' (it reuses the "
                       f"balanced assignment's errors), got {self.latent_init!r}")
    if self.flow_init == 'nearest' and self.latent_target != 'next':
      raise ValueError("flow_init='nearest' fits Z to the next z (latent_target='next'), "
                       f'got {self.latent_target!r}')
    if self.z_loss not in Z_LOSSES:
      raise ValueError(f'z_loss must be one of {Z_LOSSES}, got {self.z_loss!r}')
    if not 0 <= self.redraw_quantile < 1:
      raise ValueError(f'redraw_quantile must be in [0, 1), got {self.redraw_quantile}')
    if self.redraw_rho < 0 or self.redraw_rounds < 0:
      raise ValueError(f'redraw_rho and redraw_rounds must be >= 0, got {self.redraw_rho}, '
                       f'{self.redraw_rounds}')


class CGMLState(struct.PyTreeNode):
  """Everything Algorithm 1 updates, plus the static pieces that define the model.

  Array fields (pytree leaves, checkpointed, sharded):
    step: scalar int32.
    params: {'encoder', 'generator', 'latent'} -> Flax params.
    stats: same keys -> non-param collections (spectral-norm `batch_stats`), maybe {}.
    opt_state: {'hg': optimiser state of (H, G), 'latent': optimiser state of Z}.
    z_table: (N, n) per-example latents when `hp.latent_init == 'persistent'`, else None.

  Static fields (part of the jit cache key, like flax's TrainState.apply_fn):
    encoder, generator, latent_net: the Flax modules H, G, Z.
    tx_hg, tx_latent: optax optimisers of (H, G) and of Z.
    loss_fn: E, (y_hat, batch) -> (B,) per-example errors.
    hp: `Hyper`.
  """
  step: jax.Array
  params: PyTree
  stats: PyTree
  opt_state: PyTree
  z_table: jax.Array | None
  encoder: nn.Module = struct.field(pytree_node=False)
  generator: nn.Module = struct.field(pytree_node=False)
  latent_net: nn.Module = struct.field(pytree_node=False)
  tx_hg: optax.GradientTransformation = struct.field(pytree_node=False)
  tx_latent: optax.GradientTransformation = struct.field(pytree_node=False)
  loss_fn: LossFn = struct.field(pytree_node=False)
  hp: Hyper = struct.field(pytree_node=False)

  @classmethod
  def create(cls, key: jax.Array, x: jax.Array, *, encoder: nn.Module,
             generator: nn.Module, latent_net: nn.Module,
             tx_hg: optax.GradientTransformation,
             tx_latent: optax.GradientTransformation, hp: Hyper,
             loss_fn: LossFn = l1_error, num_examples: int | None = None) -> 'CGMLState':
    """Initialises H, G, Z on an example input `x` (B, ...) and both optimisers.

    Args:
      key: PRNG key for parameters, spectral-norm vectors and the z table.
      x: an example input batch; only its shape and dtype matter.
      num_examples: size of the persistent z table; required iff
        `hp.latent_init == 'persistent'`.
    """
    if hp.latent_init == 'persistent' and not num_examples:
      raise ValueError("latent_init='persistent' needs num_examples (the z table size)")
    def init(key, x):
      k_enc, k_gen, k_lat, k_z, k_table = jax.random.split(key, 5)
      variables = {}
      v = encoder.init(k_enc, x, train=False)
      h = encoder.apply(v, x, train=False)
      variables['encoder'] = v
      z = sample_sphere(k_z, (x.shape[0], hp.z_dim))
      variables['generator'] = generator.init(k_gen, h, z, train=False)
      variables['latent'] = latent_net.init(k_lat, z, h, train=False)
      params = {k: v['params'] for k, v in variables.items()}
      stats = {k: {c: s for c, s in v.items() if c != 'params'} for k, v in variables.items()}
      opt_state = {'hg': tx_hg.init(hg_params(params)),
                   'latent': tx_latent.init(params['latent'])}
      z_table = None
      if hp.latent_init == 'persistent':
        z_table = sample_sphere(k_table, (num_examples, hp.z_dim))
      return params, stats, opt_state, z_table

    # One XLA program: run eagerly, the inits would compile each of their many small ops on
    # its own, which takes longer than compiling them all once.
    params, stats, opt_state, z_table = jax.jit(init)(key, x)
    return cls(step=jnp.zeros((), jnp.int32), params=params, stats=stats,
               opt_state=opt_state, z_table=z_table, encoder=encoder, generator=generator,
               latent_net=latent_net, tx_hg=tx_hg, tx_latent=tx_latent, loss_fn=loss_fn, hp=hp)


def hg_params(tree: PyTree) -> PyTree:
  """The (H, G) part of a {'encoder', 'generator', 'latent'} tree: what `tx_hg` updates.

  Args:
    tree: a dict with at least the keys 'encoder' and 'generator' (params, grads, ...).

  Returns:
    {'encoder': tree['encoder'], 'generator': tree['generator']}.
  """
  return {'encoder': tree['encoder'], 'generator': tree['generator']}


def apply_module(module: nn.Module, params: PyTree, stats: PyTree, *args, train: bool,
                 **kwargs) -> tuple[Any, PyTree]:
  """Applies a Flax module to its params and non-param collections (`stats`).

  Args:
    module: the Flax module (H, G or Z).
    params: its 'params' collection.
    stats: its other collections by name (e.g. spectral-norm `batch_stats`), maybe {}.
    *args: the module's positional inputs.
    train: passed to the module; True also lets it update `stats`.
    **kwargs: further keywords of the module.

  Returns:
    (output, stats): with train=True the updated collections, otherwise `stats` unchanged.
  """
  variables = {'params': params, **stats}
  if train and stats:
    out, new_stats = module.apply(variables, *args, train=True, mutable=list(stats), **kwargs)
    return out, dict(new_stats)
  return module.apply(variables, *args, train=train, **kwargs), stats


def _check_batch(state: CGMLState, batch: dict) -> int:
  if 'x' not in batch or 'y' not in batch:
    raise KeyError(f"a batch needs 'x' and 'y'; got keys {sorted(batch)}")
  b = jax.tree.leaves(batch['x'])[0].shape[0]
  by = jax.tree.leaves(batch['y'])[0].shape[0]
  if b != by:
    raise ValueError(f"batch['x'] has {b} examples but batch['y'] has {by}")
  if state.hp.latent_init == 'persistent' and 'index' not in batch:
    raise KeyError("latent_init='persistent' needs batch['index'] (example ids)")
  return b


# ---------------------------------------------------------------------------------------
# Algorithm 1.


def _per_example_errors(errors: jax.Array, z: jax.Array) -> jax.Array:
  """`errors`, after checking that E gave one value per row of z (B, n).

  A shape check in Python, at trace time: it adds nothing to the traced program. Without
  it a scalar E fails later with an IndexError far from its cause.
  """
  if getattr(errors, 'shape', None) != z.shape[:1]:
    raise ValueError(f'E must return one value per example, shape (B,) = ({z.shape[0]},), '
                     f'got shape {getattr(errors, "shape", type(errors).__name__)}; reduce '
                     'every axis but the batch axis in loss_fn(y_hat, batch)')
  return errors


def _frozen_error_fn(state: CGMLState, batch: dict, h: PyTree | None = None,
                     params: PyTree | None = None,
                     stats: PyTree | None = None) -> Callable[[jax.Array], jax.Array]:
  """z (B, n) -> E (B,) of G(h, z) against `batch`, nothing updated: by default at the
  state's parameters with h = H(batch['x'])."""
  params = state.params if params is None else params
  stats = state.stats if stats is None else stats
  if h is None:
    h = apply_module(state.encoder, params['encoder'], stats['encoder'], batch['x'],
                     train=False)[0]

  def error_fn(z):
    y_hat = apply_module(state.generator, params['generator'], stats['generator'], h, z,
                         train=False)[0]
    return _per_example_errors(state.loss_fn(y_hat, batch), z)
  return error_fn


def best_of_candidates(error_fn: Callable[[jax.Array], jax.Array],
                       candidates: jax.Array) -> jax.Array:
  """Per example, the candidate latent with the lowest error.

  Args:
    error_fn: z (B, n) -> per-example errors (B,).
    candidates: (N, B, n) latents.

  Returns:
    (B, n): row b is candidates[argmin_i error_fn(candidates[i])[b], b].
  """
  errors = jax.vmap(error_fn)(candidates)  # (N, B)
  best = jnp.argmin(errors, axis=0)
  return jnp.take_along_axis(candidates, best[None, :, None], axis=0)[0]


def candidate_errors(error_fn: Callable[[jax.Array], jax.Array],
                     candidates: jax.Array) -> jax.Array:
  """E of every example at every one of B candidate latents, (B examples, B candidates).

  Args:
    error_fn: z (B, n) -> per-example errors (B,).
    candidates: (B, n) latents, as many as examples.
  """
  b = candidates.shape[0]
  tiled = jnp.broadcast_to(candidates[:, None], (b,) + candidates.shape)  # (j, i, n)
  return jax.vmap(error_fn)(tiled).T


def balanced_assignment(cost: jax.Array) -> jax.Array:
  r"""The one-to-one assignment of B candidates to B examples of least total cost.

  Every candidate is used exactly once (a linear assignment, solved by
  `optax.assignment.hungarian_algorithm` on cost[i, j] = E(G(h_i, z_j), y_i)). Where a
  mode's targets outnumber the candidates that G already sends to that mode, the
  surplus targets take candidates of other modes and pull them over; where a mode holds
  more of the sphere than it has targets, its spare candidates are taken by other modes.
  So, over many batches, the share of the sphere that G sends to each mode is driven
  towards the share of that mode among the targets. Selecting the best of N per example
  instead never gives up a region a mode holds, so the shares stay where they start.

  Args:
    cost: (B, B) errors, examples by candidates (`candidate_errors`).

  Returns:
    (B,) int: the candidate assigned to each example, a permutation.
  """
  rows, cols = optax.assignment.hungarian_algorithm(cost)
  return cols[jnp.argsort(rows)]


def initial_latents(state: CGMLState, batch: dict,
                    key: jax.Array) -> tuple[jax.Array, jax.Array | None]:
  """z_0 of Algorithm 1: fresh uniform samples, or rows of the persistent table.

  With `hp.init_candidates` = N > 1 (not in the paper), each random z_0 is the best of N
  uniform points by E under the current H, G (one forward pass of G per candidate). With
  `hp.latent_init == 'balanced'` (not in the paper), the batch's B uniform points are
  assigned one-to-one to its examples (`balanced_assignment`; B forward passes of G).

  Returns:
    (z0, flow): z0 (B, n) for the z and (H, G) steps; with `hp.flow_init == 'nearest'`
    flow = (z (B, n), index (B,)), the start of the z paths that Z is fitted to: the same
    B points, point j descending towards example index[j], the example it fits best;
    else None (Z is fitted along z0's path, as in Algorithm 1).
  """
  hp = state.hp
  if hp.latent_init == 'persistent':
    return state.z_table[batch['index']], None
  b = jax.tree.leaves(batch['x'])[0].shape[0]
  if hp.latent_init == 'balanced':
    candidates = sample_sphere(key, (b, hp.z_dim))
    cost = jax.lax.stop_gradient(candidate_errors(_frozen_error_fn(state, batch), candidates))
    z0 = candidates[balanced_assignment(cost)]
    if hp.flow_init == 'nearest':
      return z0, (candidates, jnp.argmin(cost, axis=0))
    return z0, None
  if hp.init_candidates == 1:
    return sample_sphere(key, (b, hp.z_dim)), None
  candidates = sample_sphere(key, (hp.init_candidates, b, hp.z_dim))
  return jax.lax.stop_gradient(
      best_of_candidates(_frozen_error_fn(state, batch), candidates)), None


def descent_end(state: CGMLState, batch: dict, z0: jax.Array) -> jax.Array:
  """Where the l z steps of a batch end if H, G stay as they are (`latent_target='end'`).

  The same steps as Algorithm 1's step 1, beta decay included, without the (H, G)
  updates in between (with `generator_update='last'` it is exactly the inner loop's end).

  Args:
    state: `CGMLState` at the start of the batch.
    batch: the batch.
    z0: (B, n) initial latents.

  Returns:
    (B, n) latents after l projected gradient steps.
  """
  hp = state.hp
  error_fn = _frozen_error_fn(state, batch)
  z = z0
  for t in range(hp.inner_steps):
    z, _ = z_step(error_fn, z, hp.step_size * hp.step_size_decay ** t)
  return jax.lax.stop_gradient(z)


class _HGAt:
  r"""H and G as they are at the start of one inner iteration (Algorithm 1, steps 1 and 4).

  The z step and the (H, G) step of an iteration read the same h = H(x) at the same
  parameters, so H runs once (with its VJP when H, G are trained in this iteration), and a
  generator with `shares_h_terms` (see the module docstring) computes what it derives from
  h alone once too, with its VJP, instead of once per call.

  Attributes:
    h: H(x) with its gradient stopped: what the z step and the Z step read.
  """

  def __init__(self, state: CGMLState, params: PyTree, stats: PyTree, batch: dict,
               z: jax.Array, differentiable: bool):
    """Runs H, and G's h-only terms if it shares them.

    Args:
      state: `CGMLState` (its modules and loss).
      params, stats: the current {'encoder', 'generator', 'latent'} trees.
      batch: the batch of `train_step`.
      z: (B, n) latents; only their shape reaches G's h-only terms.
      differentiable: keep the VJPs for `loss_and_grads` and run H with train=True (an
        iteration with an (H, G) step); otherwise H runs with train=False.
    """
    self._state, self._params, self._stats, self._batch = state, params, stats, batch
    self._shares = getattr(state.generator, 'shares_h_terms', False)
    x = batch['x']
    if differentiable:
      def encode(params_enc):
        return apply_module(state.encoder, params_enc, stats['encoder'], x, train=True)

      (self._h, self._enc_stats), self._enc_vjp = jax.vjp(encode, params['encoder'])
    else:
      self._h = apply_module(state.encoder, params['encoder'], stats['encoder'], x,
                             train=False)[0]
      self._enc_stats = stats['encoder']
    self.h = jax.lax.stop_gradient(self._h)
    self._terms, self._z_step_kw = None, {}
    if self._shares:
      def h_terms_of(params_gen, h):
        return apply_module(state.generator, params_gen, stats['generator'], h, z,
                            train=False, only_h_terms=True)[0]

      if differentiable:
        self._terms, self._terms_vjp = jax.vjp(h_terms_of, params['generator'], self._h)
      else:
        self._terms = h_terms_of(params['generator'], self.h)
      self._z_step_kw = {'h_terms': jax.lax.stop_gradient(self._terms)}

  def errors_at(self, z: jax.Array) -> jax.Array:
    """E(G(h, z), y) per example (B,), H and G frozen: the objective of the z step."""
    y_hat = apply_module(self._state.generator, self._params['generator'],
                         self._stats['generator'], self.h, z, train=False,
                         **self._z_step_kw)[0]
    return _per_example_errors(self._state.loss_fn(y_hat, self._batch), z)

  def loss_and_grads(self, z_next: jax.Array) -> tuple[jax.Array, PyTree, PyTree]:
    r"""mean E(G(H(x), z'), y) and its gradient wrt (H, G), z' fixed (step 4).

    G runs with train=True; dE/dh reaches H's parameters through H's VJP, and the shared
    h-only terms' gradient through theirs.

    Args:
      z_next: (B, n) latents z' of the z step.

    Returns:
      (loss, grads, stats): the scalar loss, {'encoder', 'generator'} gradients and the
      updated non-param collections of H and G.
    """
    state, stats = self._state, self._stats

    def hg_loss(params_gen, h, h_terms):
      kw = {'h_terms': h_terms} if self._shares else {}
      y_hat, gen_stats = apply_module(state.generator, params_gen, stats['generator'], h,
                                      z_next, train=True, **kw)
      return state.loss_fn(y_hat, self._batch).mean(), gen_stats

    (loss, gen_stats), (grads_gen, grads_h, grads_terms) = jax.value_and_grad(
        hg_loss, argnums=(0, 1, 2), has_aux=True)(self._params['generator'], self._h,
                                                  self._terms)
    if self._shares:  # the terms' share of the gradients, through their VJP
      grads_gen, grads_h = jax.tree.map(jnp.add, (grads_gen, grads_h),
                                        self._terms_vjp(grads_terms))
    (grads_enc,) = self._enc_vjp((grads_h, jax.tree.map(jnp.zeros_like, self._enc_stats)))
    return (loss, {'encoder': grads_enc, 'generator': grads_gen},
            {'encoder': self._enc_stats, 'generator': gen_stats})


def _optimiser_step(tx: optax.GradientTransformation, grads: PyTree, opt_state: PyTree,
                    params: PyTree, batch_step: jax.Array):
  """One update of `params` by `tx`; returns (params, opt_state, global norm of the update).

  Every inner update of a batch uses the rate of that batch, `batch_step` (see
  cgml_jax.training.optim).
  """
  updates, opt_state = tx.update(grads, opt_state, params, batch_step=batch_step)
  norm = optax.global_norm(updates)
  return optax.apply_updates(params, updates), opt_state, norm


def _step_size(hp: Hyper, t) -> float | jax.Array:
  """beta of inner iteration t: beta * step_size_decay^t."""
  return hp.step_size if hp.step_size_decay == 1 else hp.step_size * hp.step_size_decay ** t


def _run_inner_steps(inner: Callable, carry, hp: Hyper):
  """The l inner iterations `inner(carry, t, update_hg) -> (carry, metrics)` of a batch.

  With `hp.generator_update == 'every'` all of them update H, G; with 'last' the first
  l - 1 only move z and train Z, and the last one also updates H, G.

  Returns:
    (carry, metrics), each metric stacked over the l iterations.
  """
  every = hp.generator_update == 'every'
  n_scan = hp.inner_steps if every else hp.inner_steps - 1
  ms = []
  # Unrolled by default: XLA:CPU runs convolutions and dots inside a while loop through a
  # slow generic path, and l is small. scan(unroll=True) of length 1 still emits a loop,
  # hence the direct call.
  if n_scan == 1:
    carry, m = inner(carry, 0, update_hg=every)
    ms.append(jax.tree.map(lambda a: a[None], m))
  elif n_scan:
    carry, m = jax.lax.scan(lambda c, t: inner(c, t, update_hg=every), carry,
                            jnp.arange(n_scan), unroll=hp.unroll)
    ms.append(m)
  if not every:
    carry, m = inner(carry, n_scan, update_hg=True)
    ms.append(jax.tree.map(lambda a: a[None], m))
  return carry, jax.tree.map(lambda *a: jnp.concatenate(a), *ms)


def train_step(state: CGMLState, batch: dict, key: jax.Array) -> tuple[CGMLState, dict]:
  r"""Algorithm 1 on one batch: l inner iterations of z step, Z step and (H, G) step.

  All l inner iterations run inside this one function as a `lax.scan` (unrolled unless
  `hp.unroll` is False), so under `jit` they are one XLA program. With
  `hp.generator_update == 'last'`, the first l - 1 iterations only move z and train Z, and
  H, G take one step after the last.

  Args:
    state: `CGMLState`.
    batch: {'x': inputs (B, ...), 'y': targets (B, ...)}, plus 'index' (B,) ints for a
      persistent z table, plus whatever `state.loss_fn` reads (e.g. a mask).
    key: PRNG key for z_0.

  Returns:
    (new_state, metrics) with scalar metrics:
      E: mean error of the (H, G) step, at z' of the last inner iteration;
      E_z0: mean error at z_0, before any z step;
      latent_loss: Z's L1 loss, mean over inner iterations;
      rho: mean target rho; rho_hat: mean predicted rho; dz: mean ||z' - z||;
      update_norm_hg, update_norm_latent: global norm of the last update of (H, G) and
        of Z in this batch.
  """
  _check_batch(state, batch)
  hp = state.hp

  def inner(carry, t, update_hg: bool):
    params, stats, opt_state, z, z_flow = carry
    hg = _HGAt(state, params, stats, batch, z, differentiable=update_hg)
    # Algorithm 1, step 1 (z step): H, G, Z frozen, jax.grad over z alone, then Pi.
    z_next, errors = z_step(hg.errors_at, z, _step_size(hp, t))
    z_next = jax.lax.stop_gradient(z_next)
    # Z's path: z's own (Algorithm 1), or with the opt-in flow_init='nearest' the batch's
    # points, each moved by the same z step towards the example it fits best.
    z_lat, z_lat_next, h_lat = z, z_next, hg.h
    if z_flow is not None:
      h_lat = jax.tree.map(lambda a: a[flow_index], hg.h)
      flow_error = _frozen_error_fn(state, flow_batch, h_lat, params, stats)
      z_lat = z_flow
      z_lat_next = jax.lax.stop_gradient(z_step(flow_error, z_flow, _step_size(hp, t))[0])
    # Algorithm 1, step 2 (momentum target): rho = alpha * ||z' - z||. Z's target is z',
    # or with the opt-in latent_target='end' where the inner descent ends.
    z_target = z_lat_next if z_end is None else z_end
    rho = rho_target(z_lat, z_target, hp.alpha)

    # Algorithm 1, step 3 (Z step): H, G, z frozen, L1 fit of Z(z, h) to (z', rho).
    def z_loss(params_lat):
      (r_hat, rho_hat), lat_stats = apply_module(state.latent_net, params_lat,
                                                 stats['latent'], z_lat, h_lat, train=True)
      return (latent_loss(r_hat, rho_hat, z_target, rho, hp.use_momentum, hp.z_loss),
              (lat_stats, rho_hat))

    (loss_z, (lat_stats, rho_hat)), grads = jax.value_and_grad(z_loss, has_aux=True)(
        params['latent'])
    lat, opt_lat, norm_lat = _optimiser_step(state.tx_latent, grads, opt_state['latent'],
                                             params['latent'], state.step)
    params, stats = {**params, 'latent': lat}, {**stats, 'latent': lat_stats}
    opt_state = {**opt_state, 'latent': opt_lat}
    # Algorithm 1, step 4 (H, G step): min E(G(H(x), z'), y) with Z and z' fixed.
    if update_hg:
      loss_e, grads, hg_stats = hg.loss_and_grads(z_next)
      new_hg, opt_hg, norm_hg = _optimiser_step(state.tx_hg, grads, opt_state['hg'],
                                                hg_params(params), state.step)
      params, stats = {**params, **new_hg}, {**stats, **hg_stats}
      opt_state = {**opt_state, 'hg': opt_hg}
    else:  # generator_update == 'last', before the last iteration: H, G wait
      loss_e, norm_hg = jnp.mean(errors), jnp.zeros((), jnp.float32)
    metrics = {'E': loss_e, 'E_z': jnp.mean(errors), 'latent_loss': loss_z,
               'rho': jnp.mean(rho), 'rho_hat': jnp.mean(rho_hat),
               'dz': jnp.mean(jnp.linalg.norm(z_next - z, axis=-1)),
               'update_norm_hg': norm_hg, 'update_norm_latent': norm_lat}
    z_flow = None if z_flow is None else z_lat_next
    return (params, stats, opt_state, z_next, z_flow), metrics

  z0, flow = initial_latents(state, batch, key)
  z0_flow, flow_index = flow if flow is not None else (None, None)
  if flow is not None:
    flow_batch = jax.tree.map(lambda a: a[flow_index], batch)
  z_end = descent_end(state, batch, z0) if hp.latent_target == 'end' else None
  carry, m = _run_inner_steps(
      inner, (state.params, state.stats, state.opt_state, z0, z0_flow), hp)
  params, stats, opt_state, z_final, _ = carry
  metrics = {'E': m['E'][-1], 'E_z0': m['E_z'][0], 'latent_loss': m['latent_loss'].mean(),
             'rho': m['rho'].mean(), 'rho_hat': m['rho_hat'].mean(), 'dz': m['dz'].mean(),
             # the global norms of each optimiser's newest update (guards against a
             # schedule that has run out while training goes on)
             'update_norm_hg': m['update_norm_hg'][-1],
             'update_norm_latent': m['update_norm_latent'][-1]}
  z_table = state.z_table
  if hp.latent_init == 'persistent':
    z_table = z_table.at[batch['index']].set(z_final)
  new_state = state.replace(step=state.step + 1, params=params, stats=stats,
                            opt_state=opt_state, z_table=z_table)
  return new_state, metrics


# ---------------------------------------------------------------------------------------
# Inference (Eq. 4).


def encode(state: CGMLState, x: jax.Array) -> PyTree:
  """h = H(x) with the state's parameters (no statistics updates)."""
  return apply_module(state.encoder, state.params['encoder'], state.stats['encoder'], x,
                      train=False)[0]


def generate(state: CGMLState, h: PyTree, z: jax.Array) -> jax.Array:
  """y_hat = G(h, z)."""
  return apply_module(state.generator, state.params['generator'], state.stats['generator'], h,
                      z, train=False)[0]


def latent_field(state: CGMLState, z: jax.Array, h: PyTree) -> tuple[jax.Array, jax.Array]:
  """(r_hat, rho_hat) = Z(z, h)."""
  return apply_module(state.latent_net, state.params['latent'], state.stats['latent'], z, h,
                      train=False)[0]


def traverse_latent(state: CGMLState, h: PyTree, z0: jax.Array, num_steps: int,
                    return_trajectory: bool = False):
  r"""Eq. 4 iterated `num_steps` times from z0 as a `lax.scan`, for a given h = H(x).

  Returns:
    z_T (B, n), and with `return_trajectory` also (T + 1, B, n) including z0.
  """
  def step(z, _):
    r_hat, rho_hat = latent_field(state, z, h)
    z = eq4_step(z, r_hat, rho_hat, state.hp.use_momentum, state.hp.clip_step)
    return z, z

  z, traj = jax.lax.scan(step, z0, length=num_steps)
  if return_trajectory:
    return z, jnp.concatenate([z0[None], traj], axis=0)
  return z


def traverse(state: CGMLState, x: jax.Array, z0: jax.Array, num_steps: int,
             return_trajectory: bool = False):
  r"""Inference (Eq. 4): h = H(x), T steps of the latent flow from z0, then G(h, z_T).

  Args:
    state: `CGMLState` (its params and modules).
    x: (B, ...) inputs.
    z0: (B, n) starting latents on the sphere.
    num_steps: T.
    return_trajectory: also return the latents (T + 1, B, n), z0 first.

  Returns:
    y_hat (B, ...), or (y_hat, trajectory).
  """
  h = encode(state, x)
  out = traverse_latent(state, h, z0, num_steps, return_trajectory)
  z = out[0] if return_trajectory else out
  y_hat = generate(state, h, z)
  return (y_hat, out[1]) if return_trajectory else y_hat


def redraw_high_rho(state: CGMLState, h: PyTree, z: jax.Array, key: jax.Array,
                    num_steps: int) -> jax.Array:
  r"""Phantom filter (not in the paper, off unless `hp.redraw_rho` or `hp.redraw_quantile`
  is > 0, with `hp.redraw_rounds` > 0): Z is fitted to
  rho = alpha * ||z' - z||, which is small where z rests on a mode, so a final latent with
  a large rho_hat has not come to rest. Such latents are redrawn from new random z_0 and
  traversed again; the new one is kept if its rho_hat is lower. `hp.redraw_rounds` times.

  Args:
    state: `CGMLState`.
    h: H(x), one row per latent.
    z: (B, n) latents after the Eq. 4 traversal.
    key: PRNG key; round r draws with fold_in(key, r + 1).
    num_steps: T of each new traversal.

  Returns:
    (B, n) latents: z with its high-rho_hat rows replaced where a redraw did better.
  """
  hp = state.hp
  if (hp.redraw_rho <= 0 and hp.redraw_quantile <= 0) or hp.redraw_rounds == 0:
    return z
  rho_hat = latent_field(state, z, h)[1]
  threshold = (jnp.quantile(rho_hat, hp.redraw_quantile) if hp.redraw_quantile > 0
               else hp.redraw_rho)
  for r in range(hp.redraw_rounds):
    z_new = traverse_latent(state, h, sample_sphere(jax.random.fold_in(key, r + 1), z.shape),
                            num_steps)
    rho_new = latent_field(state, z_new, h)[1]
    swap = (rho_hat > threshold) & (rho_new < rho_hat)
    z = jnp.where(swap[:, None], z_new, z)
    rho_hat = jnp.where(swap, rho_new, rho_hat)
  return z


def repeat_batch(tree: PyTree, k: int) -> PyTree:
  """Each example of a batch pytree k times, rows grouped by example: (B, ...) -> (B k, ...).

  Args:
    tree: pytree of arrays with a leading batch axis B.
    k: repetitions.

  Returns:
    The same pytree, row i * k + j a copy of example i.
  """
  return jax.tree.map(lambda a: jnp.repeat(a, k, axis=0), tree)


def sample(state: CGMLState, x: jax.Array, key: jax.Array, num_samples: int,
           num_steps: int, return_latents: bool = False):
  r"""K outputs per input from K random z_0 (Eq. 4), vectorised over inputs and samples.

  H runs once per input; its features are repeated K times for Z and all B*K
  trajectories run as one batch. If the generator has `accepts_sample_axis = True`, G is
  called once as G(h, z) with the un-repeated h and z of shape (B, K, n), returning
  (B, K, ...) (so it can compute what depends on h alone once per input); otherwise as
  G(repeated h, z (B*K, n)).

  Args:
    x: (B, ...) inputs.
    key: PRNG key for the K starting points.
    num_samples: K.
    num_steps: T.
    return_latents: also return the final latents (B, K, n).

  Returns:
    (B, K, ...) outputs, and with `return_latents` the latents.
  """
  b = jax.tree.leaves(x)[0].shape[0]
  h = encode(state, x)
  h_k = repeat_batch(h, num_samples)
  z0 = sample_sphere(key, (b * num_samples, state.hp.z_dim))
  z = traverse_latent(state, h_k, z0, num_steps)
  z = redraw_high_rho(state, h_k, z, key, num_steps)
  if getattr(state.generator, 'accepts_sample_axis', False):
    y = generate(state, h, z.reshape(b, num_samples, -1))
  else:
    y = generate(state, h_k, z)
    y = y.reshape((b, num_samples) + y.shape[1:])
  if return_latents:
    return y, z.reshape(b, num_samples, -1)
  return y
