"""Streaming GPTQ Hessians, optionally weighted per token (MoEQuant's affinity-guided GPTQ).

Legend: N tokens, I input width of the linear layer, E experts (or any leading axes).

  H = (2 / N) sum_t c_t x_t x_t^T,   N = #{t : c_t > 0}

is the Hessian of the layer's output error ||W X - W_hat X||^2 (GPTQ, Frantar et al. 2022) with
each token weighted: MoEQuant's AGQ (Chen et al. 2025) takes c_t = the gate weight of token t for
the expert (0 for a token not routed to it), plain GPTQ c_t = 1. A token with c_t = 0 changes
neither the sum nor N. Sum and count are kept apart so calibration can arrive in batches; the
scale of H does not change GPTQ's result (its dampening is relative to the diagonal).
Gate weights must be >= 0 (a negative one would make H indefinite); that is the caller's contract.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class HessianSum(NamedTuple):
  """xx: [..., I, I] float32 sum_t c_t x_t x_t^T; count: [...] float32 tokens with c_t > 0."""
  xx: jax.Array
  count: jax.Array


def init(width: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> HessianSum:
  """An empty sum for inputs of width I, e.g. batch_shape=(E,) for one Hessian per expert."""
  return HessianSum(jnp.zeros((*batch_shape, width, width), dtype), jnp.zeros(batch_shape, dtype))


def accumulate(state: HessianSum, x: jax.Array, weight: jax.Array | None = None) -> HessianSum:
  """Adds tokens x [..., N, I] with optional weights c [..., N] (leading axes broadcast).

  For an MoE layer, x [N, I] (the layer's input) with weight [E, N] (gate weight of each token for
  each expert, 0 where not routed) adds to E Hessians at once.
  """
  x = x.astype(state.xx.dtype)
  if weight is None:
    xw, n = x, jnp.full(x.shape[:-2], x.shape[-2], state.count.dtype)
  else:
    weight = weight.astype(state.xx.dtype)
    xw, n = x * weight[..., None], jnp.sum(weight > 0, axis=-1, dtype=state.count.dtype)
  xx = jnp.einsum("...ni,...nj->...ij", xw, x, precision=jax.lax.Precision.HIGHEST)
  return HessianSum(state.xx + xx, state.count + n)


def finalize(state: HessianSum) -> jax.Array:
  """H [..., I, I] = 2 xx / N (all zeros where no token came: every column dead)."""
  return 2 * state.xx / jnp.maximum(state.count, 1)[..., None, None]


def hessian(x: jax.Array, weight: jax.Array | None = None) -> jax.Array:
  """H from one batch: x [..., N, I], weight [..., N] -> [..., I, I]."""
  batch = jnp.broadcast_shapes(x.shape[:-2], () if weight is None else weight.shape[:-1])
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  return finalize(accumulate(init(x.shape[-1], batch, dtype), x, weight))
