"""Context-coherent expert parallelism for top-1 MoE decoding (ExFlow, Yao et al. 2024).

Legend: N devices on the expert axis, E experts (E_l = E / N per device), B sequences
(B_l = B / N home sequences per device), S slots of tokens a device holds at a layer (B_l before
the first MoE layer, B after it: all tokens of a step may sit on one device), C rows per
(source device, expert) of the dispatch buffer (C = the source's S: nothing dropped), D model
width, L MoE layers, W bytes of a packed row, V vocabulary, P prompt length.

The standard expert-parallel decode (moe_jax/parallel/expert_parallel.py; DeepSpeed-MoE's layout)
keeps every sequence on its home device: at each MoE layer one all-to-all sends the token to its
expert's device and a second brings the output home, 2L per step. ExFlow gives every device the
context of every sequence, so a token need not go home:

  every device holds the K/V cache of all B sequences (positions < t); at step t:
    slots <- the device's B_l home tokens (their sequence ids seq[S])
    for each layer:
      x <- x + Attn(Norm(x); cache[seq])        each slot against its own sequence's cache
      MoE layer: e = top1(router(Norm(x)))
        all-to-all: the row [x, g_e, seq] goes to e's device     <- the layer's one collective
        x <- x + g_e FFN_e(Norm(x)) there; the token stays for the next layer's attention
    next token per slot (greedy)
    all-gather: every layer's new K/V rows, their seq, the next tokens   <- once per step
    every device writes the B new rows into its cache: coherent again

KV coherence (the choice): all-gathered K/V. A token's K/V at layer l are computed on the device
it sits on at l, which differs between layers and tokens, so the other devices lack them.
Recomputing them elsewhere would need the token's expert outputs of every lower layer (experts
live on one device each), i.e. a second pass with its own all-to-alls; so each step ends with one
all-gather of every layer's new rows: per device B_l (first layers) or B (after the first MoE
layer) rows of 2 H_kv K_h (MLA: its latent and RoPE key) values + the sequence id per attention
layer, plus (sequence, token) per slot. With a ragged all-gather a device receives the other
devices' tokens: (N - 1) B_l k bytes per step (k: one token's rows of every attention layer),
against the standard path's 2 L B_l (N - 1)/N rows of D values; it grows with N where the
all-to-all bytes do not (`cost.py` prices both on a link; docs/exflow.md has the measured k).
ExFlow's traffic formula (2 G N L p against G N (L p* + G)) counts the tokens, not the K/V.

Prefill: the standard expert-parallel prefill of the prompts (batch split over the devices),
then one all-gather of the caches (XLA inserts it for the replicated layout): every device holds
every prompt's context. (Running every prompt on every device, as the paper words it, would need
every expert on every device; each prompt is computed once here.)
Top-1 only: a token with K > 1 experts would continue on K devices; merging their outputs is the
combine all-to-all ExFlow removes.
Static shapes: XLA:CPU has no ragged all-to-all, so the dispatch buffer has C = S rows per
(source, expert) and the all-gather S rows per layer, mostly empty; the HLO bytes count them all,
the cost model prices only the filled rows.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from moe_jax.inference.exflow import packing
from moe_jax.layers import dispatch as dispatch_lib
from moe_jax.layers.experts import Experts, MlpBlock, SharedExperts
from moe_jax.layers.moe import MoE
from moe_jax.layers.routers import Routing
from moe_jax.models.config import LMConfig
from moe_jax.models.generate import empty_cache
from moe_jax.models.lm import Attention, Block, LatentAttention, MoELM, make_norm
from moe_jax.parallel import partitioning
from moe_jax.utils.errors import check_choice, require

PATHS = ("single", "standard", "coherent")


def expert_rules(mesh: Mesh) -> partitioning.Rules:
  """Batch and stacked experts over the one axis of `mesh`; everything else replicated."""
  axis = mesh.axis_names[0]
  return (("batch", axis), ("expert", axis))


def check(cfg: LMConfig, batch: int, mesh: Mesh) -> None:
  """Refuses, with the fix, a model or batch the coherent path cannot run on (1-D) `mesh`."""
  n = mesh.size
  require(cfg.moe.top_k == 1 and cfg.moe.router != "expert_choice", "model.moe.top_k",
          f"top-{cfg.moe.top_k} {cfg.moe.router} routing: a token must continue on one device",
          "use a top-1 token-choice model (ExFlow's setting)")
  require(bool(cfg.moe_layer_ids()), "model", "has no MoE layer", "use an MoE model")
  require(cfg.moe.num_experts % n == 0, "model.moe.num_experts",
          f"{cfg.moe.num_experts} experts do not divide over {n} devices",
          f"use a multiple of {n} experts or fewer devices")
  require(batch % n == 0, "batch", f"{batch} sequences do not split over {n} devices",
          f"use a multiple of {n} sequences")


def shard_variables(variables: dict, mesh: Optional[Mesh]) -> dict:
  """Stacked expert weights split over the mesh axis, everything else replicated."""
  if mesh is None:
    return variables
  specs = _variable_specs(variables, mesh.axis_names[0])
  return jax.device_put(variables, jax.tree.map(lambda s: NamedSharding(mesh, s), specs))


def _variable_specs(variables: dict, axis: str):
  is_expert = lambda path: any(getattr(k, "key", None) == "experts" for k in path)
  return jax.tree_util.tree_map_with_path(lambda path, _: P(axis) if is_expert(path) else P(),
                                          variables)


# ----------------------------------------------------------------------------------------------
# One layer of the coherent step, on one device (inside shard_map)


@dataclasses.dataclass
class _Step:
  """What a device's step carries from layer to layer (Python state while tracing)."""
  seq: jax.Array  # [S] sequence of each slot, -1 empty
  batch: int  # B
  position: jax.Array  # scalar: the position (= cache index) of this step's tokens
  axis: str
  n: int
  written: list = dataclasses.field(default_factory=list)  # (layer, seq [S], {entry: [S, ..]})
  crossings: list = dataclasses.field(default_factory=list)  # per MoE layer: rows sent away


def _norm(cfg: LMConfig, params, x: jax.Array) -> jax.Array:
  return make_norm(cfg, None).apply({"params": params}, x)


def _attention(block: Block, step: _Step, layer_cache: dict, x: jax.Array) -> jax.Array:
  """x[S, 1, D] + Attn(Norm(x)) with each slot reading its own sequence's cache rows; records the
  slots' new cache rows for the all-gather."""
  cfg, params = block.cfg, block.variables["params"]
  rows = jnp.maximum(step.seq, 0)  # empty slots read sequence 0 and are never written back
  view = {k: v if k == "index" else v[rows] for k, v in layer_cache.items()}
  attn = (LatentAttention if cfg.attention == "mla" else Attention)(cfg, decode=True)
  positions = jnp.full((x.shape[0], 1), step.position, jnp.int32)
  out, mutated = attn.apply({"params": params["attn"], "cache": view},
                            _norm(cfg, params["attn_norm"], x), positions, mutable=["cache"])
  new = {k: jax.lax.dynamic_index_in_dim(v, layer_cache["index"], 1, keepdims=False)
         for k, v in mutated["cache"].items() if k not in ("index", "positions")}
  step.written.append((block.name, step.seq, new))
  return x + out


def _moe_hop(block: Block, step: _Step, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """x[S, 1, D] -> (x[B, 1, D], seq[B]) after the MoE FFN on each token's expert's device."""
  cfg, variables = block.cfg, block.variables
  c, params = cfg.moe, variables["params"]["moe"]
  s, d = x.shape[0], x.shape[-1]
  e_l = c.num_experts // step.n
  h = _norm(cfg, variables["params"]["ffn_norm"], x).reshape(s, d)
  router_vars = {col: t["moe"]["router"] for col, t in variables.items()
                 if "router" in t.get("moe", {})}
  routing = MoE(c, cfg.activation, cfg.dtype, cfg.param_dtype).router_module(None).apply(
      router_vars, h)
  r = Routing(token=jnp.arange(s, dtype=jnp.int32), expert=routing.expert,
              weight=routing.weight, logits=None, probs=None, top_k=1)
  order, slot, _, _ = dispatch_lib.capacity_slots(r, c.num_experts, s)  # C = S: none dropped
  filled = step.seq[order] >= 0
  slot = jnp.where(filled, slot, c.num_experts * s)  # an empty slot sends nothing
  away = r.expert[order] // e_l != jax.lax.axis_index(step.axis)
  step.crossings.append(jnp.sum(filled & away))
  # +1: an all-zero row of the buffer reads as sequence -1, an empty row
  rows, layout = packing.pack([x.reshape(s, d)[order], r.weight[order], step.seq[order] + 1])
  send = jnp.zeros((c.num_experts * s + 1, rows.shape[1]), jnp.uint8).at[slot].set(rows)
  send = send[:-1].reshape(step.n, e_l, s, rows.shape[1])
  # dispatch all-to-all, the layer's one collective: [N(dest), E_l, C, W] -> [N(source), E_l, C, W]
  recv = jax.lax.all_to_all(send, step.axis, 0, 0)
  x_r, w_r, seq_r = packing.unpack(recv.transpose(1, 0, 2, 3).reshape(e_l, step.n * s, -1),
                                   layout)
  h_r = _norm(cfg, variables["params"]["ffn_norm"], x_r)  # [E_l, N C, D]
  experts = Experts(e_l, c.d_ff, cfg.activation, cfg.dtype, cfg.param_dtype)
  y, _ = experts.apply({"params": params["experts"]}, h_r, dispatch_lib.einsum_matmul)
  y = y * w_r.astype(y.dtype)[..., None]
  if c.shared_d_ff:
    y = y + SharedExperts(c.shared_d_ff, cfg.activation, c.shared_gate, cfg.dtype,
                          cfg.param_dtype).apply({"params": params["shared_experts"]}, h_r)
  x_r = (x_r + y.astype(x_r.dtype)).reshape(-1, 1, d)
  seq_r = seq_r.reshape(-1) - 1
  # At most B of the E_l N C received rows hold tokens: the filled ones first, B slots kept.
  keep = jnp.argsort(seq_r < 0, stable=True)[:step.batch]
  return x_r[keep], seq_r[keep]


def _layer(block: Block, step: _Step, cache: dict, x: jax.Array) -> jax.Array:
  """One pre-norm block (moe_jax.models.lm.Block) on the device's slots; moves them at MoE."""
  cfg, params = block.cfg, block.variables["params"]
  x = _attention(block, step, cache[block.name]["attn"], x)
  if block.use_moe:
    x, step.seq = _moe_hop(block, step, x)
    return x
  mlp = MlpBlock(cfg.d_ff, cfg.activation, cfg.dtype, cfg.param_dtype)
  return x + mlp.apply({"params": params["mlp"]}, _norm(cfg, params["ffn_norm"], x))


def _share(step: _Step, nxt: jax.Array, cache: dict) -> tuple[dict, jax.Array]:
  """The step's all-gather and its write-back: every device's new cache rows (with their
  sequences) and next tokens reach every device, which writes all B rows of every layer at the
  step's position. Returns (cache, next tokens [B])."""
  parts = [step.seq, nxt] + [a for _, seq, new in step.written for a in (seq, *new.values())]
  buffer, layout = packing.pack([a[None] for a in parts])
  # all-gather, once per step: [1, W] per device -> [N, 1, W] on every device
  gathered = iter(g[:, 0].reshape((-1,) + g.shape[3:])
                  for g in packing.unpack(jax.lax.all_gather(buffer, step.axis), layout))
  target = lambda seq: jnp.where(seq >= 0, seq, step.batch)  # empty slots: out of range, dropped
  rows = target(next(gathered))
  nxt = jnp.zeros((step.batch,), jnp.int32).at[rows].set(next(gathered), mode="drop")
  cache = dict(cache)
  for name, _, new in step.written:
    layer = dict(cache[name]["attn"])
    rows, i = target(next(gathered)), layer["index"]
    for key in new:
      layer[key] = layer[key].at[rows, i].set(next(gathered), mode="drop")
    layer["positions"] = layer["positions"].at[:, i].set(step.position)
    layer["index"] = i + 1
    cache[name] = {"attn": layer}
  return cache, nxt


def _coherent_local(cfg: LMConfig, batch: int, axis: str, n: int, variables, cache, tokens,
                    position):
  """One decode step on one device: its home tokens[B_l] -> (partial logits [1, B, V] (rows of
  the sequences that ended here), next tokens [B], cache, crossings [1, L])."""
  b_l = tokens.shape[0]
  start = jax.lax.axis_index(axis) * b_l
  step = _Step(start + jnp.arange(b_l, dtype=jnp.int32), batch, position, axis, n)

  def interceptor(next_fun, args, kwargs, context):
    # MoELM's own embedding and head, with each Block replaced by its coherent form
    if isinstance(context.module, Block) and context.method_name == "__call__":
      return _layer(context.module, step, cache, args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    logits = MoELM(cfg, decode=True).apply(
        variables, tokens[:, None], jnp.full((b_l, 1), position, jnp.int32))[:, 0]  # [S, V]
  cache, nxt = _share(step, jnp.argmax(logits, axis=-1).astype(jnp.int32), cache)
  partial = jnp.zeros((batch, logits.shape[-1]), logits.dtype).at[
      jnp.where(step.seq >= 0, step.seq, batch)].set(logits, mode="drop")
  return partial[None], nxt, cache, jnp.stack(step.crossings)[None]


# ----------------------------------------------------------------------------------------------
# The three decoders


@functools.partial(jax.jit, static_argnames=("cfg", "max_len", "replicate"))
def _prefill(cfg: LMConfig, variables, prompt, max_len: int, replicate: Optional[Mesh]):
  b, p = prompt.shape
  model = MoELM(dataclasses.replace(cfg, max_len=max_len), decode=True)
  positions = jnp.broadcast_to(jnp.arange(p), (b, p))
  logits, mutated = model.apply({**variables, "cache": empty_cache(model, b)}, prompt,
                                positions, mutable=["cache"])
  cache, nxt = mutated["cache"], jnp.argmax(logits[:, -1], -1).astype(jnp.int32)
  if replicate is not None:  # all-gather: every device holds every prompt's context
    cache, nxt = jax.lax.with_sharding_constraint((cache, nxt), NamedSharding(replicate, P()))
  return logits[:, -1], nxt, cache


@functools.partial(jax.jit, static_argnames=("cfg",))
def _standard_step(cfg: LMConfig, variables, cache, tokens, position):
  b = tokens.shape[0]
  logits, mutated = MoELM(cfg, decode=True).apply(
      {**variables, "cache": cache}, tokens[:, None], jnp.full((b, 1), position, jnp.int32),
      mutable=["cache"])
  return logits[:, 0], jnp.argmax(logits[:, 0], -1).astype(jnp.int32), mutated["cache"]


@functools.partial(jax.jit, static_argnames=("cfg", "mesh"))
def _coherent_step(cfg: LMConfig, variables, cache, tokens, position, mesh: Mesh):
  axis = mesh.axis_names[0]
  local = functools.partial(_coherent_local, cfg, tokens.shape[0], axis, mesh.size)
  return jax.shard_map(
      local, mesh=mesh,
      in_specs=(_variable_specs(variables, axis), P(), P(axis), P()),
      out_specs=(P(axis), P(), P(), P(axis)), check_vma=False)(variables, cache, tokens,
                                                                position)


@dataclasses.dataclass(frozen=True)
class Generation:
  """tokens[B, P + T] (prompt and T greedy tokens), logits[T, B, V] of each generated token,
  the final cache (on the coherent path, every device's copy), crossings[T - 1, L] (coherent
  only: the tokens each decode step's MoE layers sent to another device), and the compiled
  HLO text of the prefill and of one decode step."""
  tokens: np.ndarray
  logits: np.ndarray
  cache: dict
  crossings: Optional[np.ndarray]
  prefill_hlo: str
  step_hlo: str


@dataclasses.dataclass(frozen=True)
class Decoder:
  """Greedy KV-cache decoding of `cfg` by one of three layouts.

  "single": one device. "standard": experts and sequences split over the one axis of `mesh`,
  two all-to-alls per MoE layer (moe_jax/parallel/expert_parallel.py). "coherent": the same
  split, one all-to-all per MoE layer and one all-gather per step (module docstring).
  """
  cfg: LMConfig
  path: str = "single"
  mesh: Optional[Mesh] = None
  _compiled: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

  def __post_init__(self):
    check_choice("path", self.path, PATHS)
    require((self.mesh is None) == (self.path == "single"), "mesh",
            f"the {self.path!r} path {'takes no' if self.path == 'single' else 'needs a'} mesh",
            "pass a 1-D mesh for 'standard' and 'coherent', none for 'single'")
    require(self.mesh is None or len(self.mesh.axis_names) == 1, "mesh",
            f"axes {dict(self.mesh.shape) if self.mesh else {}}: the expert-parallel paths run "
            "on one expert axis", "use a 1-D mesh, e.g. make_mesh({'expert': N})")

  def _compile(self, fn, *args, step: bool, **static) -> jax.stages.Compiled:
    """fn lowered and compiled under the layout its MoE layers read: the mesh and rules of
    expert parallelism, except for the coherent step (its shard_map names the mesh itself)."""
    layout = self.mesh is not None and not (step and self.path == "coherent")
    with partitioning.use(self.mesh, expert_rules(self.mesh)) if layout else \
        contextlib.nullcontext():
      return fn.lower(self.cfg, *args, **static).compile()

  def _cached(self, name: str, key: tuple, build) -> jax.stages.Compiled:
    """The program `name` for shapes `key`, compiled by build() on first use."""
    if (name, key) not in self._compiled:
      self._compiled[name, key] = build()
    return self._compiled[name, key]

  def generate(self, variables: dict, prompt, steps: int) -> Generation:
    """Greedy continuation of prompt[B, P] by `steps` tokens: one prefill and steps - 1 decode
    steps, each compiled once per prompt shape and kept (another model of the same shapes, e.g.
    a placement applied, reuses them)."""
    require(steps >= 1, "steps", f"must be >= 1, got {steps}", "ask for at least one token")
    prompt = jnp.asarray(prompt, jnp.int32)
    b, p = prompt.shape
    if self.path == "coherent":
      check(self.cfg, b, self.mesh)
    variables = shard_variables(variables, self.mesh)
    prefill = self._cached("prefill", (b, p, steps), lambda: self._compile(
        _prefill, variables, prompt, step=False, max_len=p + steps,
        replicate=self.mesh if self.path == "coherent" else None))
    logits, tokens, cache = prefill(variables, prompt)
    static = {"mesh": self.mesh} if self.path == "coherent" else {}
    step = self._cached("step", (b, p, steps), lambda: self._compile(
        _coherent_step if self.path == "coherent" else _standard_step, variables, cache,
        tokens, jnp.int32(p), step=True, **static))
    out_logits, out_tokens, crossings = [np.asarray(logits)], [np.asarray(tokens)], []
    for i in range(steps - 1):
      out = step(variables, cache, tokens, jnp.int32(p + i))
      logits, tokens, cache = out[:3]
      if self.path == "coherent":
        logits = jnp.sum(logits, axis=0)  # each sequence's row is nonzero on one device
        crossings.append(np.asarray(out[3]).sum(0))
      out_logits.append(np.asarray(logits))
      out_tokens.append(np.asarray(tokens))
    return Generation(np.concatenate([np.asarray(prompt), np.stack(out_tokens, 1)], 1),
                      np.stack(out_logits), cache,
                      np.stack(crossings) if crossings else None,
                      prefill.as_text(), step.as_text())
