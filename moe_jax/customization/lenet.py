"""LeNet-5 (LeCun et al. 1998), the global expert (GE) of arXiv:1811.00056.

Shapes: B batch, H = W = 28 input pixels, K classes, F feature width (120 after fc1, 84 after fc2).
conv1 6@5x5 -> pool 2 -> conv2 16@5x5 -> pool 2 -> fc1 120 -> fc2 84 -> head K, on the 28x28 input
zero-padded to 32x32 as in the original. Modern defaults (ReLU, max pooling, conv2 fully connected
to all six maps instead of the original's partial C3 table) are config fields.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from moe_jax.utils.errors import check_choice

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}
POOLINGS = ("max", "avg")
FEATURE_WIDTHS = {"fc1": 120, "fc2": 84}


class LeNet5(nn.Module):
  """[B, H, W] or [B, H, W, 1] images -> (logits [B, K], features [B, F] at `feature_layer`).

  The features are what the local expert and the gating network read: GE computes them anyway, so
  sharing them keeps LE + GN a few percent of GE (our choice; the abstract gives only the ~2.5%
  overhead).
  """
  num_classes: int
  input_pad: int = 2
  activation: str = "relu"
  pooling: str = "max"
  feature_layer: str = "fc1"

  @nn.compact
  def __call__(self, images):
    check_choice("ge.activation", self.activation, ACTIVATIONS)
    check_choice("ge.pooling", self.pooling, POOLINGS)
    check_choice("ge.feature_layer", self.feature_layer, FEATURE_WIDTHS)
    act = ACTIVATIONS[self.activation]
    pool = nn.max_pool if self.pooling == "max" else nn.avg_pool
    x = images[..., None] if images.ndim == 3 else images
    p = self.input_pad
    x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    x = pool(act(nn.Conv(6, (5, 5), padding="VALID", name="conv1")(x)), (2, 2), (2, 2))
    x = pool(act(nn.Conv(16, (5, 5), padding="VALID", name="conv2")(x)), (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    fc1 = act(nn.Dense(120, name="fc1")(x))
    fc2 = act(nn.Dense(84, name="fc2")(fc1))
    logits = nn.Dense(self.num_classes, name="head")(fc2)
    return logits, {"fc1": fc1, "fc2": fc2}[self.feature_layer]
