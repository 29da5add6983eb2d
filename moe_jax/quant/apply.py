"""Weight-only quantization of a whole LM: RTN, or GPTQ block by block (optionally AGQ-weighted).

Legend: E experts, D model width, F expert hidden width, C slots per expert, T calibration
tokens, O output rows and I input width of a linear (W [O, I] = its kernel, input-first, as a
matrix and transposed), G = I / g groups.

Quantized: every linear of attention (q/k/v/o; latent attention's q_a/q_b/kv_a/kv_b/o), of dense
FFNs, of the routed experts (wi_gate, wi_up, wo) and of shared experts. Kept in float, as the
compressed-tensors export's ignore list says: the embedding and lm_head, the routers'
gates and the shared expert's sigmoid gate (a [D, 1] gate; MoEQuant's code quantizes its
routers with plain GPTQ, we do not), norms and biases.

GPTQ's order (Frantar et al. 2022, with "true sequential"; MoEQuant's `gptq_fwrd` goes one linear
at a time): for each block in turn, on the residual stream the already-quantized blocks before it
produce from the calibration tokens (`moe_jax.quant.calibrate`):
  1. each group of attention projections that read one input (q/k/v; then o), in call order,
     its Hessian taken with the groups before it already quantized;
  2. the FFN's input y and the routing it gets (through the quantized attention): the experts'
     wi_gate and wi_up (one GPTQ call per FFN: the two matrices' rows stacked, as GPTQ treats
     rows independently), with H_e over the tokens routed to e;
  3. the hidden activations h = act(y W_gate_q) * (y W_up_q) of the quantized wi: wo with H_e of h;
  4. the block's output with every linear quantized: the next block's input.
All experts of a layer go through one jitted, vmapped GPTQ call per stage. The Hessians (MoEQuant
Eq. 19, Algorithm 2; `moe_jax.quant.hessian`):
  H_e = (2/N_e) sum_{t -> e} c_te x_t x_t^T,
c_te = 1 (GPTQ; with options.all_experts every token counts for every expert, llm-compressor's
default policy) or, with AGQ, the combine weight the router gives t for e (a shared expert's
c_t = its sigmoid gate where it has one, else 1; MoEQuant's code weights wi and wo alike). An
expert that received no calibration token has H = 0; it is quantized by RTN instead (counted in
the report as `rtn_fallback`).

Result: `QuantizedModel.model` runs through the same linen modules with the dequantized
("fake-quantized") kernels in the param dtype; `QuantizedModel.linears` holds each kernel's
integers q [..., O, I] with scale / zero [..., O, G] for the export (`QuantizedLinear.kernel()`
rebuilds the fake-quantized kernel from them).
"""
from __future__ import annotations

import dataclasses
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.layers.experts import ACTIVATIONS, ffn_hidden, per_matrix
from moe_jax.models.lm import Projection
from moe_jax.models.loading import LoadedModel
from moe_jax.quant import calibrate, core, gptq, hessian
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require

METHODS = ("rtn", "gptq")
FFN_NAMES = ("wi_gate", "wi_up", "wo")


@dataclasses.dataclass(frozen=True)
class QuantOptions(Section):
  """What every recipe of a run shares: symmetric; mse_clip (MoEQuant's --w_clip search);
  damp, block_size, act_order (GPTQ's); batch_size: calibration windows per jitted block pass;
  all_experts: every routed expert's Hessians from every calibration token, weight 1
  (llm-compressor's default `moe_calibrate_all_experts`; the routed tokens only when false)."""
  symmetric: bool = True
  mse_clip: bool = True
  damp: float = 0.01
  block_size: int = 128
  act_order: bool = False
  batch_size: int = 16
  all_experts: bool = False

  def __post_init__(self):
    require(self.damp >= 0, "damp", f"must be >= 0, got {self.damp}", "use e.g. 0.01")
    check_positive("block_size", self.block_size)
    check_positive("batch_size", self.batch_size)


@dataclasses.dataclass(frozen=True)
class QuantRecipe(Section):
  """How to quantize: method "rtn" | "gptq"; bits; group_size (0: one scale per output
  channel); agq (gate-weighted expert Hessians); options (QuantOptions)."""
  method: str = "gptq"
  bits: int = 4
  group_size: int = 0
  agq: bool = False
  options: QuantOptions = QuantOptions()

  def __post_init__(self):
    check_choice("method", self.method, METHODS)
    require(self.group_size >= 0, "group_size", f"must be >= 0, got {self.group_size}",
            "use 0 for per-channel scales or e.g. 128")
    require(not self.agq or self.method == "gptq", "agq", "weights GPTQ's Hessians, and RTN "
            "has none", "set method='gptq' or agq=false")
    require(not (self.agq and self.options.all_experts), "agq", "weights each expert's routed "
            "tokens by their gates, and options.all_experts sends it unrouted ones",
            "set agq=false or options.all_experts=false")
    self.spec()  # bits

  def spec(self) -> core.QuantSpec:
    return core.QuantSpec(bits=self.bits, group_size=self.group_size or None,
                          symmetric=self.options.symmetric, mse_clip=self.options.mse_clip)

  def label(self) -> str:
    group = f"g{self.group_size}" if self.group_size else "pc"
    return f"{self.method}{'+agq' if self.agq else ''} W{self.bits} {group}"


@dataclasses.dataclass(frozen=True)
class QuantizedLinear:
  """One quantized kernel: q int8 [(E,) O, I], scale float32 / zero int8 [(E,) O, G] of its
  matrix W; `shape` the kernel's shape, `num_in` its input axes after the expert axis (`stacked`),
  `rtn_experts` the experts quantized by RTN for want of calibration tokens."""
  q: np.ndarray
  scale: np.ndarray
  zero: np.ndarray
  shape: tuple[int, ...]
  num_in: int
  stacked: bool
  method: str
  rtn_experts: tuple[int, ...] = ()

  def kernel(self, dtype=jnp.float32) -> jax.Array:
    """The fake-quantized kernel in its own layout and `dtype`."""
    w_hat = core.dequantize(jnp.asarray(self.q), jnp.asarray(self.scale), jnp.asarray(self.zero))
    return kernel_of(w_hat, self.shape, self.num_in, self.stacked).astype(dtype)


@dataclasses.dataclass(frozen=True)
class QuantizedModel:
  """model: the LM with fake-quantized kernels; linears: "layer_0/attn/q_proj/kernel" ->
  QuantizedLinear; report: tokens per expert, RTN fallbacks, timings (see quantize_model)."""
  model: LoadedModel
  linears: dict
  report: dict


def matrix(kernel: jax.Array, num_in: int, stacked: bool) -> jax.Array:
  """A kernel [(E,) *in, *out] as W [(E,) O, I]."""
  lead = kernel.shape[:1] if stacked else ()
  inner = kernel.shape[len(lead):]
  w = kernel.reshape(*lead, int(np.prod(inner[:num_in])), int(np.prod(inner[num_in:])))
  return w.swapaxes(-1, -2)


def kernel_of(w: jax.Array, shape: tuple[int, ...], num_in: int, stacked: bool) -> jax.Array:
  """The inverse of `matrix`: W [(E,) O, I] back to the kernel `shape`."""
  del num_in  # the flat [I, O] order is the kernel's own
  return w.swapaxes(-1, -2).reshape(shape)


def _get(tree: dict, path: str):
  for part in path.split("/"):
    tree = tree[part]
  return tree


def _set(tree: dict, path: str, value) -> dict:
  """A copy of the nested dict `tree` with the leaf at `path` replaced."""
  head, _, rest = path.partition("/")
  return {**tree, head: _set(tree[head], rest, value) if rest else value}


@functools.partial(jax.jit, static_argnums=(1,))
def _rtn(w, spec):
  return core.quantize(w, spec)


def _quantize(w, h, count, recipe: QuantRecipe):
  """GPTQ of W [E, O, I] with H [E, I, I] (RTN for experts whose count is 0); RTN without h."""
  spec = recipe.spec()
  if h is None:
    return _rtn(w, spec)
  o = recipe.options
  q, scale, zero = gptq.gptq(w, h, spec, damp=o.damp, block_size=o.block_size,
                             act_order=o.act_order)
  if np.all(count > 0):
    return q, scale, zero
  keep = jnp.asarray(count > 0)[:, None, None]
  return tuple(jnp.where(keep, a, b) for a, b in zip((q, scale, zero), _rtn(w, spec)))


def _record(method, outputs, kernels, names, num_ins, stacked, count):
  """Splits the rows of one call's (q, scale, zero) into one QuantizedLinear per kernel."""
  q, scale, zero = (np.asarray(a) for a in outputs)
  rtn = tuple(int(e) for e in np.flatnonzero(count == 0)) if method == "gptq" else ()
  out, start = {}, 0
  for name, kernel, num_in in zip(names, kernels, num_ins):
    rows = matrix(kernel, num_in, stacked).shape[-2]
    part = lambda a: a[..., start:start + rows, :]
    if not stacked:
      part = lambda a, p=part: p(a)[0]
    out[name] = QuantizedLinear(part(q), part(scale), part(zero), tuple(kernel.shape), num_in,
                                stacked, method, rtn if stacked else ())
    start += rows
  return out


def attention_linears(block, variables: dict, width: int) -> list[tuple[str, int]]:
  """(kernel path, num_in) of a block's attention projections in call order (traced, not run)."""
  found = []

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and isinstance(context.module, Projection):
      found.append(("/".join(context.module.path) + "/kernel", context.module.num_in))
    return next_fun(*args, **kwargs)

  def run(v, x):
    with nn.intercept_methods(interceptor):
      return block.apply(v, x, jnp.zeros(x.shape[:2], jnp.int32))

  jax.eval_shape(run, variables, jax.ShapeDtypeStruct((1, 4, width), jnp.float32))
  return found


def ffn_paths(params: dict) -> list[tuple[str, bool]]:
  """(prefix, stacked) of a block's FFN weight sets: routed experts, a shared expert, a dense
  FFN, each holding FFN_NAMES (wi_gate only for gated activations)."""
  out = []
  if "moe" in params:
    out.append(("moe/experts", True))
    if "shared_experts" in params["moe"]:
      out.append(("moe/shared_experts/mlp", False))
  if "mlp" in params:
    out.append(("mlp", False))
  return out


@functools.partial(jax.jit, static_argnums=(3,))
def _slot_hessian(y, index, weight, num_experts):
  """H [E, D, D] of the slots' inputs; computed once and broadcast when the slots are shared."""
  h = hessian.hessian(y[index].astype(jnp.float32), weight)  # inputs [E or 1, C, D]
  return jnp.broadcast_to(h, (num_experts, *h.shape[1:]))


@functools.partial(jax.jit, static_argnums=(5,))
def _hidden_hessian(y, index, weight, w_gate, w_up, activation):
  x = y[index].astype(jnp.float32)  # [E or 1, C, D]
  matmul = per_matrix(lambda a, w: jnp.matmul(a, w.astype(jnp.float32),
                                              precision=jax.lax.Precision.HIGHEST))
  return hessian.hessian(ffn_hidden(x, matmul, w_gate, w_up, activation), weight)  # h [E, C, F]


def _timed(fn, *args):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


def _ffn(params: dict, prefix: str, stacked: bool, y, slots: calibrate.Slots, activation: str,
         recipe: QuantRecipe, layer: str):
  """GPTQ of one FFN weight set on its slots: (new params, {path: QuantizedLinear}, seconds)."""
  gated = ACTIVATIONS[activation][1]
  ffn = _get(params, prefix)
  lift = (lambda k: k) if stacked else (lambda k: k[None])  # dense: one "expert"
  names_in = ["wi_gate", "wi_up"] if gated else ["wi_up"]
  kernels = [lift(ffn[n]) for n in names_in]
  count = slots.count
  h_in = _slot_hessian(y, slots.index, slots.weight, len(count))
  w_in = jnp.concatenate([matrix(k, 1, True) for k in kernels], axis=-2)  # [E, n F, D]
  out_in, seconds = _timed(_quantize, w_in, h_in, count, recipe)
  paths = [f"{layer}/{prefix}/{n}" for n in names_in]
  linears = _record("gptq", out_in, [ffn[n] for n in names_in], paths, [1] * len(paths),
                    stacked, count)
  quantized = {n: lift(linears[p].kernel()) for n, p in zip(names_in, paths)}
  h_out = _hidden_hessian(y, slots.index, slots.weight, quantized.get("wi_gate"),
                          quantized["wi_up"], activation)
  out_wo, wo_seconds = _timed(_quantize, matrix(lift(ffn["wo"]), 1, True), h_out, count, recipe)
  path = f"{layer}/{prefix}/wo"
  linears.update(_record("gptq", out_wo, [ffn["wo"]], [path], [1], stacked, count))
  for name, lin in linears.items():
    params = _set(params, name.split("/", 1)[1], lin.kernel(_get(params, name.split("/", 1)[1])
                                                            .dtype))
  return params, linears, seconds + wo_seconds


def _with_layer(variables: dict, i: int, layer_params: dict) -> dict:
  params = dict(variables["params"])
  params[f"layer_{i}"] = layer_params
  return {**variables, "params": params}


def block_linears(block, variables: dict, width: int) -> list[tuple[str, int, bool]]:
  """(kernel path, num_in, stacked) of every quantized linear of a block (module docstring)."""
  found = [(path, num_in, False) for path, num_in in attention_linears(block, variables, width)]
  for prefix, stacked in ffn_paths(variables["params"]):
    found += [(f"{prefix}/{name}", 1, stacked) for name in FFN_NAMES
              if name in _get(variables["params"], prefix)]
  return found


def quantize_rtn(model: LoadedModel, recipe: QuantRecipe) -> QuantizedModel:
  """RTN of every quantized linear (no calibration)."""
  start = time.perf_counter()
  variables = nn.unbox(model.variables)
  cfg, linears = model.cfg, {}
  for i in range(cfg.num_layers):
    lv = calibrate.layer_variables(variables, i)
    params = lv["params"]
    for path, num_in, stacked in block_linears(calibrate.block_module(cfg, i), lv, cfg.d_model):
      kernel = _get(params, path)
      w = matrix(kernel, num_in, stacked)
      out = _rtn(w if stacked else w[None], recipe.spec())
      name = f"layer_{i}/{path}"
      linears.update(_record("rtn", out, [kernel], [name], [num_in], stacked,
                             np.ones(len(out[0]))))
      params = _set(params, path, linears[name].kernel(kernel.dtype))
    variables = _with_layer(variables, i, params)
  report = {"recipe": recipe.to_dict(), "label": recipe.label(),
            "seconds": time.perf_counter() - start}
  return QuantizedModel(LoadedModel(model.module, variables, model.source), linears, report)


def _attention_group(params: dict, key: str, sums: dict, num_ins: dict, recipe: QuantRecipe,
                     layer: str):
  """GPTQ of one group of projections sharing an input: (new params, linears, seconds)."""
  paths = [n + "/kernel" for n in calibrate.group_names(key)]
  kernels = [_get(params, p) for p in paths]
  w = jnp.concatenate([matrix(k, num_ins[p], False) for k, p in zip(kernels, paths)])
  h = hessian.finalize(sums[key])
  count = np.asarray([int(sums[key].count)])
  out, seconds = _timed(_quantize, w[None], h[None], count, recipe)
  linears = _record("gptq", out, kernels, [f"{layer}/{p}" for p in paths],
                    [num_ins[p] for p in paths], False, count)
  for p, k in zip(paths, kernels):
    params = _set(params, p, linears[f"{layer}/{p}"].kernel(k.dtype))
  return params, linears, seconds


def quantize_gptq(model: LoadedModel, tokens, recipe: QuantRecipe) -> QuantizedModel:
  """GPTQ (AGQ with recipe.agq) of every quantized linear, block by block on tokens [N, S].

  report: tokens_per_expert {layer_i: [E]} (routed calibration assignments each expert got),
  rtn_fallback (expert weight sets quantized by RTN: no token), seconds_* timings (calibration
  passes and Hessians; GPTQ calls of attention, routed experts, dense/shared FFNs; each includes
  its first call's compilation), expert_matrices (routed expert matrices quantized).
  """
  start = time.perf_counter()
  tokens = np.asarray(tokens)
  require(tokens.ndim == 2 and tokens.size > 0, "tokens", f"shape {tokens.shape} is not "
          "[windows, length]", "pass calibration windows [N, S]")
  variables = nn.unbox(model.variables)
  cfg = model.cfg
  linears, counts, timing = {}, {}, dict.fromkeys(("attention", "experts", "dense"), 0.0)
  expert_layers = []
  x = calibrate.embed(variables, cfg, tokens)
  for i in range(cfg.num_layers):
    layer = f"layer_{i}"
    block = calibrate.block_module(cfg, i)
    lv = calibrate.layer_variables(variables, i)
    num_ins = dict(attention_linears(block, lv, cfg.d_model))
    done, ffn = set(), False
    while True:  # attention groups one at a time, each on inputs through the groups before it
      p = calibrate.run_block(block, lv, x, recipe.options.batch_size, ffn=ffn)
      todo = [k for k in sorted(p.hessians)
              if not {n + "/kernel" for n in calibrate.group_names(k)} <= done]
      if not todo:
        if ffn:
          break
        ffn = True
        continue
      params, found, seconds = _attention_group(lv["params"], todo[0], p.hessians, num_ins,
                                                recipe, layer)
      timing["attention"] += seconds
      linears.update(found)
      done |= {n.split("/", 1)[1] for n in found}
      lv = {**lv, "params": params}
      ffn = len(todo) == 1
    inputs, params = p.ffn, lv["params"]
    for prefix, stacked in ffn_paths(params):
      if stacked:
        slots = calibrate.routed_slots(inputs.token, inputs.expert, inputs.weight,
                                       cfg.moe.num_experts)
        counts[layer] = slots.count.tolist()
        if recipe.options.all_experts:
          slots = calibrate.dense_slots(inputs.y.shape[0], num_experts=cfg.moe.num_experts)
        elif not recipe.agq:  # plain GPTQ: every routed token weighs 1
          filled = np.arange(slots.index.shape[1]) < slots.count[:, None]
          slots = slots._replace(weight=jnp.asarray(filled, jnp.float32))
      else:
        gate = inputs.shared_gate if recipe.agq and prefix.startswith("moe/") else None
        slots = calibrate.dense_slots(inputs.y.shape[0], gate)
      params, found, seconds = _ffn(params, prefix, stacked, inputs.y, slots, cfg.activation,
                                    recipe, layer)
      timing["experts" if stacked else "dense"] += seconds
      if stacked:
        expert_layers.append(seconds)
      linears.update(found)
    lv = {**lv, "params": params}
    x = calibrate.run_block(block, lv, x, recipe.options.batch_size).out
    variables = _with_layer(variables, i, lv["params"])
  total = time.perf_counter() - start
  fallback = sorted({(name.split("/")[0], e) for name, lin in linears.items()
                     for e in lin.rtn_experts})
  gated = ACTIVATIONS[cfg.activation][1]
  matrices = len(expert_layers) * cfg.moe.num_experts * (3 if gated else 2)
  report = {"recipe": recipe.to_dict(), "label": recipe.label(), "seconds": total,
            "tokens": int(tokens.size), "tokens_per_expert": counts,
            "rtn_fallback": len(fallback), "rtn_fallback_experts": [list(f) for f in fallback],
            "expert_matrices": matrices, "seconds_gptq_attention": timing["attention"],
            "seconds_gptq_experts": timing["experts"], "seconds_gptq_dense": timing["dense"],
            "seconds_gptq_experts_per_layer": expert_layers,
            "seconds_calibration": total - sum(timing.values())}
  return QuantizedModel(LoadedModel(model.module, variables, model.source), linears, report)


def quantize_model(model: LoadedModel, recipe: QuantRecipe, tokens=None) -> QuantizedModel:
  """RTN, or GPTQ / AGQ on calibration tokens [N, S] (required for GPTQ)."""
  if recipe.method == "rtn":
    return quantize_rtn(model, recipe)
  require(tokens is not None, "tokens", "GPTQ needs calibration tokens",
          "pass calibration windows [N, S] (corpus text or EBSS samples)")
  return quantize_gptq(model, tokens, recipe)


def input_widths(model: LoadedModel) -> list[int]:
  """The input width I of every quantized linear of `model`."""
  variables = nn.unbox(model.variables)
  widths = set()
  for i in range(model.cfg.num_layers):
    lv = calibrate.layer_variables(variables, i)
    for path, num_in, stacked in block_linears(calibrate.block_module(model.cfg, i), lv,
                                               model.cfg.d_model):
      widths.add(matrix(_get(lv["params"], path), num_in, stacked).shape[-1])
  return sorted(widths)


def largest_group(model: LoadedModel, wanted: int) -> int:
  """The largest group size <= wanted that divides every quantized linear's input width."""
  common = int(np.gcd.reduce(input_widths(model)))
  return max(g for g in range(1, min(wanted, common) + 1) if common % g == 0)
