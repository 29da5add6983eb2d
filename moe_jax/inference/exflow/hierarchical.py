"""ExFlow's placements for many devices: recursive bisection and the staged (node, device) solve.

Legend: L layers, E experts per layer, G devices, M nodes, D devices per node (G = M D),
n_l the transition counts of `moe_jax.analysis.affinity.transition_counts`.

Both refine a coarse balanced placement: every group of experts that shares a coarse label
(E/G' per layer) is split `parts` ways by the compact program (`ilp.solve`) on the transitions
that stay inside the group; a transition already leaving its group crosses devices whatever the
split, so it does not enter the sub-program. The fine label is coarse * parts + part.

- `bisect` (the public solver's default, "bipart"): log2 G levels of 2-way splits. Each
  sub-program has 2 devices and E/2^i experts per layer at level i, far smaller than the G-way
  program; the result is not guaranteed optimal for G > 2. Labels are binary codes, so devices
  d and d' sharing their leading bits were split apart late (d // D is a node when D is a power
  of two dividing G).
- `staged`: an M-way split over nodes, then a D-way split inside each node. The second stage is
  exact for the staged cost (a hop inside a node costs 1, across nodes 2): once the nodes are
  fixed, only transitions inside a node depend on the devices. The first stage minimises the
  inter-node transitions, not the staged cost as a whole.
"""
from __future__ import annotations

import numpy as np

from moe_jax.inference.exflow import ilp
from moe_jax.inference.exflow.placement import cost, require_balanced
from moe_jax.utils.errors import require


def refine(counts: np.ndarray, coarse: np.ndarray, parts: int, time_limit: float = 60.0,
           break_symmetry: bool = True) -> ilp.Solution:
  """Splits every group of balanced coarse [L, E] `parts` ways (labels coarse * parts + part).

  Solution.objective is the fine placement's cost on counts n[L-1, E, E]; gap and seconds are
  the largest gap and the total time of the sub-programs.
  """
  num_groups = int(np.max(coarse)) + 1
  coarse = require_balanced(coarse, num_groups)
  num_layers, num_experts = coarse.shape
  size = num_experts // num_groups
  require(size % parts == 0, "parts", f"{parts} parts do not divide the {size} experts per "
          "layer of a group", "use a number of parts that divides E / (groups so far)")
  fine, gaps, seconds = coarse * parts, [0.0], 0.0
  pairs = np.arange(num_layers - 1)[:, None, None]
  for group in range(num_groups):
    member = np.argsort(coarse != group, axis=1, kind="stable")[:, :size]  # [L, E/G'] members
    sub = counts[pairs, member[:-1, :, None], member[1:, None, :]]
    solution = ilp.solve(sub, parts, time_limit, break_symmetry)
    np.put_along_axis(fine, member, group * parts + solution.placement, axis=1)
    gaps.append(solution.gap)
    seconds += solution.seconds
  return ilp.Solution(fine, cost(fine, counts), float("nan"), float(np.nanmax(gaps)),
                      seconds)


def bisect(counts: np.ndarray, num_devices: int, time_limit: float = 60.0,
           break_symmetry: bool = True) -> ilp.Solution:
  """Recursive bisection of n[L-1, E, E] onto G = 2^m devices (m levels of 2-way programs)."""
  require(num_devices >= 1 and num_devices & (num_devices - 1) == 0, "num_devices",
          f"{num_devices} is not a power of two", "use 1, 2, 4, 8, ... devices, or ilp.solve")
  placement = np.zeros((counts.shape[0] + 1, counts.shape[1]), np.int64)
  gaps, seconds = [0.0], 0.0
  for _ in range(num_devices.bit_length() - 1):
    level = refine(counts, placement, 2, time_limit, break_symmetry)
    placement = level.placement
    gaps.append(level.gap)
    seconds += level.seconds
  return ilp.Solution(placement, cost(placement, counts), float("nan"),
                      float(np.nanmax(gaps)), seconds)


def staged(counts: np.ndarray, num_nodes: int, devices_per_node: int, time_limit: float = 60.0,
           break_symmetry: bool = True) -> ilp.Solution:
  """Nodes first, then devices inside each node; device = node * D + local device.

  Solution.objective is the staged cost (`cost(..., devices_per_node)`: inter-node hops 2).
  """
  root = np.zeros((counts.shape[0] + 1, counts.shape[1]), np.int64)
  nodes = refine(counts, root, num_nodes, time_limit, break_symmetry)
  devices = refine(counts, nodes.placement, devices_per_node, time_limit, break_symmetry)
  return ilp.Solution(devices.placement, cost(devices.placement, counts, devices_per_node),
                      float("nan"), float(np.nanmax([nodes.gap, devices.gap])),
                      nodes.seconds + devices.seconds)
