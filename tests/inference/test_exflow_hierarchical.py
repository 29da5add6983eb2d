"""Recursive bisection and the staged solve: balanced, no worse than contiguous, their levels."""
import numpy as np
import pytest

from moe_jax.analysis.affinity import transition_counts
from moe_jax.inference.exflow import exhaustive, hierarchical, ilp, placement
from moe_jax.utils.errors import ConfigError


def partial_trace(rng, num_layers, num_experts, num_tokens, strength):
  """Tokens follow e -> (5 e + 3) mod E with probability `strength`, else a uniform expert."""
  route = [rng.integers(0, num_experts, num_tokens)]
  for _ in range(num_layers - 1):
    follow = rng.random(num_tokens) < strength
    route.append(np.where(follow, (5 * route[-1] + 3) % num_experts,
                          rng.integers(0, num_experts, num_tokens)))
  return np.stack(route)


def balanced(p, num_devices):
  return all(np.all(np.bincount(row, minlength=num_devices) == p.shape[1] // num_devices)
             for row in p)


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_bisect_and_staged_are_balanced_and_beat_contiguous(strength):
  rng = np.random.default_rng(int(strength * 10))
  trace = partial_trace(rng, 5, 8, 2000, strength)
  counts = transition_counts(trace, 8)
  contiguous = placement.contiguous(5, 8, 4)
  bisected = hierarchical.bisect(counts, 4, time_limit=5)
  staged = hierarchical.staged(counts, num_nodes=2, devices_per_node=2, time_limit=5)
  assert balanced(bisected.placement, 4) and balanced(staged.placement, 4)
  assert bisected.objective == pytest.approx(placement.cost(bisected.placement, counts))
  assert staged.objective == pytest.approx(placement.cost(staged.placement, counts, 2))
  assert bisected.objective <= placement.cost(contiguous, counts)
  assert staged.objective <= placement.cost(contiguous, counts, 2)
  if strength == 1.0:
    assert bisected.objective == 0.0 and staged.objective == 0.0


def test_bisect_levels_are_optimal_two_way_splits():
  rng = np.random.default_rng(3)
  counts = transition_counts(partial_trace(rng, 3, 8, 300, 0.5), 8)
  best_two = exhaustive.solve_exhaustive(counts, 2).objective
  bisected = hierarchical.bisect(counts, 4, time_limit=10)
  # The first level is the 2-way program: devices {0, 1} | {2, 3}.
  assert placement.cost(bisected.placement // 2, counts) == pytest.approx(best_two, abs=1e-9)
  assert bisected.gap < 1e-3
  # Two devices: bisection is the compact program itself.
  assert hierarchical.bisect(counts, 2).objective == pytest.approx(best_two, abs=1e-9)
  assert hierarchical.bisect(counts, 1).objective == 0.0


def test_staged_nodes_are_the_optimal_node_split_and_devices_refine_them():
  rng = np.random.default_rng(4)
  counts = transition_counts(partial_trace(rng, 3, 8, 400, 0.4), 8)
  staged = hierarchical.staged(counts, num_nodes=2, devices_per_node=2, time_limit=10)
  nodes = staged.placement // 2
  assert placement.cost(nodes, counts) == pytest.approx(
      exhaustive.solve_exhaustive(counts, 2).objective, abs=1e-9)
  # Inside each node the device split is optimal for the transitions that stay in the node.
  for node in range(2):
    member = np.argsort(nodes != node, axis=1, kind="stable")[:, :4]
    sub = counts[np.arange(2)[:, None, None], member[:-1, :, None], member[1:, None, :]]
    local = np.take_along_axis(staged.placement, member, 1) % 2
    assert placement.cost(local, sub) == pytest.approx(
        exhaustive.solve_exhaustive(sub, 2).objective, abs=1e-9)
  # Staged cost = intra-node hops + 2 x inter-node hops.
  assert staged.objective == pytest.approx(
      placement.cost(staged.placement, counts) + placement.cost(nodes, counts))


def test_refine_labels_and_errors():
  rng = np.random.default_rng(5)
  counts = transition_counts(rng.integers(0, 8, (3, 200)), 8)
  coarse = placement.random_balanced(3, 8, 2, seed=6)
  fine = hierarchical.refine(counts, coarse, 2, time_limit=5)
  np.testing.assert_array_equal(fine.placement // 2, coarse)
  assert balanced(fine.placement, 4)
  with pytest.raises(ConfigError, match="num_devices: 6 is not a power of two"):
    hierarchical.bisect(counts, 6)
  with pytest.raises(ConfigError, match="parts: 3 parts"):
    hierarchical.refine(counts, coarse, 3)
  assert ilp.solve(counts, 1).objective == 0.0
