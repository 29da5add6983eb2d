"""Merged MoE layers: router slots mapped onto fewer experts (layers/slots.py, MoE num_slots)."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.layers import slots
from moe_jax.layers.moe import MoE, MoEConfig
from moe_jax.layers.routers import Routing
from moe_jax.utils.errors import ConfigError

B, S, D, F, E, G, K = 2, 24, 8, 12, 8, 5, 3
T = B * S
SLOT_MAP = np.array([0, 1, 2, 0, 3, 1, 0, 2])  # expert 4 stored but unreferenced


def _inputs(seed):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((B, S, D)), jnp.float32)


def _merged(gmm_impl="tiled", slot_routing="slots"):
  """A merged layer (G experts, E slots) with random weights and SLOT_MAP, and its
  slot-duplicated twin (E experts, each slot's expert copied, the same router)."""
  merged = MoE(MoEConfig(num_experts=G, num_slots=E, top_k=K, d_ff=F, gmm_impl=gmm_impl,
                         slot_routing=slot_routing, load_balance_coef=0.0))
  rng = np.random.default_rng(0)
  variables = nn.unbox(merged.init(jax.random.key(0), _inputs(0)))
  params = jax.tree.map(lambda w: jnp.asarray(rng.standard_normal(w.shape) * w.shape[-2] ** -0.5,
                                              jnp.float32), variables["params"])
  params["router"]["gate"]["kernel"] *= 8.0  # varied routing
  variables = {"params": params, "slots": {"slot_to_expert": jnp.asarray(SLOT_MAP, jnp.int32)}}
  twin = MoE(MoEConfig(num_experts=E, top_k=K, d_ff=F, gmm_impl=gmm_impl, load_balance_coef=0.0))
  twin_params = {"router": params["router"],
                 "experts": {k: w[SLOT_MAP] for k, w in params["experts"].items()}}
  return merged, variables, twin, {"params": twin_params}


@pytest.mark.parametrize("gmm_impl", [pytest.param("tiled", marks=pytest.mark.slow),
                                      "ragged_dot"])  # tiled: ~1 min of compiling
def test_merged_forward_equals_the_slot_duplicated_forward(gmm_impl):
  merged, variables, twin, twin_variables = _merged(gmm_impl)
  x = _inputs(1)
  y = jax.jit(merged.apply)(variables, x)
  np.testing.assert_allclose(y, jax.jit(twin.apply)(twin_variables, x), rtol=1e-5, atol=1e-5)
  # Gradients: a merged expert's is the sum of its slots' copies'.
  loss = lambda m, rest, p: jnp.sum(jnp.sin(m.apply({**rest, "params": p}, x)))
  grad = jax.grad(functools.partial(loss, merged, variables))(variables["params"])["experts"]
  twin_grad = jax.grad(functools.partial(loss, twin, {}))(twin_variables["params"])["experts"]
  for name, g in grad.items():
    want = jax.ops.segment_sum(twin_grad[name], jnp.asarray(SLOT_MAP), num_segments=G)
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5)


def test_each_merged_expert_runs_once_per_token():
  merged, variables, _, _ = _merged()
  x = _inputs(2)
  _, state = jax.jit(functools.partial(merged.apply, mutable=["intermediates"]))(variables, x)
  inter = state["intermediates"]
  chosen = np.asarray(inter["expert_index"][0]).reshape(T, K)  # the router's slots
  np.testing.assert_array_equal(inter["tokens_per_expert"][0], np.bincount(chosen.ravel(),
                                                                            minlength=E))
  distinct = [set(SLOT_MAP[row]) for row in chosen]
  runs = np.asarray(inter["tokens_per_merged_expert"][0])  # the grouped matmul's group sizes
  np.testing.assert_array_equal(runs, [sum(g in d for d in distinct) for g in range(G)])
  assert runs[4] == 0 and runs.sum() == sum(map(len, distinct)) < T * K


def test_merge_slots_sums_a_tokens_weights_per_expert():
  rng = np.random.default_rng(3)
  chosen = np.stack([rng.choice(E, K, replace=False) for _ in range(T)])
  weight = rng.dirichlet(np.ones(K), size=T)
  routing = Routing(token=jnp.repeat(jnp.arange(T), K), expert=jnp.asarray(chosen.ravel()),
                    weight=jnp.asarray(weight.ravel(), jnp.float32), logits=jnp.zeros((T, E)),
                    probs=jnp.zeros((T, E)), top_k=K)
  out = slots.merge_slots(routing, jnp.asarray(SLOT_MAP), G)
  expert, got = np.asarray(out.expert).reshape(T, K), np.asarray(out.weight).reshape(T, K)
  for t in range(T):
    combined = {}
    for j in range(K):
      combined[SLOT_MAP[chosen[t, j]]] = combined.get(SLOT_MAP[chosen[t, j]], 0) + weight[t, j]
    kept = expert[t] < G
    assert sorted(expert[t][kept]) == sorted(combined) and np.all(got[t][~kept] == 0)
    for e, w in zip(expert[t][kept], got[t][kept]):
      assert w == pytest.approx(combined[e], rel=1e-6)


def test_group_routing_takes_top_k_experts_by_log_sum_exp():
  merged, variables, _, _ = _merged(slot_routing="groups")
  x = _inputs(4)
  _, state = merged.apply(variables, x, mutable=["routing_trace"])
  logits = np.asarray(state["routing_trace"]["router_logits"][0], np.float64)  # [T, E]
  group = np.full((T, G), -np.inf)
  for g in range(G):
    if np.any(SLOT_MAP == g):
      group[:, g] = np.log(np.sum(np.exp(logits[:, SLOT_MAP == g]), axis=-1))
  top = np.argsort(-group, axis=-1)[:, :K]
  kept = np.take_along_axis(group, top, -1)
  weight = np.exp(kept - kept.max(-1, keepdims=True))
  weight /= weight.sum(-1, keepdims=True)
  tokens = np.asarray(x, np.float64).reshape(T, D)
  p = jax.tree.map(lambda w: np.asarray(w, np.float64), variables["params"]["experts"])
  silu = lambda v: v / (1 + np.exp(-v))
  ffn = lambda g, v: (silu(v @ p["wi_gate"][g]) * (v @ p["wi_up"][g])) @ p["wo"][g]
  want = np.stack([sum(w * ffn(g, tokens[t]) for g, w in zip(top[t], weight[t]))
                   for t in range(T)])
  np.testing.assert_allclose(merged.apply(variables, x).reshape(T, D), want, atol=1e-4)


@pytest.mark.parametrize("fields, match", [
    (dict(num_experts=4, num_slots=3), "num_slots"),
    (dict(num_experts=3, num_slots=6, dispatch="capacity"), "dispatch"),
    (dict(num_experts=2, num_slots=6, top_k=3, slot_routing="groups"), "slot_routing"),
    (dict(num_experts=2, num_slots=6, router="expert_choice"), "num_slots"),
    (dict(num_experts=2, num_slots=6, slot_routing="lse"), "slot_routing"),
])
def test_slot_map_config_errors(fields, match):
  with pytest.raises(ConfigError, match=f"^{match}"):
    MoEConfig(**{"top_k": 2, **fields})
