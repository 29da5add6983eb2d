"""The gating network (GN) and its hard decision rule: each input goes to GE or to LE.

Shapes: B batch, N user samples, R reference samples, F GE feature width, K classes.
GN outputs g(x) = sigmoid(w . h(x) + b) in (0, 1) (h: GE features), read as "x should go to LE".
The decision is hard: x goes to LE iff g(x) > threshold, else to GE; only one expert's answer is
used. Two training targets (the abstract says only that GN learns "whether an incoming data should
be handled by GE or LE"):
  'source':   1 on the user's samples, 0 on a small generic reference set shipped with the GE;
  'ge_error': 1 where GE's top class is wrong on the user's samples, 0 where it is right
              (user data only).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.utils.errors import check_choice, require

TARGETS = ("source", "ge_error")


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


def ge_errors(ge_logits, labels) -> np.ndarray:
  """[N, K], [N] -> [N] float32 in {0, 1}: 1 where GE's top class is wrong."""
  return (np.argmax(np.asarray(ge_logits), -1) != np.asarray(labels)).astype(np.float32)


def training_set(target: str, user_features, user_ge_logits, user_labels,
                 reference_features=None) -> tuple[np.ndarray, np.ndarray]:
  """GN's inputs and {0, 1} targets for `target` in TARGETS.

  Returns:
    features [N, F] ('ge_error') or [N + R, F] ('source'); targets of the same length.
  """
  check_choice("gn.target", target, TARGETS)
  user_features = np.asarray(user_features)
  if target == "ge_error":
    return user_features, ge_errors(user_ge_logits, user_labels)
  require(reference_features is not None and len(reference_features) > 0,
          "gn.reference_per_class", "target 'source' needs generic reference samples",
          "set gn.reference_per_class > 0")
  reference_features = np.asarray(reference_features)
  targets = np.concatenate([np.ones(len(user_features)), np.zeros(len(reference_features))])
  return np.concatenate([user_features, reference_features]), targets.astype(np.float32)
