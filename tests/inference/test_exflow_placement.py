"""Placement costs against loops over tokens, baselines, uniform routing, applying a placement."""
import numpy as np
import pytest

from moe_jax.analysis.affinity import transition_counts
from moe_jax.inference.exflow import ilp, local_search, placement
from moe_jax.utils.errors import ConfigError


def per_device(p, num_devices):
  return np.stack([np.bincount(row, minlength=num_devices) for row in p])


def loop_cost(p, trace, devices_per_node=None):
  """Per token: the mean over layer pairs and K x K selection pairs of the hop cost."""
  trace = trace if trace.ndim == 3 else trace[..., None]
  total = 0.0
  for t in range(trace.shape[1]):
    for l in range(trace.shape[0] - 1):
      for a in trace[l, t]:
        for b in trace[l + 1, t]:
          here, there = p[l, a], p[l + 1, b]
          hop = float(here != there)
          if devices_per_node and here // devices_per_node != there // devices_per_node:
            hop += 1.0
          total += hop / trace.shape[2] ** 2
  return total / (trace.shape[1] * (trace.shape[0] - 1))


def test_baselines_are_balanced():
  np.testing.assert_array_equal(placement.contiguous(2, 8, 4), [[0, 0, 1, 1, 2, 2, 3, 3]] * 2)
  p = placement.random_balanced(5, 12, 3, seed=1)
  np.testing.assert_array_equal(per_device(p, 3), 4)
  assert len({tuple(row) for row in p}) > 1
  with pytest.raises(ConfigError, match="num_devices: 3 devices do not divide 8"):
    placement.contiguous(2, 8, 3)
  bad = placement.contiguous(2, 8, 4)
  bad[1, 0] = 1
  with pytest.raises(ConfigError, match="placement: some device"):
    placement.require_balanced(bad, 4)


@pytest.mark.parametrize("k", [1, 2])
def test_costs_match_a_loop_over_tokens(k):
  rng = np.random.default_rng(k)
  trace = np.argsort(rng.random((4, 30, 8)), -1)[..., :k]
  p = placement.random_balanced(4, 8, 4, seed=k)
  counts = transition_counts(trace, 8)
  for node in (None, 2):
    want = loop_cost(p, trace, node)
    assert placement.cost(p, counts, node) == pytest.approx(want, rel=1e-12)
    assert placement.trace_cost(p, trace, node) == pytest.approx(want, rel=1e-12)


def test_staged_cost_counts_inter_node_hops_twice():
  # 2 nodes x 2 devices; one token: layer 0 expert 0 (device 0) -> layer 1 expert 1 (device 1,
  # same node) -> layer 2 expert 2 (device 2, other node): hops 1 and 2.
  p = np.tile(np.arange(4), (3, 1))
  trace = np.array([[0], [1], [2]])
  assert placement.trace_cost(p, trace) == pytest.approx(1.0)
  assert placement.trace_cost(p, trace, devices_per_node=2) == pytest.approx(1.5)


@pytest.mark.parametrize("num_devices", [2, 4])
def test_uniform_routing_costs_g_minus_1_over_g_under_every_placement(num_devices):
  rng = np.random.default_rng(10 + num_devices)
  num_layers, num_experts, num_tokens = 4, 8, 6000
  fit, held_out = (rng.integers(0, num_experts, (num_layers, num_tokens)) for _ in range(2))
  fit_counts, held_counts = transition_counts(fit, 8), transition_counts(held_out, 8)
  want = (num_devices - 1) / num_devices
  sigma = np.sqrt(want * (1 - want) / (num_tokens * (num_layers - 1)))
  solved = ilp.solve(fit_counts, num_devices, time_limit=2).placement  # optimal or not
  candidates = [placement.contiguous(num_layers, num_experts, num_devices), solved] + [
      placement.random_balanced(num_layers, num_experts, num_devices, seed) for seed in range(5)]
  for p in candidates:  # scored on a trace none of them was fitted to
    assert placement.cost(p, held_counts) == pytest.approx(want, abs=4 * sigma)
  # Fitted to the noise of its own trace, the program gains a little, not more.
  assert want - 0.03 < placement.cost(solved, fit_counts) <= want + 4 * sigma


def test_permutation_round_trip_and_contiguous_cost_of_the_relabelled_trace():
  rng = np.random.default_rng(20)
  trace = np.argsort(rng.random((3, 50, 12)), -1)[..., :2]
  p = placement.random_balanced(3, 12, 3, seed=21)
  perm, inverse = placement.permutation(p, 3)
  rows = np.arange(3)[:, None]
  np.testing.assert_array_equal(perm[rows, inverse], np.tile(np.arange(12), (3, 1)))
  np.testing.assert_array_equal(inverse[rows, perm], np.tile(np.arange(12), (3, 1)))
  # Slot s holds old expert perm[l, s], which p puts on device s // (E/G).
  np.testing.assert_array_equal(p[rows, perm], placement.contiguous(3, 12, 3))
  renamed = placement.relabel(trace, inverse)
  contiguous = placement.contiguous(3, 12, 3)
  assert placement.trace_cost(contiguous, renamed) == pytest.approx(placement.trace_cost(p, trace))
  counts = transition_counts(renamed, 12)
  assert placement.cost(contiguous, counts) == pytest.approx(
      placement.cost(p, transition_counts(trace, 12)))
  np.testing.assert_array_equal(placement.relabel(renamed, perm), trace)


def test_permuted_router_and_experts_compute_the_same_function():
  rng = np.random.default_rng(22)
  x = rng.standard_normal((40, 5))
  router, experts = rng.standard_normal((5, 8)), rng.standard_normal((8, 5, 5))
  p = placement.random_balanced(1, 8, 4, seed=23)
  perm, inverse = placement.permutation(p, 4)
  choice = np.argmax(x @ router, -1)
  new_choice = np.argmax(x @ router[:, perm[0]], -1)
  np.testing.assert_array_equal(new_choice, inverse[0, choice])
  out = np.einsum("td,tdf->tf", x, experts[choice])
  new_out = np.einsum("td,tdf->tf", x, experts[perm[0]][new_choice])
  np.testing.assert_allclose(new_out, out)


def test_polish_never_raises_the_cost_and_keeps_balance():
  rng = np.random.default_rng(30)
  start = rng.integers(0, 16, 3000)
  follow = rng.random((5, 3000)) < 0.7
  trace = [start]
  for l in range(5):
    trace.append(np.where(follow[l], (trace[-1] * 5 + 1) % 16, rng.integers(0, 16, 3000)))
  counts = transition_counts(np.stack(trace), 16)
  for seed in range(3):
    p = placement.random_balanced(6, 16, 4, seed=seed)
    polished = local_search.polish(counts, p, 4)
    np.testing.assert_array_equal(per_device(polished, 4), 4)
    assert placement.cost(polished, counts) <= placement.cost(p, counts)
    assert placement.cost(polished, counts) < placement.cost(
        placement.contiguous(6, 16, 4), counts)
    # A local optimum: polishing again changes nothing.
    np.testing.assert_array_equal(local_search.polish(counts, polished, 4), polished)
