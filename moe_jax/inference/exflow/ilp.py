"""ExFlow's expert placement integer program, solved with HiGHS (`scipy.optimize.milp`).

Legend: L layers, E experts per layer, G devices, N tokens, P edges (layer pairs (l, a, b) with
n_l(a, b) > 0), n_l the transition counts of `moe_jax.analysis.affinity.transition_counts`.

The paper (Yao et al. 2024, arXiv 2401.08383; its public solver YJHMITWEB/ExFlow
`solve_affinity.py`, Gurobi) builds the program per token: binary x[l, e, g] (expert e of layer l
on device g), binary c[t, l] for every token t and transition l -> l+1, and

  min  sum_{t,l} c[t, l] / (N (L-1))
  s.t. sum_g x[l, e, g] = 1,  sum_e x[l, e, g] = E/G,
       c[t, l] >= x[l, a, g] - x[l+1, b, g]  and  c[t, l] >= x[l+1, b, g] - x[l, a, g]  for all g,
       where a, b are token t's experts at l and l+1.

Tokens with the same (l, a, b) share a value of c, so the same objective is a balanced partition of
the layered graph weighted by n_l, whose size does not grow with N (the compact form, `solve`):

  min  sum_{(l,a,b)} n_l(a, b) y[l, a, b] / sum n
  s.t. the same x constraints,  y[l, a, b] >= x[l, a, g] - x[l+1, b, g] for all g,  0 <= y <= 1.

When a and b sit on different devices the row of a's device forces y = 1; otherwise y = 0 is
feasible and the minimisation takes it, so y need not be integer. With x fractional (1/G
everywhere) every y can be 0, so the LP bound is 0; `degree_cuts` add valid rows that lift it:
at most E/G experts of layer l+1 share a's device, so sum_{b : n_l(a, b) > 0} y[l, a, b] >=
#{b : n_l(a, b) > 0} - E/G, and the same over a for every b (one row per expert and side). With
them the LP keeps at most the E/G heaviest transitions of every expert, and HiGHS closes or
narrows gaps it leaves wide without them (benchmarks/exflow_solver.py). Device labels are
interchangeable; with `break_symmetry` the program keeps one labelling of each placement:
expert e of layer 0 may only use devices 0 ... e (relabel devices in order of first use there);
measured, it changes the time to close small instances by -30% to +40%, no clear gain. HiGHS
closes E = 8 instances in seconds, stops at a 10 s limit from E = 16, L = 8, G = 4 on, and at
E = 64, L = 32, G = 8 (116k edges) has no bound after 60 s: polish its placement
(`local_search.polish`) or use `hierarchical.bisect` there.
`solve_per_token` builds the public solver's form (top-1 traces; its balance-deviation variables,
inert under the hard balance constraint, are left out).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
from scipy import optimize, sparse

from moe_jax.analysis.affinity import selections
from moe_jax.inference.exflow.placement import cost, require_divides, trace_cost
from moe_jax.utils.errors import require


@dataclasses.dataclass(frozen=True)
class Solution:
  """A placement and how it was found.

  Attributes:
    placement: [L, E] int64 device of every expert, balanced.
    objective: the placement's cost on the counts (`placement.cost`: the fraction of
      transitions that cross devices; `staged`: the staged cost). The program's own objective
      can be higher at a time-limited stop, where HiGHS need not have lowered every y.
    bound: HiGHS's lower bound on the program's optimum (same units); nan for `bisect` and
      `staged`, whose sub-programs bound only their own parts.
    gap: (objective - bound) / objective, 0 when proven optimal; for `bisect` and `staged` the
      largest gap of their sub-programs, not a gap to the global optimum.
    seconds: wall time of the solve (all sub-programs).
  """
  placement: np.ndarray
  objective: float
  bound: float
  gap: float
  seconds: float


def _rows(cols: np.ndarray, coefs: np.ndarray, num_vars: int) -> sparse.csr_array:
  """Row r has coefficient coefs[r, j] on variable cols[r, j]: [R, C] each -> [R, num_vars]."""
  r = np.repeat(np.arange(cols.shape[0]), cols.shape[1])
  return sparse.csr_array((coefs.ravel(), (r, cols.ravel())), shape=(cols.shape[0], num_vars))


def _placement_constraints(x: np.ndarray, num_vars: int) -> list:
  """x [L, E, G] variable indices -> sum_g x = 1 and sum_e x = E/G."""
  _, num_experts, num_devices = x.shape
  once = x.reshape(-1, num_devices)
  balance = x.transpose(0, 2, 1).reshape(-1, num_experts)
  per_device = num_experts // num_devices
  return [optimize.LinearConstraint(_rows(once, np.ones(once.shape), num_vars), 1, 1),
          optimize.LinearConstraint(_rows(balance, np.ones(balance.shape), num_vars),
                                    per_device, per_device)]


def _cut_constraints(cut: np.ndarray, here: np.ndarray, there: np.ndarray,
                     num_vars: int) -> optimize.LinearConstraint:
  """cut[P] >= x[here[p, g]] - x[there[p, g]] for every p and g (indices; here, there [P, G])."""
  cols = np.stack([np.broadcast_to(cut[:, None], here.shape), here, there], -1).reshape(-1, 3)
  coefs = np.broadcast_to(np.array([1.0, -1.0, 1.0]), cols.shape)
  return optimize.LinearConstraint(_rows(cols, coefs, num_vars), 0, np.inf)


def _degree_constraint(edge: np.ndarray, expert: np.ndarray, per_device: int,
                       num_vars: int) -> optimize.LinearConstraint:
  """sum of y over the edges of one expert >= its edge count - E/G (expert [P]: a flat expert id
  per edge): at most E/G experts of the other layer share its device."""
  row = np.unique(expert, return_inverse=True)[1]
  matrix = sparse.csr_array((np.ones(edge.size), (row, edge)), shape=(row.max() + 1, num_vars))
  return optimize.LinearConstraint(matrix, np.bincount(row) - per_device, np.inf)


def _run(objective: np.ndarray, integrality: np.ndarray, constraints: list, x: np.ndarray,
         cost_fn, time_limit: float, break_symmetry: bool) -> Solution:
  """HiGHS on variables in [0, 1]; decodes the placement from x [L, E, G] variable indices and
  scores it with cost_fn(placement) -> float."""
  upper = np.ones(objective.size)
  if break_symmetry:
    num_experts, num_devices = x.shape[1:]
    upper[x[0][np.triu_indices(num_experts, 1, num_devices)]] = 0.0  # layer 0: e on devices <= e
  start = time.perf_counter()
  res = optimize.milp(objective, integrality=integrality, constraints=constraints,
                      bounds=optimize.Bounds(np.zeros(objective.size), upper),
                      options={"time_limit": float(time_limit), "disp": False})
  seconds = time.perf_counter() - start
  require(res.x is not None, "time_limit",
          f"HiGHS found no placement in {time_limit} s ({res.message})",
          "raise time_limit, or use bisect for many devices")
  placement = np.argmax(res.x[x], -1).astype(np.int64)
  bound = float(res.mip_dual_bound) if res.mip_dual_bound is not None else float("nan")
  value = cost_fn(placement)
  gap = max(value - bound, 0.0) / value if value > 0 else 0.0
  return Solution(placement, value, bound, gap, seconds)


def solve(counts: np.ndarray, num_devices: int, time_limit: float = 60.0,
          break_symmetry: bool = True, degree_cuts: bool = True) -> Solution:
  """The compact program on counts n[L-1, E, E] for G = num_devices: P + L E G variables,
  P G + L (E + G) rows, and with `degree_cuts` 2 (L-1) E more (module docstring)."""
  counts = np.asarray(counts, np.float64)
  require(counts.ndim == 3 and counts.shape[1] == counts.shape[2], "counts",
          f"shape {counts.shape} is not [L-1, E, E]", "pass transition_counts(trace, E)")
  num_experts = counts.shape[1]
  require_divides(num_experts, num_devices)
  x = np.arange((counts.shape[0] + 1) * num_experts * num_devices).reshape(
      -1, num_experts, num_devices)
  layer, a, b = np.nonzero(counts)
  edge = x.size + np.arange(layer.size)
  objective = np.zeros(x.size + edge.size)
  objective[edge] = counts[layer, a, b] / (counts.sum() if counts.any() else 1.0)
  integrality = (np.arange(objective.size) < x.size).astype(np.int64)
  constraints = _placement_constraints(x, objective.size) + [
      _cut_constraints(edge, x[layer, a], x[layer + 1, b], objective.size)]
  if degree_cuts and edge.size:
    constraints += [_degree_constraint(edge, layer * num_experts + end,
                                       num_experts // num_devices, objective.size)
                    for end in (a, b)]
  return _run(objective, integrality, constraints, x, lambda p: cost(p, counts), time_limit,
              break_symmetry)


def solve_per_token(experts: np.ndarray, num_experts: int, num_devices: int,
                    time_limit: float = 60.0, break_symmetry: bool = True) -> Solution:
  """The public solver's per-token program on a top-1 trace [L, N(, 1)]: N (L-1) binary costs,
  2 N (L-1) G cost rows. Its objective equals `solve`'s on the same trace."""
  experts = selections(experts, num_experts)
  require(experts.shape[2] == 1, "experts", f"top-{experts.shape[2]} trace",
          "pass a top-1 trace: the per-token program has one transition per token and layer pair")
  require_divides(num_experts, num_devices)
  route = experts[..., 0]  # [L, N]
  num_layers, num_tokens = route.shape
  x = np.arange(num_layers * num_experts * num_devices).reshape(
      num_layers, num_experts, num_devices)
  step = x.size + np.arange((num_layers - 1) * num_tokens)  # c[l, t], layer-major
  objective = np.zeros(x.size + step.size)
  objective[step] = 1.0 / step.size
  here = x[np.arange(num_layers - 1)[:, None], route[:-1]].reshape(-1, num_devices)
  there = x[np.arange(1, num_layers)[:, None], route[1:]].reshape(-1, num_devices)
  constraints = _placement_constraints(x, objective.size) + [
      _cut_constraints(step, here, there, objective.size),
      _cut_constraints(step, there, here, objective.size)]
  integrality = np.ones(objective.size, np.int64)
  return _run(objective, integrality, constraints, x, lambda p: trace_cost(p, experts),
              time_limit, break_symmetry)
