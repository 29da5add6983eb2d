"""The sparse MoE feed-forward layer: router + dispatch + experts (+ shared experts).

Legend: B batch, S sequence, T = B*S tokens, D model width, E experts, K experts per token.

  y = sum_{e in TopK(x)} g_e(x) FFN_e(x)  [+ shared(x)]        (Shazeer et al. 2017, eq. 1)

With experts sharded over a mesh axis (the logical axis `expert` mapped to a mesh axis of size
> 1 by the rules in effect), the experts run expert-parallel: moe_jax/parallel/expert_parallel.py.

Routing diagnostics are sown into the 'intermediates' collection (free unless the caller makes
it mutable): router_probs [T, E], expert_index [A], tokens_per_expert [E], dropped (scalar),
expert_zero_frac [E]. The weighted auxiliary loss is sown into 'aux_loss' as `moe_loss`; a
trainer sums every leaf of that collection into the objective.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from moe_jax.layers import dispatch as dispatch_lib
from moe_jax.layers import losses
from moe_jax.layers.experts import ACTIVATIONS, Experts, SharedExperts
from moe_jax.layers.grouped_matmul import IMPLS as GMM_IMPLS
from moe_jax.layers.routers import ROUTERS, make_router
from moe_jax.parallel import expert_parallel
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require


@dataclasses.dataclass(frozen=True)
class MoEConfig(Section):
  """Every field of the MoE layer, declared once (the `model.moe` section of an LM config).

  num_experts, top_k, d_ff: E, K and each expert's hidden width F.
  router: "topk" | "noisy_topk" | "expert_choice" | "sigmoid_group" | "sparsemixer".
  normalize_topk: renormalise the K kept weights (topk, sigmoid_group).
  dispatch: "dropless" | "capacity" | "dense" | "auto".
  gmm_impl: grouped matmul of the dropless dispatch: "tiled" | "ragged_dot" | "auto".
  capacity_factor: capacity dispatch/dense slots per expert = factor * T*K / E (0: no drops);
    for the expert-choice router, its c (average experts per token).
  n_group, topk_group, routed_scaling_factor: DeepSeek-V3 sigmoid_group routing.
  jitter_eps: sparsemixer's mask threshold (PhiMoE's router_jitter_noise).
  shared_d_ff: width of the always-on shared expert FFN (0: none); shared_gate: Qwen2-MoE's
    sigmoid gate on it.
  load_balance_coef, z_loss_coef, seq_balance_coef: weights of the Switch balance loss,
    router z-loss and DeepSeek-V3 sequence-wise balance loss in 'aux_loss'.
  """
  num_experts: int = 8
  top_k: int = 2
  d_ff: int = 512
  router: str = "topk"
  normalize_topk: bool = True
  dispatch: str = "auto"
  gmm_impl: str = "auto"
  capacity_factor: float = 1.25
  n_group: int = 1
  topk_group: int = 1
  routed_scaling_factor: float = 1.0
  jitter_eps: float = 0.01
  shared_d_ff: int = 0
  shared_gate: bool = False
  load_balance_coef: float = 0.01
  z_loss_coef: float = 0.0
  seq_balance_coef: float = 0.0

  def __post_init__(self):
    check_positive("num_experts", self.num_experts)
    check_positive("d_ff", self.d_ff)
    require(1 <= self.top_k <= self.num_experts, "top_k",
            f"must be in [1, num_experts={self.num_experts}], got {self.top_k}",
            "lower top_k or raise num_experts")
    check_choice("router", self.router, ROUTERS)
    check_choice("dispatch", self.dispatch, dispatch_lib.DISPATCHES + ("auto",))
    check_choice("gmm_impl", self.gmm_impl, GMM_IMPLS + ("auto",))
    require(self.shared_d_ff >= 0, "shared_d_ff", f"must be >= 0, got {self.shared_d_ff}",
            "use 0 for no shared expert")
    require(self.router != "expert_choice" or self.seq_balance_coef == 0, "seq_balance_coef",
            "the sequence balance loss needs token-choice routing",
            "set seq_balance_coef=0 with router='expert_choice'")

  def active_params(self, d_model: int, activation: str) -> int:
    """Expert parameters one token uses: K routed experts and the shared expert."""
    per_width = (3 if ACTIVATIONS[activation][1] else 2) * d_model
    return per_width * (self.top_k * self.d_ff + self.shared_d_ff)


class MoE(nn.Module):
  """Sparse MoE FFN: x[B, S, D] -> y[B, S, D].

  Attributes:
    config: the layer's fields (MoEConfig).
    activation: "swiglu" | "geglu" | "gelu" | "relu" | "silu" (of the routed and shared experts).
  """
  config: MoEConfig
  activation: str = "swiglu"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def router_module(self, name: str | None) -> nn.Module:
    """The router this layer's fields describe (named `name`; None gives an unbound copy)."""
    c = self.config
    return make_router(c.router, c.num_experts, c.top_k,
                       normalize=c.normalize_topk, capacity_factor=c.capacity_factor,
                       n_group=c.n_group, topk_group=c.topk_group,
                       routed_scaling_factor=c.routed_scaling_factor,
                       jitter_eps=c.jitter_eps, param_dtype=self.param_dtype,
                       module_name=name)

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    c = self.config
    require(x.ndim == 3, "MoE input", f"expected x[batch, seq, width], got shape {x.shape}",
            "reshape the tokens to [batch, seq, width]")
    b, s, d = x.shape
    tokens = x.reshape(b * s, d)
    routing = self.router_module("router")(tokens, deterministic=deterministic)
    experts = Experts(c.num_experts, c.d_ff, self.activation, self.dtype,
                      self.param_dtype, name="experts")
    parallel = expert_parallel.active_axes()
    if parallel and not self.is_initializing():  # init creates the full weights as usual
      cf = None if c.dispatch in ("dropless", "auto") else c.capacity_factor
      y, stats = expert_parallel.dispatch(
          x, routing, nn.unbox(self.variables["params"]["experts"]), experts, c.num_experts,
          cf, *parallel)
    else:
      y, stats = dispatch_lib.dispatch(c.dispatch, tokens.astype(self.dtype), routing,
                                       experts, c.num_experts, gmm_impl=c.gmm_impl,
                                       capacity_factor=c.capacity_factor)
      y = y.reshape(b, s, d)
    if c.shared_d_ff:
      y = y + SharedExperts(c.shared_d_ff, self.activation, c.shared_gate, self.dtype,
                            self.param_dtype, name="shared_experts")(x)

    self.sow("intermediates", "router_probs", routing.probs)
    self.sow("intermediates", "expert_index", routing.expert)
    self.sow("intermediates", "tokens_per_expert", stats.tokens_per_expert)
    self.sow("intermediates", "dropped", stats.dropped)
    self.sow("intermediates", "expert_zero_frac", stats.zero_frac)
    self._sow_losses(routing, b, s)
    return y.astype(x.dtype)

  def _sow_losses(self, routing, b: int, s: int) -> None:
    c = self.config
    total = jnp.zeros((), jnp.float32)
    if c.load_balance_coef:
      total += c.load_balance_coef * losses.load_balancing_loss(routing.probs,
                                                                   routing.expert)
    if c.z_loss_coef:
      total += c.z_loss_coef * losses.router_z_loss(routing.logits)
    if c.seq_balance_coef:
      scores = routing.probs.reshape(b, s, -1)
      total += c.seq_balance_coef * losses.sequence_balance_loss(
          scores, routing.expert.reshape(b, s, routing.top_k))
    if c.load_balance_coef or c.z_loss_coef or c.seq_balance_coef:
      self.sow("aux_loss", "moe_loss", total)
