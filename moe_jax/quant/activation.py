"""Activation fake quantization inside the suite's linen modules: how a WxAy model computes.

Legend: N windows, S tokens per window, T = N S tokens, D model width, F an FFN's hidden width,
I a linear layer's input width, l an MoE layer.

`ActQuantLM` is `MoELM` (same parameter tree, same diagnostics) whose every linear layer reads
its input fake-quantized per token (`core.fake_quant_activations`), as an integer W4A4 kernel
would (QuaRot, Ashkboos et al. 2024; EAQuant's per-token setting):
  x_q = s_t * clip(round(x_t / s_t)),  s_t = clip_ratio * max_j |x_tj| / (2^(b-1) - 0.5)
at the inputs of attention's q/k/v (or latent q_a/kv_a ...) and o projections, of every FFN's
wi_gate / wi_up and of its wo (the hidden activations h), routed experts, shared experts and
dense FFNs alike; the router reads its input at `router_bits` (EAQuant's W8A8 router; 0: float).
Kept in float: the output head, the attention scores and the KV cache (16 bits in the paper),
norms, the residual stream. bits = 0 runs the float model. Modules are intercepted
(`nn.intercept_methods`), so every attention and dispatch variant is covered without code of
its own; each router also sows its raw input as `router_input` into 'intermediates'.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.eval.forward import batches
from moe_jax.layers.experts import Experts, MlpBlock, ffn_hidden, per_matrix
from moe_jax.layers.routers import RouterLogits
from moe_jax.models.lm import MoELM, Projection
from moe_jax.models.loading import LoadedModel
from moe_jax.quant import core
from moe_jax.utils.config import Section
from moe_jax.utils.errors import require


@dataclasses.dataclass(frozen=True)
class ActQuantConfig(Section):
  """bits: every linear input (0: float); clip_ratio: the per-token range kept (QuaRot 0.9);
  router_bits: the router's input (0: float)."""
  bits: int = 4
  clip_ratio: float = 0.9
  router_bits: int = 8

  def __post_init__(self):
    for field in ("bits", "router_bits"):
      value = getattr(self, field)
      require(value == 0 or 2 <= value <= 8, field, f"must be 0 (float) or 2..8, got {value}",
              "use e.g. 4 (activations) or 8 (router)")
    self.spec(self.bits or 8)

  def spec(self, bits: int, clip: bool = True) -> core.ActSpec:
    return core.ActSpec(bits=bits, clip_ratio=self.clip_ratio if clip else 1.0)


def quantizer(bits: int, spec_of) -> Callable[[jax.Array], jax.Array]:
  """x [..., I] -> x fake-quantized per row over I (identity for bits 0)."""
  if not bits:
    return lambda x: x
  spec = spec_of(bits)
  return lambda x: core.fake_quant_activations(x, spec)


def _projection_input(x: jax.Array, num_in: int, fq) -> jax.Array:
  """A Projection's input [..., *in] quantized per token over its flattened input axes."""
  lead = x.shape[:x.ndim - num_in]
  return fq(x.reshape(*lead, -1)).reshape(x.shape)


def _mlp(module: MlpBlock, x: jax.Array, fq) -> jax.Array:
  """MlpBlock's forward with quantized inputs x and h (moe_jax/layers/experts.py)."""
  p = nn.unbox(module.variables["params"])
  cast = lambda name: p[name].astype(module.dtype) if name in p else None
  h = ffn_hidden(fq(x.astype(module.dtype)), per_matrix(jnp.dot), cast("wi_gate"),
                 cast("wi_up"), module.activation)
  return jnp.dot(fq(h), cast("wo"))


def interceptor(act: ActQuantConfig):
  """The method interceptor that quantizes every linear input (module docstring)."""
  fq = quantizer(act.bits, act.spec)
  fq_router = quantizer(act.router_bits, functools.partial(act.spec, clip=False))

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    if isinstance(module, Projection) and module.name != "lm_head":
      return next_fun(_projection_input(args[0], module.num_in, fq), *args[1:], **kwargs)
    if isinstance(module, RouterLogits):
      module.sow("intermediates", "router_input", args[0])
      return next_fun(fq_router(args[0]), *args[1:], **kwargs)
    if isinstance(module, Experts):  # (x, matmul_in[, matmul_out[, ffn]]): x and h quantized
      x, matmul_in, *rest = args
      matmul_out = (rest[0] if rest else kwargs.get("matmul_out")) or matmul_in
      # the fused `ffn` is left out: h must pass through fq between the two matmuls
      return next_fun(fq(x), matmul_in, lambda h, w: matmul_out(fq(h), w))
    if isinstance(module, MlpBlock):
      return _mlp(module, args[0], fq)
    return next_fun(*args, **kwargs)

  return intercept


class ActQuantLM(MoELM):
  """MoELM with its linear inputs fake-quantized as `act` says (module docstring)."""
  act: ActQuantConfig = ActQuantConfig()

  def __call__(self, *args, **kwargs):
    with nn.intercept_methods(interceptor(self.act)):
      return super().__call__(*args, **kwargs)


def with_activations(model: LoadedModel, act: ActQuantConfig,
                     variables: dict | None = None) -> LoadedModel:
  """`model` (or its `variables` replaced) run by ActQuantLM with `act`."""
  module = ActQuantLM(model.cfg, act=act)
  return LoadedModel(module, model.variables if variables is None else variables, model.source)


@functools.partial(jax.jit, static_argnums=0)
def _router_inputs(module, variables, tokens):
  _, state = module.apply(variables, tokens, mutable=["intermediates"])
  inter = state["intermediates"]
  return {name: inter[name]["moe"]["router"]["gate"]["router_input"][0]
          for name in inter if "moe" in inter[name] and "router" in inter[name]["moe"]}


def router_inputs(model: LoadedModel, tokens: np.ndarray, batch_size: int) -> dict:
  """{"layer_l": [T, D]}: what each MoE layer's router reads (before its own quantization) on
  tokens [N, S], run as `model` runs (an ActQuantLM's upstream quantization included)."""
  module = model.module if isinstance(model.module, ActQuantLM) else ActQuantLM(
      model.cfg, act=ActQuantConfig(bits=0, router_bits=0))
  tokens = np.asarray(tokens)
  parts = []
  for ids, real in batches(len(tokens), batch_size):
    out = _router_inputs(module, model.variables, jnp.asarray(tokens[ids]))
    parts.append({k: v[:real * tokens.shape[1]] for k, v in out.items()})
  return {k: jnp.concatenate([p[k] for p in parts]) for k in parts[0]}
