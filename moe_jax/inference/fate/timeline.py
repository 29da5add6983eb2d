"""A two-stream timeline of offloaded MoE inference: compute, and host-to-device copies.

Legend: L MoE layers, T prompt tokens, S decode steps, K experts per token, P predicted experts per
token, E experts.

A step is one forward pass (the prompt's prefill, or one decode token) through the L MoE layers.
Layer l of a step runs, on the compute stream,
  attn_l   attention, norms, the router and the prediction of layer l+1's experts;
  moe_l    the routed experts, started once every needed expert is on the device.
When attn_l ends, the copy stream (one FIFO queue, a copy of n bytes takes link.copy_time(n) =
latency + n / bandwidth) is given first layer l's misses, then the prefetches of layer l+1 that its
cache does not hold, in the predictor's order. Prefetches thus overlap moe_l and attn_{l+1}; a miss
stalls moe_l until its copy lands:
  start(moe_l) = max(end(attn_l), arrival of each needed expert not resident),
  stall = sum_l start(moe_l) - end(attn_l).
A needed expert is resident (in layer l's cache), prefetched (in the staging buffer) or missed
(copied on demand). Misses and decode prefetches go as INT4; prefill prefetches chosen by
`prefetch.int2_choice` as INT2. After moe_l the router's choices are requests to layer l's cache
(token-major, repeats kept), and unused prefetches are dropped without touching it (`cache`).
Layer 0 gets no prefetch (nothing runs before it in a step). Fully resident layers (c_l = E)
never copy, so layers at full precision need no special case; the time of dequantizing INT4
experts belongs in moe_l.

The methods differ only in their predictions: load on demand (pred None), the activation-path
baseline (`prefetch.predict_from_paths`) and Fate (`moe_jax.analysis.cross_layer.predict_next`;
int2_rate > 0 in prefill), each predicting K experts per prompt token and `prefetch.prefetch_k` per
decode token; the cache policy and allocation come with `caches`
(`cache.make_caches(allocation.slots, policy)`).

Differences from Fate's code: Fate issues layer l+1's prefetches before layer l's on-demand loads on
the same side stream, so a miss waits behind them; here the misses go first. After computing with a
cached expert Fate copies its INT4 weights from the host again (`post_comp` -> `quan_experts`,
restoring the INT4 form it dequantized in place); that traffic is not modelled.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from moe_jax.analysis.affinity import selections
from moe_jax.inference.fate.link import Link
from moe_jax.inference.fate.prefetch import int2_choice, prefill_ranking
from moe_jax.utils.errors import require

_EMPTY = np.zeros(0, np.int64)


@dataclasses.dataclass(frozen=True)
class LayerStep:
  """One MoE layer in one step.

  needed: the routed experts in request order (token-major, repeats kept).
  prefetch: experts to copy for this layer while the layer before runs, in copy order.
  int2: those of `prefetch` copied as INT2.
  attn, moe: seconds of the layer's work before the experts and of the experts.
  """
  needed: np.ndarray
  prefetch: np.ndarray
  int2: frozenset
  attn: float
  moe: float


@dataclasses.dataclass
class StepStats:
  """One step: time (s), stall (s), needed (distinct experts summed over layers), of which
  resident and prefetched, copies (on demand + prefetch), wasted (prefetched, never used)."""
  time: float = 0.0
  stall: float = 0.0
  needed: int = 0
  resident: int = 0
  prefetched: int = 0
  copies: int = 0
  wasted: int = 0


def _times(attn, moe, num_layers: int) -> tuple:
  attn, moe = np.broadcast_to(attn, num_layers), np.broadcast_to(moe, num_layers)
  require(attn.min() >= 0 and moe.min() >= 0, "attn, moe", "negative times",
          "pass seconds >= 0 per layer (or one value for all)")
  return attn, moe


def decode_steps(actual, pred: Optional[np.ndarray], attn, moe, num_experts: int) -> list:
  """Decode routing actual[S, L, K] and predictions pred[S, L-1, P] (None: none) -> S steps."""
  actual = np.asarray(actual)
  require(actual.ndim == 3, "actual", f"shape {actual.shape} is not [S, L, K]",
          "pass each decode step's routed experts per layer")
  actual = np.swapaxes(selections(np.swapaxes(actual, 0, 1), num_experts), 0, 1)
  s, num_layers, _ = actual.shape
  require(pred is None or np.shape(pred)[:2] == (s, num_layers - 1), "pred",
          f"shape {np.shape(pred)} is not [S, L-1, P] = [{s}, {num_layers - 1}, P]",
          "pass each step's predictions of layers 1..L-1, or None for load on demand")
  attn, moe = _times(attn, moe, num_layers)
  return [[LayerStep(actual[i, l], _EMPTY if pred is None or l == 0 else np.asarray(pred[i, l - 1]),
                     frozenset(), float(attn[l]), float(moe[l])) for l in range(num_layers)]
          for i in range(s)]


def prefill_step(actual, pred: Optional[np.ndarray], attn, moe, num_experts: int,
                 int2_rate: float = 0.0) -> list:
  """Prompt routing actual[L, T, K], predictions pred[L-1, T, K] (None: none) -> one step.

  Each layer's prefetch is its predicted union ranked by count; the least popular go as INT2
  within `int2_rate` of the predicted token mass.
  """
  actual = selections(actual, num_experts)
  num_layers = actual.shape[0]
  require(pred is None or np.shape(pred)[:2] == (num_layers - 1, actual.shape[1]), "pred",
          f"shape {np.shape(pred)} is not [L-1, T, P] = [{num_layers - 1}, {actual.shape[1]}, P]",
          "pass the predictions of layers 1..L-1 for the prompt's tokens, or None")
  attn, moe = _times(attn, moe, num_layers)
  layers = []
  for l in range(num_layers):
    prefetch, int2 = _EMPTY, frozenset()
    if pred is not None and l > 0:
      prefetch, counts = prefill_ranking(pred[l - 1], num_experts)
      int2 = frozenset(int2_choice(prefetch, counts, int2_rate).tolist())
    layers.append(LayerStep(actual[l].ravel(), prefetch, int2, float(attn[l]), float(moe[l])))
  return layers


def replay(steps: Sequence[list], caches: Sequence, link: Link, int4_bytes: float,
           int2_bytes: float) -> list:
  """Runs `steps` (lists of L LayerSteps) through the two streams; returns one StepStats each.

  `caches` (one per layer, `access` / `contains`) carry their state from step to step and are
  updated in place. Both streams start idle at time 0; a step starts when the previous one ends.
  """
  clock = copy_free = 0.0
  staged = [dict() for _ in caches]  # layer -> {expert: arrival time}
  out = []
  for step in steps:
    require(len(step) == len(caches), "caches", f"{len(caches)} caches for {len(step)} layers",
            "pass one cache per MoE layer")
    stats, start = StepStats(), clock
    for l, layer in enumerate(step):
      clock += layer.attn
      arrivals = [clock]
      for e in dict.fromkeys(layer.needed.tolist()):
        stats.needed += 1
        if caches[l].contains(e):
          stats.resident += 1
        elif e in staged[l]:
          stats.prefetched += 1
          arrivals.append(staged[l].pop(e))
        else:
          copy_free = max(clock, copy_free) + link.copy_time(int4_bytes)
          stats.copies += 1
          arrivals.append(copy_free)
      if l + 1 < len(step):
        nxt = step[l + 1]
        for e in dict.fromkeys(nxt.prefetch.tolist()):
          if not caches[l + 1].contains(e):
            copy_free = max(clock, copy_free) + link.copy_time(
                int2_bytes if e in nxt.int2 else int4_bytes)
            stats.copies += 1
            staged[l + 1][e] = copy_free
      begin = max(arrivals)
      stats.stall += begin - clock
      clock = begin + layer.moe
      stats.wasted += len(staged[l])
      staged[l].clear()
      for e in layer.needed.tolist():
        caches[l].access(e)
    stats.time = clock - start
    out.append(stats)
  return out


def summarize(stats: Sequence[StepStats]) -> dict:
  """Totals over steps, per-step means of time and stall, and hit rates.

  hit_rate: needed experts already on the device (resident or prefetched); cache_hit_rate:
  resident only.
  """
  total = {f.name: sum(getattr(s, f.name) for s in stats) for f in dataclasses.fields(StepStats)}
  n, needed = max(len(stats), 1), max(total["needed"], 1)
  total.update(steps=len(stats), time_per_step=total["time"] / n, stall_per_step=total["stall"] / n,
               hit_rate=(total["resident"] + total["prefetched"]) / needed,
               cache_hit_rate=total["resident"] / needed)
  return total


def simulate(prefill: list, decode: Sequence[list], caches: Sequence, link: Link, int4_bytes: float,
             int2_bytes: float) -> dict:
  """One request (its prefill step, then its decode steps) -> {"prefill", "decode"} summaries."""
  stats = replay([prefill, *decode], caches, link, int4_bytes, int2_bytes)
  return {"prefill": summarize(stats[:1]), "decode": summarize(stats[1:])}
