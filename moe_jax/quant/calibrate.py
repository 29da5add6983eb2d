"""Calibration capture, block by block: what each linear layer of an LM receives.

Legend: N windows, S tokens per window, T = N S tokens, D model width, E experts, A routed
assignments (T K for token-choice routers), C slots per expert (>= the most assignments any
expert got), I a linear layer's input width.

One transformer block runs at a time on the residual stream x [N, S, D] that the blocks before it
produced (`run_block`, jitted per block shape, over batches of windows), so a caller that
quantizes block after block calibrates each one on the outputs of the already-quantized blocks
before it (GPTQ's sequential order). What a pass returns:
- for every group of attention projections that read the same input (q/k/v of GQA; q_a/kv_a of
  latent attention; then q_b, kv_b, o), in the order the block calls them, the Hessian sum of that
  input (`moe_jax.quant.hessian`, unweighted);
- with `ffn=True`, the FFN's input y [T, D] (the post-attention-norm vector the router reads) and
  the router's assignments (token, expert, combine weight) [A], and the sigmoid gate [T] of a
  gated shared expert (Qwen2-MoE);
- the block's output, the next block's input.
The projections are found by intercepting every `Projection` call of the block (flax
`intercept_methods`), so GQA and latent attention need no code of their own.

`routed_slots` turns the assignments into fixed-shape per-expert slots: index [E, C] (token rows
of y) and weight [E, C] (the combine weight; 0 marks an empty slot), in token order within an
expert. y[index[e, :count[e]]] are exactly the inputs expert e receives under the dropless
dispatch (a capacity dispatch would drop some; they are kept here). `dense_slots` gives every
expert every token: one row [1, T] that broadcasts over the experts, so what depends on the
input alone (the Hessian of wi) is computed once, not E times.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.data.corpus import SEPARATOR, load_documents, split
from moe_jax.eval.encoding import make_encoder
from moe_jax.layers.routers import Routing
from moe_jax.models.lm import Block, Projection
from moe_jax.quant import hessian
from moe_jax.utils.errors import require


class FFNInputs(NamedTuple):
  """y [T, D]; the routed assignments token, expert [A] int32, weight [A] float32 (None for a
  dense FFN); shared_gate [T]: sigmoid(y w_g) of a gated shared expert, else None."""
  y: jax.Array
  token: np.ndarray | None
  expert: np.ndarray | None
  weight: np.ndarray | None
  shared_gate: jax.Array | None


class BlockPass(NamedTuple):
  """out [N, S, D]; hessians: {"<order>:<name>+<name>...": HessianSum} per attention input group;
  ffn: FFNInputs (with ffn=True) or None."""
  out: jax.Array
  hessians: dict
  ffn: FFNInputs | None


class Slots(NamedTuple):
  """index [E, C] int32 rows of y, weight [E, C] float32 (0: empty slot), count [E] int64;
  index and weight [1, C] when all E experts share them (`dense_slots`)."""
  index: jax.Array
  weight: jax.Array
  count: np.ndarray


def layer_variables(variables: dict, i: int) -> dict:
  """Block i's slice of every collection of an LM's (unboxed) variables."""
  name = f"layer_{i}"
  return {col: tree[name] for col, tree in variables.items()
          if isinstance(tree, dict) and name in tree}


def block_module(cfg, i: int) -> Block:
  """Block i of an LMConfig as a module of its own (applied with `layer_variables`)."""
  return Block(cfg, i in cfg.moe_layer_ids())


def embed(variables: dict, cfg, tokens) -> jax.Array:
  """The residual stream entering block 0: the embedding rows of tokens [N, S] -> [N, S, D]."""
  table = variables["params"]["embed"]["embedding"]
  return jnp.take(table, jnp.asarray(tokens, jnp.int32), axis=0).astype(cfg.dtype)


def group_names(key: str) -> list[str]:
  """The projection paths ("attn/q_proj", ...) of a hessians key."""
  return key.split(":", 1)[1].split("+")


@functools.partial(jax.jit, static_argnums=(0, 4))
def _pass(block: Block, variables: dict, x: jax.Array, real: jax.Array, ffn: bool):
  """One block over x [B, S, D] whose first `real` windows count (see the module docstring)."""
  seen = {"projections": [], "routing": None, "ffn_input": None}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name == "__call__":
      if isinstance(module, Projection):
        seen["projections"].append(("/".join(module.path), module.num_in, args[0]))
      elif isinstance(out, Routing):
        seen["routing"] = out
      elif module.path in (("moe",), ("mlp",)):
        seen["ffn_input"] = args[0]
    return out

  positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])
  with nn.intercept_methods(interceptor):
    out = block.apply(variables, x, positions)
  counts = jnp.repeat(jnp.arange(x.shape[0]) < real, x.shape[1]).astype(jnp.float32)  # [T]
  groups = {}  # id of the input tracer -> (first call, names, input [T, I])
  for order, (name, num_in, inp) in enumerate(seen["projections"]):
    flat = inp.reshape(-1, int(np.prod(inp.shape[inp.ndim - num_in:])))
    groups.setdefault(id(inp), (order, [], flat))[1].append(name)
  sums = {f"{order:03d}:{'+'.join(names)}": hessian.accumulate(
      hessian.init(flat.shape[-1]), flat, counts) for order, names, flat in groups.values()}
  if not ffn:
    return out, sums, None
  y = seen["ffn_input"].reshape(-1, x.shape[-1])
  routing = seen["routing"]
  shared = variables["params"].get("moe", {}).get("shared_experts", {}).get("gate")
  gate = None if shared is None else jax.nn.sigmoid(
      jnp.dot(y.astype(jnp.float32), shared["kernel"].astype(jnp.float32)))[:, 0]
  assign = None if routing is None else (routing.token, routing.expert, routing.weight)
  return out, sums, (y, assign, gate)


def run_block(block: Block, variables: dict, x: jax.Array, batch_size: int,
              ffn: bool = False) -> BlockPass:
  """Runs block (with its `layer_variables`) over x [N, S, D] in batches of windows; Hessian
  sums add up over the batches, FFN inputs and assignments are concatenated (token ids global).
  The last batch is padded to batch_size with copies of window 0, which count nowhere."""
  require(batch_size >= 1, "batch_size", f"must be >= 1, got {batch_size}", "use e.g. 16")
  n, s = x.shape[:2]
  batch = min(batch_size, n)
  outs, sums, ys, assigns, gates = [], None, [], [], []
  for start in range(0, n, batch):
    real = min(batch, n - start)
    xb = x[start:start + batch]
    if real < batch:
      xb = jnp.concatenate([xb, jnp.broadcast_to(x[:1], (batch - real,) + x.shape[1:])])
    out, part, ffn_part = _pass(block, variables, xb, real, ffn)
    outs.append(out[:real])
    sums = part if sums is None else jax.tree.map(jnp.add, sums, part)
    if ffn:
      y, assign, gate = ffn_part
      ys.append(y[:real * s])
      gates.append(None if gate is None else gate[:real * s])
      if assign is not None:
        token, expert, weight = (np.asarray(a) for a in assign)
        keep = token < real * s
        assigns.append((token[keep] + start * s, expert[keep], weight[keep]))
  out = jnp.concatenate(outs)
  if not ffn:
    return BlockPass(out, sums, None)
  token, expert, weight = ((np.concatenate([a[j] for a in assigns]) for j in range(3))
                           if assigns else (None, None, None))
  gate = None if gates[0] is None else jnp.concatenate(gates)
  return BlockPass(out, sums, FFNInputs(jnp.concatenate(ys), token, expert, weight, gate))


def routed_slots(token: np.ndarray, expert: np.ndarray, weight: np.ndarray, num_experts: int,
                 multiple: int = 64) -> Slots:
  """Per-expert slots of the assignments (module docstring); C = the largest count rounded up to
  `multiple` (fewer distinct shapes to compile), at least `multiple`."""
  count = np.bincount(expert, minlength=num_experts)
  slots = max(multiple, -(-int(count.max(initial=0)) // multiple) * multiple)
  order = np.argsort(expert, kind="stable")  # by expert, token order within one
  start = np.concatenate([[0], np.cumsum(count)[:-1]])
  rank = np.arange(len(order)) - start[expert[order]]
  index = np.zeros((num_experts, slots), np.int32)
  slot_weight = np.zeros((num_experts, slots), np.float32)
  index[expert[order], rank] = token[order]
  slot_weight[expert[order], rank] = weight[order]
  return Slots(jnp.asarray(index), jnp.asarray(slot_weight), count)


def dense_slots(num_tokens: int, weight: jax.Array | None = None, num_experts: int = 1) -> Slots:
  """Slots of a dense FFN (or shared expert): one "expert" that receives every token, with
  `weight` [T] (default 1); num_experts > 1: that many experts that each receive every token
  (index and weight [1, T], shared by all of them)."""
  w = jnp.ones((num_tokens,), jnp.float32) if weight is None else weight.astype(jnp.float32)
  return Slots(jnp.arange(num_tokens, dtype=jnp.int32)[None], w[None],
               np.full(num_experts, num_tokens))


def corpus_windows(model, data, num: int, length: int, seed: int = 0,
                   tokenizer: str = "auto") -> np.ndarray:
  """`num` random windows [num, length] of the training split of `data` (a DataConfig: the
  documents evaluation does not hold out), encoded as evaluation encodes them: GPTQ's random
  crops of a training corpus."""
  train = split(load_documents(list(data.sources), list(data.files), data.text_field),
                data.val_every)[0]
  stream = make_encoder(tokenizer, model).encode(SEPARATOR.join(d.text for d in train))
  require(len(stream) > length, "calibration.seq_len", f"the training text ({len(stream)} "
          f"tokens) is shorter than one window of {length}", "lower seq_len or add text")
  starts = np.random.default_rng(seed).integers(0, len(stream) - length, num)
  return np.stack([stream[s:s + length] for s in starts]).astype(np.int32)
