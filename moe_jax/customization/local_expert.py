"""The local expert (LE): a small classifier trained on the device on one user's samples only.

It reads the frozen GE's features (our choice: the paper's ~2.5% budget leaves no room for a
separate CNN on raw pixels). Shapes: B batch, F GE feature width, K classes.
"""
from __future__ import annotations

import flax.linen as nn


class LocalExpert(nn.Module):
  """[B, F] GE features -> [B, K] logits; `hidden` = 0 is a linear (softmax-regression) expert."""
  num_classes: int
  hidden: int = 0

  @nn.compact
  def __call__(self, features):
    x = features
    if self.hidden:
      x = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
    return nn.Dense(self.num_classes, name="out")(x)
