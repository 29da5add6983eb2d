"""MC-SMoE export: the merged model through transformers and back, the group router, costs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.compress.mcsmoe import costs, export, merged_lm
from moe_jax.compress.mcsmoe.grouping import Grouping
from moe_jax.utils.trees import param_count
from tests.eval.tiny import random_model

E, K, F = 6, 2, 12
GROUPS = [np.array([0, 1, 0, 2, 1, 0]), np.array([1, 0, 0, 1, 0, 1])]


def _merged(seed, groups=GROUPS):
  model = random_model(seed, moe=dict(num_experts=E, top_k=K, d_ff=F, load_balance_coef=0.0))
  freqs = np.random.default_rng(seed).dirichlet(np.ones(E), size=2)
  groupings = [Grouping(g, np.unique(g, return_index=True)[1]) for g in groups]
  return model, merged_lm.merge(model, groupings, freqs)


def _tokens(seed, shape=(2, 20)):
  return np.random.default_rng(seed).integers(0, 256, shape).astype(np.int32)


@pytest.mark.slow
def test_merged_model_saves_for_transformers_and_loads_back_merged(tmp_path):
  pytest.importorskip("transformers")
  _, merged = _merged(0)
  tokens = _tokens(1)
  path = str(tmp_path / "merged")
  size = export.save_merged(merged, path)
  assert size >= 4 * 2 * E * 3 * 16 * F  # every slot's copy is written
  assert export.transformers_gap(merged, path, tokens) < 1e-4
  back = export.load_merged(path)
  assert back.cfg.moe.num_experts == 3 and back.cfg.moe.num_slots == E
  assert export.logit_gap(back, merged, tokens) < 1e-5


def test_group_router_is_the_least_squares_fit_of_the_groups_log_sum_exp():
  rng = np.random.default_rng(2)
  x, z = rng.standard_normal((300, 8)), 3 * rng.standard_normal((300, E))
  slot_map = np.array([0, 1, 0, 2, 1, 0])
  kernel = export.fit_group_router(x, z, slot_map, 4, ridge=0.0)
  target = np.stack([np.log(np.exp(z[:, slot_map == g]).sum(-1)) for g in range(3)], axis=-1)
  target = np.concatenate([target, target.min(-1, keepdims=True)], axis=-1)  # expert 3: none
  want = np.linalg.lstsq(x, target, rcond=None)[0]
  np.testing.assert_allclose(kernel, want, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_group_router_of_an_unmerged_model_is_the_model():
  identity = [np.arange(E), np.arange(E)]
  model, merged = _merged(3, identity)
  exported = export.group_router(merged, _tokens(4, (8, 32)), batch_size=8)
  assert not exported.cfg.moe.num_slots and exported.cfg.moe.num_experts == E
  assert export.logit_gap(exported, model, _tokens(5)) < 1e-3


@pytest.mark.slow
def test_expert_usage_and_shared_slots_against_the_routing():
  _, merged = _merged(6)
  tokens = _tokens(7, (3, 16))
  usage = costs.expert_usage(merged, tokens, batch_size=2)  # [L, G] evaluations per token
  _, state = jax.jit(lambda v, t: merged.module.apply(v, t, mutable=["routing_trace"]))(
      merged.variables, jnp.asarray(tokens))
  shared = []
  for l, groups in enumerate(GROUPS):
    slots = np.asarray(state["routing_trace"][f"layer_{l}"]["moe"]["expert"][0])  # [T, K]
    experts = groups[slots]
    want = np.zeros(3)
    for row in experts:
      want[np.unique(row)] += 1
    np.testing.assert_allclose(usage[l], want / len(experts))
    shared.append(np.mean([1 - len(set(row)) / K for row in experts]))
  assert export.shared_slot_share(merged, usage) == pytest.approx(np.mean(shared))


@pytest.mark.slow
def test_model_cost_counts_referenced_experts_and_the_experts_tokens_run():
  model, merged = _merged(8)
  tokens = _tokens(9, (2, 16))
  p_e = 3 * 16 * F
  full = costs.model_cost(model, costs.expert_usage(model, tokens, 2), seq_len=16)
  assert full["params"] == full["stored_params"] == param_count(model.variables["params"])
  assert full["expert_params"] == 2 * E * p_e and full["expert_bytes"] == 4 * 2 * E * p_e
  usage = costs.expert_usage(merged, tokens, 2)
  cost = costs.model_cost(merged, usage, seq_len=16)
  assert cost["expert_params"] == (3 + 2) * p_e  # referenced experts only
  assert full["params"] - cost["params"] == (2 * E - 5) * p_e
  # Expert FLOPs: 2 per weight per evaluation; the plain model runs K experts per token.
  saved = full["flops_per_token"] - cost["flops_per_token"]
  assert saved == pytest.approx(2 * p_e * (2 * K - usage.sum()))
