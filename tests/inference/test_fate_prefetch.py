"""prefetch_k, the prefill ranking, the INT2 choice and the activation-path baseline."""
import collections
import math

import numpy as np
import pytest

from moe_jax.inference.fate import prefetch
from moe_jax.inference.fate.link import Link
from moe_jax.utils.errors import ConfigError


def test_prefetch_k_is_the_floor_of_layer_time_over_one_int4_copy():
  rng = np.random.default_rng(0)
  for _ in range(50):
    t, nbytes = rng.uniform(1e-4, 5e-2), rng.uniform(1e5, 1e8)
    link = Link(bandwidth=rng.uniform(5e9, 3e10), latency=rng.uniform(0, 5e-5))
    want = min(64, math.floor(t / (link.latency + nbytes / link.bandwidth)))
    assert prefetch.prefetch_k(t, nbytes, link, 64) == want
  # 3 ms per layer, 1.25 MB per INT4 expert at 25 GB/s + 10 us: 60 us a copy -> 50 experts.
  assert prefetch.prefetch_k(3e-3, 1.25e6, Link(25e9, 10e-6), 64) == 50
  assert prefetch.prefetch_k(3e-3, 1.25e6, Link(25e9, 10e-6), 16) == 16


def test_prefill_ranking_is_the_union_by_count():
  rng = np.random.default_rng(1)
  pred = rng.integers(0, 12, size=(40, 4))
  experts, counts = prefetch.prefill_ranking(pred, 12)
  ref = collections.Counter(pred.ravel().tolist())
  assert sorted(experts.tolist()) == sorted(ref)
  assert counts.tolist() == [ref[e] for e in experts.tolist()]
  assert counts.tolist() == sorted(counts.tolist(), reverse=True)


def _fate_int2(ranked_counts, rate):
  """Fate's loop: walk from the least popular, stop at the first that would pass rate x total."""
  target, total, out = rate * sum(c for _, c in ranked_counts), 0, []
  for e, c in reversed(ranked_counts):
    if total + c > target:
      break
    total += c
    out.append(e)
  return out


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 1.0])
def test_int2_choice_takes_the_least_popular_within_the_rate(rate):
  rng = np.random.default_rng(2)
  for _ in range(20):
    experts, counts = prefetch.prefill_ranking(rng.integers(0, 16, size=(30, 2)), 16)
    chosen = prefetch.int2_choice(experts, counts, rate)
    assert chosen.tolist() == _fate_int2(list(zip(experts.tolist(), counts.tolist())), rate)
    mass = dict(zip(experts.tolist(), counts.tolist()))
    assert sum(mass[e] for e in chosen.tolist()) <= rate * counts.sum()
    rest = [mass[e] for e in experts.tolist() if e not in set(chosen.tolist())]
    assert all(mass[e] <= min(rest, default=np.inf) for e in chosen.tolist())


def test_activation_paths_learn_a_planted_path():
  # Calibration: expert e at layer l is always followed by (e + 1) mod E at layer l + 1.
  rng = np.random.default_rng(3)
  e = 6
  start = rng.integers(0, e, size=200)
  calibration = ((start[None, :] + np.arange(4)[:, None]) % e)[..., None]  # [L, N, 1]
  paths = prefetch.fit_activation_paths(calibration, e)
  start = rng.integers(0, e, size=30)
  actual = ((start[None, :] + np.arange(4)[:, None]) % e)[..., None]
  pred = prefetch.predict_from_paths(paths, actual, 1)
  np.testing.assert_array_equal(pred, actual[1:])


def test_path_scores_match_a_loop_and_ties_follow_popularity():
  rng = np.random.default_rng(4)
  e, k = 7, 2
  calibration = rng.integers(0, e - 1, size=(3, 80, k))  # expert e-1 is never seen
  paths = prefetch.fit_activation_paths(calibration, e)
  actual = rng.integers(0, e, size=(3, 10, k))
  pred = prefetch.predict_from_paths(paths, actual, 3)
  for l in range(2):
    pop = paths.popularity[l + 1]
    for t in range(10):
      score = [sum(paths.conditional[l, a, b] for a in actual[l, t]) for b in range(e)]
      want = sorted(range(e), key=lambda b: (-score[b], -pop[b], b))[:3]
      assert pred[l, t].tolist() == want


def test_int2_rate_out_of_range_is_named():
  with pytest.raises(ConfigError, match="int2_rate"):
    prefetch.int2_choice(np.arange(3), np.array([3, 2, 1]), 1.5)
