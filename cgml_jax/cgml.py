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
import functools
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
LATENT_INITS = ('random', 'persistent')
LATENT_TARGETS = ('next', 'end')


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
                use_momentum: bool = True) -> jax.Array:
  r"""Algorithm 1, step 3: L1 between Z(z, h) = (r_hat, rho_hat) and the targets (z', rho).

  Without momentum (the "w/o rho" ablation) only r_hat is fitted.

  Returns:
    Scalar mean |r_hat - z'| (+ mean |rho_hat - rho|).
  """
  loss = jnp.mean(jnp.abs(r_hat - z_next))
  if use_momentum:
    loss = loss + jnp.mean(jnp.abs(rho_hat - rho))
  return loss


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


def l1_error(y_hat: jax.Array, batch: dict) -> jax.Array:
  """The default E: per-example mean absolute error against `batch['y']`."""
  diff = jnp.abs(y_hat - batch['y'])
  return diff.reshape(diff.shape[0], -1).mean(axis=1)


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
      per-example table indexed by `batch['index']`.
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
    if self.latent_target not in LATENT_TARGETS:
      raise ValueError(f'latent_target must be one of {LATENT_TARGETS}, '
                       f'got {self.latent_target!r}')
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
      opt_state = {'hg': tx_hg.init(_hg(params)), 'latent': tx_latent.init(params['latent'])}
      z_table = None
      if hp.latent_init == 'persistent':
        z_table = sample_sphere(k_table, (num_examples, hp.z_dim))
      return params, stats, opt_state, z_table

    # One XLA program: run eagerly, the inits compile each small op on its own (the bench's
    # smoke config: 193 compiles, 16 s; one program: about 8 s, mostly threefry on CPU).
    params, stats, opt_state, z_table = jax.jit(init)(key, x)
    return cls(step=jnp.zeros((), jnp.int32), params=params, stats=stats,
               opt_state=opt_state, z_table=z_table, encoder=encoder, generator=generator,
               latent_net=latent_net, tx_hg=tx_hg, tx_latent=tx_latent, loss_fn=loss_fn, hp=hp)


def _hg(tree):
  return {'encoder': tree['encoder'], 'generator': tree['generator']}


def _apply(module: nn.Module, params, stats, *args, train: bool, **kwargs):
  """Applies `module`; with train=True also returns its updated non-param collections."""
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


def _frozen_error_fn(state: CGMLState, batch: dict) -> Callable[[jax.Array], jax.Array]:
  """z (B, n) -> E (B,) of G(H(x), z) at the state's parameters, nothing updated."""
  h = encode(state, batch['x'])
  return lambda z: state.loss_fn(generate(state, h, z), batch)


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


def initial_latents(state: CGMLState, batch: dict, key: jax.Array) -> jax.Array:
  """z_0 of Algorithm 1: fresh uniform samples, or rows of the persistent table.

  With `hp.init_candidates` = N > 1 (not in the paper), each random z_0 is the best of N
  uniform points by E under the current H, G (one forward pass of G per candidate).
  """
  hp = state.hp
  if hp.latent_init == 'persistent':
    return state.z_table[batch['index']]
  b = jax.tree.leaves(batch['x'])[0].shape[0]
  if hp.init_candidates == 1:
    return sample_sphere(key, (b, hp.z_dim))
  candidates = sample_sphere(key, (hp.init_candidates, b, hp.z_dim))
  return jax.lax.stop_gradient(
      best_of_candidates(_frozen_error_fn(state, batch), candidates))


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


def train_step(state: CGMLState, batch: dict, key: jax.Array) -> tuple[CGMLState, dict]:
  r"""Algorithm 1 on one batch: l inner iterations of z step, Z step and (H, G) step.

  All l inner iterations run inside this one function as a `lax.scan` (unrolled unless
  `hp.unroll` is False), so under `jit` they are one XLA program. With `hp.generator_update == 'last'`, the first l - 1
  iterations only move z and train Z, and H, G take one step after the last.

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
  x = batch['x']
  stop = jax.lax.stop_gradient

  def encode(params_enc, stats):
    return _apply(state.encoder, params_enc, stats['encoder'], x, train=True)

  def inner(carry, t, update_hg: bool):
    params, stats, opt_state, z = carry
    if update_hg:
      (h, enc_stats), enc_vjp = jax.vjp(lambda p: encode(p, stats), params['encoder'])
    else:
      h = _apply(state.encoder, params['encoder'], stats['encoder'], x, train=False)[0]
      enc_stats = stats['encoder']
    h_frozen = stop(h)
    # What G computes from h alone, once for the z step and the (H, G) step (see the
    # module docstring); gen_kw passes it to G's calls.
    gen_kw = {}
    if share_h_terms:
      def h_terms_of(params_gen, h):
        return _apply(state.generator, params_gen, stats['generator'], h, z, train=False,
                      only_h_terms=True)[0]

      if update_hg:
        h_terms, h_terms_vjp = jax.vjp(h_terms_of, params['generator'], h)
      else:
        h_terms = h_terms_of(params['generator'], h_frozen)
      gen_kw = {'h_terms': stop(h_terms)}

    # 1. z step: H, G, Z frozen, gradient with respect to z only.
    def error_at(z):
      y_hat = _apply(state.generator, params['generator'], stats['generator'], h_frozen, z,
                     train=False, **gen_kw)[0]
      return state.loss_fn(y_hat, batch)

    beta = hp.step_size if hp.step_size_decay == 1 else hp.step_size * hp.step_size_decay ** t
    z_next, errors = z_step(error_at, z, beta)
    z_next = stop(z_next)
    # 2. momentum target; with latent_target='end' Z learns to point at the descent's end.
    z_target = z_next if z_end is None else z_end
    rho = rho_target(z, z_target, hp.alpha)

    # 3. Z step: H, G, z frozen.
    def z_loss(params_lat):
      (r_hat, rho_hat), lat_stats = _apply(state.latent_net, params_lat, stats['latent'],
                                            z, h_frozen, train=True)
      return latent_loss(r_hat, rho_hat, z_target, rho, hp.use_momentum), (lat_stats, rho_hat)

    (loss_z, (lat_stats, rho_hat)), grads_lat = jax.value_and_grad(z_loss, has_aux=True)(
        params['latent'])
    # Every inner update of a batch uses the rate of that batch (see cgml_jax.optim).
    updates, opt_lat = state.tx_latent.update(grads_lat, opt_state['latent'], params['latent'],
                                              batch_step=state.step)
    norm_lat = optax.global_norm(updates)
    params = {**params, 'latent': optax.apply_updates(params['latent'], updates)}
    stats = {**stats, 'latent': lat_stats}
    opt_state = {**opt_state, 'latent': opt_lat}

    # 4. H, G step with Z and z' fixed. H ran once above; its VJP turns dE/dh into dE/dH.
    if update_hg:
      def hg_loss(params_gen, h, h_terms):
        kw = {'h_terms': h_terms} if share_h_terms else {}
        y_hat, gen_stats = _apply(state.generator, params_gen, stats['generator'], h, z_next,
                                  train=True, **kw)
        return state.loss_fn(y_hat, batch).mean(), gen_stats

      terms_in = h_terms if share_h_terms else None
      (loss_e, gen_stats), (grads_gen, grads_h, grads_terms) = jax.value_and_grad(
          hg_loss, argnums=(0, 1, 2), has_aux=True)(params['generator'], h, terms_in)
      if share_h_terms:  # the terms' share of the gradients, through their VJP
        grads_gen, grads_h = jax.tree.map(jnp.add, (grads_gen, grads_h),
                                          h_terms_vjp(grads_terms))
      (grads_enc,) = enc_vjp((grads_h, jax.tree.map(jnp.zeros_like, enc_stats)))
      grads = {'encoder': grads_enc, 'generator': grads_gen}
      updates, opt_hg = state.tx_hg.update(grads, opt_state['hg'], _hg(params),
                                           batch_step=state.step)
      norm_hg = optax.global_norm(updates)
      params = {**params, **optax.apply_updates(_hg(params), updates)}
      stats = {**stats, 'encoder': enc_stats, 'generator': gen_stats}
      opt_state = {**opt_state, 'hg': opt_hg}
    else:
      loss_e = jnp.mean(errors)
      norm_hg = jnp.zeros((), jnp.float32)
    metrics = {'E': loss_e, 'E_z': jnp.mean(errors), 'latent_loss': loss_z,
               'rho': jnp.mean(rho), 'rho_hat': jnp.mean(rho_hat),
               'dz': jnp.mean(jnp.linalg.norm(z_next - z, axis=-1)),
               'update_norm_hg': norm_hg, 'update_norm_latent': norm_lat}
    return (params, stats, opt_state, z_next), metrics

  share_h_terms = getattr(state.generator, 'shares_h_terms', False)
  z0 = initial_latents(state, batch, key)
  z_end = descent_end(state, batch, z0) if hp.latent_target == 'end' else None
  carry = (state.params, state.stats, state.opt_state, z0)
  every = hp.generator_update == 'every'
  n_scan = hp.inner_steps if every else hp.inner_steps - 1
  ms = []
  # Unrolled by default: XLA:CPU runs convolutions and dots inside a while loop through a
  # slow generic path (bench config, l = 3: 23 s per step rolled, 2 s unrolled); l is
  # small. scan(unroll=True) of length 1 still emits a loop, hence the direct call.
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
  m = jax.tree.map(lambda *a: jnp.concatenate(a), *ms)
  params, stats, opt_state, z_final = carry

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
  return _apply(state.encoder, state.params['encoder'], state.stats['encoder'], x,
                train=False)[0]


def generate(state: CGMLState, h: PyTree, z: jax.Array) -> jax.Array:
  """y_hat = G(h, z)."""
  return _apply(state.generator, state.params['generator'], state.stats['generator'], h, z,
                train=False)[0]


def latent_field(state: CGMLState, z: jax.Array, h: PyTree) -> tuple[jax.Array, jax.Array]:
  """(r_hat, rho_hat) = Z(z, h)."""
  return _apply(state.latent_net, state.params['latent'], state.stats['latent'], z, h,
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
  r"""Phantom filter (not in the paper, off unless `hp.redraw_rho` > 0): Z is fitted to
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
  if hp.redraw_rho <= 0 or hp.redraw_rounds == 0:
    return z
  rho_hat = latent_field(state, z, h)[1]
  for r in range(hp.redraw_rounds):
    z_new = traverse_latent(state, h, sample_sphere(jax.random.fold_in(key, r + 1), z.shape),
                            num_steps)
    rho_new = latent_field(state, z_new, h)[1]
    swap = (rho_hat > hp.redraw_rho) & (rho_new < rho_hat)
    z = jnp.where(swap[:, None], z_new, z)
    rho_hat = jnp.where(swap, rho_new, rho_hat)
  return z


def _repeat(tree: PyTree, k: int) -> PyTree:
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
  h_k = _repeat(h, num_samples)
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
