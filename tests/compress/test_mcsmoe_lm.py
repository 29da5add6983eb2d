"""MC-SMoE on a whole LM: alignment keeps logits, merged == duplicated == deduplicated, drop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.compress.mcsmoe import merged_lm
from moe_jax.compress.mcsmoe.grouping import Grouping
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import ConfigError
from tests.eval.tiny import random_model

E, K = 6, 2
GROUPS = [np.array([0, 1, 0, 2, 1, 0]), np.array([1, 0, 0, 1, 0, 1])]  # 3 and 2 groups


def _model(seed):
  return random_model(seed, moe=dict(num_experts=E, top_k=K, d_ff=12, load_balance_coef=0.0))


def _tokens(seed, shape=(2, 24)):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, shape), jnp.int32)


def _logits(model, tokens):
  return np.asarray(jax.jit(model.module.apply)(model.variables, tokens))


def _groupings():
  return [Grouping(g, np.unique(g, return_index=True)[1]) for g in GROUPS]


@pytest.mark.slow
def test_alignment_leaves_the_logits_unchanged_and_reorders_units():
  model, tokens = _model(0), _tokens(1)
  aligned = merged_lm.align(model)
  np.testing.assert_allclose(_logits(aligned, tokens), _logits(model, tokens), rtol=1e-5,
                             atol=1e-5)
  before, after = merged_lm.experts(model, 1), merged_lm.experts(aligned, 1)
  np.testing.assert_array_equal(after["wo"][0], before["wo"][0])  # the reference is kept
  assert not np.array_equal(after["wo"][1:], before["wo"][1:])


def test_merged_lm_against_numpy_merging_and_its_duplicate_and_deduplicated_forms():
  model, tokens = _model(2), _tokens(3)
  freqs = np.random.default_rng(4).dirichlet(np.ones(E), size=2)
  merged = merged_lm.merge(model, _groupings(), freqs)
  assert merged.cfg.moe.num_experts == 3 and merged.cfg.moe.num_slots == E
  for l, (groups, f) in enumerate(zip(GROUPS, freqs)):
    stored, original = merged_lm.experts(merged, l), merged_lm.experts(model, l)
    np.testing.assert_array_equal(merged_lm.slot_maps(merged)[l], groups)
    for g in range(groups.max() + 1):
      members = np.flatnonzero(groups == g)
      want = np.einsum("e,e...->...", f[members], original["wi_up"][members]) / f[members].sum()
      np.testing.assert_allclose(stored["wi_up"][g], want, rtol=1e-5, atol=1e-6)
    assert np.all(stored["wo"][groups.max() + 1:] == 0)  # padding, unreferenced
  duplicated = merged_lm.duplicate(merged)
  assert duplicated.cfg.moe.num_experts == E and not duplicated.cfg.moe.num_slots
  want = _logits(duplicated, tokens)
  np.testing.assert_allclose(_logits(merged, tokens), want, rtol=1e-5, atol=1e-5)
  back = merged_lm.deduplicate(duplicated)
  assert back.cfg.moe.num_experts == 3
  for l, groups in enumerate(GROUPS):  # the same partition of the slots, stored once each
    got = merged_lm.slot_maps(back)[l]
    np.testing.assert_array_equal(got[:, None] == got[None], groups[:, None] == groups[None])
  np.testing.assert_allclose(_logits(back, tokens), want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_merging_identical_experts_changes_no_logit():
  model, tokens = _model(5), _tokens(6)
  variables = jax.tree.map(np.asarray, model.variables)
  for l, groups in enumerate(GROUPS):  # every member a copy of its group's first expert
    first = np.unique(groups, return_index=True)[1]
    for k, w in variables["params"][f"layer_{l}"]["moe"]["experts"].items():
      variables["params"][f"layer_{l}"]["moe"]["experts"][k] = w[first[groups]]
  twin = LoadedModel(model.module, variables, "copies")
  freqs = np.random.default_rng(7).dirichlet(np.ones(E), size=2)
  for weights in (freqs, None):
    np.testing.assert_allclose(_logits(merged_lm.merge(twin, _groupings(), weights), tokens),
                               _logits(twin, tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_drop_routes_among_the_kept_experts_only():
  model, tokens = _model(8), _tokens(9)
  kept = [np.array([4, 1, 3]), np.array([0, 5, 2])]
  dropped = merged_lm.drop(model, kept)
  assert dropped.cfg.moe.num_experts == 3
  _, state = jax.jit(lambda v, t: model.module.apply(v, t, mutable=["routing_trace"]))(
      model.variables, tokens)
  logits = np.asarray(state["routing_trace"]["layer_0"]["moe"]["router_logits"][0])  # [T, E]
  _, inter = jax.jit(lambda v, t: dropped.module.apply(v, t, mutable=["intermediates"]))(
      dropped.variables, tokens)
  chosen = np.asarray(inter["intermediates"]["layer_0"]["moe"]["expert_index"][0]).reshape(-1, K)
  masked = np.full_like(logits, -np.inf)
  masked[:, kept[0]] = logits[:, kept[0]]
  want = np.sort(np.argsort(-masked, axis=-1)[:, :K], axis=-1)
  np.testing.assert_array_equal(np.sort(kept[0][chosen], axis=-1), want)
  # Keeping every expert, in any order, is the same model.
  every = merged_lm.drop(model, [np.array([5, 3, 1, 0, 2, 4])] * 2)
  np.testing.assert_allclose(_logits(every, tokens), _logits(model, tokens), rtol=1e-5,
                             atol=1e-5)
  with pytest.raises(ConfigError, match="^kept"):
    merged_lm.drop(model, [np.array([0])] * 2)
