"""What a compressed MoE LM costs: parameters, expert memory in bytes, FLOPs per token.

Legend: l an MoE layer, G experts stored per layer, P_e the parameters of one dense expert
(3 D F gated, 2 D F plain), V vocabulary, D width, H query heads, S the scored sequence length.

Counts follow what a deployment would store, not what our arrays hold:
  - experts: only referenced ones (a merged layer's unreferenced padding is left out); a dense
    expert holds P_e values; a LoSparse one what a row-sparse store holds
    (losparse_train.storage: L, R, the kept rows of S, plus an int32 index per kept row);
  - params = the model's other parameters + those expert values (indices are not parameters);
  - expert_bytes = expert values x the parameter dtype's bytes + 4 bytes per row index;
  - flops_per_token = 2 per weight a token uses (every non-expert matrix, the tied embedding
    once as the output head, norms included, the lookup itself free) + attention scores
    2 H (d_qk + d_v) ctx per attention layer with ctx = the mean causal context (S + 1) / 2
    (capped by a sliding window) + the experts a token actually runs: usage[l, g] (measured
    expert evaluations per token, `expert_usage`; a merged layer runs a token's shared
    expert once) times each expert's FLOPs per use.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.compress.mcsmoe.merged_lm import slot_maps
from moe_jax.layers.experts import ACTIVATIONS
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.trees import param_count


def dense_expert_params(model: LoadedModel) -> int:
  """P_e: the parameters of one routed expert."""
  cfg = model.cfg
  return (3 if ACTIVATIONS[cfg.activation][1] else 2) * cfg.d_model * cfg.moe.d_ff


def referenced(model: LoadedModel) -> list[int]:
  """Per MoE layer, the stored experts some slot refers to (all of them without a slot map)."""
  if not model.cfg.moe.num_slots:
    return [model.cfg.moe.num_experts] * len(model.cfg.moe_layer_ids())
  return [len(np.unique(m)) for m in slot_maps(model)]


@functools.partial(jax.jit, static_argnums=0)
def _counts(module, variables, tokens):
  _, state = module.apply(variables, tokens, mutable=["intermediates"])
  inter = state["intermediates"]
  key = "tokens_per_merged_expert" if module.cfg.moe.num_slots else "tokens_per_expert"
  return jnp.stack([inter[f"layer_{i}"]["moe"][key][0] for i in module.cfg.moe_layer_ids()])


def expert_usage(model: LoadedModel, tokens: np.ndarray, batch_size: int) -> np.ndarray:
  """[L, G] mean evaluations of each stored expert per token over windows tokens[n, S] (in
  batches of `batch_size`; a shorter last batch compiles once more)."""
  total = 0.0
  for start in range(0, len(tokens), batch_size):
    rows = np.asarray(tokens[start:start + batch_size], np.int32)
    total = total + np.asarray(_counts(model.module, model.variables, rows), np.float64)
  return total / np.asarray(tokens).size


def _attention_flops(model: LoadedModel, seq_len: int) -> float:
  cfg = model.cfg
  ctx = (seq_len + 1) / 2
  if cfg.sliding_window:
    ctx = min(ctx, cfg.sliding_window)
  if cfg.attention == "mla":
    qk, v = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.v_head_dim
  else:
    qk = v = cfg.head_width
  return cfg.num_layers * 2 * cfg.num_heads * (qk + v) * ctx


def model_cost(model: LoadedModel, usage: np.ndarray, seq_len: int,
               losparse: dict | None = None) -> dict:
  """{params, expert_params, expert_bytes, model_bytes, flops_per_token, stored_params}
  (module docstring; model_bytes = the other parameters' bytes + expert_bytes).

  usage: [L, G] from `expert_usage`; losparse: losparse_train.storage of the referenced
  experts, for a LoSparse model.
  """
  cfg = model.cfg
  params = nn.unbox(model.variables["params"])
  layers = cfg.moe_layer_ids()
  stored_experts = sum(param_count(params[f"layer_{i}"]["moe"]["experts"]) for i in layers)
  embed = cfg.vocab_size * cfg.d_model
  other = param_count(params) - stored_experts
  itemsize = jnp.dtype(cfg.param_dtype).itemsize
  p_e = dense_expert_params(model)
  values = indices = expert_flops = 0.0
  for l, (i, k) in enumerate(zip(layers, referenced(model))):
    if losparse is None:
      per_values, per_indices, per_flops = np.full(k, p_e), np.zeros(k), np.full(k, 2.0 * p_e)
    else:
      s = losparse[f"layer_{i}"]
      per_values, per_indices, per_flops = s["values"], s["indices"], s["flops"]
    values += float(np.sum(per_values))
    indices += float(np.sum(per_indices))
    expert_flops += float(np.dot(usage[l][:k], per_flops))
  used_other = other - embed + (embed if cfg.tie_embeddings else 0)
  expert_bytes = values * itemsize + 4 * indices
  return {"params": int(other + values), "expert_params": int(values),
          "expert_bytes": int(expert_bytes), "model_bytes": int(other * itemsize + expert_bytes),
          "flops_per_token": 2.0 * used_other + _attention_flops(model, seq_len) + expert_flops,
          "stored_params": int(param_count(params))}
