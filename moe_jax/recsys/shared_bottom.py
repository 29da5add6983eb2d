"""Shared-bottom multi-task model (Caruana 1997; the baseline of MMoE, Ma et al. KDD 2018 eq. 1).

y_t = h_t(f(x)): one bottom MLP f shared by all T tasks, one tower h_t per task.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from moe_jax.recsys.features import FeatureEncoder
from moe_jax.recsys.layers import Towers, check_widths
from moe_jax.utils.config import Section


@dataclasses.dataclass(frozen=True)
class SharedBottomConfig(Section):
  """A `models` entry of kind "shared_bottom": bottom MLP widths, tower widths."""
  kind: str = "shared_bottom"
  bottom_hidden: tuple[int, ...] = (64, 32)
  tower_hidden: tuple[int, ...] = (16,)

  def __post_init__(self):
    check_widths("bottom_hidden", self.bottom_hidden)
    check_widths("tower_hidden", self.tower_hidden, allow_empty=True)

  @property
  def activation(self) -> str:
    """The bottom (the one "expert") is a ReLU MLP."""
    return "relu"


class SharedBottom(nn.Module):
  """sparse int [B, F], dense [B, D_d] -> logits [B, T]."""
  config: SharedBottomConfig
  vocab_sizes: Sequence[int]
  embed_dim: int
  num_tasks: int

  @nn.compact
  def __call__(self, sparse, dense, train: bool = False) -> jnp.ndarray:
    x = FeatureEncoder(self.vocab_sizes, self.embed_dim, name="features")(sparse, dense)
    for i, width in enumerate(self.config.bottom_hidden):
      x = jax.nn.relu(nn.Dense(width, name=f"bottom_{i}")(x))
    self.sow("intermediates", "expert_out", x[:, None])  # one "expert": [B, 1, H]
    x = jnp.broadcast_to(x[:, None], (x.shape[0], self.num_tasks, x.shape[-1]))
    return Towers(self.config.tower_hidden, name="towers")(x)
