"""Fate's offloaded decoder on a GPU: the store in pinned host memory, real copies and their overlap.

Run on a machine with a GPU (what docs/fate.md reports was run so):
  python -m tests.inference.fate_device_checks > fate_gpu.json   (--small: a CPU smoke run)
Prints one JSON object of measured values on a random model with Qwen1.5-MoE-A2.7B's expert shape
(D 2048, F 1408, bfloat16; 16 experts per layer, top-2; nothing trains):
  memory_kind: where the store's arrays live ("pinned_host" on a GPU);
  copy: seconds of one expert's host -> device copy per format (median), its bytes and GB/s;
  overlap: seconds of a compute kernel alone, of 16 INT4 expert copies alone and of both
    enqueued together (overlapped when `both` is well under the sum);
  decode: wall seconds of the prefill and per decode token of the offloaded decoder at one
    budget for load on demand, the activation-path baseline and Fate, and with every expert
    resident, with its counts; and the timeline's estimate of the same steps from the per-layer
    compute times of the all-resident decoder (measured piece by piece: `layer_ms`) and the
    measured INT4 copy rate (no latency term).
"""
import dataclasses
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.analysis import traces
from moe_jax.inference.fate import allocation, fate_study, prefetch, timeline
from moe_jax.inference.fate.cache import make_caches
from moe_jax.inference.fate.link import Link
from moe_jax.inference.fate.offload import OffloadedLM
from moe_jax.inference.fate.store import FULL, INT2, INT4, HostStore, host_memory
from moe_jax.layers.moe import MoEConfig
from moe_jax.models.config import LMConfig
from moe_jax.models.lm import MoELM
from moe_jax.models.loading import LoadedModel

E, K, LAYERS, PROMPT, NEW, BUDGET = 16, 2, 6, 64, 24, 0.25


def _median_time(fn, reps: int = 10) -> float:
  fn()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def copies(store: HostStore) -> dict:
  out = {}
  for fmt in (FULL, INT4, INT2):
    seconds = _median_time(lambda: jax.block_until_ready(store.to_device(0, 1, fmt)))
    out[fmt] = {"seconds": seconds, "bytes": store.nbytes(fmt),
                "gb_s": store.nbytes(fmt) / seconds / 1e9}
  return out


def overlap(store: HostStore, n: int) -> dict:
  a = jnp.ones((n, n), jnp.bfloat16)

  @jax.jit
  def compute(a):
    return jax.lax.fori_loop(0, 8, lambda _, x: (x @ a) * 1e-4, a)

  def load():
    return [store.to_device(1, e, INT4) for e in range(E)]

  seconds = {"compute": _median_time(lambda: jax.block_until_ready(compute(a))),
             "copies": _median_time(lambda: jax.block_until_ready(load()))}
  seconds["both"] = _median_time(lambda: jax.block_until_ready((compute(a), load())))
  return seconds


def wall(decoder: OffloadedLM, tokens: np.ndarray, timed: bool) -> tuple:
  """(prefill seconds, decode seconds per token, OffloadSteps) of one teacher-forced request."""
  decoder.start(*tokens.shape)
  start = time.perf_counter()
  logits, step = decoder.step(tokens[:, :PROMPT], timed)
  np.asarray(logits)
  prefill, steps = time.perf_counter() - start, [step]
  start = time.perf_counter()
  for i in range(PROMPT, tokens.shape[1] - 1):
    logits, step = decoder.step(tokens[:, i:i + 1], timed)
    np.asarray(logits)
    steps.append(step)
  return prefill, (time.perf_counter() - start) / (len(steps) - 1), steps


def main(width: int, d_ff: int):
  cfg = LMConfig(vocab_size=256, d_model=width, num_layers=LAYERS, num_heads=16, num_kv_heads=16,
                 d_ff=d_ff, max_len=PROMPT + NEW, dtype="bfloat16", param_dtype="bfloat16",
                 moe=MoEConfig(num_experts=E, top_k=K, d_ff=d_ff))
  module = MoELM(cfg)
  model = LoadedModel(module, jax.jit(module.init)(jax.random.key(0),
                                                   jnp.zeros((1, 8), jnp.int32)), "random")
  rng = np.random.default_rng(0)
  requests = rng.integers(0, 256, (4, 1, PROMPT + NEW)).astype(np.int32)
  calib = traces.capture(model, rng.integers(0, 256, (8, PROMPT)).astype(np.int32))
  paths = prefetch.fit_activation_paths(calib.stack("expert"), E)
  weights = 3 * cfg.d_model * cfg.moe.d_ff
  int4_bytes = weights * (0.5 + 5 / 64)
  alloc = allocation.shallow_favouring(BUDGET * LAYERS * E * int4_bytes, LAYERS, E, 2 * weights,
                                       int4_bytes)
  out = {"device": str(jax.devices()[0]), "jax": jax.__version__, "slots": alloc.slots}
  decoders = {"resident": OffloadedLM(model, allocation.Allocation(
      (E,) * LAYERS, (FULL,) * LAYERS, 0.0), quantize=False)}
  for method in ("lod", "eap", "fate"):
    decoders[method] = OffloadedLM(model, alloc, method=method, prefetch_k=2 * K,
                                   int2_rate=0.3, paths=paths)
  store = decoders["fate"].store
  pinned = host_memory(store.device)
  out["memory_kind"] = None if pinned is None else pinned.memory_kind
  print("copies", file=sys.stderr, flush=True)
  out["copy"] = copies(store)
  out["overlap"] = overlap(store, 8192 if width > 1024 else 256)
  link = Link(out["copy"][INT4]["bytes"] / out["copy"][INT4]["seconds"], 0.0)
  times = None
  out["decode"] = {}
  for name, decoder in decoders.items():
    print(f"decoding: {name}", file=sys.stderr, flush=True)
    runs = [wall(decoder, r, False) for r in requests[:3]]  # the first one compiles
    if name == "resident":  # compute alone, piece by piece: the times every estimate uses
      times = fate_study.layer_times([wall(decoder, requests[3], True)[2]])
    steps = [[dataclasses.replace(layer, attn=float(attn[l]), moe=float(moe[l]))
              for l, layer in enumerate(s.layers)]
             for r in runs for i, s in enumerate(r[2])
             for attn, moe in [(times.attn_prefill, times.moe_prefill) if i == 0 else
                               (times.attn_decode, times.moe_decode)]]
    per = len(runs[0][2])  # steps per request; the replay's caches start as the decoder's did
    est = timeline.replay(steps, make_caches(decoder.slots_per_layer, "arc"), link,
                          store.nbytes(INT4), store.nbytes(INT2))[per:]
    out["decode"][name] = {
        "prefill_s": float(np.mean([r[0] for r in runs[1:]])),
        "decode_s_per_token": float(np.mean([r[1] for r in runs[1:]])),
        "counts": {f: int(sum(getattr(s.stats, f) for r in runs[1:] for s in r[2]))
                   for f in ("needed", "resident", "prefetched", "copies", "wasted")},
        "estimated_prefill_s": float(np.mean([est[i].time for i in range(0, len(est), per)])),
        "estimated_decode_s_per_token": float(np.mean(
            [s.time for j, s in enumerate(est) if j % per]))}
  out["layer_ms"] = {k: float(1e3 * np.mean(v)) for k, v in dataclasses.asdict(times).items()}
  print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
  main(*((128, 64) if "--small" in sys.argv else (2048, 1408)))  # --small: a CPU smoke run
