"""SlimMoE slimming: a pruned model equals the masked full model; shapes and counts match."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.compress.slimmoe.slimming import slim
from moe_jax.models.lm import MoELM
from moe_jax.utils.errors import ConfigError
from moe_jax.utils.trees import param_count
from tests.eval.tiny import random_model

E, F, FS, D, H, G = 4, 16, 8, 16, 4, 2


def _model(seed):
  return random_model(seed, num_heads=H, num_kv_heads=G, qkv_bias=True, moe=dict(
      num_experts=E, d_ff=F, shared_d_ff=FS, dispatch="dense", capacity_factor=0.0,
      load_balance_coef=0.0))


def _random_saliency(params, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: rng.random(x.shape), params)


def _logits(cfg, variables, tokens):
  return np.asarray(jax.jit(MoELM(cfg).apply)(variables, tokens))


def _kept(score, width):
  """NumPy reference of the kept indices: the `width` largest along the last axis, ascending."""
  return np.sort(np.argsort(-score, axis=-1, kind="stable")[..., :width], axis=-1)


def _ffn_score(ffn):
  """float64 loop reference of a neuron's score: the sum of its weights' saliencies."""
  w = {k: np.asarray(v, np.float64) for k, v in ffn.items()}
  lead = w["wo"].shape[:-2]
  out = np.zeros(lead + (w["wo"].shape[-2],))
  for index in np.ndindex(*lead):
    for j in range(out.shape[-1]):
      out[index + (j,)] = sum(w[k][index][:, j].sum() for k in ("wi_gate", "wi_up")) + w["wo"][
          index][j].sum()
  return out


def _group_score(s, g):
  """float64 reference of a GQA group's score: its K/V head's and its query heads' saliency."""
  s = jax.tree.map(lambda x: np.asarray(x, np.float64), s)
  return (s["k_proj"]["kernel"][:, g].sum() + s["v_proj"]["kernel"][:, g].sum()
          + s["k_proj"]["bias"][g].sum() + s["v_proj"]["bias"][g].sum()
          + sum(s["q_proj"]["kernel"][:, h].sum() + s["q_proj"]["bias"][h].sum()
                + s["o_proj"]["kernel"][h].sum() for h in range(g * H // G, (g + 1) * H // G)))


def _masked(params, saliency, width, shared_width):
  """The full model with every dropped neuron's W_down row zeroed (its activation masked) and
  the dropped GQA group's o_proj rows zeroed (its heads' outputs masked)."""
  out = jax.tree.map(np.array, params)
  for name in [n for n in out if n.startswith("layer_")]:
    moe, score = out[name]["moe"], saliency[name]["moe"]
    keep = _kept(_ffn_score(score["experts"]), width)
    for e in range(E):
      moe["experts"]["wo"][e][np.setdiff1d(np.arange(F), keep[e])] = 0
    keep = _kept(_ffn_score(score["shared_experts"]["mlp"]), shared_width)
    moe["shared_experts"]["mlp"]["wo"][np.setdiff1d(np.arange(FS), keep)] = 0
    dropped = int(np.argmin([_group_score(saliency[name]["attn"], g) for g in range(G)]))
    out[name]["attn"]["o_proj"]["kernel"][dropped * H // G:(dropped + 1) * H // G] = 0
  return out


def test_dropping_neurons_and_a_gqa_group_equals_masking_them():
  seed = np.random.default_rng().integers(1 << 30)
  width = int(np.random.default_rng(seed).integers(1, F))
  model = _model(seed)
  saliency = _random_saliency(model.variables["params"], seed + 1)
  cfg, variables = slim(model.cfg, model.variables, saliency, width, num_kv_heads=G - 1)
  shared = max(1, round(FS * width / F))
  assert (cfg.moe.d_ff, cfg.moe.shared_d_ff, cfg.moe.num_experts) == (width, shared, E)
  assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_width) == (H // G, 1, model.cfg.head_width)
  tokens = jnp.asarray(np.random.default_rng(seed + 2).integers(0, 256, (2, 20)), jnp.int32)
  masked = {"params": _masked(model.variables["params"], saliency, width, shared)}
  np.testing.assert_allclose(_logits(cfg, variables, tokens),
                             _logits(model.cfg, masked, tokens), rtol=1e-5, atol=1e-5)


def test_slimmed_shapes_and_parameter_count_match_the_target_config():
  model = _model(0)
  width = 6
  cfg, variables = slim(model.cfg, model.variables,
                        _random_saliency(model.variables["params"], 1), width, num_kv_heads=1)
  want = jax.eval_shape(MoELM(cfg).init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  assert jax.tree.map(lambda x: x.shape, variables["params"]) == jax.tree.map(
      lambda x: x.shape, jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x,
                                      want["params"], is_leaf=lambda x: hasattr(x, "unbox")))
  shared = max(1, round(FS * width / F))
  k = model.cfg.head_width
  removed = model.cfg.num_layers * (3 * D * (E * (F - width) + FS - shared)
                                    + (H // G) * (2 * D * k + k)  # q and o of the group's heads
                                    + 2 * (D * k + k))  # its k and v heads (with biases)
  assert param_count(variables["params"]) == param_count(model.variables["params"]) - removed


def test_bad_targets_are_refused_naming_the_field():
  model = _model(0)
  saliency = _random_saliency(model.variables["params"], 1)
  with pytest.raises(ConfigError, match="d_ff"):
    slim(model.cfg, model.variables, saliency, F + 1)
  with pytest.raises(ConfigError, match="num_kv_heads"):
    slim(model.cfg, model.variables, saliency, F, num_kv_heads=G + 1)
