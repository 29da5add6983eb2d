"""The gating network (GN) and its hard decision rule: each input goes to GE or to LE.

Shapes: B batch, F GE feature width, K classes. GN outputs g(x) = sigmoid(s(x)), the probability
that GE gets x wrong (its training target is 1[argmax GE(x) != y] on the user's samples, our
reading of "trained to determine whether an incoming data should be handled by GE or LE"). The
decision is hard: x goes to LE iff g(x) > threshold, else to GE; only one expert's answer is used.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class GatingNetwork(nn.Module):
  """[B, F] GE features -> [B] g(x), the probability that LE should handle x."""
  hidden: int = 0

  @nn.compact
  def __call__(self, features):
    x = features
    if self.hidden:
      x = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
    return jax.nn.sigmoid(nn.Dense(1, name="out")(x)[:, 0])


def route_to_local(gate: jax.Array, threshold: float) -> jax.Array:
  """[B] g(x) -> [B] bool, True where x goes to LE (g(x) > threshold)."""
  return gate > threshold


def combine(ge_logits: jax.Array, le_logits: jax.Array, to_local: jax.Array) -> jax.Array:
  """[B, K], [B, K], [B] -> [B, K]: LE's logits where routed to LE, GE's elsewhere (exactly)."""
  return jnp.where(to_local[:, None], le_logits, ge_logits)


def gate_targets(ge_logits: jax.Array, labels: jax.Array) -> jax.Array:
  """[B, K], [B] -> [B] float32 in {0, 1}: 1 where GE's top class is wrong."""
  return (jnp.argmax(ge_logits, -1) != labels).astype(jnp.float32)
