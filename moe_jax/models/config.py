"""LMConfig: every shape and switch of the decoder LM, validated at construction.

The `model` section of an LM config; its MoE layers' fields are the nested `moe` section
(moe_jax.layers.moe.MoEConfig). `LMConfig.from_dict(d)` rejects unknown or inconsistent fields
with a message naming the field (moe_jax/utils/config.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from moe_jax.layers.experts import ACTIVATIONS
from moe_jax.layers.moe import MoEConfig
from moe_jax.utils.config import Section, build
from moe_jax.utils.errors import ConfigError, check_choice, check_positive, require

DTYPES = ("float32", "bfloat16", "float16")
ATTENTIONS = ("gqa", "mla")
QK_NORMS = ("none", "head", "full")
NORMS = ("rmsnorm", "layernorm")
ROPE_TYPES = ("default", "yarn", "longrope")


def rope_scaling_tuple(params: dict) -> tuple:
  """RoPE parameters as a hashable, sorted tuple of (name, value); lists become tuples."""
  return tuple(sorted((str(k), tuple(v) if isinstance(v, (list, tuple)) else v)
                      for k, v in params.items() if v is not None))


@dataclasses.dataclass(frozen=True)
class LMConfig(Section):
  """Decoder-only LM with per-layer MoE or dense FFN.

  Shapes: vocab V, width D = d_model, H query heads and H_kv key/value heads of width
  head_dim (default D / H), dense FFN width d_ff; the MoE layers' experts: `moe` (MoEConfig).
  `moe_layers`: which layers get an MoE FFN: "all", "none", or a list of layer indices;
  `first_dense` layers at the bottom stay dense regardless (DeepSeek's first_k_dense_replace).

  Variants of the published MoE LMs (moe_jax/convert reads them from a checkpoint's config):
    attention: "gqa" (grouped-query) or "mla" (DeepSeek-V2/V3 multi-head latent attention with
      q_lora_rank (0: no query compression), kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim,
      v_head_dim).
    qkv_bias / o_bias: biases on the q/k/v (MLA: the down-projections) and output projections.
    qk_norm: "none", "head" (RMSNorm over each head's K features, Qwen3-MoE) or "full" (over all
      heads' features, OLMoE); clip_qkv > 0 clamps q, k, v to [-clip, clip] (OLMoE).
    sliding_window > 0: each query sees the last `sliding_window` positions only (Mistral).
    rope_interleave: RoPE rotates pairs (x0, x1), (x2, x3), ... instead of the two halves.
    rope_type / rope_scaling: "default", or "yarn" (DeepSeek-V3) / "longrope" (Phi-3.5-MoE)
      with the checkpoint's RoPE parameters as sorted (name, value) pairs, lists as tuples.
    norm: "rmsnorm" or "layernorm" (with bias; PhiMoE). lm_head_bias: a bias on the output head.
    scale_tied_logits: tied logits are divided by sqrt(d_model) (this repo's training default);
      Hugging Face models do not scale.
  `causal_blocks`: query blocks of causal self-attention over default positions without a cache
  (training, scoring); each block skips the fully masked keys after it. Speed only.
  """
  vocab_size: int = 256
  d_model: int = 256
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 4
  head_dim: Optional[int] = None
  d_ff: int = 1024
  activation: str = "swiglu"
  max_len: int = 512
  rope_theta: float = 10000.0
  norm_eps: float = 1e-6
  tie_embeddings: bool = True
  moe_layers: str | tuple[int, ...] = "all"
  first_dense: int = 0
  moe: MoEConfig = MoEConfig()
  attention: str = "gqa"
  qkv_bias: bool = False
  o_bias: bool = False
  qk_norm: str = "none"
  clip_qkv: float = 0.0
  sliding_window: int = 0
  causal_blocks: int = 1
  rope_interleave: bool = False
  rope_type: str = "default"
  rope_scaling: tuple = ()
  q_lora_rank: int = 0
  kv_lora_rank: int = 512
  qk_nope_head_dim: int = 128
  qk_rope_head_dim: int = 64
  v_head_dim: int = 128
  norm: str = "rmsnorm"
  lm_head_bias: bool = False
  scale_tied_logits: bool = True
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    for field in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "d_ff",
                  "max_len", "causal_blocks"):
      check_positive(field, getattr(self, field))
    if self.head_dim is not None:
      check_positive("head_dim", self.head_dim)
    check_positive("norm_eps", self.norm_eps)  # eps <= 0: a zero row normalises to NaN
    if self.head_dim is None:
      require(self.d_model % self.num_heads == 0, "num_heads",
              f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}",
              "choose num_heads dividing d_model, or set head_dim explicitly")
    require(self.num_heads % self.num_kv_heads == 0, "num_kv_heads",
            f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}",
            "choose num_kv_heads dividing num_heads")
    check_choice("activation", self.activation, ACTIVATIONS)
    check_choice("dtype", self.dtype, DTYPES)
    check_choice("param_dtype", self.param_dtype, DTYPES)
    check_choice("attention", self.attention, ATTENTIONS)
    check_choice("qk_norm", self.qk_norm, QK_NORMS)
    check_choice("norm", self.norm, NORMS)
    check_choice("rope_type", self.rope_type, ROPE_TYPES)
    needed = {"default": (), "yarn": ("factor", "original_max_position_embeddings"),
              "longrope": ("short_factor", "original_max_position_embeddings")}[self.rope_type]
    missing = [k for k in needed if k not in dict(self.rope_scaling)]
    require(not missing, "rope_scaling", f"{self.rope_type} RoPE needs {missing}",
            "give them as (name, value) pairs")
    require(self.sliding_window >= 0, "sliding_window",
            f"must be >= 0, got {self.sliding_window}", "use 0 for full causal attention")
    if self.attention == "mla":
      for field in ("kv_lora_rank", "qk_rope_head_dim", "v_head_dim"):
        check_positive(field, getattr(self, field))
      require(self.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim",
              f"RoPE needs an even width, got {self.qk_rope_head_dim}", "use an even width")
      require(self.qk_norm == "none", "qk_norm", "MLA has no q/k norms",
              "set qk_norm='none' with attention='mla'")
    self.moe_layer_ids()  # checks moe_layers

  @property
  def head_width(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  def moe_layer_ids(self) -> tuple[int, ...]:
    """Indices of the layers with an MoE FFN."""
    spec = self.moe_layers
    if spec == "all":
      ids = range(self.num_layers)
    elif spec == "none":
      ids = ()
    elif isinstance(spec, tuple):
      ids = tuple(int(i) for i in spec)
      bad = [i for i in ids if not 0 <= i < self.num_layers]
      require(not bad, "moe_layers", f"layer ids {bad} are outside [0, {self.num_layers})",
              "list existing layer indices")
    else:
      raise ConfigError(f"moe_layers: unknown value {spec!r}. Fix: use 'all', 'none' or a "
                        "list of layer indices")
    return tuple(i for i in ids if i >= self.first_dense)

  def active_params(self, total: int) -> int:
    """Parameters used per token out of `total`: less the E - K idle experts of each MoE layer."""
    gated = ACTIVATIONS[self.activation][1]
    per_expert = (3 if gated else 2) * self.d_model * self.moe.d_ff
    idle = self.moe.num_experts - self.moe.top_k
    return total - len(self.moe_layer_ids()) * idle * per_expert

  @classmethod
  def from_dict(cls, d: Any, path: str = "model") -> "LMConfig":
    """Builds from a (nested) dict or ConfigDict; unknown keys raise a ConfigError naming them."""
    d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
    if d.get("rope_scaling"):
      d["rope_scaling"] = rope_scaling_tuple(dict(d["rope_scaling"]))
    return build(cls, d, path)

  def dense_twin(self) -> "LMConfig":
    """The dense model with the same active FFN width: d_ff = top_k * expert width (+ shared)."""
    return dataclasses.replace(self, moe_layers="none",
                               d_ff=self.moe.top_k * self.moe.d_ff + self.moe.shared_d_ff)
