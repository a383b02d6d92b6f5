r"""Conditional IMLE (Li, Zhang & Malik 2019, "Diverse Image Synthesis from Semantic
Layouts via Conditional IMLE"), in the style of `cgml_jax.peers.methods`.

Implicit maximum likelihood estimation (Li & Malik 2018) asks that every data point have
a generated sample nearby, rather than that every sample look like data (which is what
lets a GAN drop modes). Conditionally, for each training pair (x, y):

  draw m latents z_1..z_m ~ N(0, I),  j* = argmin_j d(G(H(x), z_j), y),
  take a gradient step on d(G(H(x), z_j*), y)          (Li et al. 2019, Algorithm 1)

so each target pulls the nearest of m samples towards itself and the other samples stay
free to cover the other answers. Here d is the task's error E (Li et al. use a perceptual
distance on images), and the nearest latent is chosen afresh in every step from the current
G (the released code caches the selection over a pool of examples and refreshes it every
few epochs, to save the m forward passes; a step per batch needs no cache and keeps the
step a pure function). m = `cimle.num_latents`, default 10: a CPU-sized choice of ours,
not a value from the paper (which draws larger pools); the step costs m forward passes of
G (no gradients) plus one training pass. Sampling at test time: z ~ N(0, I).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from cgml_jax.cgml import LossFn, apply_module, l1_error, repeat_batch
from cgml_jax.peers import methods as peers

PyTree = Any


@dataclasses.dataclass(frozen=True)
class CIMLEHyper:
  """Static hyper-parameters of `cimle_step`.

  Attributes:
    z_dim: latent size.
    num_latents: m, latents drawn per input to pick the nearest sample from.
  """
  z_dim: int = 8
  num_latents: int = 10

  def __post_init__(self):
    if self.z_dim < 1:
      raise ValueError(f'cIMLE needs a latent: z_dim must be >= 1, got {self.z_dim}')
    if self.num_latents < 1:
      raise ValueError(f'num_latents (m) must be >= 1, got {self.num_latents}')


class CIMLEState(struct.PyTreeNode):
  """H and G of conditional IMLE.

  Array fields: step, params and stats {'encoder', 'generator'}, opt_state (tx over both).
  Static fields: the modules, tx, loss_fn (the distance d: per-example E, (y_hat, batch) ->
  (B,)) and hp (`CIMLEHyper`).
  """
  step: jax.Array
  params: PyTree
  stats: PyTree
  opt_state: PyTree
  encoder: nn.Module = struct.field(pytree_node=False)
  generator: nn.Module = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  loss_fn: LossFn = struct.field(pytree_node=False)
  hp: CIMLEHyper = struct.field(pytree_node=False)

  @classmethod
  def create(cls, key: jax.Array, x: jax.Array, *, encoder: nn.Module, generator: nn.Module,
             tx: optax.GradientTransformation, hp: CIMLEHyper = CIMLEHyper(),
             loss_fn: LossFn = l1_error) -> 'CIMLEState':
    """Initialises H, G on an example input batch and the optimiser."""
    def init(key, x):
      k_enc, k_gen = jax.random.split(key)
      v_enc = encoder.init(k_enc, x, train=False)
      h = encoder.apply(v_enc, x, train=False)
      z = jnp.zeros((jax.tree.leaves(x)[0].shape[0], hp.z_dim), jnp.float32)
      variables = {'encoder': v_enc, 'generator': generator.init(k_gen, h, z, train=False)}
      params = {k: v.get('params', {}) for k, v in variables.items()}
      stats = {k: {c: s for c, s in v.items() if c != 'params'} for k, v in variables.items()}
      return params, stats, tx.init(params)

    params, stats, opt_state = jax.jit(init)(key, x)
    return cls(step=jnp.zeros((), jnp.int32), params=params, stats=stats,
               opt_state=opt_state, encoder=encoder, generator=generator, tx=tx,
               loss_fn=loss_fn, hp=hp)


def select_nearest(errors: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The latent of the smallest error per input.

  Args:
    errors: (B, m) distance of each candidate sample to its target.
    z: (B, m, n) the candidates' latents.

  Returns:
    (z* (B, n), index (B,) of the chosen candidate).
  """
  idx = jnp.argmin(errors, axis=1)
  return jnp.take_along_axis(z, idx[:, None, None], axis=1)[:, 0], idx


def candidate_errors(state: CIMLEState, batch: dict, z: jax.Array) -> jax.Array:
  """d(G(H(x), z_j), y) of m candidate latents z (B, m, n) per input: (B, m).

  Inference mode (no statistics updates, no gradients); H runs once per input.
  """
  b, m = z.shape[:2]
  h = apply_module(state.encoder, state.params['encoder'], state.stats['encoder'], batch['x'],
             train=False)[0]
  if getattr(state.generator, 'accepts_sample_axis', False):
    y = apply_module(state.generator, state.params['generator'], state.stats['generator'], h, z,
               train=False)[0]                                     # (B, m, ...)
    y = y.reshape((b * m,) + y.shape[2:])
  else:
    y = apply_module(state.generator, state.params['generator'], state.stats['generator'],
               repeat_batch(h, m), z.reshape(b * m, -1), train=False)[0]
  return jax.lax.stop_gradient(state.loss_fn(y, repeat_batch(batch, m)).reshape(b, m))


def cimle_step(state: CIMLEState, batch: dict, key: jax.Array) -> tuple[CIMLEState, dict]:
  r"""One cIMLE step: pick each input's nearest of m samples, then one optimiser step on
  the task's E of the picked samples (module docstring).

  Args:
    state: `CIMLEState`.
    batch: {'x': (B, ...), 'y': (B, ...)} plus whatever `state.loss_fn` reads.
    key: PRNG key for the m candidate latents per input.

  Returns:
    (new_state, metrics): E (of the picked samples, before the step), E_candidates (mean
    over all m candidates), update_norm.
  """
  b = peers._check_batch(batch)
  hp = state.hp
  z = jax.random.normal(key, (b, hp.num_latents, hp.z_dim), jnp.float32)
  errors = candidate_errors(state, batch, z)
  z_star, _ = select_nearest(errors, z)

  def loss(params):
    h, enc_stats = apply_module(state.encoder, params['encoder'], state.stats['encoder'],
                          batch['x'], train=True)
    y_hat, gen_stats = apply_module(state.generator, params['generator'], state.stats['generator'],
                              h, z_star, train=True)
    return state.loss_fn(y_hat, batch).mean(), {'encoder': enc_stats, 'generator': gen_stats}

  (e, stats), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params,
                                       batch_step=state.step)
  new_state = state.replace(step=state.step + 1,
                            params=optax.apply_updates(state.params, updates), stats=stats,
                            opt_state=opt_state)
  return new_state, {'E': e, 'E_candidates': jnp.mean(errors),
                     'update_norm': optax.global_norm(updates)}


def cimle_sample(state: CIMLEState, x: jax.Array, key: jax.Array,
                 num_samples: int) -> jax.Array:
  """K outputs per input, G(H(x), z_k) with z_k ~ N(0, I): (B, K, ...)."""
  return peers._generate_k(state.encoder, state.generator, state.params, state.stats, x,
                           key, num_samples, state.hp.z_dim)
