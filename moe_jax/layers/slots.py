"""Router slots mapped onto fewer experts: the merged MoE layer of MC-SMoE (arXiv 2310.01334).

Legend: T tokens, K experts per token, A = T*K assignments (token-major), E router slots (the
router's columns), G experts (stored), g(e) = slot_to_expert[e] the expert of slot e.

Merging experts (moe_jax/compress/mcsmoe) leaves the router as it was: E slots, each pointing
at one of G < E merged experts. The layer computes, for the router's top-K slots e_t1..e_tK,

  y_t = sum_k w_tk FFN_{g(e_tk)}(x_t) = sum_{h in {g(e_tk)}} (sum_{k: g(e_tk) = h} w_tk) FFN_h(x_t),

so each distinct expert of a token runs once, with the summed gate weight (`merge_slots`): the
token's first assignment to an expert carries the sum, its later ones become "no expert" (id G,
weight 0). The dropless dispatch sorts those past the last expert's rows, where no grouped
matmul reads or writes (grouped_matmul: rows past sum(group_sizes) are left out), and token
counts scatter them out of range, which JAX drops: a token whose K slots share an expert costs
one expert evaluation, not K.

`group_routing` is not the merged model: it routes among the G experts directly, each scored by
the log-sum-exp of its slots' logits (so softmax over experts gives each the summed probability
of its slots) and takes the top K experts. A token whose top-K slots share an expert gets K
distinct experts here, and the ranking by summed probability can differ from the ranking of
the best slots: one way (not equivalent) to route a merged model without a slot map.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from moe_jax.layers.routers import Routing


def slot_experts(routing: Routing, slot_to_expert: jax.Array) -> Routing:
  """The routing with each assignment's slot replaced by its expert g(e) (duplicates kept)."""
  return routing.replace(expert=slot_to_expert[routing.expert].astype(jnp.int32))


def merge_slots(routing: Routing, slot_to_expert: jax.Array, num_experts: int) -> Routing:
  """[T, K] slot assignments -> one assignment per distinct expert of a token (module doc).

  Args:
    routing: a token-choice Routing over the E slots (top_k > 0).
    slot_to_expert: [E] int, the expert of each slot, in [0, G).
    num_experts: G; a token's repeated expert becomes id G with weight 0.
  """
  k = routing.top_k
  expert = slot_to_expert[routing.expert].reshape(-1, k)  # [T, K]
  weight = routing.weight.reshape(-1, k)
  same = expert[:, :, None] == expert[:, None, :]  # [T, K, K]
  earlier = jnp.tril(jnp.ones((k, k), jnp.bool_), -1)  # earlier[j, i]: i < j
  repeated = jnp.any(same & earlier, axis=-1)  # [T, K]
  summed = jnp.sum(jnp.where(same, weight[:, None, :], 0.0), axis=-1)
  return routing.replace(
      expert=jnp.where(repeated, num_experts, expert).reshape(-1).astype(jnp.int32),
      weight=jnp.where(repeated, 0.0, summed).reshape(-1))


def group_logits(logits: jax.Array, slot_to_expert: jax.Array, num_experts: int) -> jax.Array:
  """[T, E] slot logits -> [T, G]: log-sum-exp over each expert's slots (-inf for none)."""
  member = jax.nn.one_hot(slot_to_expert, num_experts, dtype=jnp.bool_)  # [E, G]
  return jax.nn.logsumexp(jnp.where(member[None], logits[:, :, None], -jnp.inf), axis=1)


def group_routing(routing: Routing, slot_to_expert: jax.Array, num_experts: int,
                  normalize: bool) -> Routing:
  """Top-K experts by group_logits (softmax over experts, kept weights renormalised when
  `normalize`); experts with no slot are never chosen (id G, weight 0)."""
  k = routing.top_k
  probs = jax.nn.softmax(group_logits(routing.logits, slot_to_expert, num_experts), axis=-1)
  weight, index = jax.lax.top_k(probs, k)
  if normalize:
    weight = weight / jnp.sum(weight, axis=-1, keepdims=True)
  index = jnp.where(weight > 0, index, num_experts)
  return routing.replace(expert=index.reshape(-1).astype(jnp.int32),
                         weight=weight.reshape(-1).astype(jnp.float32))
