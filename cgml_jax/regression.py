"""The L1 regression baseline: cGML's H and G without z, trained on E alone.

It shares the module contract of `cgml_jax.cgml` (G is called with a z of shape (B, 0)),
so every backbone that cGML uses is also a regression baseline.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from cgml_jax.cgml import LossFn, apply_module, l1_error


class RegressionState(struct.PyTreeNode):
  """Params, spectral-norm stats and optimiser state of a deterministic y = G(H(x))."""
  step: jax.Array
  params: Any
  stats: Any
  opt_state: Any
  encoder: nn.Module = struct.field(pytree_node=False)
  generator: nn.Module = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  loss_fn: LossFn = struct.field(pytree_node=False)

  @classmethod
  def create(cls, key, x, *, encoder, generator, tx, loss_fn: LossFn = l1_error):
    def init(key, x):
      k_enc, k_gen = jax.random.split(key)
      v_enc = encoder.init(k_enc, x, train=False)
      h = encoder.apply(v_enc, x, train=False)
      v_gen = generator.init(k_gen, h, _no_z(x), train=False)
      variables = {'encoder': v_enc, 'generator': v_gen}
      params = {k: v['params'] for k, v in variables.items()}
      stats = {k: {c: s for c, s in v.items() if c != 'params'} for k, v in variables.items()}
      return params, stats, tx.init(params)

    params, stats, opt_state = jax.jit(init)(key, x)  # one program (see CGMLState.create)
    return cls(step=jnp.zeros((), jnp.int32), params=params, stats=stats,
               opt_state=opt_state, encoder=encoder, generator=generator, tx=tx,
               loss_fn=loss_fn)


def _no_z(x):
  return jnp.zeros((jax.tree.leaves(x)[0].shape[0], 0), jnp.float32)


def train_step(state: RegressionState, batch: dict, key: jax.Array):
  """One optimiser step on mean E(G(H(x)), y). `key` is unused (same signature as cGML)."""
  del key

  def loss(params):
    h, enc_stats = apply_module(state.encoder, params['encoder'], state.stats['encoder'],
                                batch['x'], train=True)
    y_hat, gen_stats = apply_module(state.generator, params['generator'],
                                    state.stats['generator'], h, _no_z(batch['x']), train=True)
    return state.loss_fn(y_hat, batch).mean(), {'encoder': enc_stats, 'generator': gen_stats}

  (e, stats), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params,
                                       batch_step=state.step)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            stats=stats, opt_state=opt_state)
  return new_state, {'E': e, 'update_norm': optax.global_norm(updates)}


def predict(state: RegressionState, x: jax.Array) -> jax.Array:
  """y_hat = G(H(x)), without statistics updates."""
  h = apply_module(state.encoder, state.params['encoder'], state.stats['encoder'], x,
                   train=False)[0]
  return apply_module(state.generator, state.params['generator'], state.stats['generator'], h,
                      _no_z(x), train=False)[0]
