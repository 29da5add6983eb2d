"""Counting the parameters of a pytree (one counter for every model of the suite)."""
from __future__ import annotations

import math

import flax.linen as nn
import jax


def param_count(tree) -> int:
  """Total number of elements over the leaves of `tree` (arrays, ShapeDtypeStructs, boxes)."""
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(tree))))
