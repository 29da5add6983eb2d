"""Multi-task models: MMoE(1 expert) == shared-bottom, gates, the hierarchy mask, experts vs NumPy."""
import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.recsys import models
from moe_jax.recsys.home import HoMEConfig, task_wiring
from moe_jax.recsys.layers import FeatureGate, StackedExperts, masked_softmax
from moe_jax.recsys.mmoe import MMoEConfig
from moe_jax.recsys.ple import PLEConfig
from moe_jax.recsys.shared_bottom import SharedBottomConfig
from moe_jax.utils.errors import ConfigError

VOCAB = (7, 5, 3)
GROUPS = (0, 0, 1, 1, 1)


def _inputs(seed, batch=16, dense=4):
  rng = np.random.default_rng(seed)
  sparse = np.stack([rng.integers(0, v, batch) for v in VOCAB], 1).astype(np.int32)
  return jnp.asarray(sparse), jnp.asarray(rng.standard_normal((batch, dense)), jnp.float32)


def _build(spec):
  return models.build_model(spec, vocab_sizes=VOCAB, embed_dim=4, groups=GROUPS)


HOME = HoMEConfig(meta_global=2, meta_per_group=1, task_global=1, task_per_group=1,
                  task_per_task=2, meta_hidden=(6,), task_hidden=(5,), tower_hidden=(3,))
SPECS = {
    "mmoe": MMoEConfig(num_experts=3, expert_hidden=(8, 6), tower_hidden=(3,)),
    "cgc": PLEConfig(num_levels=1, num_specific=2, num_shared=1, expert_hidden=(6,),
                     tower_hidden=(3,)),
    "ple": PLEConfig(num_levels=2, num_specific=1, num_shared=2, expert_hidden=(6,),
                     tower_hidden=(3,)),
    "home": HOME,
}


def test_model_entries_check_their_fields():
  with pytest.raises(ConfigError, match="^task_per_task: a task gate over no experts"):
    HoMEConfig(task_global=0, task_per_group=0, task_per_task=0)
  with pytest.raises(ConfigError, match="^expert_hidden: layer widths must be positive"):
    MMoEConfig(expert_hidden=(8, 0))
  with pytest.raises(ConfigError, match="^activation: unknown value 'gelu'"):
    PLEConfig(activation="gelu")
  assert [c.activation for c in (SharedBottomConfig(), MMoEConfig(), HOME,
                                 dataclasses.replace(HOME, expert_norm=False))] == [
                                     "relu", "relu", "swish", "relu"]


def test_mmoe_with_one_expert_equals_shared_bottom():
  sparse, dense = _inputs(0)
  mmoe = _build(MMoEConfig(num_experts=1, expert_hidden=(8, 6), tower_hidden=(3,)))
  bottom = _build(SharedBottomConfig(bottom_hidden=(8, 6), tower_hidden=(3,)))
  pm = jax.jit(mmoe.init)(jax.random.key(1), sparse, dense)["params"]
  pb = flax.core.unfreeze(jax.jit(bottom.init)(jax.random.key(2), sparse, dense)["params"])
  pb["features"], pb["towers"] = pm["features"], pm["towers"]
  experts = pm["level_0"]["experts"]
  for i in range(2):
    pb[f"bottom_{i}"] = {"kernel": experts[f"kernel_{i}"][0], "bias": experts[f"bias_{i}"][0]}
  np.testing.assert_allclose(jax.jit(mmoe.apply)({"params": pm}, sparse, dense),
                             jax.jit(bottom.apply)({"params": pb}, sparse, dense),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_gates_sum_to_one_and_respect_masks(name):
  sparse, dense = _inputs(3)
  model = _build(SPECS[name])
  variables = jax.jit(model.init)(jax.random.key(4), sparse, dense)
  logits, state = jax.jit(lambda v: model.apply(v, sparse, dense, mutable=["intermediates"]))(
      variables)
  assert logits.shape == (16, len(GROUPS))
  gates = {k: v[0] for k, v in flax.traverse_util.flatten_dict(
      state["intermediates"], sep="/").items() if k.endswith("gate")}
  assert gates
  for g in gates.values():
    assert np.all(np.asarray(g) >= 0)
    np.testing.assert_allclose(np.asarray(g).sum(-1), 1.0, rtol=1e-5)
  if name == "cgc":  # task k sees its 2 experts and the shared one, nothing else
    g = np.asarray(gates["level_0/gate"])
    for k in range(len(GROUPS)):
      allowed = np.zeros(2 * len(GROUPS) + 1, bool)
      allowed[[2 * k, 2 * k + 1, -1]] = True
      assert np.all(g[:, k, ~allowed] == 0) and np.all(g[:, k, allowed] > 0)


def _expert_grad_norms(hierarchy_mask):
  """|d sum_b logit_bt / d kernel_e| for every task t and task-level HoME expert e, [T, E]."""
  sparse, dense = _inputs(5)
  model = _build(dataclasses.replace(HOME, hierarchy_mask=hierarchy_mask))
  variables = jax.jit(model.init)(jax.random.key(6), sparse, dense)

  def kernel_grad(task):
    out = lambda p: model.apply({**variables, "params": p}, sparse, dense)[:, task].sum()
    return jax.grad(out)(variables["params"])["level_1"]["experts"]["kernel_0"]  # [E, D, H]

  grads = jax.jit(jax.vmap(kernel_grad))(jnp.arange(len(GROUPS)))
  return np.abs(np.asarray(grads)).sum(axis=(2, 3))


def test_hierarchy_mask_blocks_other_groups_experts():
  _, _, mask, _ = task_wiring(GROUPS, HOME.task_global, HOME.task_per_group,
                              HOME.task_per_task, hierarchy_mask=True)
  allowed = np.asarray(mask)  # [T, E]: global, own group's and own task's experts
  norms = _expert_grad_norms(True)
  assert np.all(norms[~allowed] == 0.0), norms
  assert np.all(norms[allowed] > 0.0), norms
  assert (~allowed).any(axis=1).all()
  assert np.all(_expert_grad_norms(False) > 0.0)  # without the mask every expert gets gradient


def test_stacked_experts_match_numpy_float64():
  rng = np.random.default_rng(7)
  x = rng.standard_normal((5, 3, 4)).astype(np.float32)
  layer = StackedExperts((6, 2), activation="relu")
  params = layer.init(jax.random.key(8), x, train=False)["params"]
  got = np.asarray(layer.apply({"params": params}, x, train=False))
  for e in range(3):
    h = x[:, e].astype(np.float64)
    for i in range(2):
      h = np.maximum(h @ np.asarray(params[f"kernel_{i}"][e], np.float64)
                     + np.asarray(params[f"bias_{i}"][e], np.float64), 0)
    np.testing.assert_allclose(got[:, e], h, rtol=1e-5, atol=1e-6)


def test_swish_batchnorm_experts_are_standardised_in_training():
  x = np.random.default_rng(9).standard_normal((256, 2, 3)).astype(np.float32) * 5 + 2
  layer = StackedExperts((4,), activation="swish", norm=True)
  variables = layer.init(jax.random.key(10), x, train=True)
  out, _ = layer.apply(variables, x, train=True, mutable=["batch_stats"])
  pre = np.einsum("bed,edh->beh", x, variables["params"]["kernel_0"]) + variables["params"]["bias_0"]
  z = (pre - pre.mean(0)) / np.sqrt(pre.var(0) + 1e-5)
  np.testing.assert_allclose(out, z / (1 + np.exp(-z)), rtol=1e-3, atol=1e-4)


def test_feature_gate_starts_at_identity_and_stays_in_zero_two():
  x = np.random.default_rng(11).standard_normal((4, 3, 5)).astype(np.float32)
  gate = FeatureGate(rank=2)
  params = gate.init(jax.random.key(12), x)["params"]
  np.testing.assert_allclose(gate.apply({"params": params}, x), x, rtol=1e-6)
  params = jax.tree.map(lambda p: p + 3.0, params)
  ratio = np.asarray(gate.apply({"params": params}, x)) / x
  assert np.all((ratio >= 0) & (ratio <= 2))


def test_masked_softmax_matches_numpy():
  rng = np.random.default_rng(13)
  logits = rng.standard_normal((4, 3, 6))
  mask = rng.random((3, 6)) < 0.6
  mask[:, 0] = True
  got = np.asarray(masked_softmax(jnp.asarray(logits, jnp.float32), mask))
  ref = np.where(mask, np.exp(logits), 0.0)
  np.testing.assert_allclose(got, ref / ref.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)
