"""Auxiliary router losses. Legend: B batch, S sequence, T = B*S tokens, E experts, K per token."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def tokens_per_expert(expert: jax.Array, num_experts: int) -> jax.Array:
  """[E] float32 count of assignments to each expert; `expert` is any int array of expert ids."""
  return jnp.zeros((num_experts,), jnp.float32).at[expert.reshape(-1)].add(1.0)


def load_balancing_loss(probs: jax.Array, expert: jax.Array) -> jax.Array:
  """Switch Transformer load-balancing loss (Fedus et al. 2021, eq. 4), generalised to top-K.

  loss = E * sum_e f_e * P_e, with f_e the fraction of the T*K assignments sent to expert e
  and P_e the mean router probability of e over tokens. Equals 1 under uniform routing.
  (transformers' `load_balancing_loss_func` counts f_e per token, which is K times this.)

  Args:
    probs: [T, E] router probabilities.
    expert: [T, K] (or [A]) chosen expert ids.
  """
  num_experts = probs.shape[-1]
  f = tokens_per_expert(expert, num_experts) / expert.size
  p = jnp.mean(probs.reshape(-1, num_experts), axis=0)
  return num_experts * jnp.sum(f * p)


def router_z_loss(logits: jax.Array) -> jax.Array:
  """ST-MoE router z-loss (Zoph et al. 2022, eq. 5): mean over tokens of logsumexp(logits)^2."""
  return jnp.mean(jnp.square(jax.nn.logsumexp(logits.reshape(-1, logits.shape[-1]), axis=-1)))


def sequence_balance_loss(scores: jax.Array, expert: jax.Array) -> jax.Array:
  """DeepSeek-V3 complementary sequence-wise balance loss (eqs. 17-20), without the alpha factor.

  Per sequence: f_e = E / (K * S) * #{t : e in TopK(t)}, P_e = (1/S) sum_t s'_{e,t} with
  s' = s / sum_j s_j the normalised scores; loss = mean over sequences of sum_e f_e * P_e.

  Args:
    scores: [B, S, E] router scores (sigmoid or softmax; renormalised here).
    expert: [B, S, K] chosen expert ids.
  """
  _, s, e = scores.shape
  k = expert.shape[-1]
  norm = scores / jnp.sum(scores, axis=-1, keepdims=True)
  counts = jnp.sum(jax.nn.one_hot(expert, e, dtype=jnp.float32), axis=(1, 2))  # [B, E]
  f = counts * e / (k * s)
  p = jnp.mean(norm, axis=1)
  return jnp.mean(jnp.sum(f * p, axis=-1))
