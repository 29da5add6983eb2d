"""Stacked experts, masked gates, feature-gates, self-gates and task towers.

Dimension letters: B batch, N input nodes (representations a level reads), E experts,
G gates (one per output node), D input width, H expert width, T tasks, R feature-gate rank.

Every multi-gate model here is a stack of `ExpertLevel`s that differ only in their wiring:
which node feeds each expert (`expert_input`), which node feeds each gate (`gate_input`) and which
experts each gate may weigh (`gate_mask` [G, E]). MMoE is one level with a full mask; CGC/PLE mask
each task gate to {own, shared} experts; HoME's hierarchy mask restricts gates to {global, own
group, own task} experts.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.utils.errors import require

ACTIVATIONS = {"relu": jax.nn.relu, "swish": jax.nn.swish}


def check_widths(field: str, widths: Sequence[int], allow_empty: bool = False) -> None:
  """Refuses hidden-layer widths that are not positive (or none at all, unless allowed)."""
  require(all(w > 0 for w in widths) and (allow_empty or len(widths) > 0), field,
          f"layer widths must be positive{'' if allow_empty else ' and at least one'}, got "
          f"{tuple(widths)}", "give comma-separated widths such as 64,32")


def masked_softmax(logits: jnp.ndarray, mask: np.ndarray) -> jnp.ndarray:
  """Softmax over the last axis restricted to `mask` (broadcastable); masked entries are exactly 0."""
  mask = jnp.asarray(mask, bool)
  logits = jnp.where(mask, logits, -1e9)
  weights = jax.nn.softmax(logits, axis=-1)
  return jnp.where(mask & mask.any(-1, keepdims=True), weights, 0.0)


class FeatureGate(nn.Module):
  """HoME's feature-gate, one per expert: x_e * 2 * sigmoid(x_e B_e A_e) (LoRA-style, rank R).

  A_e starts at zero, so every gate starts at exactly 1 (2 * sigmoid(0)).
  """
  rank: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [B, E, D] -> [B, E, D]."""
    _, e, d = x.shape
    b_mat = self.param("B", nn.initializers.normal(d ** -0.5), (e, d, self.rank))
    a_mat = self.param("A", nn.initializers.zeros, (e, self.rank, d))
    low = jnp.einsum("bed,edr->ber", x, b_mat)
    return x * 2.0 * jax.nn.sigmoid(jnp.einsum("ber,erd->bed", low, a_mat))


class StackedExperts(nn.Module):
  """E expert MLPs evaluated at once; expert e reads its own input x[:, e].

  Each layer: z = x W_e + b_e, then (HoME eq. of expert normalisation) z = BN(z) when `norm`,
  then the activation (ReLU as in MMoE/PLE, or Swish(z) = z * sigmoid(z) as in HoME).
  BatchNorm statistics are kept per (expert, unit).
  """
  hidden: Sequence[int]
  activation: str = "relu"
  norm: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """x: [B, E, D] -> [B, E, H] (H = hidden[-1])."""
    act = ACTIVATIONS[self.activation]
    for i, width in enumerate(self.hidden):
      e, d = x.shape[1], x.shape[2]
      kernel = self.param(f"kernel_{i}", nn.initializers.lecun_normal(batch_axis=(0,)),
                          (e, d, width))
      bias = self.param(f"bias_{i}", nn.initializers.zeros, (e, width))
      x = jnp.einsum("bed,edh->beh", x, kernel) + bias
      if self.norm:
        x = nn.BatchNorm(use_running_average=not train, axis=(-2, -1), momentum=0.9,
                         name=f"bn_{i}")(x)
      x = act(x)
    return x


class ExpertLevel(nn.Module):
  """One level of a multi-gate mixture: E experts and G softmax gates over them.

  out_g = sum_e softmax_{e in mask_g}(W_g x_{gate_input[g]})_e * f_e(x_{expert_input[e]})   (MMoE eq. 7-8)
        + sum_e s_{g,e} f_e(...)   over the gate's own experts (HoME self-gate, when own_mask is set),
  where s_g = sigmoid(.) if the gate owns one expert, else softmax(.) over its own experts.

  Sows `expert_out` [B, E, H] and `gate` [B, G, E] into the `intermediates` collection.
  """
  expert_input: Sequence[int]
  gate_input: Sequence[int]
  gate_mask: np.ndarray
  hidden: Sequence[int]
  activation: str = "relu"
  norm: bool = False
  feature_gate_rank: int = 0
  own_mask: np.ndarray | None = None

  @nn.compact
  def __call__(self, nodes: jnp.ndarray, train: bool) -> jnp.ndarray:
    """nodes: [B, N, D] -> [B, G, H]."""
    gate_mask = np.asarray(self.gate_mask, bool)
    n_gates, n_experts = gate_mask.shape
    if len(self.expert_input) != n_experts or len(self.gate_input) != n_gates:
      raise ValueError(f"gate_mask {gate_mask.shape} disagrees with {len(self.gate_input)} gate "
                       f"inputs and {len(self.expert_input)} expert inputs")
    x = nodes[:, np.asarray(self.expert_input)]  # [B, E, D]
    if self.feature_gate_rank:
      x = FeatureGate(self.feature_gate_rank, name="feature_gate")(x)
    experts = StackedExperts(self.hidden, self.activation, self.norm, name="experts")(x, train)
    self.sow("intermediates", "expert_out", experts)

    g_in = nodes[:, np.asarray(self.gate_input)]  # [B, G, D]
    d = g_in.shape[-1]

    def logits(name):
      kernel = self.param(f"{name}_kernel", nn.initializers.lecun_normal(batch_axis=(0,)),
                          (n_gates, d, n_experts))
      bias = self.param(f"{name}_bias", nn.initializers.zeros, (n_gates, n_experts))
      return jnp.einsum("bgd,gde->bge", g_in, kernel) + bias

    weights = masked_softmax(logits("gate"), gate_mask)  # [B, G, E]
    self.sow("intermediates", "gate", weights)
    out = jnp.einsum("bge,beh->bgh", weights, experts)
    if self.own_mask is not None:
      own = np.asarray(self.own_mask, bool)
      self_logits = logits("self_gate")
      single = (own.sum(-1) == 1)[:, None]
      self_w = jnp.where(single, jax.nn.sigmoid(self_logits) * own,
                         masked_softmax(self_logits, own))
      out = out + jnp.einsum("bge,beh->bgh", self_w, experts)
    return out


class Towers(nn.Module):
  """One MLP tower per task, stacked: logit_t = MLP_t(x_t) (ReLU hidden layers, linear output)."""
  hidden: Sequence[int]

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [B, T, D] -> logits [B, T]."""
    for i, width in enumerate(list(self.hidden) + [1]):
      t, d = x.shape[1], x.shape[2]
      kernel = self.param(f"kernel_{i}", nn.initializers.lecun_normal(batch_axis=(0,)),
                          (t, d, width))
      bias = self.param(f"bias_{i}", nn.initializers.zeros, (t, width))
      x = jnp.einsum("btd,tdh->bth", x, kernel) + bias
      if i < len(self.hidden):
        x = jax.nn.relu(x)
    return x[..., 0]
