r"""ExFlow placement solvers as the experts E and layers L grow, on traces with planted affinity.

  python -m benchmarks.exflow_solver [--quick] [--time_limit=60] [--sweep_time_limit=10]

Legend: L layers, E experts per layer, G devices, N tokens, P edges (transition pairs seen).
Synthetic top-1 traces: layer 0's experts uniform; at each layer pair a hidden permutation
pi_l sends a token from a to pi_l(a) with probability `--strength`, else to a uniform expert.
The planted placement (pi_l(a) on a's device) costs about (1 - strength) (G-1)/G; contiguous
and random placements about (G-1)/G. Per instance: the compact integer program (`ilp.solve`,
HiGHS, degree cuts and symmetry breaking on) with its time, cost (fraction of transitions that
cross devices), MIP gap and status ("bound 0": HiGHS stopped before its root LP gave a bound);
recursive bisection (`hierarchical.bisect`) given the same total time (G-1 two-way programs of
time_limit / (G-1) s each); both after `local_search.polish` (its mean time per call);
contiguous, random and planted costs. Sweeps: E in 8..64 at L = 8 and L in 4..32 at E = 16
(`--sweep_time_limit` per program), then E = 64, L = 32, G = 8 (`--time_limit`). A last table
times the formulation switches (symmetry breaking, degree cuts) on instances HiGHS can close
(10 s limit). `--quick`: four small instances, 3 s limits. Default: about 9 minutes on 2 cores.
"""
from __future__ import annotations

import time

from absl import app, flags
import numpy as np

from moe_jax.analysis.affinity import transition_counts
from moe_jax.inference.exflow import hierarchical, ilp, local_search, placement
from moe_jax.utils.reporting import markdown_table

_QUICK = flags.DEFINE_bool("quick", False, "Four small instances, 3 s limits (under a minute).")
_TIME_LIMIT = flags.DEFINE_float("time_limit", 60.0, "Seconds per program on the E=64, L=32 rows.")
_SWEEP_TIME_LIMIT = flags.DEFINE_float("sweep_time_limit", 10.0, "Seconds per program in sweeps.")
_TOKENS = flags.DEFINE_integer("tokens", 20000, "Tokens N per trace.")
_STRENGTH = flags.DEFINE_float("strength", 0.5, "Probability of following the planted map.")


def planted_trace(num_layers: int, num_experts: int, num_tokens: int, strength: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(trace [L, N], permutations pi [L-1, E]) of the planted partial affinity."""
  rng = np.random.default_rng(seed)
  pi = np.stack([rng.permutation(num_experts) for _ in range(num_layers - 1)])
  route = [rng.integers(0, num_experts, num_tokens)]
  for l in range(num_layers - 1):
    follow = rng.random(num_tokens) < strength
    route.append(np.where(follow, pi[l][route[-1]], rng.integers(0, num_experts, num_tokens)))
  return np.stack(route), pi


def planted_placement(pi: np.ndarray, num_devices: int) -> np.ndarray:
  """Contiguous layer 0, then pi_l(a) at layer l+1 on a's device: [L, E]."""
  rows = [placement.contiguous(1, pi.shape[1], num_devices)[0]]
  for perm in pi:
    row = np.empty_like(rows[-1])
    row[perm] = rows[-1]
    rows.append(row)
  return np.stack(rows)


def measure(num_experts: int, num_layers: int, num_devices: int, time_limit: float,
            seed: int, num_tokens: int, strength: float) -> list:
  """One table row (HEADERS) for an instance of `num_tokens` tokens planted with `strength`."""
  trace, pi = planted_trace(num_layers, num_experts, num_tokens, strength, seed)
  counts = transition_counts(trace, num_experts)
  compact = ilp.solve(counts, num_devices, time_limit)
  bisected = hierarchical.bisect(counts, num_devices, time_limit / max(num_devices - 1, 1))
  start = time.perf_counter()
  polished = [local_search.polish(counts, s.placement, num_devices) for s in (compact, bisected)]
  polish_s = (time.perf_counter() - start) / 2
  reference = [placement.contiguous(num_layers, num_experts, num_devices),
               placement.random_balanced(num_layers, num_experts, num_devices, seed),
               planted_placement(pi, num_devices)]
  status = ("optimal" if compact.gap <= 1e-3 else
            "time limit" if compact.bound > 0 else "time limit, bound 0")
  return [num_experts, num_layers, num_devices, int((counts > 0).sum()), f"{time_limit:g}",
          f"{compact.seconds:.1f}", placement.cost(compact.placement, counts), compact.gap,
          status, placement.cost(polished[0], counts), f"{polish_s:.2f}",
          f"{bisected.seconds:.1f}", bisected.objective, bisected.gap,
          placement.cost(polished[1], counts)] + [
              placement.cost(p, counts) for p in reference]


HEADERS = ["E", "L", "G", "edges P", "limit s", "ILP s", "ILP cost", "ILP gap", "ILP status",
           "ILP+polish cost", "polish s", "bisect s", "bisect cost", "bisect max gap",
           "bisect+polish cost", "contiguous", "random", "planted"]


def formulation_rows(instances: list, time_limit: float) -> list:
  """Time to close small instances (E, L, G, strength) with symmetry breaking and degree cuts
  on and off."""
  rows = []
  for num_experts, num_layers, num_devices, strength in instances:
    trace, _ = planted_trace(num_layers, num_experts, 4000, strength, seed=1)
    counts = transition_counts(trace, num_experts)
    for symmetry in (True, False):
      for cuts in (True, False):
        s = ilp.solve(counts, num_devices, time_limit, symmetry, cuts)
        rows.append([num_experts, num_layers, num_devices, f"{strength:g}", symmetry, cuts,
                     f"{s.seconds:.1f}", s.objective, s.gap])
  return rows


def main(argv):
  del argv
  start = time.perf_counter()
  formulations = [(8, 4, 2, 0.0), (8, 3, 4, 0.0), (8, 6, 4, 0.5)]
  if _QUICK.value:
    grid = [(8, 4, 2, 3.0), (8, 8, 4, 3.0), (16, 4, 4, 3.0), (16, 8, 4, 3.0)]
    formulations, limit = formulations[:2], 3.0
  else:
    limit = 10.0
    sweep = _SWEEP_TIME_LIMIT.value
    grid = ([(e, 8, g, sweep) for e in (8, 16, 32, 64) for g in (2, 4, 8)] +
            [(16, l, 4, sweep) for l in (4, 16, 32)] + [(64, 32, 8, _TIME_LIMIT.value)])
  rows = []
  for i, (e, l, g, seconds) in enumerate(grid):
    rows.append(measure(e, l, g, seconds, i, _TOKENS.value, _STRENGTH.value))
    print(f"E={e} L={l} G={g}: {rows[-1][5:]}", flush=True)
  print(f"\nN = {_TOKENS.value} tokens, strength {_STRENGTH.value}; costs are fractions of "
        "transitions crossing devices\n")
  print(markdown_table(HEADERS, rows))
  print(f"\nFormulation switches ({limit:.0f} s limit, N = 4000):\n")
  print(markdown_table(["E", "L", "G", "strength", "symmetry breaking", "degree cuts", "ILP s",
                        "objective", "gap"], formulation_rows(formulations, limit)))
  print(f"\nexflow_solver: {time.perf_counter() - start:.0f} s total")


if __name__ == "__main__":
  app.run(main)
