"""Applying an expert placement to a model: renumber each MoE layer's experts, same function.

Legend: L MoE layers (in the order of `LMConfig.moe_layer_ids()`), E experts per layer, G
devices, D model width.

`placement.permutation(placement, G)` gives perm[L, E]: slot s of layer l takes old expert
perm[l, s], so that device g's experts fill slots g E/G ... (g+1) E/G - 1. Then, per MoE layer,

  experts:  W_new[s] = W[perm[s]]             (every stacked expert weight, axis 0)
  router:   R_new[..., s] = R[..., perm[s]]    (the gate kernel [D, E], a noise kernel, a score
                                               correction bias [E]: every router variable's
                                               expert axis is its last)

A token's router logit for slot s is its old logit for expert perm[s] and slot s computes old
expert perm[s], so the layer's output is unchanged; expert parallelism's contiguous layout (slot
s on device s // (E/G)) now realises `placement`. Group-limited routing (n_group > 1) reads the
expert order (groups are contiguous ranges), so it is refused.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from moe_jax.inference.exflow.placement import permutation
from moe_jax.models.config import LMConfig
from moe_jax.utils.errors import require


def apply_placement(cfg: LMConfig, variables: dict, placement: np.ndarray,
                    num_devices: int) -> dict:
  """The variables of the same model with `placement` [L, E] realised by the contiguous layout."""
  placement = np.asarray(placement)
  layers = cfg.moe_layer_ids()
  require(placement.shape == (len(layers), cfg.moe.num_experts), "placement",
          f"shape {placement.shape} is not [MoE layers, experts] = "
          f"[{len(layers)}, {cfg.moe.num_experts}]", "pass one row per MoE layer")
  require(cfg.moe.n_group == 1, "model.moe.n_group",
          f"group-limited routing ({cfg.moe.n_group} groups) depends on the expert order",
          "apply placements to models with n_group=1")
  perm, _ = permutation(placement, num_devices)
  rows = {f"layer_{layer}": row for layer, row in zip(layers, perm)}
  flat = traverse_util.flatten_dict(variables)
  out = {}
  for path, w in flat.items():  # path: (collection, layer_i, "moe", "router" | "experts", ...)
    row = rows.get(path[1]) if len(path) > 3 and path[2] == "moe" else None
    if row is not None and path[3] == "router":
      w = jnp.take(w, row, axis=-1)
    elif row is not None and path[3] == "experts":
      w = jnp.take(w, row, axis=0)
    out[path] = w
  return traverse_util.unflatten_dict(out)
