"""PLE: Progressive Layered Extraction, and CGC (its one-level form) (Tang et al., RecSys 2020).

CGC (eq. 2-4): g^k(x) = w^k(x) S^k(x), w^k(x) = softmax(W_g^k x), S^k = [E_k,1..E_k,m_k, E_s,1..E_s,m_s]:
task k's gate weighs only its own m_k experts and the m_s shared experts.
PLE (eq. 5-6): g^{k,j}(x) = w^{k,j}(g^{k,j-1}(x)) S^{k,j}(x): level j reads level j-1's gated outputs; on
every level but the last a shared gate mixes all experts into the shared input of the next level.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from moe_jax.recsys.features import FeatureEncoder
from moe_jax.recsys.layers import ACTIVATIONS, ExpertLevel, Towers, check_widths
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require


@dataclasses.dataclass(frozen=True)
class PLEConfig(Section):
  """A `models` entry of kind "ple": `num_levels` levels (1 is CGC) of `num_specific` experts per
  task and `num_shared` shared experts (MLPs of `expert_hidden`); `activation` of the experts,
  `norm`: BatchNorm before it."""
  kind: str = "ple"
  num_levels: int = 2
  num_specific: int = 1
  num_shared: int = 2
  expert_hidden: tuple[int, ...] = (64, 32)
  tower_hidden: tuple[int, ...] = (16,)
  activation: str = "relu"
  norm: bool = False

  def __post_init__(self):
    check_positive("num_levels", self.num_levels)
    require(self.num_specific >= 0, "num_specific", f"must be >= 0, got {self.num_specific}",
            "use 0 or more experts per task")
    require(self.num_shared >= 0 and self.num_specific + self.num_shared > 0, "num_shared",
            f"got {self.num_shared} with num_specific={self.num_specific}",
            "use 0 or more shared experts, and at least one expert per task gate")
    check_widths("expert_hidden", self.expert_hidden)
    check_widths("tower_hidden", self.tower_hidden, allow_empty=True)
    check_choice("activation", self.activation, ACTIVATIONS)


def ple_wiring(num_tasks: int, num_specific: int, num_shared: int, final: bool):
  """Nodes [x_1..x_T, x_shared]; experts [task 1's, ..., task T's, shared]; returns
  (expert_input [E], gate_input [G], gate_mask [G, E]); G = T on the final level, else T + 1."""
  t, s = num_tasks, num_specific
  owner = np.concatenate([np.repeat(np.arange(t), s), np.full(num_shared, t)])
  gates = np.arange(t if final else t + 1)
  mask = (owner[None, :] == gates[:, None]) | (owner[None, :] == t) | (gates[:, None] == t)
  return tuple(owner.tolist()), tuple(gates.tolist()), tuple(map(tuple, mask.tolist()))


class PLE(nn.Module):
  """sparse int [B, F], dense [B, D_d] -> logits [B, T]. `num_levels=1` is CGC."""
  config: PLEConfig
  vocab_sizes: Sequence[int]
  embed_dim: int
  num_tasks: int

  @nn.compact
  def __call__(self, sparse, dense, train: bool = False) -> jnp.ndarray:
    c = self.config
    v = FeatureEncoder(self.vocab_sizes, self.embed_dim, name="features")(sparse, dense)
    nodes = jnp.broadcast_to(v[:, None], (v.shape[0], self.num_tasks + 1, v.shape[-1]))
    for j in range(c.num_levels):
      expert_input, gate_input, mask = ple_wiring(
          self.num_tasks, c.num_specific, c.num_shared, final=j == c.num_levels - 1)
      nodes = ExpertLevel(expert_input, gate_input, mask, c.expert_hidden,
                          c.activation, c.norm, name=f"level_{j}")(nodes, train)
    return Towers(c.tower_hidden, name="towers")(nodes)
