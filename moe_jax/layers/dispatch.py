"""Dispatch: send each token to its experts, run them, combine the outputs.

Legend: T tokens, D model width, E experts, A assignments (token, expert, weight), C capacity
(slots per expert).

Three interchangeable implementations with one signature,
  dispatch(x[T, D], routing, experts_fn, num_experts, ...) -> (y[T, D], DispatchStats),
where experts_fn(rows, matmul_in[, matmul_out[, ffn]]) -> (out, zero_frac_rows) is an `Experts`
module call (dropless hands it the token rows, a matmul_out that returns y[T, D] itself and the
whole FFN in one pass, `ffn`):
  "dropless": sort assignments by expert, grouped matmuls over the sorted rows, with the row
      gather, the FFN and the weighted combine inside one tile loop; nothing dropped.
  "capacity": sort, keep the first C assignments of each expert (first choices before second
      choices), batched einsum over [E, C, D] buffers; the rest are dropped and counted.
  "dense":    GShard's one-hot dispatch/combine tensors [T, E, C] and einsums; the readable
      reference, same drop rule as "capacity".
With a capacity factor of 0 (C = T) no assignment can be dropped and all three are equal.
The pieces the expert-parallel paths reuse (moe_jax/parallel/expert_parallel.py,
moe_jax/inference/exflow/coherent.py) are public: `capacity_slots` (each assignment's row in an
[E, C] buffer), `einsum_matmul` (the batched matmul over such buffers) and `combine` (the
weighted sum of each token's expert outputs).
"""
from __future__ import annotations

import functools
import math

import flax.struct
import jax
import jax.numpy as jnp

from moe_jax.layers.experts import per_matrix
from moe_jax.layers.grouped_matmul import grouped_ffn, grouped_matmul
from moe_jax.layers.losses import tokens_per_expert
from moe_jax.layers.routers import Routing
from moe_jax.utils.errors import check_choice

DISPATCHES = ("dropless", "capacity", "dense")


def default_dispatch() -> str:
  """Dropless on every backend: its grouped matmul runs at dense speed (benchmarks/moe_layer.py)."""
  return "dropless"


@flax.struct.dataclass
class DispatchStats:
  """tokens_per_expert[E] assignments routed to each expert (before drops); dropped: scalar
  count of dropped assignments; zero_frac[E]: mean fraction of exact zeros in each expert's
  hidden activations over the rows it processed."""
  tokens_per_expert: jax.Array
  dropped: jax.Array
  zero_frac: jax.Array


def expert_capacity(num_assignments: int, num_tokens: int, num_experts: int,
                    capacity_factor: float) -> int:
  """C = ceil(capacity_factor * A / E), at most T; a factor <= 0 means C = T (no drops)."""
  if capacity_factor <= 0:
    return num_tokens
  return max(1, min(num_tokens, math.ceil(capacity_factor * num_assignments / num_experts)))


def _priority_order(routing: Routing) -> jax.Array:
  """[A] assignment order by (expert, priority): first choices of all tokens come first."""
  a = routing.expert.shape[0]
  if routing.top_k:
    t, k = a // routing.top_k, routing.top_k
    rank = jnp.arange(a, dtype=jnp.int32)
    rank = (rank % k) * t + rank // k  # choice-major priority
  else:
    rank = jnp.arange(a, dtype=jnp.int32)
  return jnp.lexsort((rank, routing.expert))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _unsort_sum(rows: jax.Array, order: jax.Array, k: int) -> jax.Array:
  """y[T, D] = sum over each token's K assignments of rows[A, D], given in `order`.

  Token-choice assignments are token-major (a = t * K + j) and `order` permutes them. Forward,
  a gather by the inverse permutation; backward, the gather d_rows = d_y[order // K] (on CPU
  about 1.5x faster than the scatter-add that autodiff of the forward gather gives).
  """
  return jnp.sum(rows[_inverse(order)].reshape(-1, k, rows.shape[-1]), axis=1)


_unsort_sum.defvjp(lambda rows, order, k: (_unsort_sum(rows, order, k), order),
                   lambda k, order, d_y: (d_y[order // k], None))


def combine(rows: jax.Array, order: jax.Array, routing: Routing, num_tokens: int) -> jax.Array:
  """y[T, D] = sum over assignments of weight * rows, rows[A, D] given in `order`."""
  weighted = rows * routing.weight[order].astype(rows.dtype)[:, None]
  if routing.top_k:  # unsort, then sum the K rows of each token: a gather instead of a scatter
    return _unsort_sum(weighted, order, routing.top_k)
  return jnp.zeros((num_tokens, rows.shape[-1]), rows.dtype).at[routing.token[order]].add(
      weighted)


def _inverse(order: jax.Array) -> jax.Array:
  """The inverse of the permutation `order`."""
  return jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype),
                                             unique_indices=True)


def _per_expert_mean(values: jax.Array, expert: jax.Array, counts: jax.Array) -> jax.Array:
  num_experts = counts.shape[0]
  sums = jax.ops.segment_sum(values, expert, num_segments=num_experts)
  return sums / jnp.maximum(counts, 1.0)


def dropless(x, routing: Routing, experts_fn, num_experts: int, *, gmm_impl: str = "auto",
             **unused):
  """Sort by expert + grouped matmul (MegaBlocks-style dropless MoE).

  No [A, D] array of token rows is built: the experts get the token rows x[T, D] and `ffn`
  (grouped_ffn), which per tile reads each assignment's token row, runs its expert's FFN and
  adds the output times its routing weight to its token, returning y[T, D]. matmul_in/out
  (grouped_matmul's `gather` and `scatter`) are the same two steps apart, for callers that
  must see h (activation quantization).
  """
  del unused
  order = jnp.argsort(routing.expert, stable=True)
  token = routing.token[order]
  counts = tokens_per_expert(routing.expert, num_experts)
  group_sizes = counts.astype(jnp.int32)
  weight = routing.weight[order]
  matmul_in = lambda rows, w: grouped_matmul(rows, w, group_sizes, impl=gmm_impl, gather=token)
  matmul_out = lambda rows, w: grouped_matmul(rows, w, group_sizes, impl=gmm_impl,
                                              scatter=(token, weight, x.shape[0]))
  ffn = lambda rows, w_in, w_out, hidden: grouped_ffn(rows, w_in, w_out, group_sizes, hidden,
                                                      token=token, weights=weight, impl=gmm_impl)
  y, zero_frac = experts_fn(x, matmul_in, matmul_out, ffn)
  stats = DispatchStats(counts, jnp.zeros((), jnp.int32),
                        _per_expert_mean(zero_frac, routing.expert[order], counts))
  return y, stats


def capacity_slots(routing: Routing, num_experts: int, capacity: int):
  """(order, slot, keep, counts) of assignments kept up to C per expert, by priority.

  order[A]: the assignments sorted by (expert, priority) (`_priority_order`); slot[A] in
  [0, E*C]: the buffer row of each assignment in `order`, E*C the drop bin; keep[A]: whether it
  got a slot; counts[E]: assignments routed to each expert, drops included.
  """
  order = _priority_order(routing)
  expert_sorted = routing.expert[order]
  counts = tokens_per_expert(routing.expert, num_experts)
  starts = jnp.cumsum(counts) - counts
  position = jnp.arange(order.shape[0]) - starts[expert_sorted].astype(jnp.int32)
  keep = position < capacity
  slot = jnp.where(keep, expert_sorted * capacity + position, num_experts * capacity)
  return order, slot, keep, counts


def einsum_matmul(a, w):
  """Each expert's rows times its own matrix: a[E, C, D] x w[E, D, F] -> [E, C, F] (w may be a
  tuple of such matrices: a tuple of products)."""
  return per_matrix(functools.partial(jnp.einsum, "ecd,edf->ecf"))(a, w)


def capacity(x, routing: Routing, experts_fn, num_experts: int, *, capacity_factor: float,
             **unused):
  """Sort + fixed capacity + batched einsum over [E, C, D]; overflow assignments are dropped."""
  del unused
  t, d = x.shape
  c = expert_capacity(routing.expert.shape[0], t, num_experts, capacity_factor)
  order, slot, keep, counts = capacity_slots(routing, num_experts, c)
  buf = jnp.zeros((num_experts * c + 1, d), x.dtype).at[slot].set(x[routing.token[order]])
  filled = jnp.zeros((num_experts * c + 1,), jnp.bool_).at[slot].set(keep)
  out, zero_frac = experts_fn(buf[:-1].reshape(num_experts, c, d), einsum_matmul)
  out = jnp.concatenate([out.reshape(num_experts * c, -1), jnp.zeros((1, out.shape[-1]),
                                                                     out.dtype)])
  y = combine(out[slot], order, routing, t)
  used = filled[:-1].reshape(num_experts, c).astype(jnp.float32)
  zf = jnp.sum(zero_frac * used, axis=1) / jnp.maximum(jnp.sum(used, axis=1), 1.0)
  return y, DispatchStats(counts, jnp.sum(~keep).astype(jnp.int32), zf)


def dense(x, routing: Routing, experts_fn, num_experts: int, *, capacity_factor: float,
          **unused):
  """GShard one-hot dispatch: x_e = einsum('TD,TEC->ECD'), y = einsum('ECD,TEC->TD')."""
  del unused
  t, _ = x.shape
  c = expert_capacity(routing.expert.shape[0], t, num_experts, capacity_factor)
  order, slot, keep, counts = capacity_slots(routing, num_experts, c)
  token = routing.token[order]
  # Scatter each assignment's 1 (and weight) to [token, slot]; column E*C is the drop bin.
  dispatch_mask = jnp.zeros((t, num_experts * c + 1), jnp.float32).at[token, slot].add(1.0)
  weights = jnp.zeros((t, num_experts * c + 1), jnp.float32).at[token, slot].add(
      routing.weight[order])
  dispatch_mask = dispatch_mask[:, :-1].reshape(t, num_experts, c).astype(x.dtype)
  weights = weights[:, :-1].reshape(t, num_experts, c).astype(x.dtype)
  x_e = jnp.einsum("td,tec->ecd", x, dispatch_mask)
  out, zero_frac = experts_fn(x_e, einsum_matmul)
  used = jnp.sum(dispatch_mask, axis=0).astype(jnp.float32)  # [E, C]
  zf = jnp.sum(zero_frac * used, axis=1) / jnp.maximum(jnp.sum(used, axis=1), 1.0)
  y = jnp.einsum("ecd,tec->td", out, weights)
  return y, DispatchStats(counts, jnp.sum(~keep).astype(jnp.int32), zf)


_IMPLS = {"dropless": dropless, "capacity": capacity, "dense": dense}


def dispatch(name: str, x, routing: Routing, experts_fn, num_experts: int, **kwargs):
  """Runs the dispatch named `name` ("auto" picks `default_dispatch()`)."""
  if name == "auto":
    name = default_dispatch()
  check_choice("dispatch", name, DISPATCHES + ("auto",))
  return _IMPLS[name](x, routing, experts_fn, num_experts, **kwargs)
