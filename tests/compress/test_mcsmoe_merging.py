"""MC-SMoE merging: weighted averages against loops; the merged model against its duplicate."""
import numpy as np
import pytest

from moe_jax.compress.mcsmoe import merging
from moe_jax.utils.errors import ConfigError


def _silu(x):
  return x / (1.0 + np.exp(-x))


def _ffn(params, e, x):
  """SwiGLU expert e on rows x[N, D]."""
  return (_silu(x @ params["wi_gate"][e]) * (x @ params["wi_up"][e])) @ params["wo"][e]


def _top_k(logits, k):
  """Softmax top-k with the kept weights renormalised: (experts [T, K], weights [T, K])."""
  experts = np.argsort(-logits, axis=-1)[:, :k]
  kept = np.take_along_axis(logits, experts, -1)
  w = np.exp(kept - kept.max(-1, keepdims=True))
  return experts, w / w.sum(-1, keepdims=True)


def _slot_forward(params, x, experts, weights):
  """Every selected slot runs its own expert: y_t = sum_k w_tk FFN_{e_tk}(x_t)."""
  y = np.zeros_like(x)
  for e in range(params["wo"].shape[0]):
    t, k = np.nonzero(experts == e)
    np.add.at(y, t, weights[t, k, None] * _ffn(params, e, x[t]))
  return y


def _merged_forward(merged, slot_map, x, experts, weights):
  """Each merged expert runs once per token selecting any of its slots: (y, expert evaluations)."""
  num_groups = merged["wo"].shape[0]
  combine = np.zeros((x.shape[0], num_groups))
  np.add.at(combine, (np.arange(x.shape[0])[:, None], slot_map[experts]), weights)
  y, evaluations = np.zeros_like(x), 0
  for g in range(num_groups):
    t = np.flatnonzero(combine[:, g])
    y[t] += combine[t, g, None] * _ffn(merged, g, x[t])
    evaluations += len(t)
  return y, evaluations


def _params(rng, e, d=6, f=10):
  return {"wi_gate": rng.standard_normal((e, d, f)), "wi_up": rng.standard_normal((e, d, f)),
          "wo": rng.standard_normal((e, f, d))}


def test_frequency_weighted_and_uniform_merging_against_a_loop():
  rng = np.random.default_rng(0)
  params = _params(rng, 6)
  groups = np.array([1, 0, 2, 1, 0, 1])
  freqs = rng.dirichlet(np.ones(6))
  merged, slot_map = merging.merge_experts(params, groups, freqs)
  np.testing.assert_array_equal(slot_map, groups)
  uniform, _ = merging.merge_experts(params, groups)
  for g in range(3):
    members = np.flatnonzero(groups == g)
    for k, w in params.items():
      want = sum(freqs[e] * w[e] for e in members) / freqs[members].sum()
      np.testing.assert_allclose(merged[k][g], want, rtol=1e-12)
      np.testing.assert_allclose(uniform[k][g], w[members].mean(0), rtol=1e-12)


def test_merging_identical_experts_changes_no_output():
  rng = np.random.default_rng(1)
  one = _params(rng, 2)
  params = {k: w[[0, 1, 0, 0, 1]] for k, w in one.items()}
  groups = np.array([0, 1, 0, 0, 1])
  merged, slot_map = merging.merge_experts(params, groups, rng.dirichlet(np.ones(5)))
  x = rng.standard_normal((30, 6))
  experts, weights = _top_k(rng.standard_normal((30, 5)), 2)
  y_merged, _ = _merged_forward(merged, slot_map, x, experts, weights)
  np.testing.assert_allclose(y_merged, _slot_forward(params, x, experts, weights),
                             rtol=1e-10, atol=1e-12)


def test_merged_forward_equals_the_slot_duplicated_forward_with_fewer_evaluations():
  rng = np.random.default_rng(2)
  e, t, k = 8, 40, 2
  params = _params(rng, e)
  groups = np.array([0, 1, 2, 0, 1, 2, 0, 3])
  merged, slot_map = merging.merge_experts(params, groups, rng.dirichlet(np.ones(e)))
  duplicated = merging.duplicate_to_slots(merged, slot_map)
  assert duplicated["wo"].shape == params["wo"].shape
  x = rng.standard_normal((t, 6))
  experts, weights = _top_k(rng.standard_normal((t, e)), k)
  y_merged, evaluations = _merged_forward(merged, slot_map, x, experts, weights)
  np.testing.assert_allclose(y_merged, _slot_forward(duplicated, x, experts, weights),
                             rtol=1e-10, atol=1e-12)
  shared = np.sum(slot_map[experts[:, 0]] == slot_map[experts[:, 1]])
  assert shared > 0 and evaluations == t * k - shared


def test_zero_frequency_groups_average_uniformly_and_drop_slots_are_left_out():
  rng = np.random.default_rng(3)
  params = _params(rng, 4)
  merged, _ = merging.merge_experts(params, np.array([0, 1, 0, 1]), np.array([0.0, 0.7, 0.0, 0.3]))
  np.testing.assert_allclose(merged["wo"][0], params["wo"][[0, 2]].mean(0))
  dropped = np.array([-1, 1, 0, -1])
  kept, slot_map = merging.merge_experts(params, dropped, rng.dirichlet(np.ones(4)))
  np.testing.assert_array_equal(kept["wi_up"], params["wi_up"][[2, 1]])
  with pytest.raises(ConfigError, match="slot_to_group"):
    merging.duplicate_to_slots(kept, slot_map)
