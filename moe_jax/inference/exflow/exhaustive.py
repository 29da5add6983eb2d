"""Exact placement of tiny instances by enumeration: the reference the integer program is tested on.

Legend: L layers, E experts per layer, G devices, S = E! / ((E/G)!^G) balanced placements of one
layer, n_l the transition counts of `moe_jax.analysis.affinity.transition_counts`.

The cost is a sum over layer pairs of terms that each depend on two consecutive layers only,

  C_l(s, s') = sum_{a,b} n_l(a, b) [s(a) != s'(b)],

so the minimum over all S^L balanced placements is a shortest path through the layers
(min-sum dynamic programming over every balanced placement of each layer): O(L S^2 E G) work
instead of S^L.
"""
from __future__ import annotations

import itertools
import math
import time

import numpy as np

from moe_jax.inference.exflow.ilp import Solution
from moe_jax.inference.exflow.placement import require_divides
from moe_jax.utils.errors import require


def layer_placements(num_experts: int, num_devices: int) -> np.ndarray:
  """Every balanced placement of one layer: [S, E] device ids, E/G experts per device."""
  size = num_experts // num_devices
  out = []

  def fill(row: np.ndarray, free: tuple, device: int) -> None:
    if not free:
      out.append(row.copy())
      return
    for chosen in itertools.combinations(free, size):
      row[list(chosen)] = device
      fill(row, tuple(e for e in free if e not in chosen), device + 1)

  fill(np.zeros(num_experts, np.int64), tuple(range(num_experts)), 0)
  return np.stack(out)


def solve_exhaustive(counts: np.ndarray, num_devices: int, max_states: int = 3000) -> Solution:
  """Optimal balanced placement for n[L-1, E, E] (gap 0), when S <= max_states."""
  counts = np.asarray(counts, np.float64)
  num_experts = counts.shape[1]
  require_divides(num_experts, num_devices)
  count = math.factorial(num_experts) // math.factorial(num_experts // num_devices) ** num_devices
  require(count <= max_states, "counts", f"{count} placements per layer (over {max_states})",
          "use the integer program (ilp.solve) for this many experts and devices")
  start = time.perf_counter()
  states = layer_placements(num_experts, num_devices)
  onehot = np.eye(num_devices)[states]  # [S, E, G]
  total = counts.sum()
  best = np.zeros(len(states))  # cheapest cost of layers 0..l ending in each state of layer l
  back = []
  for n in counts:
    reach = np.einsum("sag,ab->sbg", onehot, n).reshape(len(states), -1)
    same = reach @ onehot.reshape(len(states), -1).T  # [S, S] transitions kept on a device
    step = best[:, None] + (n.sum() - same)  # [S at l, S at l+1]
    back.append(step.argmin(0))
    best = step.min(0)
  path = [int(best.argmin())]
  for choice in reversed(back):
    path.append(int(choice[path[-1]]))
  placement = states[path[::-1]]
  objective = float(best.min() / total) if total > 0 else 0.0
  return Solution(placement, objective, objective, 0.0, time.perf_counter() - start)
