"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018).

eq. (6) y_k = h^k(f^k(x));  eq. (7) f^k(x) = sum_i g^k(x)_i f_i(x);  eq. (8) g^k(x) = softmax(W_gk x),
W_gk in R^{n x d}: every task gate is one linear map of the input over all n shared experts.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from moe_jax.recsys.features import FeatureEncoder
from moe_jax.recsys.layers import ACTIVATIONS, ExpertLevel, Towers, check_widths
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive


@dataclasses.dataclass(frozen=True)
class MMoEConfig(Section):
  """A `models` entry of kind "mmoe": n shared experts (MLPs of `expert_hidden`), one gate and
  one tower per task; `activation` of the experts, `norm`: BatchNorm before it."""
  kind: str = "mmoe"
  num_experts: int = 8
  expert_hidden: tuple[int, ...] = (64, 32)
  tower_hidden: tuple[int, ...] = (16,)
  activation: str = "relu"
  norm: bool = False

  def __post_init__(self):
    check_positive("num_experts", self.num_experts)
    check_widths("expert_hidden", self.expert_hidden)
    check_widths("tower_hidden", self.tower_hidden, allow_empty=True)
    check_choice("activation", self.activation, ACTIVATIONS)


class MMoE(nn.Module):
  """sparse int [B, F], dense [B, D_d] -> logits [B, T]."""
  config: MMoEConfig
  vocab_sizes: Sequence[int]
  embed_dim: int
  num_tasks: int

  @nn.compact
  def __call__(self, sparse, dense, train: bool = False) -> jnp.ndarray:
    c = self.config
    v = FeatureEncoder(self.vocab_sizes, self.embed_dim, name="features")(sparse, dense)
    t, e = self.num_tasks, c.num_experts
    level = ExpertLevel(expert_input=(0,) * e, gate_input=(0,) * t,
                        gate_mask=((True,) * e,) * t, hidden=c.expert_hidden,
                        activation=c.activation, norm=c.norm, name="level_0")
    return Towers(c.tower_hidden, name="towers")(level(v[:, None], train))
