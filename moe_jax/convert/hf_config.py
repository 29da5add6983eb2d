"""Hugging Face config.json <-> LMConfig for the supported MoE families.

Families (config.json "architectures"[0]): MixtralForCausalLM, Qwen2MoeForCausalLM,
Qwen3MoeForCausalLM, OlmoeForCausalLM, PhimoeForCausalLM, DeepseekV3ForCausalLM. Each family's
fields are read by name; a value this decoder cannot reproduce (another activation, a RoPE
scaling it does not implement, quantised weights, ...) raises a ConfigError naming the field
instead of being ignored. `to_hf` writes a config.json that transformers loads, and refuses
an LMConfig the family cannot express.
"""
from __future__ import annotations

from typing import Any

from moe_jax.models.config import LMConfig, rope_scaling_tuple
from moe_jax.utils.errors import ConfigError, require

ARCHITECTURES = {
    "MixtralForCausalLM": "mixtral",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "OlmoeForCausalLM": "olmoe",
    "PhimoeForCausalLM": "phimoe",
    "DeepseekV3ForCausalLM": "deepseek_v3",
}


def _get(hf: dict, *names: str, default: Any = None) -> Any:
  for name in names:
    if hf.get(name) is not None:
      return hf[name]
  return default


def _rope(hf: dict, default_theta: float) -> dict:
  """rope_theta / rope_type / rope_scaling from `rope_parameters` (transformers 5) or the older
  top-level `rope_theta` + `rope_scaling`."""
  params = dict(hf.get("rope_parameters") or {})
  legacy = dict(hf.get("rope_scaling") or {})
  params = {**legacy, **params}
  theta = float(_get(params, "rope_theta", default=_get(hf, "rope_theta", default=default_theta)))
  kind = params.pop("rope_type", None) or params.pop("type", None) or "default"
  params.pop("type", None)
  params.pop("rope_theta", None)
  require(kind in ("default", "yarn", "longrope"), "rope_parameters.rope_type",
          f"RoPE scaling {kind!r} is not implemented",
          "use a checkpoint with default, yarn or longrope RoPE, or add the scaling to "
          "moe_jax.models.lm.rope_frequencies")
  if kind == "default":
    return dict(rope_theta=theta)
  if kind == "yarn" and params.get("factor") is None:
    params["factor"] = hf["max_position_embeddings"] / params["original_max_position_embeddings"]
  if kind == "longrope":
    short, long = params.get("short_mscale"), params.get("long_mscale")
    require(long == short, "rope_parameters.long_mscale",
            f"{long} differs from short_mscale={short}; only the short-context scaling is "
            "implemented", "use equal mscales (as Phi-3.5-MoE)")
  return dict(rope_theta=theta, rope_type=kind, rope_scaling=rope_scaling_tuple(params))


def _check_silu(hf: dict) -> None:
  act = _get(hf, "hidden_act", default="silu")
  require(act == "silu", "hidden_act", f"{act!r} is not supported (experts are SwiGLU)",
          "use a checkpoint with hidden_act='silu'")


def _common(hf: dict, default_theta: float) -> dict:
  heads = hf["num_attention_heads"]
  quant = hf.get("quantization_config") or {}
  require(not quant or quant.get("format") == "pack-quantized", "quantization_config",
          f"{quant.get('format') or quant.get('quant_method')!r} checkpoints are not supported "
          "(pack-quantized integer weights are)",
          "dequantise the weights to bf16/fp32 first (e.g. DeepSeek's fp8_cast_bf16.py)")
  _check_silu(hf)
  head_dim = _get(hf, "head_dim")
  if head_dim is not None and head_dim * heads == hf["hidden_size"]:
    head_dim = None  # the default width, d_model / heads
  return dict(
      vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
      num_heads=heads, num_kv_heads=_get(hf, "num_key_value_heads", default=heads),
      head_dim=head_dim, max_len=hf.get("max_position_embeddings", 4096),
      norm_eps=float(_get(hf, "rms_norm_eps", default=1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)), scale_tied_logits=False,
      activation="swiglu", **_rope(hf, default_theta))


def _moe(hf: dict, num_experts: int, d_ff: int, **fields) -> dict:
  """The `moe` section: dropless top-k routing, no balance loss, unless `fields` say otherwise."""
  return dict(num_experts=num_experts, top_k=hf["num_experts_per_tok"], d_ff=d_ff,
              router="topk", capacity_factor=0.0, load_balance_coef=0.0, **fields)


def _sliding(hf: dict, flag: str | None) -> int:
  """The window of every layer: `sliding_window` (null: none), if `flag` (when given) is set."""
  if flag is not None and not hf.get(flag):
    return 0
  return int(hf.get("sliding_window") or 0)


def _qwen_moe_layers(hf: dict) -> Any:
  """Qwen: layer i is MoE unless listed in mlp_only_layers, when (i + 1) % step == 0."""
  step = hf.get("decoder_sparse_step", 1) or 1
  only_mlp = set(hf.get("mlp_only_layers") or ())
  ids = tuple(i for i in range(hf["num_hidden_layers"])
              if i not in only_mlp and (i + 1) % step == 0)
  return "all" if len(ids) == hf["num_hidden_layers"] else ids


def from_hf(hf: dict) -> tuple[LMConfig, str]:
  """config.json dict -> (LMConfig, architecture name)."""
  try:
    return _from_hf(hf)
  except KeyError as e:
    raise ConfigError(f"{e.args[0]}: missing from config.json. Fix: add the field (see the "
                      "family's transformers configuration class)") from None


def _from_hf(hf: dict) -> tuple[LMConfig, str]:
  archs = hf.get("architectures") or []
  arch = archs[0] if archs else None
  require(arch in ARCHITECTURES, "architectures",
          f"unknown architecture {arch!r}", f"use one of {', '.join(ARCHITECTURES)}")
  family = ARCHITECTURES[arch]
  if family == "mixtral":
    c = _common(hf, 1e6)
    c.update(d_ff=hf["intermediate_size"], sliding_window=_sliding(hf, None),
             moe=_moe(hf, hf["num_local_experts"], hf["intermediate_size"],
                      normalize_topk=True))
  elif family in ("qwen2_moe", "qwen3_moe"):
    c = _common(hf, 1e4)
    moe = dict(num_experts=_get(hf, "num_experts", "num_local_experts"),
               d_ff=hf["moe_intermediate_size"],
               normalize_topk=bool(hf.get("norm_topk_prob", False)))
    c.update(d_ff=hf["intermediate_size"], moe_layers=_qwen_moe_layers(hf),
             sliding_window=_sliding(hf, "use_sliding_window"))
    if family == "qwen2_moe":
      require(not hf.get("use_sliding_window"), "use_sliding_window",
              "Qwen2-MoE's sliding window on alternate layers is not supported",
              "set use_sliding_window=false")
      c.update(qkv_bias=bool(hf.get("qkv_bias", True)))
      moe.update(shared_d_ff=hf["shared_expert_intermediate_size"], shared_gate=True)
    else:
      bias = bool(hf.get("attention_bias", False))
      c.update(qkv_bias=bias, o_bias=bias, qk_norm="head")
    c["moe"] = _moe(hf, **moe)
  elif family == "olmoe":
    c = _common(hf, 1e4)
    bias = bool(hf.get("attention_bias", False))
    c.update(d_ff=hf["intermediate_size"], qkv_bias=bias, o_bias=bias, qk_norm="full",
             clip_qkv=float(hf.get("clip_qkv") or 0.0), head_dim=None,
             moe=_moe(hf, hf["num_experts"], hf["intermediate_size"],
                      normalize_topk=bool(hf.get("norm_topk_prob", False))))
  elif family == "phimoe":
    c = _common(hf, 1e6)
    require(hf["num_experts_per_tok"] == 2, "num_experts_per_tok",
            f"sparsemixer routes 2 experts, got {hf['num_experts_per_tok']}",
            "use num_experts_per_tok=2")
    bias = bool(hf.get("attention_bias", False))
    moe = _moe(hf, hf["num_local_experts"], hf["intermediate_size"])
    moe.update(router="sparsemixer", jitter_eps=float(hf.get("router_jitter_noise", 0.01)))
    c.update(d_ff=hf["intermediate_size"], qkv_bias=bias, o_bias=bias, norm="layernorm",
             lm_head_bias=bool(hf.get("lm_head_bias", False)),
             sliding_window=_sliding(hf, None), moe=moe)
  else:  # deepseek_v3
    c = _common(hf, 1e4)
    for field, want in (("scoring_func", "sigmoid"), ("topk_method", "noaux_tc"),
                        ("moe_layer_freq", 1)):
      require(hf.get(field, want) == want, field,
              f"{hf.get(field)!r} is not DeepSeek-V3's routing", f"use {field}={want!r}")
    bias = bool(hf.get("attention_bias", False))
    moe = _moe(hf, hf["n_routed_experts"], hf["moe_intermediate_size"])
    moe.update(shared_d_ff=hf["moe_intermediate_size"] * (hf.get("n_shared_experts") or 0),
               router="sigmoid_group", n_group=hf.get("n_group") or 1,
               topk_group=hf.get("topk_group") or 1,
               routed_scaling_factor=float(hf.get("routed_scaling_factor", 1.0)),
               normalize_topk=bool(hf.get("norm_topk_prob", True)))
    c.update(d_ff=hf["intermediate_size"], moe=moe, first_dense=hf.get("first_k_dense_replace") or 0, attention="mla",
             q_lora_rank=hf.get("q_lora_rank") or 0, kv_lora_rank=hf["kv_lora_rank"],
             qk_nope_head_dim=hf["qk_nope_head_dim"], qk_rope_head_dim=hf["qk_rope_head_dim"],
             v_head_dim=hf["v_head_dim"], rope_interleave=bool(hf.get("rope_interleave", True)),
             qkv_bias=bias, o_bias=bias, head_dim=None, num_kv_heads=hf["num_attention_heads"])
  return LMConfig.from_dict(c, path=""), arch


def infer_architecture(cfg: LMConfig) -> str:
  """The family whose layout an LMConfig has (for saving a model not loaded from a checkpoint)."""
  if cfg.attention == "mla":
    return "DeepseekV3ForCausalLM"
  if cfg.norm == "layernorm" or cfg.moe.router == "sparsemixer":
    return "PhimoeForCausalLM"
  if cfg.qk_norm == "full":
    return "OlmoeForCausalLM"
  if cfg.qk_norm == "head":
    return "Qwen3MoeForCausalLM"
  if cfg.moe.shared_d_ff:
    return "Qwen2MoeForCausalLM"
  return "MixtralForCausalLM"


def _expect(cfg: LMConfig, arch: str, **wanted) -> None:
  """Requires each field (`moe__x` names cfg.moe.x) to have the value `arch` needs."""
  for key, value in wanted.items():
    section, _, field = key.rpartition("__")
    got = getattr(cfg.moe if section else cfg, field)
    name = f"moe.{field}" if section else field
    require(got == value, name, f"{arch} needs {name}={value!r}, the model has {got!r}",
            "save as another architecture or change the model")


def _rope_out(cfg: LMConfig) -> dict:
  params = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.rope_scaling}
  return {"rope_parameters": {"rope_theta": cfg.rope_theta, "rope_type": cfg.rope_type, **params}}


def to_hf(cfg: LMConfig, arch: str, dtype: str) -> dict:
  """LMConfig -> config.json dict of `arch`; ConfigError if the family cannot express cfg."""
  require(arch in ARCHITECTURES, "architecture", f"unknown architecture {arch!r}",
          f"use one of {', '.join(ARCHITECTURES)}")
  family = ARCHITECTURES[arch]
  _expect(cfg, arch, activation="swiglu")
  require(not cfg.tie_embeddings or not cfg.scale_tied_logits, "scale_tied_logits",
          "Hugging Face tied heads do not scale the logits", "set scale_tied_logits=False")
  moe = cfg.moe_layer_ids()
  hf = dict(architectures=[arch], model_type=family, vocab_size=cfg.vocab_size,
            hidden_size=cfg.d_model, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
            max_position_embeddings=cfg.max_len, rms_norm_eps=cfg.norm_eps, hidden_act="silu",
            tie_word_embeddings=cfg.tie_embeddings, num_experts_per_tok=cfg.moe.top_k,
            dtype=dtype, **_rope_out(cfg))
  if family != "deepseek_v3":
    _expect(cfg, arch, attention="gqa", rope_interleave=False)
  if family != "olmoe":
    hf["head_dim"] = cfg.head_width
  if family in ("mixtral", "phimoe"):
    _expect(cfg, arch, moe__shared_d_ff=0, qk_norm="none", clip_qkv=0.0)
    require(len(moe) == cfg.num_layers, "moe_layers", f"{arch} has an MoE FFN in every layer",
            "use moe_layers='all'")
    hf.update(num_local_experts=cfg.moe.num_experts, intermediate_size=cfg.moe.d_ff,
              sliding_window=cfg.sliding_window or None)
  if family == "mixtral":
    _expect(cfg, arch, moe__router="topk", moe__normalize_topk=True, qkv_bias=False, o_bias=False,
            norm="rmsnorm", lm_head_bias=False)
  elif family == "phimoe":
    _expect(cfg, arch, moe__router="sparsemixer", qkv_bias=cfg.o_bias, norm="layernorm")
    hf.update(router_jitter_noise=cfg.moe.jitter_eps, attention_bias=cfg.qkv_bias,
              lm_head_bias=cfg.lm_head_bias, input_jitter_noise=0.0)
  elif family in ("qwen2_moe", "qwen3_moe"):
    _expect(cfg, arch, moe__router="topk", norm="rmsnorm", lm_head_bias=False, clip_qkv=0.0)
    hf.update(num_experts=cfg.moe.num_experts, moe_intermediate_size=cfg.moe.d_ff,
              intermediate_size=cfg.d_ff, norm_topk_prob=cfg.moe.normalize_topk,
              decoder_sparse_step=1,
              mlp_only_layers=[i for i in range(cfg.num_layers) if i not in moe],
              use_sliding_window=bool(cfg.sliding_window),
              sliding_window=cfg.sliding_window or None)
    if family == "qwen2_moe":
      _expect(cfg, arch, qk_norm="none", moe__shared_gate=True, o_bias=False, sliding_window=0)
      hf.update(qkv_bias=cfg.qkv_bias, shared_expert_intermediate_size=cfg.moe.shared_d_ff)
    else:
      _expect(cfg, arch, qk_norm="head", moe__shared_d_ff=0, o_bias=cfg.qkv_bias)
      hf.update(attention_bias=cfg.qkv_bias)
  elif family == "olmoe":
    _expect(cfg, arch, moe__router="topk", norm="rmsnorm", qk_norm="full", moe__shared_d_ff=0,
            o_bias=cfg.qkv_bias, lm_head_bias=False, sliding_window=0)
    require(cfg.head_width * cfg.num_heads == cfg.d_model, "head_dim",
            "OLMoE's head width is d_model / num_heads", "set head_dim=None")
    require(len(moe) == cfg.num_layers, "moe_layers", f"{arch} has an MoE FFN in every layer",
            "use moe_layers='all'")
    hf.update(num_experts=cfg.moe.num_experts, intermediate_size=cfg.moe.d_ff,
              norm_topk_prob=cfg.moe.normalize_topk, attention_bias=cfg.qkv_bias,
              clip_qkv=cfg.clip_qkv or None)
  else:  # deepseek_v3
    _expect(cfg, arch, attention="mla", moe__router="sigmoid_group", norm="rmsnorm",
            qkv_bias=cfg.o_bias, lm_head_bias=False, sliding_window=0, moe__shared_gate=False)
    require(moe == tuple(range(cfg.first_dense, cfg.num_layers)), "moe_layers",
            "DeepSeek-V3 has MoE FFNs in every layer from first_k_dense_replace on",
            "use moe_layers='all' with first_dense")
    m = cfg.moe
    require(m.shared_d_ff % m.d_ff == 0, "moe.shared_d_ff",
            f"{m.shared_d_ff} is not a multiple of moe.d_ff={m.d_ff}",
            "use n_shared_experts * moe.d_ff")
    hf.update(n_routed_experts=m.num_experts, moe_intermediate_size=m.d_ff,
              intermediate_size=cfg.d_ff, n_shared_experts=m.shared_d_ff // m.d_ff,
              routed_scaling_factor=m.routed_scaling_factor, n_group=m.n_group,
              topk_group=m.topk_group, norm_topk_prob=m.normalize_topk,
              first_k_dense_replace=cfg.first_dense, q_lora_rank=cfg.q_lora_rank or None,
              kv_lora_rank=cfg.kv_lora_rank, qk_nope_head_dim=cfg.qk_nope_head_dim,
              qk_rope_head_dim=cfg.qk_rope_head_dim, v_head_dim=cfg.v_head_dim,
              rope_interleave=cfg.rope_interleave, attention_bias=cfg.qkv_bias,
              num_key_value_heads=cfg.num_heads)
  return hf
