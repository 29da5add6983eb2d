"""Layer-by-layer improvement of a balanced placement (ours, not in the paper).

Legend: L layers, E experts per layer, G devices, n_l the transition counts of
`moe_jax.analysis.affinity.transition_counts`.

With every other layer fixed, the cost depends on layer l's placement p_l only through

  kept_l(a, g) = sum_b n_{l-1}(b, a) [p_{l-1}(b) = g] + sum_c n_l(a, c) [p_{l+1}(c) = g],

the transitions into and out of expert a that stay on device g. The best balanced p_l maximises
sum_a kept_l(a, p_l(a)) with E/G experts per device: a linear assignment problem (each device
offered E/G times; `scipy.optimize.linear_sum_assignment`). Sweeping the layers until none
changes never raises the cost and ends in a placement no single-layer change improves. It
polishes what the integer program returns when HiGHS stops at its time limit far from optimal.
"""
from __future__ import annotations

import numpy as np
from scipy import optimize

from moe_jax.inference.exflow.placement import require_balanced


def polish(counts: np.ndarray, placement: np.ndarray, num_devices: int,
           max_sweeps: int = 100) -> np.ndarray:
  """Balanced placement [L, E] -> one at most as costly on n[L-1, E, E] (a local optimum unless
  max_sweeps ran out)."""
  placement = require_balanced(placement, num_devices).copy()
  num_layers, num_experts = placement.shape
  per_device = num_experts // num_devices
  onehot = np.eye(num_devices)
  rows = np.arange(num_experts)
  for _ in range(max_sweeps):
    changed = False
    for l in range(num_layers):
      kept = np.zeros((num_experts, num_devices))
      if l > 0:
        kept += counts[l - 1].T @ onehot[placement[l - 1]]
      if l < num_layers - 1:
        kept += counts[l] @ onehot[placement[l + 1]]
      _, slot = optimize.linear_sum_assignment(np.repeat(kept, per_device, axis=1), maximize=True)
      best = slot // per_device
      if kept[rows, best].sum() > kept[rows, placement[l]].sum() * (1 + 1e-12):
        placement[l] = best
        changed = True
    if not changed:
      break
  return placement
