"""DCM's discriminator: light heads on frozen teacher features (`distill/discriminator.py`).

Each head sees one tapped teacher hidden state [B, T, P, D] of a re-noised clip and applies, per
frame, a 1x1 conv (a Dense over tokens) -> GroupNorm -> LeakyReLU, one residual conv-GN-LReLU unit,
and a 1x1 conv to one logit per token. Paper: D=3072 -> 1024 channels, 32 groups, one head per 2nd
block.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax


class Head(nn.Module):
  hidden: int
  groups: int

  @nn.compact
  def __call__(self, h):
    b, t, p, _ = h.shape
    h = h.reshape(b * t, p, -1)                     # per-frame normalisation, as a 2-D conv head
    unit = lambda y: jax.nn.leaky_relu(nn.GroupNorm(self.groups)(nn.Dense(self.hidden)(y)), 0.2)
    y = unit(h)
    y = y + unit(y)
    return nn.Dense(1)(y).reshape(b, t, p)


class Discriminator(nn.Module):
  """list of [B, T, P, D] teacher taps -> list of [B, T, P] logits."""
  num_heads: int
  hidden: int = 64
  groups: int = 8

  @nn.compact
  def __call__(self, taps: Sequence):
    return [Head(self.hidden, self.groups, name=f"head_{i}")(h) for i, h in enumerate(taps)]
