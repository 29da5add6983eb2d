"""Inter-layer affinity against plain Python loops over tokens and direct entropy formulas."""
import collections
import math

import numpy as np
import pytest

from moe_jax.analysis import affinity
from moe_jax.utils.errors import ConfigError


def loop_counts(trace, num_experts):
  """n[l, a, b] by a loop over tokens: every (a at l, b at l+1) pair of a token adds 1/K."""
  trace = trace if trace.ndim == 3 else trace[..., None]
  num_layers, num_tokens, k = trace.shape
  counts = np.zeros((num_layers - 1, num_experts, num_experts))
  for l in range(num_layers - 1):
    for t in range(num_tokens):
      for a in trace[l, t]:
        for b in trace[l + 1, t]:
          counts[l, a, b] += 1.0 / k
  return counts


def top_k_trace(rng, num_layers, num_tokens, num_experts, k):
  """[L, N, K] distinct experts per token and layer."""
  return np.argsort(rng.random((num_layers, num_tokens, num_experts)), -1)[..., :k]


def test_top1_counts_match_a_loop_and_rows_sum_to_one():
  rng = np.random.default_rng(0)
  trace = rng.integers(0, 5, size=(4, 60))
  trace[1][trace[1] == 3] = 2  # expert 3 never chosen at layer 1
  counts = affinity.transition_counts(trace, 5)
  np.testing.assert_allclose(counts, loop_counts(trace, 5))
  assert counts.sum() == 3 * 60
  cond = affinity.conditional(counts)
  np.testing.assert_allclose(cond.sum(-1), 1.0)
  np.testing.assert_allclose(cond[1, 3], np.full(5, 0.2))  # unchosen row: uniform
  for l in range(3):
    for a in range(5):
      chosen = trace[l] == a
      if chosen.any():
        want = np.bincount(trace[l + 1][chosen], minlength=5) / chosen.sum()
        np.testing.assert_allclose(cond[l, a], want)


def test_top_k_counts_match_a_loop_and_row_sums_are_loads():
  rng = np.random.default_rng(1)
  trace = top_k_trace(rng, 3, 40, 6, 2)
  counts = affinity.transition_counts(trace, 6)
  np.testing.assert_allclose(counts, loop_counts(trace, 6))
  for l in range(2):  # n_l(a, .) sums to the tokens that chose a at l; the total is N K
    np.testing.assert_allclose(counts[l].sum(-1), np.bincount(trace[l].ravel(), minlength=6))
  np.testing.assert_allclose(counts.sum((1, 2)), 40 * 2)
  np.testing.assert_allclose(affinity.conditional(counts).sum(-1), 1.0)


def test_max_conditional_by_hand():
  # layer 0 -> 1: expert 0 (3 tokens) goes to 1, 1, 2 -> max 2/3; expert 1 (1 token) -> 0: max 1.
  trace = np.array([[0, 0, 0, 1], [1, 1, 2, 0]])
  counts = affinity.transition_counts(trace, 3)
  assert affinity.max_conditional(counts)[0] == pytest.approx((3 * 2 / 3 + 1 * 1) / 4)
  assert affinity.max_conditional(counts, weighted=False)[0] == pytest.approx((2 / 3 + 1) / 2)


def entropy(samples):
  freq = np.array(list(collections.Counter(samples).values()), np.float64) / len(samples)
  return -float(np.sum(freq * np.log2(freq)))


def test_mutual_information_matches_entropies():
  rng = np.random.default_rng(2)
  first = rng.integers(0, 6, 500)
  second = np.where(rng.random(500) < 0.6, (first * 2) % 6, rng.integers(0, 6, 500))
  trace = np.stack([first, second])
  want = entropy(list(first)) + entropy(list(second)) - entropy(list(zip(first, second)))
  got = affinity.mutual_information(affinity.transition_counts(trace, 6))[0]
  assert got == pytest.approx(want, rel=1e-9)


def test_permutation_chain_is_fully_affine_and_shuffling_removes_it():
  rng = np.random.default_rng(3)
  start = rng.integers(0, 8, 4000)
  trace = np.stack([(start + 3 * l) % 8 for l in range(4)])
  out = affinity.summary(trace, 8, seed=4)
  np.testing.assert_allclose(out["max_conditional"], 1.0)
  np.testing.assert_allclose(out["max_conditional_unweighted"], 1.0)
  h = entropy(list(start))  # I(A; B) = H(A) when B is a function of A
  np.testing.assert_allclose(out["mutual_information_bits"], h, rtol=1e-9)
  assert out["uniform_max_conditional"] == 1 / 8 and out["uniform_mutual_information_bits"] == 0
  # Shuffled twin: no affinity left, only the finite-sample bias ((E-1)^2 / (2 N ln 2) ~ 0.009).
  assert max(out["shuffled_mutual_information_bits"]) < 0.03
  assert max(out["shuffled_max_conditional"]) < 1 / 8 + 0.05


def test_shuffle_keeps_loads_and_token_sets():
  rng = np.random.default_rng(5)
  trace = top_k_trace(rng, 3, 50, 7, 3)
  shuffled = affinity.shuffle_tokens(trace, seed=6)
  for l in range(3):
    np.testing.assert_array_equal(np.bincount(shuffled[l].ravel(), minlength=7),
                                  np.bincount(trace[l].ravel(), minlength=7))
    assert sorted(map(tuple, shuffled[l])) == sorted(map(tuple, trace[l]))
  assert not np.array_equal(shuffled, trace)


@pytest.mark.parametrize("trace, match", [
    (np.array([[0, 5], [1, 2]]), "experts: ids span"),
    (np.array([[0, 1, 2]]), "experts: 1 layer"),
    (np.zeros((2, 3, 1, 1), np.int64), "experts: shape"),
    (np.zeros((2, 3)), "experts: dtype"),
])
def test_bad_traces_are_refused(trace, match):
  with pytest.raises(ConfigError, match=match):
    affinity.transition_counts(trace, 5)


def test_uniform_top1_affinity_is_near_uniform():
  rng = np.random.default_rng(7)
  counts = affinity.transition_counts(rng.integers(0, 4, (3, 20000)), 4)
  np.testing.assert_allclose(affinity.conditional(counts), 0.25, atol=0.03)
  assert np.all(affinity.mutual_information(counts) < 1e-3)
  assert math.isclose(affinity.max_conditional(counts).mean(), 0.25, abs_tol=0.02)
