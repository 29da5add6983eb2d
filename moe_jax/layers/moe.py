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

import flax.linen as nn
import jax
import jax.numpy as jnp

from moe_jax.layers import dispatch as dispatch_lib
from moe_jax.layers import losses
from moe_jax.layers.experts import Experts, SharedExperts
from moe_jax.layers.routers import make_router
from moe_jax.parallel import expert_parallel
from moe_jax.utils.errors import check_choice, require


class MoE(nn.Module):
  """Sparse MoE FFN: x[B, S, D] -> y[B, S, D].

  Attributes:
    num_experts, top_k, d_ff: E, K and each expert's hidden width F.
    activation: "swiglu" | "geglu" | "gelu" | "relu" | "silu".
    router: "topk" | "noisy_topk" | "expert_choice" | "sigmoid_group" | "sparsemixer".
    normalize_topk: renormalise the K kept weights (topk, sigmoid_group).
    dispatch: "dropless" | "capacity" | "dense" | "auto".
    gmm_impl: grouped matmul of the dropless dispatch: "tiled" | "ragged_dot" | "auto".
    capacity_factor: capacity dispatch/dense slots per expert = factor * T*K / E (0: no drops);
      for the expert-choice router, its c (average experts per token).
    n_group, topk_group, routed_scaling_factor: DeepSeek-V3 sigmoid_group routing.
    jitter_eps: sparsemixer's mask threshold.
    shared_d_ff: width of the always-on shared expert FFN (0: none); shared_gate: Qwen2-MoE's
      sigmoid gate on it.
    load_balance_coef, z_loss_coef, seq_balance_coef: weights of the Switch balance loss,
      router z-loss and DeepSeek-V3 sequence-wise balance loss in 'aux_loss'.
  """
  num_experts: int
  top_k: int
  d_ff: int
  activation: str = "swiglu"
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
  load_balance_coef: float = 0.0
  z_loss_coef: float = 0.0
  seq_balance_coef: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def __post_init__(self):
    check_choice("dispatch", self.dispatch, dispatch_lib.DISPATCHES + ("auto",))
    require(self.num_experts >= 1, "num_experts", f"must be >= 1, got {self.num_experts}",
            "set num_experts to a positive integer")
    require(self.router != "expert_choice" or self.seq_balance_coef == 0, "seq_balance_coef",
            "the sequence balance loss needs token-choice routing",
            "set seq_balance_coef=0 with router='expert_choice'")
    super().__post_init__()

  def router_module(self, name: str | None) -> nn.Module:
    """The router this layer's fields describe (named `name`; None gives an unbound copy)."""
    return make_router(self.router, self.num_experts, self.top_k,
                       normalize=self.normalize_topk, capacity_factor=self.capacity_factor,
                       n_group=self.n_group, topk_group=self.topk_group,
                       routed_scaling_factor=self.routed_scaling_factor,
                       jitter_eps=self.jitter_eps, param_dtype=self.param_dtype,
                       module_name=name)

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    b, s, d = x.shape
    tokens = x.reshape(b * s, d)
    routing = self.router_module("router")(tokens, deterministic=deterministic)
    experts = Experts(self.num_experts, self.d_ff, self.activation, self.dtype,
                      self.param_dtype, name="experts")
    parallel = expert_parallel.active_axes()
    if parallel and not self.is_initializing():  # init creates the full weights as usual
      cf = None if self.dispatch in ("dropless", "auto") else self.capacity_factor
      y, stats = expert_parallel.dispatch(
          x, routing, nn.unbox(self.variables["params"]["experts"]), experts, self.num_experts,
          cf, *parallel)
    else:
      y, stats = dispatch_lib.dispatch(self.dispatch, tokens.astype(self.dtype), routing,
                                       experts, self.num_experts, gmm_impl=self.gmm_impl,
                                       capacity_factor=self.capacity_factor)
      y = y.reshape(b, s, d)
    if self.shared_d_ff:
      y = y + SharedExperts(self.shared_d_ff, self.activation, self.shared_gate, self.dtype,
                            self.param_dtype, name="shared_experts")(x)

    self.sow("intermediates", "router_probs", routing.probs)
    self.sow("intermediates", "expert_index", routing.expert)
    self.sow("intermediates", "tokens_per_expert", stats.tokens_per_expert)
    self.sow("intermediates", "dropped", stats.dropped)
    self.sow("intermediates", "expert_zero_frac", stats.zero_frac)
    self._sow_losses(routing, b, s)
    return y.astype(x.dtype)

  def _sow_losses(self, routing, b: int, s: int) -> None:
    total = jnp.zeros((), jnp.float32)
    if self.load_balance_coef:
      total += self.load_balance_coef * losses.load_balancing_loss(routing.probs,
                                                                   routing.expert)
    if self.z_loss_coef:
      total += self.z_loss_coef * losses.router_z_loss(routing.logits)
    if self.seq_balance_coef:
      scores = routing.probs.reshape(b, s, -1)
      total += self.seq_balance_coef * losses.sequence_balance_loss(
          scores, routing.expert.reshape(b, s, routing.top_k))
    if self.load_balance_coef or self.z_loss_coef or self.seq_balance_coef:
      self.sow("aux_loss", "moe_loss", total)
