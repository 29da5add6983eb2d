"""Expert placements on devices, what they cost on a routing trace, and how to apply them.

Legend: L layers, E experts per layer, G devices, N tokens, K experts per token, D devices per
node (devices d and d' share a node when d // D == d' // D).

A placement is `placement[L, E] -> device`; it is balanced when each device holds exactly E/G
experts of every layer. Its cost on a trace (ExFlow, Yao et al. 2024, the objective of the
integer program) is the fraction of consecutive-layer transitions whose experts sit on different
devices, and in the staged variant the mean hop cost, a hop inside a node costing 1 and one
across nodes 2:

  cost = sum_l sum_{a,b} n_l(a, b) hop(p[l, a], p[l+1, b]) / sum_l sum_{a,b} n_l(a, b)

with n_l the transition counts of `moe_jax.analysis.affinity.transition_counts`. Top-1 (the
paper's setting): one transition per token and layer pair. Top-K: each of the token's K x K
(selection at l, selection at l+1) pairs counts 1 / K^2 of the token's transition, i.e. the cost
is the expected fraction of the token's K dispatches at l+1 that leave the device when it
continues from one of its K experts at l picked uniformly. This keeps the cost linear in the
pair counts, so the compact integer program minimises it exactly, and equals the paper's for K = 1.

Applying a placement renumbers each layer's experts so that device g's experts take the slots
g E/G ... (g+1) E/G - 1: permute the layer's stacked expert weights and its router's output
columns by `perm[l]` (slot s holds old expert perm[l, s]); the model computes the same function
and the contiguous placement (expert s on device s // (E/G)) of the new numbering is `placement`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from moe_jax.analysis.affinity import selections
from moe_jax.utils.errors import require


def require_divides(num_experts: int, num_devices: int) -> None:
  """Expert parallelism needs E/G experts of every layer on each device."""
  require(num_devices >= 1 and num_experts % num_devices == 0, "num_devices",
          f"{num_devices} devices do not divide {num_experts} experts", "use a divisor of E")


def require_balanced(placement: np.ndarray, num_devices: int) -> np.ndarray:
  """Validates placement [L, E] (each device holds E/G experts of every layer); returns int64."""
  placement = np.asarray(placement)
  require(placement.ndim == 2, "placement", f"shape {placement.shape} is not [L, E]",
          "pass one device id per layer and expert")
  num_experts = placement.shape[1]
  require_divides(num_experts, num_devices)
  require(placement.min() >= 0 and placement.max() < num_devices, "placement",
          f"device ids outside [0, {num_devices})", "pass ids below num_devices")
  per_device = np.stack([np.bincount(p, minlength=num_devices) for p in placement])
  require(np.all(per_device == num_experts // num_devices), "placement",
          "some device holds a number of a layer's experts other than E/G",
          "place exactly E/G experts of every layer on each device")
  return placement.astype(np.int64)


def contiguous(num_layers: int, num_experts: int, num_devices: int) -> np.ndarray:
  """The vanilla placement [L, E]: expert e on device e // (E/G) in every layer."""
  require_divides(num_experts, num_devices)
  row = np.arange(num_experts) // (num_experts // num_devices)
  return np.tile(row, (num_layers, 1))


def random_balanced(num_layers: int, num_experts: int, num_devices: int,
                    seed: int = 0) -> np.ndarray:
  """A uniformly random balanced placement [L, E] (each layer's contiguous row shuffled)."""
  rng = np.random.default_rng(seed)
  return rng.permuted(contiguous(num_layers, num_experts, num_devices), axis=1)


def _hop(here: np.ndarray, there: np.ndarray, devices_per_node: Optional[int]) -> np.ndarray:
  """Hop cost between device ids (broadcast): 0 same device, else 1, or 2 across nodes."""
  hop = (here != there).astype(np.float64)
  if devices_per_node is not None:
    hop += (here // devices_per_node) != (there // devices_per_node)
  return hop


def hops(placement: np.ndarray, devices_per_node: Optional[int] = None) -> np.ndarray:
  """placement [L, E] -> hop[L-1, E, E] from expert a at l to expert b at l+1 (`_hop`); inter-node
  hops cost 2 only when `devices_per_node` is given."""
  placement = np.asarray(placement)
  return _hop(placement[:-1, :, None], placement[1:, None, :], devices_per_node)


def cost(placement: np.ndarray, counts: np.ndarray,
         devices_per_node: Optional[int] = None) -> float:
  """Fraction of transitions n[L-1, E, E] that cross devices (staged: mean hop cost, inter = 2)."""
  total = counts.sum()
  return float((counts * hops(placement, devices_per_node)).sum() / total) if total > 0 else 0.0


def trace_cost(placement: np.ndarray, experts: np.ndarray,
               devices_per_node: Optional[int] = None) -> float:
  """`cost` computed per token on a trace [L, N(, K)]: the mean over tokens, layer pairs and
  the K x K selection pairs of the hop between the two experts' devices."""
  placement = np.asarray(placement)
  experts = selections(experts, placement.shape[1])
  device = relabel(experts, placement)  # [L, N, K] device of each selection
  return float(_hop(device[:-1, :, :, None], device[1:, :, None, :], devices_per_node).mean())


def permutation(placement: np.ndarray, num_devices: int) -> tuple[np.ndarray, np.ndarray]:
  """Balanced placement [L, E] -> (perm, inverse), both [L, E] int64.

  perm[l, s] is the expert that goes to slot s (device g's experts, in their old order, fill
  slots g E/G ... (g+1) E/G - 1); inverse[l, e] is the slot of old expert e. New expert weights:
  w_new[l] = w[l][perm[l]]; new router kernel: kernel[l][:, perm[l]]; new trace ids:
  inverse[l, old id] (`relabel`).
  """
  placement = require_balanced(placement, num_devices)
  perm = np.argsort(placement, axis=1, kind="stable")
  inverse = np.argsort(perm, axis=1)
  return perm, inverse


def relabel(experts: np.ndarray, table: np.ndarray) -> np.ndarray:
  """Trace [L, N(, K)] -> table[l, id] for every id of layer l: the trace in slot ids for
  table = inverse [L, E], the device of every selection for table = placement [L, E]."""
  experts = np.asarray(experts)
  flat = np.take_along_axis(table, experts.reshape(experts.shape[0], -1), 1)
  return flat.reshape(experts.shape)
