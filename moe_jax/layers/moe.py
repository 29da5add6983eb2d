"""The sparse MoE feed-forward layer: router + dispatch + experts (+ shared experts).

Legend: B batch, S sequence, T = B*S tokens, D model width, E experts, K experts per token.

  y = sum_{e in TopK(x)} g_e(x) FFN_e(x)  [+ shared(x)]        (Shazeer et al. 2017, eq. 1)

With experts sharded over a mesh axis (the logical axis `expert` mapped to a mesh axis of size
> 1 by the rules in effect), the experts run expert-parallel: moe_jax/parallel/expert_parallel.py.

Routing diagnostics are sown into the 'intermediates' collection (free unless the caller makes
it mutable): router_probs [T, E], expert_index [A], tokens_per_expert [E], dropped (scalar),
expert_zero_frac [E]. The weighted auxiliary loss is sown into 'aux_loss' as `moe_loss`; a
trainer sums every leaf of that collection into the objective.

Routing traces (moe_jax/analysis/traces.py) are sown into their own collection, TRACE =
'routing_trace', by token-choice routers only and only when the caller makes it mutable (never
at init): gate_input [T, D] (the layer's input, the vector the router reads), router_logits [T, E],
expert [T, K], gate [T, K] (combine weights), and per assignment output_norm [T, K] =
|FFN_e(x_t)| (before the gate weight) and zero_frac [T, K] (exact zeros in the expert's hidden
activations). The last two cost one more pass of the experts over the routed rows, which is why
they are kept apart from 'intermediates'; a capacity dispatch's dropped assignments get them too.

Merged layers (MC-SMoE, moe_jax/compress/mcsmoe): with `num_slots` > 0 the router keeps its
E = num_slots columns ("slots") and each slot points at one of the num_experts experts through
the layer's slot map slot_to_expert[E] (moe_jax/layers/slots.py: each distinct expert of a
token runs once, with the summed gate weight). The map is per-layer data (the merge puts the
slots of one layer into groups of its own, and the global group budget gives every layer its
own number of groups), not a config field: one MoEConfig serves every layer of an LMConfig and
of a Hugging Face config, while the map is made from calibration data like the weights it goes
with. So it is a non-trainable variable in the SLOTS = 'slots' collection, beside the layer's
params: the trainer carries it in TrainState.extra (checkpointed, restored, never updated), a
training workdir's checkpoint restores it and `module.apply(variables, ...)` reads it like the
weights. num_experts is then the stored experts per layer, the same for every layer: a layer
with fewer groups leaves its last experts unreferenced (no slot maps to them; they cost memory,
never compute). Merged layers run on the dropless dispatch without expert parallelism; they sow
`tokens_per_expert` over the slots (what the router chose, as for any layer) and
`tokens_per_merged_expert` [num_experts], the expert evaluations after de-duplication.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from moe_jax.layers import dispatch as dispatch_lib
from moe_jax.layers import losses
from moe_jax.layers import slots as slots_lib
from moe_jax.layers.experts import ACTIVATIONS, Experts, SharedExperts
from moe_jax.layers.grouped_matmul import IMPLS as GMM_IMPLS
from moe_jax.layers.grouped_matmul import grouped_matmul
from moe_jax.layers.routers import ROUTERS, make_router
from moe_jax.parallel import expert_parallel
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require

TRACE = "routing_trace"
SLOTS = "slots"
SOWN = ("intermediates", "aux_loss", TRACE)  # what the layer outputs by sow: never model state
SLOT_ROUTINGS = ("slots", "groups")


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
  num_slots: the router's width of a merged layer (module docstring): num_slots columns, each
    pointing at one of the num_experts experts by the layer's slot map; 0: one slot per expert.
  slot_routing: with num_slots, "slots" (the router's top-k slots, each distinct expert once:
    the merged model) or "groups" (top-k experts by the log-sum-exp of their slots' logits:
    an export option, not equivalent; slots.group_routing).
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
  num_slots: int = 0
  slot_routing: str = "slots"

  def __post_init__(self):
    check_positive("num_experts", self.num_experts)
    check_positive("d_ff", self.d_ff)
    require(1 <= self.top_k <= self.router_width, "top_k",
            f"must be in [1, {self.router_width}] (the router's width), got {self.top_k}",
            "lower top_k or raise num_experts")
    self._check_slots()
    check_choice("router", self.router, ROUTERS)
    check_choice("dispatch", self.dispatch, dispatch_lib.DISPATCHES + ("auto",))
    check_choice("gmm_impl", self.gmm_impl, GMM_IMPLS + ("auto",))
    require(self.shared_d_ff >= 0, "shared_d_ff", f"must be >= 0, got {self.shared_d_ff}",
            "use 0 for no shared expert")
    require(self.router != "expert_choice" or self.seq_balance_coef == 0, "seq_balance_coef",
            "the sequence balance loss needs token-choice routing",
            "set seq_balance_coef=0 with router='expert_choice'")

  @property
  def router_width(self) -> int:
    """E: the router's columns (num_slots of a merged layer, else num_experts)."""
    return self.num_slots or self.num_experts

  def _check_slots(self) -> None:
    check_choice("slot_routing", self.slot_routing, SLOT_ROUTINGS)
    if not self.num_slots:
      return
    require(self.num_slots >= self.num_experts, "num_slots", f"{self.num_slots} slots cannot "
            f"address {self.num_experts} experts", "set num_slots to the original expert count")
    require(self.router != "expert_choice", "num_slots", "a slot map needs token-choice "
            "routing", "merge experts of a token-choice router")
    require(self.dispatch in ("dropless", "auto"), "dispatch", f"merged layers (num_slots > 0) "
            f"run on the dropless dispatch, got {self.dispatch!r}", "set dispatch='dropless'")
    require(self.slot_routing == "slots" or (self.router == "topk" and
                                             self.top_k <= self.num_experts), "slot_routing",
            f"'groups' needs the softmax 'topk' router and top_k <= num_experts, got "
            f"{self.router!r}, top_k {self.top_k}, {self.num_experts} experts",
            "use slot_routing='slots'")

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
    return make_router(c.router, c.router_width, c.top_k,
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
    if not self.is_initializing() and "experts" in self.variables.get("params", {}):
      width = nn.unbox(self.variables["params"]["experts"])["wi_up"].shape[1]
      require(d == width, "MoE input", f"width {d} does not match the layer's weights (width "
              f"{width})", f"feed x[batch, seq, {width}] or load weights of width {d}")
    tokens = x.reshape(b * s, d)
    routing = self.router_module("router")(tokens, deterministic=deterministic)
    routed = self._to_experts(routing)
    experts = Experts(c.num_experts, c.d_ff, self.activation, self.dtype,
                      self.param_dtype, name="experts")
    parallel = expert_parallel.active_axes()
    require(not (parallel and c.num_slots), "num_slots", "merged layers do not run expert-"
            "parallel", "map the expert axis to no mesh axis for a merged model")
    if parallel and not self.is_initializing():  # init creates the full weights as usual
      cf = None if c.dispatch in ("dropless", "auto") else c.capacity_factor
      y, stats = expert_parallel.dispatch(
          x, routing, nn.unbox(self.variables["params"]["experts"]), experts, c.num_experts,
          cf, *parallel)
    else:
      y, stats = dispatch_lib.dispatch(c.dispatch, tokens.astype(self.dtype), routed,
                                       experts, c.num_experts, gmm_impl=c.gmm_impl,
                                       capacity_factor=c.capacity_factor)
      y = y.reshape(b, s, d)
    if c.shared_d_ff:
      y = y + SharedExperts(c.shared_d_ff, self.activation, c.shared_gate, self.dtype,
                            self.param_dtype, name="shared_experts")(x)

    self.sow("intermediates", "router_probs", routing.probs)
    self.sow("intermediates", "expert_index", routing.expert)
    if c.num_slots:
      self.sow("intermediates", "tokens_per_expert",
               losses.tokens_per_expert(routing.expert, c.num_slots))
      self.sow("intermediates", "tokens_per_merged_expert", stats.tokens_per_expert)
    else:
      self.sow("intermediates", "tokens_per_expert", stats.tokens_per_expert)
    self.sow("intermediates", "dropped", stats.dropped)
    self.sow("intermediates", "expert_zero_frac", stats.zero_frac)
    if routing.top_k and self.is_mutable_collection(TRACE) and not self.is_initializing():
      self._sow_trace(tokens, routing, experts)
    self._sow_losses(routing, b, s)
    return y.astype(x.dtype)

  def _to_experts(self, routing):
    """The routing over experts: the router's own, or, in a merged layer, its slots mapped by
    the layer's slot map (module docstring)."""
    c = self.config
    if not c.num_slots:
      return routing
    slot_map = self.variable(SLOTS, "slot_to_expert",
                             lambda: jnp.arange(c.num_slots, dtype=jnp.int32) % c.num_experts)
    if c.slot_routing == "groups":
      return slots_lib.group_routing(routing, slot_map.value, c.num_experts, c.normalize_topk)
    return slots_lib.merge_slots(routing, slot_map.value, c.num_experts)

  def _sow_trace(self, tokens: jax.Array, routing, experts: Experts) -> None:
    """Sows the routing trace of tokens[T, D] (module docstring): the experts run once more on
    the routed rows, sorted by expert, to give each assignment's own output (in a merged
    layer, each slot's expert)."""
    c, k = self.config, routing.top_k
    routed = routing
    if c.num_slots:
      routed = slots_lib.slot_experts(routing, self.get_variable(SLOTS, "slot_to_expert"))
    order = jnp.argsort(routed.expert, stable=True)
    sizes = losses.tokens_per_expert(routed.expert, c.num_experts).astype(jnp.int32)
    matmul_in = lambda rows, w: grouped_matmul(rows, w, sizes, impl=c.gmm_impl,
                                               gather=routing.token[order])
    matmul_out = lambda rows, w: grouped_matmul(rows, w, sizes, impl=c.gmm_impl)
    out, zero_frac = experts(tokens.astype(self.dtype), matmul_in, matmul_out)  # [A, D], [A]
    back = jnp.argsort(order)  # the sorted row of each assignment
    norm = jnp.linalg.norm(out.astype(jnp.float32), axis=-1)
    for name, value in (("gate_input", tokens), ("router_logits", routing.logits),
                        ("expert", routing.expert), ("gate", routing.weight),
                        ("output_norm", norm[back]), ("zero_frac", zero_frac[back])):
      self.sow(TRACE, name, value.reshape(-1, k) if value.ndim == 1 else value)

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
