"""Offloaded MoE decoding as Fate's runtime does it: experts in host memory, a fixed number of
expert slots per MoE layer on the device, filled between layers by the cache and the prefetcher.

Legend: B batch, S tokens per step (the prompt in prefill, 1 in decode), T = B S, D model width,
E experts, K experts per token, P predicted experts per token, L MoE layers, c_l cache slots of
MoE layer l, b_l its staging slots.

A step runs the model block by block, each piece jitted apart:
  attention  h' = h + Attn(Norm(h)), y = Norm(h')  (lm.Block(attention_only=True), KV cache);
  gate       the layer's router on y: experts[T, K], weights[T, K];
  moe        h' + sum_k w_k FFN_{slot(e_k)}(y) (+ shared experts) over the layer's slot weights
             [c_l + b_l, I, O]: the dropless dispatch, run over slots instead of experts;
dense blocks run whole; the embedding and the head are MoELM's own. Between gate and moe the
Python driver decides, as `Qwen2MoeDecoderLayer.forward` / `Qwen2MoeSparseMoeBlock.forward` do:
  1. predict MoE layer l+1's experts from y_l: Fate TopP(y_l W_gate^(l+1))
     (`cross_layer.route_topk`), the activation-path baseline `prefetch.predict_pair`, or none
     (load on demand); P = K per prompt token in prefill, whose union is ranked by count
     (`prefetch.prefill_ranking`, the least popular as INT2 within int2_rate:
     `prefetch.int2_choice`), P = prefetch_k in decode; only for a layer l+1 with offloaded
     experts (c < E), never for layer 0;
  2. start the host -> device copies: layer l's misses first (on demand, INT4), then layer
     l+1's predicted experts its cache does not hold (staged outside the cache, INT4 or INT2),
     the order of `timeline.replay`;
  3. dequantize each needed expert that is not resident into a staging slot and run moe; more
     than b_l of them run in rounds of b_l, the rounds' outputs summed;
  4. update layer l's cache with the routed experts (token-major, repeats kept); an admitted
     expert takes the slot of the one it evicted, written from its staged copy when that has the
     cache's format, else copied from host memory again (a `refill`: an INT2 prefill copy; Fate
     re-copies the INT4 form of every cached expert after use, `post_comp`). Layer l's staged
     copies are then dropped (those never used are `wasted`).
Each cache starts warm with experts 0..c_l-1 (Fate's start-up, `cache.make_caches`).

Formats (`store`): a layer's cache slots hold its allocation's precision (FULL: the model's
weights, INT4: dequantized INT4); copies are INT4, or INT2 for the chosen prefill prefetches.
With quantize=False every copy and slot is the model's weights, and with every expert resident
the logits equal the plain model's (the MoE over slots is the model's own dispatch).

Measured and modelled: running the decoder measures its routing, copies, hits and waste per
step (`OffloadStep`, the same counts `timeline.replay` models) and, with timed=True, each
piece's wall time (block_until_ready after each): the compute times the timeline takes. The
link is modelled: on a CPU a copy is a memcpy within one address space. On a GPU or TPU the
store sits in pinned host memory (`store.host_memory`) and the copies of step 2 are enqueued
(device_put) before layer l's moe, which does not wait for them; `timeline.replay` models them
as free for the host and overlapping compute. On an H200 (JAX 0.11) a device_put of an
expert took about 0.8 ms whatever its size, and in this decoder those copies added up instead
of hiding behind compute (docs/fate.md, GPU check): the overlap is modelled, not achieved.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.analysis.cross_layer import route_topk
from moe_jax.analysis.traces import router_kernels
from moe_jax.inference.fate import prefetch
from moe_jax.inference.fate.allocation import FULL as FULL_PRECISION
from moe_jax.inference.fate.allocation import Allocation
from moe_jax.inference.fate.cache import make_caches
from moe_jax.inference.fate.store import FULL, INT2, INT4, HostStore, materialize, quant_specs
from moe_jax.inference.fate.timeline import LayerStep, StepStats
from moe_jax.layers import dispatch as dispatch_lib
from moe_jax.layers.experts import Experts, SharedExperts
from moe_jax.layers.moe import MoE
from moe_jax.layers.routers import Routing
from moe_jax.models.generate import empty_cache
from moe_jax.models.lm import Block, MoELM, check_token_ids, make_embed
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import check_choice, require

METHODS = ("lod", "eap", "fate")


@dataclasses.dataclass
class OffloadStep:
  """One step of the decoder.

  layers: per MoE layer the LayerStep `timeline.replay` takes (routing in request order, the
    prefetches and INT2 choice made for it, and with timed=True the measured seconds of its
    attention + gate + prediction and of its experts, dequantization included);
  stats: its counts as timeline.StepStats (time: measured wall seconds with timed=True; stall
    is left 0: the link is modelled, not measured);
  refills: admitted experts copied again in the cache's format; rounds: moe calls.
  """
  layers: list
  stats: StepStats
  refills: int = 0
  rounds: int = 0


def _subtree(variables: dict, *path: str) -> dict:
  """{collection: variables[collection][path...]} for every collection that has the path."""
  out = {}
  for name, tree in variables.items():
    for key in path:
      tree = tree.get(key) if isinstance(tree, dict) else None
    if tree is not None:
      out[name] = tree
  return out


@functools.partial(jax.jit, static_argnums=0)
def _embed(cfg, params, tokens):
  return make_embed(cfg).apply({"params": params}, tokens)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _block(cfg, use_moe: bool, variables, x, positions):
  """A dense block whole, or an MoE block's attention half: (out, its KV cache)."""
  out, mutated = Block(cfg, use_moe, decode=True, attention_only=use_moe).apply(
      variables, x, positions, mutable=["cache"])
  return out, mutated["cache"]


@functools.partial(jax.jit, static_argnums=0)
def _gate(cfg, variables, y):
  """The MoE layer's router on y[B, S, D] -> (experts [T, K] int32, weights [T, K] float32)."""
  router = MoE(cfg.moe, cfg.activation, cfg.dtype, cfg.param_dtype).router_module(None)
  routing = router.apply(variables, y.reshape(-1, y.shape[-1]))
  k = routing.top_k
  return routing.expert.reshape(-1, k), routing.weight.reshape(-1, k)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _moe(cfg, final: bool, shared, x, y, acc, experts, weights, slot_of, slots):
  """One round over the slots: the routed experts' output summed into acc[T, D] (None: first
  round); `final` adds the shared experts and the residual: x + MoE(y) [B, S, D].

  slot_of[E]: each expert's slot in this round, -1 for none (its assignments weigh 0).
  """
  b, s, d = y.shape
  slot = slot_of[experts]  # [T, K]
  here = slot >= 0
  k = experts.shape[1]
  routing = Routing(token=jnp.repeat(jnp.arange(b * s, dtype=jnp.int32), k),
                    expert=jnp.where(here, slot, 0).reshape(-1).astype(jnp.int32),
                    weight=jnp.where(here, weights, 0.0).reshape(-1), logits=None, probs=None,
                    top_k=k)
  num_slots = slots["wi_up"].shape[0]
  bank = Experts(num_slots, cfg.moe.d_ff, cfg.activation, cfg.dtype, cfg.param_dtype)
  out, _ = dispatch_lib.dispatch("dropless", y.reshape(b * s, d).astype(cfg.dtype), routing,
                                 functools.partial(bank.apply, {"params": slots}), num_slots,
                                 gmm_impl=cfg.moe.gmm_impl)
  out = out if acc is None else acc + out
  if not final:
    return out
  out = out.reshape(b, s, d)
  if cfg.moe.shared_d_ff:
    out = out + SharedExperts(cfg.moe.shared_d_ff, cfg.activation, cfg.moe.shared_gate,
                              cfg.dtype, cfg.param_dtype).apply(shared, y)
  return x + out.astype(x.dtype)


@functools.partial(jax.jit, static_argnums=(0, 4), donate_argnums=1)
def _load(fmt: str, slots, index, arrays, dtype: str):
  """Writes an expert (arrays in `fmt`, dequantized) into slot `index` of a layer's slots."""
  kernels = materialize(fmt, arrays, dtype)
  return {name: slots[name].at[index].set(kernels[name]) for name in slots}


empty_kv = jax.jit(empty_cache, static_argnums=(0, 1))  # one compile, not op by op


@functools.partial(jax.jit, static_argnums=0)
def _head(cfg, variables, x):
  return MoELM(cfg).apply(variables, None, hidden=x)


class OffloadedLM:
  """A LoadedModel run with its routed experts offloaded (module docstring).

  allocation: slots c_l and precision per MoE layer (`allocation.shallow_favouring` /
    `uniform`); policy: "arc" | "lru"; method: "fate" | "eap" | "lod"; prefetch_k: P in decode;
  int2_rate: the prefill token share sent as INT2; staging: b (0: E - c_l, one round always);
  quantize: store and copy INT4/INT2 (False: the model's weights everywhere); int4_group,
  int2_group: their group sizes; paths: the fitted activation paths (method "eap").
  """

  def __init__(self, model: LoadedModel, allocation: Allocation, *, policy: str = "arc",
               method: str = "fate", prefetch_k: int = 1, int2_rate: float = 0.0,
               staging: int = 0, quantize: bool = True, int4_group: int = 64,
               int2_group: int = 32, paths: Optional[prefetch.ActivationPaths] = None):
    cfg = model.cfg
    self.cfg, self.moe_ids = cfg, tuple(cfg.moe_layer_ids())
    e = cfg.moe.num_experts
    require(bool(self.moe_ids) and cfg.moe.router != "expert_choice", "model",
            "has no token-choice MoE layer", "offload an MoE model with token-choice routing")
    require(len(allocation.slots) == len(self.moe_ids), "allocation",
            f"{len(allocation.slots)} layers, the model has {len(self.moe_ids)} MoE layers",
            "allocate slots for every MoE layer")
    check_choice("method", method, METHODS)
    require(method != "eap" or paths is not None, "paths", "the activation-path method needs "
            "fitted paths", "pass prefetch.fit_activation_paths(calibration routing, E)")
    require(1 <= prefetch_k <= e, "prefetch_k", f"{prefetch_k} is not in [1, {e}]",
            "prefetch at least one expert (prefetch.prefetch_k)")
    require(staging >= 0, "staging", f"{staging} < 0", "pass 0 for E - c_l staging slots")
    self.method, self.prefetch_k, self.int2_rate, self.quantize = (method, prefetch_k,
                                                                   int2_rate, quantize)
    self.paths, self.slots_per_layer = paths, tuple(int(c) for c in allocation.slots)
    self._vars = {name: nn.unbox(tree) for name, tree in model.variables.items()}
    params = self._vars["params"]
    kernels = [params[f"layer_{i}"]["moe"]["experts"] for i in self.moe_ids]
    self.store = HostStore(kernels, quant_specs(int4_group, int2_group) if quantize else None)
    self.router_kernels = router_kernels(model)  # [L, D, E]
    self.cache_format = tuple(FULL if not quantize or p == FULL_PRECISION else INT4
                              for p in allocation.precision)
    self.caches = make_caches(self.slots_per_layer, policy)
    self.resident = [dict() for _ in self.moe_ids]  # expert -> slot
    self.slots, self.staging = [], []
    for l, c in enumerate(self.slots_per_layer):
      b = min(staging or e, e - c)
      shapes = {name: (c + b,) + w.shape[1:] for name, w in kernels[l].items()}
      self.slots.append({name: jnp.zeros(shape, cfg.param_dtype)
                         for name, shape in shapes.items()})
      self.staging.append(b)
      for expert in range(c):
        self._write(l, expert, *self._host_copy(l, expert, self.cache_format[l]))
        self.resident[l][expert] = expert
    self._kv, self._pos, self._max_len = None, 0, 0

  def _host_copy(self, l: int, e: int, fmt: str) -> tuple:
    return self.store.to_device(l, e, fmt), fmt

  def _write(self, l: int, slot: int, arrays: dict, fmt: str) -> None:
    self.slots[l] = _load(fmt, self.slots[l], slot, arrays, self.cfg.param_dtype)

  def start(self, batch: int, max_len: int) -> None:
    """A new request: an empty KV cache for `batch` sequences of up to max_len tokens (the
    expert caches carry over from request to request)."""
    self._kv = empty_kv(MoELM(dataclasses.replace(self.cfg, max_len=max_len), decode=True),
                        batch)
    self._pos, self._max_len = 0, max_len

  def _predict(self, l: int, y, experts: np.ndarray, prefill: bool) -> Optional[np.ndarray]:
    """Predicted experts [T, P] of MoE layer l+1 from layer l (None: nothing to prefetch)."""
    num_experts = self.cfg.moe.num_experts
    if (self.method == "lod" or l + 1 >= len(self.moe_ids)
        or self.slots_per_layer[l + 1] == num_experts):
      return None
    p = self.cfg.moe.top_k if prefill else self.prefetch_k
    if self.method == "eap":
      return prefetch.predict_pair(self.paths, l, experts, p)
    x = y.reshape(1, -1, y.shape[-1])
    return route_topk(x, self.router_kernels[l + 1][None], p)[0]

  def _prefetch(self, pred: Optional[np.ndarray], prefill: bool) -> tuple:
    """(order, int2): the copy order of a prediction pred[T, P] and the INT2 ones among it."""
    if pred is None:
      return np.zeros(0, np.int64), frozenset()
    if not prefill:
      return np.asarray(list(dict.fromkeys(pred.ravel().tolist())), np.int64), frozenset()
    order, counts = prefetch.prefill_ranking(pred, self.cfg.moe.num_experts)
    int2 = prefetch.int2_choice(order, counts, self.int2_rate) if self.quantize else ()
    return order, frozenset(np.asarray(int2).tolist())

  def step(self, tokens, timed: bool = False) -> tuple:
    """tokens[B, S] at the next positions -> (logits [B, S, V], OffloadStep); S > 1 is a
    prefill (Fate's rule), S = 1 a decode step."""
    tokens = np.asarray(tokens)
    require(self._kv is not None and tokens.ndim == 2
            and self._pos + tokens.shape[1] <= self._max_len, "tokens",
            f"shape {tokens.shape} at position {self._pos} does not fit the request "
            f"(max_len {self._max_len})", "call start(batch, max_len) for a new request")
    check_token_ids(tokens, self.cfg.vocab_size)
    b, s = tokens.shape
    prefill, clock = s > 1, time.perf_counter()
    sync = (lambda x: jax.block_until_ready(x)) if timed else (lambda x: x)
    positions = jnp.broadcast_to(jnp.arange(self._pos, self._pos + s), (b, s))
    stats, record = StepStats(), OffloadStep([], StepStats())
    x = _embed(self.cfg, self._vars["params"]["embed"], jnp.asarray(tokens, jnp.int32))
    staged, order, int2 = {}, np.zeros(0, np.int64), frozenset()  # this MoE layer's prefetch
    for i in range(self.cfg.num_layers):
      name = f"layer_{i}"
      variables = {**_subtree(self._vars, name), "cache": self._kv[name]}
      if i not in self.moe_ids:
        x, self._kv[name] = _block(self.cfg, False, variables, x, positions)
        continue
      l, start = self.moe_ids.index(i), time.perf_counter()
      (x, y), self._kv[name] = _block(self.cfg, True, variables, x, positions)
      experts, weights = _gate(self.cfg, _subtree(self._vars, name, "moe", "router"), y)
      ids = np.asarray(experts)  # to the host: the driver decides from the routing
      pred = self._predict(l, y, ids, prefill)
      sync(y)
      attn, start = time.perf_counter() - start, time.perf_counter()
      needed = list(dict.fromkeys(ids.ravel().tolist()))
      cache = self.caches[l]
      prefetched = [e for e in needed if not cache.contains(e) and e in staged]
      misses = [e for e in needed if not cache.contains(e) and e not in staged]
      for e in misses:  # on demand, before the next layer's prefetches
        staged[e] = self._host_copy(l, e, INT4 if self.quantize else FULL)
      next_order, next_int2 = self._prefetch(pred, prefill)
      next_staged = {}
      for e in next_order.tolist():
        if not self.caches[l + 1].contains(e):
          fmt = FULL if not self.quantize else INT2 if e in next_int2 else INT4
          next_staged[e] = self._host_copy(l + 1, e, fmt)
      x, rounds = self._experts(l, x, y, experts, weights, needed, staged)
      refills = self._admit(l, ids, staged)
      sync(x)
      stats.needed += len(needed)
      stats.resident += len(needed) - len(prefetched) - len(misses)
      stats.prefetched += len(prefetched)
      stats.copies += len(misses) + len(next_staged)
      stats.wasted += len(set(staged) - set(needed))
      record.refills += refills
      record.rounds += rounds
      record.layers.append(LayerStep(ids.ravel().astype(np.int64), order, int2, attn,
                                     time.perf_counter() - start))
      staged, order, int2 = next_staged, next_order, next_int2
    logits = _head(self.cfg, self._vars, x)
    self._pos += s
    if timed:
      sync(logits)
      stats.time = time.perf_counter() - clock
    record.stats = stats
    return logits, record

  def _experts(self, l: int, x, y, experts, weights, needed: list, staged: dict) -> tuple:
    """Runs MoE layer l over its slots, in rounds of b_l staged experts; (x + MoE(y), rounds)."""
    c, b = self.slots_per_layer[l], self.staging[l]
    e = self.cfg.moe.num_experts
    outside = [i for i in needed if i not in self.resident[l]]
    batches = [outside[j:j + b] for j in range(0, len(outside), max(b, 1))] or [[]]
    acc = None
    shared = _subtree(self._vars, f"layer_{self.moe_ids[l]}", "moe", "shared_experts")
    for r, batch in enumerate(batches):
      # A new array each round, never written after the call: on CPU the jitted call may read
      # a numpy argument in place, and it runs asynchronously.
      slot_of = np.full(e, -1, np.int32)
      for i in needed if r == 0 else ():
        slot_of[i] = self.resident[l].get(i, -1)
      for j, i in enumerate(batch):
        self._write(l, c + j, *staged[i])
        slot_of[i] = c + j
      acc = _moe(self.cfg, r == len(batches) - 1, shared, x, y, acc, experts, weights,
                 jnp.array(slot_of), self.slots[l])
    return acc, len(batches)

  def _admit(self, l: int, ids: np.ndarray, staged: dict) -> int:
    """Layer l's cache requests; admitted experts written into evicted slots. Returns refills."""
    cache, resident = self.caches[l], self.resident[l]
    before = set(resident)
    for e in ids.ravel().tolist():
      cache.access(e)
    after = cache.keys()
    for e in before - after:
      del resident[e]
    free = sorted(set(range(self.slots_per_layer[l])) - set(resident.values()))
    refills = 0
    for e in sorted(after - before):
      arrays, fmt = staged[e]
      if fmt != self.cache_format[l]:
        arrays, fmt = self._host_copy(l, e, self.cache_format[l])
        refills += 1
      slot = free.pop(0)
      self._write(l, slot, arrays, fmt)
      resident[e] = slot
    return refills

  def generate(self, prompt, new_tokens: int, timed: bool = False) -> tuple:
    """Greedy continuation of prompt[B, P] by `new_tokens` tokens in a new request.

    Returns (tokens [B, P + N], logits [N] of [B, V] (the prefill's last position, then each
    decode step's), OffloadSteps [N]: the prefill, then N - 1 decode steps).
    """
    prompt = np.asarray(prompt)
    require(prompt.ndim == 2 and new_tokens >= 1, "prompt", f"shape {prompt.shape}, "
            f"{new_tokens} new tokens", "pass prompt[B, P] and ask for at least one token")
    self.start(prompt.shape[0], prompt.shape[1] + new_tokens)
    logits, step = self.step(prompt, timed)
    out, records = [np.asarray(logits[:, -1])], [step]
    tokens = [out[-1].argmax(-1)]
    for _ in range(new_tokens - 1):
      logits, step = self.step(tokens[-1][:, None].astype(np.int32), timed)
      out.append(np.asarray(logits[:, -1]))
      records.append(step)
      tokens.append(out[-1].argmax(-1))
    return np.concatenate([prompt, np.stack(tokens, 1)], 1), out, records
