"""The compact integer program against enumeration, the per-token program and planted traces."""
import itertools
import math

import numpy as np
import pytest

from moe_jax.analysis.affinity import transition_counts
from moe_jax.inference.exflow import exhaustive, ilp, placement
from moe_jax.utils.errors import ConfigError


def enumerate_all(counts, num_devices):
  """min over every combination of balanced layer placements (S^L of them) of the cost."""
  states = [row for row in itertools.product(range(num_devices), repeat=counts.shape[1])
            if all(row.count(g) == counts.shape[1] // num_devices for g in range(num_devices))]
  return min(placement.cost(np.array(combo), counts)
             for combo in itertools.product(states, repeat=counts.shape[0] + 1))


def test_layer_placements_are_every_balanced_row():
  rows = exhaustive.layer_placements(6, 3)
  assert len(rows) == math.factorial(6) // math.factorial(2) ** 3
  assert len({tuple(r) for r in rows}) == len(rows)
  assert all(np.all(np.bincount(r, minlength=3) == 2) for r in rows)


def test_exhaustive_matches_plain_enumeration():
  rng = np.random.default_rng(0)
  counts = transition_counts(rng.integers(0, 4, (3, 25)), 4)
  solution = exhaustive.solve_exhaustive(counts, 2)
  assert solution.objective == pytest.approx(enumerate_all(counts, 2), abs=1e-12)
  assert placement.cost(solution.placement, counts) == pytest.approx(solution.objective)


@pytest.mark.parametrize("num_layers, num_experts, num_devices, k, seed", [
    (3, 4, 2, 1, 1), (3, 4, 2, 1, 2), (3, 4, 2, 1, 3), (3, 4, 2, 2, 4),
    (2, 6, 3, 1, 5), (2, 6, 3, 1, 6), (3, 6, 2, 2, 7), (4, 6, 3, 1, 8)])
def test_program_matches_exhaustive(num_layers, num_experts, num_devices, k, seed):
  rng = np.random.default_rng(seed)
  trace = np.argsort(rng.random((num_layers, 30, num_experts)), -1)[..., :k]
  counts = transition_counts(trace, num_experts)
  best = exhaustive.solve_exhaustive(counts, num_devices).objective
  solution = ilp.solve(counts, num_devices, time_limit=20)
  assert solution.objective == pytest.approx(best, abs=1e-9)
  assert solution.gap < 1e-3 and solution.bound == pytest.approx(best, abs=1e-3)
  np.testing.assert_array_equal(
      [np.bincount(row, minlength=num_devices) for row in solution.placement],
      num_experts // num_devices)


@pytest.mark.parametrize("symmetry, cuts", [(False, False), (True, False), (False, True)])
def test_formulation_switches_keep_the_optimum(symmetry, cuts):
  rng = np.random.default_rng(9)
  counts = transition_counts(rng.integers(0, 6, (3, 40)), 6)
  best = exhaustive.solve_exhaustive(counts, 3).objective
  solution = ilp.solve(counts, 3, time_limit=20, break_symmetry=symmetry, degree_cuts=cuts)
  assert solution.objective == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("seed", [10, 11])
def test_per_token_and_compact_programs_agree(seed):
  rng = np.random.default_rng(seed)
  trace = rng.integers(0, 4, (3, 24))
  counts = transition_counts(trace, 4)
  compact = ilp.solve(counts, 2)
  per_token = ilp.solve_per_token(trace, 4, 2)
  best = exhaustive.solve_exhaustive(counts, 2).objective
  # Both programs closed (bound = their optimum) at the same value, the enumerated optimum.
  for solution in (compact, per_token):
    assert solution.gap < 1e-3
    assert solution.bound == pytest.approx(best, abs=1e-3)
    assert solution.objective == pytest.approx(best, abs=1e-9)
    assert placement.trace_cost(solution.placement, trace) == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("num_experts, num_devices, shift", [(8, 2, 1), (8, 4, 3), (12, 3, 5)])
def test_planted_shift_costs_zero_after_placement(num_experts, num_devices, shift):
  rng = np.random.default_rng(num_experts + shift)
  start = rng.integers(0, num_experts, 500)
  trace = np.stack([(start + shift * l) % num_experts for l in range(5)])
  counts = transition_counts(trace, num_experts)
  assert placement.cost(placement.contiguous(5, num_experts, num_devices), counts) > 0.1
  solution = ilp.solve(counts, num_devices, time_limit=20)
  assert solution.objective == 0.0 and placement.trace_cost(solution.placement, trace) == 0.0


def test_per_token_program_refuses_top2():
  trace = np.zeros((2, 5, 2), np.int64)
  trace[..., 1] = 1
  with pytest.raises(ConfigError, match="experts: top-2 trace"):
    ilp.solve_per_token(trace, 4, 2)
