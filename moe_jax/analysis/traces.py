"""Routing traces: what every MoE layer of an LM read and chose, token by token.

Legend: L MoE layers (in the order of `LMConfig.moe_layer_ids()`), N windows, S tokens per
window, T = N S tokens (token t is position t % S of window t // S), D model width, E experts,
K experts per token.

  trace = capture(model, tokens[N, S], batch_size=16, max_tokens=65536, out_dir=None)
  trace.logits(l) [T, E]        trace.experts(l) [T, K]        trace.gates(l) [T, K]
  trace.gate_inputs(l) [T, D]   trace.output_norms(l) [T, K]   trace.zero_fracs(l) [T, K]
  trace.router_kernel(l) [D, E] trace.tokens() [N, S]          trace.stack("expert") [L, T, K]

`l` counts the MoE layers 0 .. L-1; `trace.layers` holds their indices among the model's layers.
The fields are what each MoE layer sows into its 'routing_trace' collection
(moe_jax/layers/moe.py), read by one jitted forward per batch of windows: gate_input is the
post-attention-norm vector the router reads (Fate's x_l), router_logits the router's logits,
expert / gate the K chosen experts and their combine weights, output_norm |FFN_e(x_t)| of each
chosen expert before its weight, zero_frac the share of exact zeros in that expert's hidden
activations. The router kernels W[D, E] are kept with the trace (Fate routes layer l's gate
input through layer l+1's kernel), so a trace on disk is enough for the methods that read it.

Memory stays bounded. At most `max_tokens` tokens (whole windows) are traced. With `out_dir`,
each batch is written as soon as it is computed, one uncompressed shard per batch
(shard_00000.npz, ...: key "<field>.<l>" and "tokens"), by this one writer; meta.json, written
last, marks the trace complete, and `load(out_dir)` opens it. Every accessor reads one field of
one layer from the shards, so nothing else is in memory; `batches(field, l)` yields it shard by
shard. Without `out_dir` the shards stay in memory and the accessors read them the same way.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
from typing import Iterator

import flax.linen as nn
import jax
import numpy as np

from moe_jax.layers.moe import TRACE
from moe_jax.models.lm import check_token_ids
from moe_jax.utils.errors import require
from moe_jax.utils.reporting import progress, write_text

FIELDS = ("gate_input", "router_logits", "expert", "gate", "output_norm", "zero_frac")
META = "meta.json"
ROUTER = "router.npz"


@dataclasses.dataclass(frozen=True, eq=False)
class Trace:
  """A captured trace (module docstring); `shards` are dicts in memory or .npz paths on disk."""
  layers: tuple[int, ...]
  num_experts: int
  top_k: int
  seq_len: int
  num_tokens: int
  source: str
  shards: tuple
  kernels: np.ndarray  # [L, D, E]

  @property
  def num_layers(self) -> int:
    return len(self.layers)

  def batches(self, field: str, l: int) -> Iterator[np.ndarray]:
    """`field` of MoE layer l, one shard at a time (rows in token order)."""
    require(field in FIELDS, "field", f"unknown trace field {field!r}", f"use one of {FIELDS}")
    require(0 <= l < self.num_layers, "l", f"{l} is not an MoE layer index in [0, "
            f"{self.num_layers})", "count the MoE layers from 0 (trace.layers maps them)")
    for shard in self.shards:
      yield _read(shard, f"{field}.{l}")

  def field(self, field: str, l: int) -> np.ndarray:
    """`field` of MoE layer l over all T tokens."""
    return np.concatenate(list(self.batches(field, l)))

  def stack(self, field: str) -> np.ndarray:
    """`field` of every MoE layer: [L, T, ...]."""
    return np.stack([self.field(field, l) for l in range(self.num_layers)])

  def logits(self, l: int) -> np.ndarray:
    return self.field("router_logits", l)

  def experts(self, l: int) -> np.ndarray:
    return self.field("expert", l)

  def gates(self, l: int) -> np.ndarray:
    return self.field("gate", l)

  def gate_inputs(self, l: int) -> np.ndarray:
    return self.field("gate_input", l)

  def output_norms(self, l: int) -> np.ndarray:
    return self.field("output_norm", l)

  def zero_fracs(self, l: int) -> np.ndarray:
    return self.field("zero_frac", l)

  def router_kernel(self, l: int) -> np.ndarray:
    return self.kernels[l]

  def tokens(self) -> np.ndarray:
    return np.concatenate([_read(shard, "tokens") for shard in self.shards])


def _read(shard, key: str) -> np.ndarray:
  if isinstance(shard, dict):
    return shard[key]
  with np.load(shard) as npz:
    return npz[key]


def router_kernels(model) -> np.ndarray:
  """The router kernels W[L, D, E] (float32) of the MoE layers of a LoadedModel."""
  params = nn.unbox(model.variables["params"])
  return np.stack([np.asarray(params[f"layer_{i}"]["moe"]["router"]["gate"]["kernel"],
                              np.float32) for i in model.cfg.moe_layer_ids()])


@functools.partial(jax.jit, static_argnums=(0, 1))
def _step(module, layers: tuple[int, ...], variables: dict, tokens) -> dict:
  """One traced forward: {"<field>.<l>": array} for the MoE layers (compiled once per model
  config and batch shape)."""
  _, state = module.apply(variables, tokens, mutable=[TRACE])
  sown = state[TRACE]
  return {f"{name}.{l}": sown[f"layer_{i}"]["moe"][name][0]
          for l, i in enumerate(layers) for name in FIELDS}


def _prepare(out_dir: str) -> None:
  """Creates out_dir, removing a previous trace's files (and nothing else) from it."""
  require(not os.path.isfile(out_dir), "out_dir", f"{out_dir} is a file", "give a directory")
  os.makedirs(out_dir, exist_ok=True)
  for path in [os.path.join(out_dir, META), os.path.join(out_dir, ROUTER),
               *glob.glob(os.path.join(out_dir, "shard_*.npz"))]:
    if os.path.exists(path):
      os.remove(path)


def _save(out_dir: str, name: str, arrays: dict) -> str:
  """Writes arrays to out_dir/name atomically; returns the path."""
  path = os.path.join(out_dir, name)
  with open(path + ".tmp", "wb") as f:
    np.savez(f, **arrays)
  os.replace(path + ".tmp", path)
  return path


def _host(key: str, value) -> np.ndarray:
  """A traced array on the host: gate inputs in float32 (whatever the model's dtype)."""
  value = np.asarray(value)
  return value.astype(np.float32) if key.startswith("gate_input") else value


def capture(model, tokens, batch_size: int = 16, max_tokens: int | None = None,
            out_dir: str | None = None) -> Trace:
  """Traces a LoadedModel (module, variables, cfg) over windows tokens[N, S].

  Only the first max_tokens // S windows run (all without a budget); with `out_dir` the shards
  go to disk as they come (module docstring) and the returned trace reads them from there.
  """
  cfg = model.cfg
  layers = tuple(cfg.moe_layer_ids())
  require(bool(layers), "model", "has no MoE layer", "trace an MoE model")
  require(cfg.moe.router != "expert_choice", "model.moe.router", "expert-choice routing has no "
          "[T, K] choice per token to trace", "trace a token-choice model")
  tokens = np.asarray(tokens)
  require(tokens.ndim == 2 and tokens.size > 0, "tokens", f"shape {tokens.shape} is not "
          "[windows, length]", "pass token windows [N, S] (token_stream.windows)")
  check_token_ids(tokens, cfg.vocab_size)
  seq_len = tokens.shape[1]
  count = tokens.shape[0] if max_tokens is None else min(tokens.shape[0], max_tokens // seq_len)
  require(count >= 1, "max_tokens", f"{max_tokens} is less than one window of {seq_len} tokens",
          "raise max_tokens or use shorter windows")
  require(batch_size >= 1, "batch_size", f"must be >= 1, got {batch_size}", "trace >= 1 window")
  tokens = tokens[:count].astype(np.int32)
  batch = min(batch_size, count)
  if out_dir:
    _prepare(out_dir)
  variables = {k: v for k, v in model.variables.items() if k != TRACE}

  def store(index: int, rows: np.ndarray, pending: dict):
    shard = {k: _host(k, v)[:len(rows) * seq_len] for k, v in pending.items()}
    shard["tokens"] = rows
    return _save(out_dir, f"shard_{index:05d}.npz", shard) if out_dir else shard

  shards, previous = [], None
  starts = range(0, count, batch)
  for index, start in enumerate(progress(starts, total=len(starts), desc="routing trace")):
    rows = tokens[start:start + batch]
    padded = np.zeros((batch, seq_len), np.int32)  # one shape, one compile; pad rows dropped
    padded[:len(rows)] = rows
    pending = _step(model.module, layers, variables, padded)  # runs while the last is stored
    if previous is not None:
      shards.append(store(*previous))
    previous = (index, rows, pending)
  shards.append(store(*previous))
  trace = Trace(layers, cfg.moe.num_experts, cfg.moe.top_k, seq_len, count * seq_len,
                model.source, tuple(shards), router_kernels(model))
  if out_dir:
    _finish(out_dir, trace)
  return trace


def _finish(out_dir: str, trace: Trace) -> None:
  """Writes the router kernels, then meta.json (the mark of a complete trace)."""
  _save(out_dir, ROUTER, {"kernels": trace.kernels})
  meta = {name: getattr(trace, name) for name in ("layers", "num_experts", "top_k", "seq_len",
                                                  "num_tokens", "source")}
  meta["shards"] = [os.path.basename(s) for s in trace.shards]
  write_text(os.path.join(out_dir, META), json.dumps(meta, indent=2))


def load(out_dir: str) -> Trace:
  """The complete trace `capture(..., out_dir=out_dir)` wrote."""
  path = os.path.join(out_dir, META)
  require(os.path.isfile(path), "trace", f"{out_dir} holds no complete trace (no {META})",
          "capture one with out_dir, and let it finish")
  with open(path) as f:
    meta = json.load(f)
  shards = tuple(os.path.join(out_dir, name) for name in meta.pop("shards"))
  with np.load(os.path.join(out_dir, ROUTER)) as npz:
    kernels = npz["kernels"]
  return Trace(layers=tuple(meta.pop("layers")), shards=shards, kernels=kernels, **meta)
