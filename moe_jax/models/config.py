"""LMConfig: every shape and switch of the decoder LM, validated at construction.

Configs in `configs/` are ml_collections dicts; `LMConfig.from_dict(config.model)` turns one into
this frozen dataclass and rejects unknown or inconsistent fields with a message naming the field.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from moe_jax.layers.dispatch import DISPATCHES
from moe_jax.layers.experts import ACTIVATIONS
from moe_jax.layers.routers import ROUTERS
from moe_jax.utils.errors import ConfigError, check_choice, check_positive, require

DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Decoder-only LM with per-layer MoE or dense FFN.

  Shapes: vocab V, width D = d_model, H query heads and H_kv key/value heads of width
  head_dim (default D / H), dense FFN width d_ff, expert FFN width expert_d_ff.
  `moe_layers`: which layers get an MoE FFN: "all", "none", or a list of layer indices;
  `first_dense` layers at the bottom stay dense regardless (DeepSeek's first_k_dense_replace).
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
  moe_layers: Any = "all"
  first_dense: int = 0
  num_experts: int = 8
  top_k: int = 2
  expert_d_ff: int = 512
  router: str = "topk"
  normalize_topk: bool = True
  dispatch: str = "auto"
  gmm_impl: str = "auto"
  capacity_factor: float = 1.25
  n_group: int = 1
  topk_group: int = 1
  routed_scaling_factor: float = 1.0
  shared_d_ff: int = 0
  shared_gate: bool = False
  load_balance_coef: float = 0.01
  z_loss_coef: float = 0.0
  seq_balance_coef: float = 0.0
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    for field in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "d_ff",
                  "max_len"):
      check_positive(field, getattr(self, field))
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
    if self.moe_layer_ids():
      check_choice("router", self.router, ROUTERS)
      check_choice("dispatch", self.dispatch, DISPATCHES + ("auto",))
      check_positive("expert_d_ff", self.expert_d_ff)
      require(1 <= self.top_k <= self.num_experts, "top_k",
              f"must be in [1, num_experts={self.num_experts}], got {self.top_k}",
              "lower top_k or raise num_experts")

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
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
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
    gated = self.activation in ("swiglu", "geglu")
    per_expert = (3 if gated else 2) * self.d_model * self.expert_d_ff
    idle = self.num_experts - self.top_k
    return total - len(self.moe_layer_ids()) * idle * per_expert

  def moe_kwargs(self) -> dict[str, Any]:
    """Keyword arguments of `moe_jax.layers.moe.MoE` taken from this config."""
    return dict(num_experts=self.num_experts, top_k=self.top_k, d_ff=self.expert_d_ff,
                activation=self.activation, router=self.router,
                normalize_topk=self.normalize_topk, dispatch=self.dispatch,
                gmm_impl=self.gmm_impl, capacity_factor=self.capacity_factor,
                n_group=self.n_group, topk_group=self.topk_group,
                routed_scaling_factor=self.routed_scaling_factor,
                shared_d_ff=self.shared_d_ff, shared_gate=self.shared_gate,
                load_balance_coef=self.load_balance_coef, z_loss_coef=self.z_loss_coef,
                seq_balance_coef=self.seq_balance_coef)

  @classmethod
  def from_dict(cls, d: Any) -> "LMConfig":
    """Builds from a dict or ConfigDict; unknown keys raise a ConfigError naming them."""
    d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    require(not unknown, "model", f"unknown fields {unknown}",
            f"use only the fields of LMConfig: {', '.join(sorted(names))}")
    if isinstance(d.get("moe_layers"), list):
      d["moe_layers"] = tuple(d["moe_layers"])
    return cls(**d)

  def dense_twin(self) -> "LMConfig":
    """The dense model with the same active FFN width: d_ff = top_k * expert_d_ff (+ shared)."""
    return dataclasses.replace(self, moe_layers="none",
                               d_ff=self.top_k * self.expert_d_ff + self.shared_d_ff)
