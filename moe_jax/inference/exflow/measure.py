"""The three decoders of coherent.py on one mesh: equal logits, coherent caches, collectives.

Legend: N devices, B sequences, T generated tokens, L MoE layers, L_a attention layers (all
layers), D model width, V vocabulary.

`compare` generates T greedy tokens with the one-device, standard expert-parallel and
context-coherent decoders (and, given a placement, with the coherent decoder on the model whose
experts and router columns were permuted to realise it) and returns plain numbers:
  - the one-device tokens [B, P + T], relative max errors of the logits [T, B, V] between paths
    (max |a - b| / max |b|), whether the tokens agree, and the largest relative error of any
    device's copy of the coherent cache against the one-device cache (the coherence the
    all-gather must keep);
  - the tokens each coherent decode step's MoE layers sent to another device;
  - per path, the collectives of one compiled decode step and of the prefill: count and bytes of
    all-to-all, all-gather, all-reduce, collective-permute and reduce-scatter (the bytes of
    `expert_parallel.collective_bytes`: what each device sends in an all-to-all, ends with in an
    all-gather), and the all-to-all bytes per row (a token's slot in the buffer);
  - the payload of the coherent step's all-gather per token: every attention layer's new cache
    row + its sequence id, + (sequence, next token) (`kv_row_bytes`).
The multi-device processes run it through `run_on_devices` (a subprocess with N simulated CPU
devices: JAX fixes its device count when it starts): `python -m moe_jax.inference.exflow.measure
REQUEST.json` prints one JSON line.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Optional

import jax
import numpy as np

from moe_jax.inference.exflow.apply import apply_placement
from moe_jax.inference.exflow.coherent import Decoder
from moe_jax.models.loading import load_model
from moe_jax.parallel import expert_parallel as ep
from moe_jax.parallel.mesh import make_mesh

OPS = ("all-to-all", "all-gather", "all-reduce", "collective-permute", "reduce-scatter")


def rel_err(a, b) -> float:
  """max |a - b| / max |b| in float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))


def collectives(hlo_text: str) -> dict:
  """{op: {"count", "bytes"}} of compiled HLO text, and the all-to-all bytes per buffer row."""
  out = {op: {"count": ep.count_collective(hlo_text, op),
              "bytes": ep.collective_bytes(hlo_text, op)} for op in OPS}
  rows = sum(math.prod(dims[:-1]) for _, dims in ep.all_to_all_shapes(hlo_text))
  out["all-to-all"]["bytes_per_row"] = out["all-to-all"]["bytes"] / rows if rows else 0.0
  return out


def kv_row_bytes(cache: dict) -> int:
  """Bytes the coherent step's all-gather carries per token: each layer's new cache row and its
  sequence id (int32), plus the token's (sequence, next token)."""
  per_layer = [sum(math.prod(v.shape[2:]) * v.dtype.itemsize for k, v in layer["attn"].items()
                   if k not in ("index", "positions")) + 4 for layer in cache.values()]
  return sum(per_layer) + 8


def _copies_err(reference: dict, cache: dict) -> float:
  """Largest relative error of any device's copy of any leaf of `cache` against `reference`."""
  errs = [rel_err(np.asarray(shard.data), np.asarray(ref))
          for ref, leaf in zip(jax.tree.leaves(reference), jax.tree.leaves(cache))
          for shard in leaf.addressable_shards]
  return max(errs)


def _crossings(run) -> list:
  return [] if run.crossings is None else run.crossings.tolist()


def compare(cfg, variables: dict, prompt: np.ndarray, steps: int, num_devices: int,
            placement: Optional[np.ndarray] = None) -> dict:
  """The three decoders on `num_devices` devices (module docstring); plain numbers."""
  mesh = make_mesh({"expert": num_devices}, jax.devices()[:num_devices])
  decoders = {"single": Decoder(cfg), "standard": Decoder(cfg, "standard", mesh),
              "coherent": Decoder(cfg, "coherent", mesh)}
  runs = {name: d.generate(variables, prompt, steps) for name, d in decoders.items()}
  single, coherent = runs["single"], runs["coherent"]
  out = {
      "devices": num_devices, "batch": int(prompt.shape[0]), "steps": steps,
      "moe_layers": len(cfg.moe_layer_ids()), "layers": cfg.num_layers,
      "logits_err": {"standard_vs_single": rel_err(runs["standard"].logits, single.logits),
                     "coherent_vs_single": rel_err(coherent.logits, single.logits),
                     "coherent_vs_standard": rel_err(coherent.logits,
                                                     runs["standard"].logits)},
      "tokens": single.tokens.tolist(),
      "tokens_equal": bool(all(np.array_equal(r.tokens, single.tokens) for r in runs.values())),
      "cache_err": _copies_err(single.cache, coherent.cache),
      "crossings": _crossings(coherent),
      "kv_row_bytes": kv_row_bytes(single.cache),
      "hlo": {path: {"step": collectives(runs[path].step_hlo),
                     "prefill": collectives(runs[path].prefill_hlo)}
              for path in ("standard", "coherent")},
  }
  if placement is not None:  # the coherent decoder's compiled programs, other weights
    placed = decoders["coherent"].generate(
        apply_placement(cfg, variables, placement, num_devices), prompt, steps)
    out["placed"] = {"logits_err_vs_single": rel_err(placed.logits, single.logits),
                     "tokens_equal": bool(np.array_equal(placed.tokens, single.tokens)),
                     "crossings": _crossings(placed)}
  return out


# Cheaper LLVM passes: compiling the three decoders dominates a small model's run (~3x less).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def run_on_devices(request: dict, num_devices: int, workdir: str,
                   fast_compile: bool = False) -> dict:
  """`compare` in a subprocess with `num_devices` simulated CPU devices.

  request: {"model": load_model spec, "prompt": [[token, ...], ...], "steps": T,
  "placement": [[device, ...], ...] or None}; written to workdir/measure_request_N.json.
  """
  path = os.path.join(workdir, f"measure_request_{num_devices}.json")
  with open(path, "w") as f:
    json.dump({**request, "devices": num_devices}, f)
  flags = [os.environ.get("XLA_FLAGS", ""), FAST_COMPILE if fast_compile else "",
           f"--xla_force_host_platform_device_count={num_devices}"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": " ".join(f for f in flags if f)}
  proc = subprocess.run([sys.executable, "-m", "moe_jax.inference.exflow.measure", path],
                        capture_output=True, text=True, env=env, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"measure on {num_devices} devices failed:\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(request_path: str) -> None:
  with open(request_path) as f:
    request = json.load(f)
  model = load_model(request["model"])
  placement = request.get("placement")
  out = compare(model.cfg, model.variables, np.asarray(request["prompt"], np.int32),
                request["steps"], request["devices"],
                None if placement is None else np.asarray(placement))
  print(json.dumps(out))


if __name__ == "__main__":
  main(sys.argv[1])
