"""MC-SMoE grouping: the global budget, routing-guided groups and the baselines, against loops."""
import numpy as np
import pytest

from moe_jax.compress.mcsmoe import grouping
from moe_jax.utils.errors import ConfigError


def _freqs(rng, layers, experts):
  return rng.dirichlet(np.full(experts, 0.7), size=layers)


@pytest.mark.parametrize("average", [1, 3, 5, 7])
def test_group_counts_sum_to_the_global_budget(average):
  rng = np.random.default_rng(average)
  f = _freqs(rng, 5, 8)
  counts = grouping.groups_per_layer(f, average)
  assert counts.sum() == average * 5
  assert counts.min() >= 1 and counts.max() <= 8
  # Loop reference: the G largest values (each layer's top set to 1) are the dominant experts.
  adjusted = [sorted(row, reverse=True) for row in f]
  for row in adjusted:
    row[0] = 1.0
  pool = sorted(((v, l) for l, row in enumerate(adjusted) for v in row), reverse=True)[:average * 5]
  np.testing.assert_array_equal(counts, [sum(l == layer for _, l in pool) for layer in range(5)])


def test_unmerged_layers_keep_every_expert_outside_the_budget():
  f = _freqs(np.random.default_rng(10), 4, 6)
  counts = grouping.groups_per_layer(f, 2, merged=[False, True, True, False])
  assert counts[0] == counts[3] == 6
  assert counts[1] + counts[2] == 4


def test_budget_edges():
  f = _freqs(np.random.default_rng(11), 3, 4)
  np.testing.assert_array_equal(grouping.groups_per_layer(f, 4), [4, 4, 4])
  np.testing.assert_array_equal(grouping.groups_per_layer(f, 1), [1, 1, 1])
  with pytest.raises(ConfigError, match="average_groups"):
    grouping.groups_per_layer(f, 0)


def test_routing_guided_groups_follow_usage_and_similarity():
  rng = np.random.default_rng(3)
  f = _freqs(rng, 1, 9)[0]
  sim = rng.uniform(size=(9, 9))
  g = grouping.routing_guided(f, sim, 3)
  top = list(np.argsort(-f)[:3])
  np.testing.assert_array_equal(g.dominant, top)
  for e in range(9):
    if e in top:
      assert g.slot_to_group[e] == top.index(e)
    else:
      assert g.slot_to_group[e] == int(np.argmax([sim[e, d] for d in top]))


def test_global_grouping_gives_each_layer_its_budgeted_groups():
  rng = np.random.default_rng(4)
  f = _freqs(rng, 3, 8)
  sim = rng.uniform(size=(3, 8, 8))
  groups = grouping.global_grouping(f, sim, 4)
  assert [g.num_groups for g in groups] == list(grouping.groups_per_layer(f, 4))
  for g in groups:
    assert sorted(set(g.slot_to_group)) == list(range(g.num_groups))


def test_random_grouping_keeps_group_sizes_and_drop_keeps_the_most_used():
  rng = np.random.default_rng(5)
  f = _freqs(rng, 1, 10)[0]
  g = grouping.routing_guided(f, rng.uniform(size=(10, 10)), 4)
  r = grouping.random_like(g, f, np.random.default_rng(6))
  assert sorted(np.bincount(r.slot_to_group)) == sorted(np.bincount(g.slot_to_group))
  for group, dom in enumerate(r.dominant):
    members = np.flatnonzero(r.slot_to_group == group)
    assert dom == members[np.argmax(f[members])]
  d = grouping.drop(f, 4)
  kept = np.argsort(-f)[:4]
  np.testing.assert_array_equal(d.dominant, kept)
  np.testing.assert_array_equal(d.slot_to_group[kept], np.arange(4))
  assert np.sum(d.slot_to_group == -1) == 6
