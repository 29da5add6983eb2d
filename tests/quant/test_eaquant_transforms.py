"""EAQuant's exact transforms: the rotation folded into the weights and the expert-aware
smoothing leave the float model's outputs unchanged; the smoothing vector is the max of the
per-expert, router and shared terms, each as a float64 NumPy reference computes it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.quant import eaquant, eaquant_smooth
from moe_jax.quant.eaquant_rotation import orthogonal, rotate
from tests.eval.tiny import random_model

TOKENS = np.random.default_rng(1).integers(0, 256, (3, 16)).astype(np.int32)
MODELS = {
    "tied_moe": dict(),
    "shared_dense_biases": dict(moe=dict(shared_d_ff=8, shared_gate=True), moe_layers=(1,),
                                qkv_bias=True, o_bias=True, tie_embeddings=False),
    "mla_geglu": dict(attention="mla", kv_lora_rank=8, q_lora_rank=8, qk_nope_head_dim=4,
                      qk_rope_head_dim=4, v_head_dim=4, activation="geglu"),
}


def _logits(model):
  return np.asarray(jax.jit(model.module.apply)(model.variables, TOKENS), np.float64)


@pytest.mark.parametrize("n,kind", [(16, "hadamard"), (12, "hadamard"), (16, "random")])
def test_orthogonal(n, kind):
  q = orthogonal(n, kind, seed=3)
  np.testing.assert_allclose(q.T @ q, np.eye(n), atol=1e-12)
  if kind == "hadamard" and n == 16:
    np.testing.assert_allclose(np.abs(q), 1 / np.sqrt(n))


@pytest.mark.parametrize("name,kind", [("tied_moe", "hadamard"), ("shared_dense_biases", "random"),
                                       pytest.param("mla_geglu", "hadamard",
                                                    marks=pytest.mark.slow)])
def test_rotation_keeps_the_float_model(name, kind):
  model = random_model(seed=4, **MODELS[name])
  rotated = rotate(model, kind, seed=5)
  ref, out = _logits(model), _logits(rotated)
  np.testing.assert_allclose(out, ref, atol=1e-5 * np.abs(ref).max())
  params = rotated.variables["params"]
  assert not rotated.cfg.tie_embeddings and "lm_head" in params
  np.testing.assert_array_equal(params["layer_0"]["ffn_norm"]["scale"], 1.0)
  if kind == "hadamard":  # d_model 16: the stream is spread, the embedding changed
    assert np.abs(params["embed"]["embedding"] -
                  model.variables["params"]["embed"]["embedding"]).max() > 0.1


def _reference_terms(params, y, token, expert, alpha):
  """s_ij, router and shared terms by loops over experts, float64."""
  y = np.asarray(y, np.float64)
  wg, wu = (np.asarray(params["experts"][n], np.float64) for n in ("wi_gate", "wi_up"))
  num_experts = wg.shape[0]
  out = []
  for i in range(num_experts):
    rows = y[token[expert == i]] if np.any(expert == i) else y
    x_max = np.maximum(np.abs(rows).max(0), 1e-5)
    w_max = np.maximum(np.maximum(np.abs(wg[i]).max(1), np.abs(wu[i]).max(1)), 1e-5)
    out.append(x_max ** alpha / w_max ** (1 - alpha))
  all_max = np.abs(y).max(0)
  router = all_max ** alpha / np.abs(np.asarray(params["router"]["gate"]["kernel"])).max(1) ** (
      1 - alpha)
  s = params["shared_experts"]["mlp"]
  s_max = np.maximum(np.abs(np.asarray(s["wi_gate"])).max(1), np.abs(np.asarray(s["wi_up"])).max(1))
  return np.stack(out), router, all_max ** alpha / s_max ** (1 - alpha)


def test_smoothing_terms_aggregate_and_keep_the_float_model():
  model = rotate(random_model(seed=6, moe=dict(shared_d_ff=8, shared_gate=True,
                                                num_experts=6)), "hadamard")
  windows = np.random.default_rng(7).integers(0, 256, (4, 8)).astype(np.int32)
  found = eaquant.capture(model, windows, batch_size=4)
  params = model.variables["params"]
  for name, f in found.items():
    y = np.asarray(f.y).copy()
    y[:, 3] *= 40  # an outlier channel
    token, expert = f.token, f.expert
    expert = np.where(expert == 5, 4, expert)  # expert 5 gets no token: falls back to all
    terms = eaquant_smooth.layer_terms(params[name]["moe"], jnp.asarray(y), token, expert, 0.6)
    ref_e, ref_r, ref_s = _reference_terms(params[name]["moe"], y, token, expert, 0.6)
    np.testing.assert_allclose(terms["experts"], ref_e, rtol=1e-5)
    np.testing.assert_allclose(terms["router"], ref_r, rtol=1e-5)
    np.testing.assert_allclose(terms["shared"], ref_s, rtol=1e-5)
    s = np.asarray(eaquant_smooth.aggregate(terms))
    assert np.all(s[None] >= ref_e * (1 - 1e-6)) and np.all(s >= ref_r * (1 - 1e-6))
    np.testing.assert_allclose(s, np.maximum(np.maximum(ref_e.max(0), ref_r), ref_s), rtol=1e-5)
  recipe = eaquant.EAQuantRecipe(smooth=True)
  layers = {n: (f.y, f.token, f.expert) for n, f in found.items()}
  smoothed = eaquant.smooth_model(model, layers, recipe)
  assert not np.allclose(smoothed.variables["params"]["layer_0"]["ffn_norm"]["scale"], 1.0)
  ref = _logits(model)
  np.testing.assert_allclose(_logits(smoothed), ref, atol=1e-5 * np.abs(ref).max())
