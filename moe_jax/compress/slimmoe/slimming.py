"""SlimMoE expert slimming and GQA-group pruning of an MoELM's variables and LMConfig.

Legend: E experts, D model width, F -> F' expert hidden width, G -> G' key/value groups,
R query heads per group, K head width.

Every expert of every MoE layer keeps its F' most important hidden neurons (rows of W_gate and
W_up, i.e. their columns in our [E, D, F] layout, and rows of W_down [E, F, D]), so all E experts
and the router stay (SlimMoE, arXiv 2506.18349, Sec. 3); the shared expert, an FFN of the same
kind, keeps the same fraction of its width. Attention drops whole GQA groups: a K/V head, its
R query heads and their o_proj rows, the same number G' in every layer. Dense (non-MoE) FFNs
are kept. Dropping neuron j is exactly masking its activation h_j; dropping a group is exactly
masking its heads' attention outputs (tests/compress/test_slimmoe_slimming.py).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from moe_jax.compress.slimmoe.importance import ffn_neuron_scores, gqa_group_scores
from moe_jax.models.config import LMConfig
from moe_jax.utils.errors import require


def keep_top(scores: jax.Array, width: int) -> jax.Array:
  """Indices [..., width] of the `width` largest scores[..., F] along the last axis, ascending
  (kept neurons stay in their order)."""
  return jnp.sort(jax.lax.top_k(scores, width)[1], axis=-1)


def prune_ffn(ffn: dict, keep: jax.Array) -> dict:
  """One FFN (wi_gate?, wi_up [D, F], wo [F, D]) reduced to its hidden neurons keep[F']."""
  out = {name: w[:, keep] for name, w in ffn.items() if name != "wo"}
  return {**out, "wo": ffn["wo"][keep]}


def prune_attention(attn: dict, keep: jax.Array) -> dict:
  """Attention weights reduced to the GQA groups keep[G'] (q/k/v_proj kernels [D, N, K] and
  biases [N, K], o_proj kernel [H, K, D]; o bias and per-head norms [K] unchanged)."""
  g, h = attn["k_proj"]["kernel"].shape[1], attn["q_proj"]["kernel"].shape[1]
  r = h // g
  heads = (keep[:, None] * r + jnp.arange(r)).reshape(-1)  # query heads of the kept groups
  take = lambda p, index, axis: {k: jnp.take(v, index, axis=axis if k == "kernel" else 0)
                                 for k, v in p.items()}
  return {**attn, "q_proj": take(attn["q_proj"], heads, 1),
          "k_proj": take(attn["k_proj"], keep, 1), "v_proj": take(attn["v_proj"], keep, 1),
          "o_proj": {**attn["o_proj"], "kernel": attn["o_proj"]["kernel"][heads]}}


def slim_config(cfg: LMConfig, d_ff: int, num_kv_heads: int) -> LMConfig:
  """The LMConfig with expert width d_ff (the shared expert scaled alike) and num_kv_heads
  groups (query heads scaled alike, head width kept)."""
  require(cfg.moe_layer_ids(), "model.moe_layers", "the model has no MoE layer to slim",
          "use an MoE model")
  require(1 <= d_ff <= cfg.moe.d_ff, "d_ff", f"must be in [1, {cfg.moe.d_ff}], got {d_ff}",
          "give a width no larger than the experts'")
  require(1 <= num_kv_heads <= cfg.num_kv_heads, "num_kv_heads",
          f"must be in [1, {cfg.num_kv_heads}], got {num_kv_heads}",
          "give at most the model's number of key/value heads")
  if num_kv_heads < cfg.num_kv_heads:
    require(cfg.attention == "gqa" and cfg.qk_norm != "full", "attention",
            "GQA-group pruning needs grouped-query attention without a full-width q/k norm",
            "keep every group (attention ratio 1)")
  shared = cfg.moe.shared_d_ff and max(1, round(cfg.moe.shared_d_ff * d_ff / cfg.moe.d_ff))
  moe = dataclasses.replace(cfg.moe, d_ff=d_ff, shared_d_ff=shared)
  r = cfg.num_heads // cfg.num_kv_heads
  return dataclasses.replace(cfg, moe=moe, num_kv_heads=num_kv_heads,
                             num_heads=num_kv_heads * r, head_dim=cfg.head_width)


def slim(cfg: LMConfig, variables: dict, saliency: dict, d_ff: int,
         num_kv_heads: int | None = None) -> tuple[LMConfig, dict]:
  """(the slimmed LMConfig, its variables): every expert keeps its d_ff most salient neurons
  (vmapped over experts), every attention its num_kv_heads most salient groups.

  saliency: the per-weight tree of moe_jax.compress.slimmoe.importance.saliency.
  """
  new = slim_config(cfg, d_ff, num_kv_heads or cfg.num_kv_heads)
  params = dict(variables["params"])
  for name, layer in params.items():
    if not isinstance(layer, dict) or "attn" not in layer:
      continue
    layer, score = dict(layer), saliency[name]
    if new.num_kv_heads < cfg.num_kv_heads:
      layer["attn"] = prune_attention(layer["attn"], keep_top(gqa_group_scores(score["attn"]),
                                                              new.num_kv_heads))
    if "moe" in layer:
      moe = dict(layer["moe"])
      keep = keep_top(ffn_neuron_scores(score["moe"]["experts"]), d_ff)  # [E, F']
      moe["experts"] = jax.vmap(prune_ffn)(moe["experts"], keep)
      if "shared_experts" in moe:
        ffn = score["moe"]["shared_experts"]["mlp"]
        moe["shared_experts"] = {**moe["shared_experts"], "mlp": prune_ffn(
            moe["shared_experts"]["mlp"], keep_top(ffn_neuron_scores(ffn), new.moe.shared_d_ff))}
      layer["moe"] = moe
    params[name] = layer
  return new, {**variables, "params": params}
