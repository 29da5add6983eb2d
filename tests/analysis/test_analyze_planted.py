"""The routing report's measurements on models whose structure is planted by setting weights."""
import jax
import numpy as np
import pytest

from moe_jax.analysis import analyze_study, traces
from moe_jax.models.loading import LoadedModel
from tests.analysis.test_traces import _model, _tokens

E = 4


def _edited(model: LoadedModel, edit) -> LoadedModel:
  params = jax.tree.map(np.array, model.variables["params"])
  edit(params)
  return LoadedModel(model.module, {"params": params}, "planted")


def _carry_over(shift: int, top_k: int) -> LoadedModel:
  """Layer 1 routes every token to layer 0's experts shifted by `shift` (mod E).

  Both attentions and layer 0's experts add nothing (o_proj and wo zero), so the residual stream
  is the embedding all the way and layer 1's gate input equals layer 0's (both ffn_norm scales
  are their initial ones): the cross-layer map is the identity. Layer 1's router kernel is layer
  0's with its columns rolled by `shift`, so logit_1[j] = logit_0[j - shift] and top-k at
  layer 1 is top-k at layer 0 plus `shift`.
  """
  def edit(p):
    for i in (0, 1):
      p[f"layer_{i}"]["attn"]["o_proj"]["kernel"][:] = 0
    p["layer_0"]["moe"]["experts"]["wo"][:] = 0
    kernel = p["layer_0"]["moe"]["router"]["gate"]["kernel"]
    p["layer_1"]["moe"]["router"]["gate"]["kernel"] = np.roll(kernel, shift, axis=1)
  return _edited(_model("swiglu", top_k), edit)


def test_identical_experts_have_router_logit_similarity_one():
  def edit(p):  # expert 1 := expert 0, weights and router column, in every layer
    for i in (0, 1):
      moe = p[f"layer_{i}"]["moe"]
      for w in moe["experts"].values():
        w[1] = w[0]
      moe["router"]["gate"]["kernel"][:, 1] = moe["router"]["gate"]["kernel"][:, 0]
  trace = traces.capture(_edited(_model("swiglu"), edit), _tokens())
  for l in range(2):
    sim = np.array(analyze_study.layer_stats(trace, l)["similarity"])
    np.testing.assert_allclose(sim[0, 1], 1.0, atol=1e-12)
    assert sim[np.triu_indices(E, 1)][1:].max() < 0.99  # every other pair differs
    both = np.isin(trace.experts(l), [0, 1]).all(-1)  # tokens routed to the twins
    np.testing.assert_allclose(trace.output_norms(l)[both, 0], trace.output_norms(l)[both, 1],
                               rtol=1e-5)


@pytest.mark.parametrize("shift", [1, 3])
def test_planted_carry_over_gives_one_hot_affinity_and_a_free_placement(shift):
  trace = traces.capture(_carry_over(shift, top_k=1), _tokens())
  route = trace.stack("expert")
  conditional, scores = analyze_study.affinity_section(route, E, seed=0)
  chosen = np.unique(route[0])
  assert len(chosen) >= 3
  for a in chosen:
    np.testing.assert_array_equal(conditional[0][a], np.eye(E)[(a + shift) % E])
  assert scores["max_conditional"] == [1.0]
  fit, held = analyze_study.split_counts(route, trace.seq_len, E)
  placed = analyze_study.placement_section(fit, held, (2, 4, 8), time_limit=5.0, seed=0)
  for g in ("2", "4"):
    assert placed[g]["solved"]["fit"] == placed[g]["solved"]["held_out"] == 0.0
    assert placed[g]["contiguous"]["held_out"] > 0
    assert placed[g]["reduction_vs_contiguous"] == 1.0
  assert "skipped" in placed["8"]


def test_identity_cross_layer_map_gives_fate_recall_one():
  trace = traces.capture(_carry_over(1, top_k=2), _tokens())
  np.testing.assert_array_equal(trace.gate_inputs(0), trace.gate_inputs(1))
  fate = analyze_study.fate_section(trace, block=40)  # blocks that do not divide T
  np.testing.assert_allclose(fate["cosine"], [1.0], atol=1e-6)
  assert fate["recall"] == [1.0] and fate["recall_chance"] == 0.5
