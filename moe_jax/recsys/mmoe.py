"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018).

eq. (6) y_k = h^k(f^k(x));  eq. (7) f^k(x) = sum_i g^k(x)_i f_i(x);  eq. (8) g^k(x) = softmax(W_gk x),
W_gk in R^{n x d}: every task gate is one linear map of the input over all n shared experts.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from moe_jax.recsys.features import FeatureEncoder
from moe_jax.recsys.layers import ExpertLevel, Towers


class MMoE(nn.Module):
  """sparse int [B, F], dense [B, D_d] -> logits [B, T]; experts are ReLU MLPs unless `norm`."""
  vocab_sizes: Sequence[int]
  embed_dim: int
  num_tasks: int
  num_experts: int
  expert_hidden: Sequence[int]
  tower_hidden: Sequence[int]
  activation: str = "relu"
  norm: bool = False

  @nn.compact
  def __call__(self, sparse, dense, train: bool = False) -> jnp.ndarray:
    v = FeatureEncoder(self.vocab_sizes, self.embed_dim, name="features")(sparse, dense)
    t, e = self.num_tasks, self.num_experts
    level = ExpertLevel(expert_input=(0,) * e, gate_input=(0,) * t,
                        gate_mask=((True,) * e,) * t, hidden=self.expert_hidden,
                        activation=self.activation, norm=self.norm, name="level_0")
    return Towers(self.tower_hidden, name="towers")(level(v[:, None], train))
