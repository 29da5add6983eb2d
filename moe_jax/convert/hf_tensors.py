"""Which Hugging Face tensors make each variable of `MoELM`, and how.

Legend: E experts, D model width, F expert hidden width, H heads, K head width, V vocabulary.

torch's Linear stores W[out, in] and computes x W^T; our Dense kernels are [in..., out...], so a
linear weight is transposed and its flat axes split into heads. Experts are stacked on a
leading axis: wi_gate/wi_up [E, D, F] from the Hub's per-expert `experts.{e}.w1/w3` (Mixtral,
PhiMoE) or `experts.{e}.gate_proj/up_proj` (others) [F, D]; wo [E, F, D] from w2/down_proj
[D, F]. transformers 5 keeps experts fused in memory (`mlp.experts.gate_up_proj [E, 2F, D]`,
`mlp.experts.down_proj [E, D, F]`); checkpoints written that way load as well. Saving always
writes the Hub's per-expert layout, which every transformers version reads.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import numpy as np

from moe_jax.convert.hf_config import ARCHITECTURES
from moe_jax.models.config import LMConfig


@dataclasses.dataclass(frozen=True)
class Tensor:
  """One variable of the model and the checkpoint tensors it is made of.

  Attributes:
    collection, path: where it lives in the variables ("params" or "moe_bias", then the
      module path).
    shape: its shape in the model.
    names: the Hub checkpoint tensors, in the order `to_ours` takes them.
    to_ours: list of checkpoint arrays -> the variable; to_hf: the inverse.
    fused: optional (names, to_ours) of transformers' in-memory fused layout.
  """
  collection: str
  path: tuple[str, ...]
  shape: tuple[int, ...]
  names: tuple[str, ...]
  to_ours: Callable
  to_hf: Callable
  fused: Optional[tuple[tuple[str, ...], Callable]] = None

  @property
  def key(self) -> str:
    return "/".join((self.collection,) + self.path)


def _copy(path, shape, name, collection="params") -> Tensor:
  hf_shape = (math.prod(shape),) if len(shape) > 1 and "bias" in path[-1] else shape
  return Tensor(collection, path, tuple(shape), (name,), lambda ws: ws[0].reshape(shape),
                lambda x: [x.reshape(hf_shape)])


def _linear(path, shape, name, n_in=1) -> Tensor:
  """Kernel [in..., out...] <- torch weight [prod(out), prod(in)]."""
  n = math.prod(shape[:n_in])
  return Tensor("params", path, tuple(shape), (name,), lambda ws: ws[0].T.reshape(shape),
                lambda x: [x.reshape(n, -1).T])


def _experts(path, shape, names, fused=None) -> Tensor:
  """[E, in, out] <- E torch weights [out, in]."""
  return Tensor("params", path, tuple(shape), tuple(names),
                lambda ws: np.stack([w.T for w in ws]),
                lambda x: [x[e].T for e in range(shape[0])], fused)


def _proj(path, prefix, name, shape_in, shape_out, bias, n_in=1) -> list[Tensor]:
  out = [_linear(path + (name, "kernel"), shape_in + shape_out, f"{prefix}.{name}.weight", n_in)]
  if bias:
    out.append(_copy(path + (name, "bias"), shape_out, f"{prefix}.{name}.bias"))
  return out


def _norm(cfg: LMConfig, path, name, width) -> list[Tensor]:
  out = [_copy(path + ("scale",), (width,), f"{name}.weight")]
  if cfg.norm == "layernorm":
    out.append(_copy(path + ("bias",), (width,), f"{name}.bias"))
  return out


def _attention(cfg: LMConfig, path, prefix) -> list[Tensor]:
  d, h, g, k = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_width
  t = []
  if cfg.attention == "mla":
    n, r = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
    if cfg.q_lora_rank:
      q = cfg.q_lora_rank
      t += _proj(path, prefix, "q_a_proj", (d,), (q,), cfg.qkv_bias)
      t.append(_copy(path + ("q_a_norm", "scale"), (q,), f"{prefix}.q_a_layernorm.weight"))
      t += _proj(path, prefix, "q_b_proj", (q,), (h, n + r), False)
    else:
      t += _proj(path, prefix, "q_proj", (d,), (h, n + r), False)
    lat = cfg.kv_lora_rank
    t.append(_linear(path + ("kv_a_proj", "kernel"), (d, lat + r),
                     f"{prefix}.kv_a_proj_with_mqa.weight"))
    if cfg.qkv_bias:
      t.append(_copy(path + ("kv_a_proj", "bias"), (lat + r,),
                     f"{prefix}.kv_a_proj_with_mqa.bias"))
    t.append(_copy(path + ("kv_a_norm", "scale"), (lat,), f"{prefix}.kv_a_layernorm.weight"))
    t += _proj(path, prefix, "kv_b_proj", (lat,), (h, n + cfg.v_head_dim), False)
    t += _proj(path, prefix, "o_proj", (h, cfg.v_head_dim), (d,), cfg.o_bias, 2)
    return t
  for name, heads in (("q_proj", h), ("k_proj", g), ("v_proj", g)):
    t += _proj(path, prefix, name, (d,), (heads, k), cfg.qkv_bias)
  t += _proj(path, prefix, "o_proj", (h, k), (d,), cfg.o_bias, 2)
  if cfg.qk_norm != "none":
    full = cfg.qk_norm == "full"
    t.append(_copy(path + ("q_norm", "scale"), (h * k if full else k,), f"{prefix}.q_norm.weight"))
    t.append(_copy(path + ("k_norm", "scale"), (g * k if full else k,), f"{prefix}.k_norm.weight"))
  return t


def _mlp(path, prefix, d, f) -> list[Tensor]:
  return [_linear(path + ("wi_gate",), (d, f), f"{prefix}.gate_proj.weight"),
          _linear(path + ("wi_up",), (d, f), f"{prefix}.up_proj.weight"),
          _linear(path + ("wo",), (f, d), f"{prefix}.down_proj.weight")]


def _moe(cfg: LMConfig, family: str, path, layer) -> list[Tensor]:
  e, d, f = cfg.moe.num_experts, cfg.d_model, cfg.moe.d_ff
  w1w3 = family in ("mixtral", "phimoe")
  hub = f"{layer}.block_sparse_moe" if w1w3 else f"{layer}.mlp"
  names = ("w1", "w3", "w2") if w1w3 else ("gate_proj", "up_proj", "down_proj")
  fused = f"{layer}.mlp.experts"
  split = lambda lo, hi: (lambda ws: ws[0][:, lo:hi].transpose(0, 2, 1))
  t = [
      _experts(path + ("experts", "wi_gate"), (e, d, f),
               [f"{hub}.experts.{i}.{names[0]}.weight" for i in range(e)],
               ((f"{fused}.gate_up_proj",), split(0, f))),
      _experts(path + ("experts", "wi_up"), (e, d, f),
               [f"{hub}.experts.{i}.{names[1]}.weight" for i in range(e)],
               ((f"{fused}.gate_up_proj",), split(f, 2 * f))),
      _experts(path + ("experts", "wo"), (e, f, d),
               [f"{hub}.experts.{i}.{names[2]}.weight" for i in range(e)],
               ((f"{fused}.down_proj",), lambda ws: ws[0].transpose(0, 2, 1))),
  ]
  router = _linear(path + ("router", "gate", "kernel"), (d, e), f"{hub}.gate.weight")
  in_memory = f"{layer}.mlp.router.weight" if family == "phimoe" else f"{layer}.mlp.gate.weight"
  t.append(dataclasses.replace(router, fused=((in_memory,), router.to_ours)))
  if family == "deepseek_v3":
    t.append(_copy(path + ("router", "e_score_correction_bias"), (e,),
                   f"{hub}.gate.e_score_correction_bias", "moe_bias"))
    t += _mlp(path + ("shared_experts", "mlp"), f"{hub}.shared_experts", d, cfg.moe.shared_d_ff)
  elif cfg.moe.shared_d_ff:
    t += _mlp(path + ("shared_experts", "mlp"), f"{hub}.shared_expert", d, cfg.moe.shared_d_ff)
    t.append(_linear(path + ("shared_experts", "gate", "kernel"), (d, 1),
                     f"{hub}.shared_expert_gate.weight"))
  return t


def tensor_map(cfg: LMConfig, arch: str) -> list[Tensor]:
  """Every variable of `MoELM(cfg)` with its checkpoint tensors under architecture `arch`."""
  family = ARCHITECTURES[arch]
  d = cfg.d_model
  t = [_copy(("embed", "embedding"), (cfg.vocab_size, d), "model.embed_tokens.weight")]
  moe = set(cfg.moe_layer_ids())
  for i in range(cfg.num_layers):
    layer, path = f"model.layers.{i}", (f"layer_{i}",)
    t += _norm(cfg, path + ("attn_norm",), f"{layer}.input_layernorm", d)
    t += _attention(cfg, path + ("attn",), f"{layer}.self_attn")
    t += _norm(cfg, path + ("ffn_norm",), f"{layer}.post_attention_layernorm", d)
    if i in moe:
      t += _moe(cfg, family, path + ("moe",), layer)
    else:
      t += _mlp(path + ("mlp",), f"{layer}.mlp", d, cfg.d_ff)
  t += _norm(cfg, ("final_norm",), "model.norm", d)
  if cfg.tie_embeddings:
    if cfg.lm_head_bias:
      t.append(_copy(("lm_head_bias",), (cfg.vocab_size,), "lm_head.bias"))
  else:
    t.append(_linear(("lm_head", "kernel"), (d, cfg.vocab_size), "lm_head.weight"))
    if cfg.lm_head_bias:
      t.append(_copy(("lm_head", "bias"), (cfg.vocab_size,), "lm_head.bias"))
  return t
