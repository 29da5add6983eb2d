"""Recommender inputs: one embedding table per categorical field, concatenated with dense features.

Shapes: B batch, F categorical fields, D_d dense features, K embedding width.
The output `v` [B, F*K + D_d] is the input every multi-task model below starts from.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class FeatureEncoder(nn.Module):
  """v = concat(E_1[ids_1], ..., E_F[ids_F], dense).

  Attributes:
    vocab_sizes: one table size per categorical field (ids must lie in [0, size)).
    embed_dim: K, the embedding width of every field.
  """
  vocab_sizes: Sequence[int]
  embed_dim: int

  @nn.compact
  def __call__(self, sparse: jnp.ndarray, dense: jnp.ndarray) -> jnp.ndarray:
    """sparse: int [B, F]; dense: float [B, D_d] -> v: [B, F*K + D_d]."""
    if sparse.shape[-1] != len(self.vocab_sizes):
      raise ValueError(f"sparse has {sparse.shape[-1]} fields, the encoder has "
                       f"{len(self.vocab_sizes)} vocab_sizes")
    parts = [
        nn.Embed(size, self.embed_dim, name=f"embed_{i}",
                 embedding_init=nn.initializers.normal(0.05))(sparse[:, i])
        for i, size in enumerate(self.vocab_sizes)
    ]
    return jnp.concatenate(parts + [dense.astype(jnp.float32)], axis=-1)
