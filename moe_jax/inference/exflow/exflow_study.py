"""The measurements of the ExFlow experiment, one function per section of its results.

Legend: L MoE layers, E experts per layer, G devices, M nodes of D devices (staged: G = M D),
N tokens of a trace, n_l the transition counts (moe_jax.analysis.affinity).

- `trace_windows`: held-out token windows, alternately the fit and the held-out split.
- `affinity_scores`: the per-layer-pair scores of `affinity.summary` and the conditionals A_l.
- `placements` / `staged_placements`: every method's placement solved on the fit split's counts,
  scored on both splits (the cost: fraction of consecutive-layer transitions that cross devices;
  staged also its mean hop cost, an inter-node hop costing 2, and the node-crossing fraction).
  "solved" is the best on the fit split of the integer program, the recursive bisection and
  both polished (local_search): chosen without looking at the held-out split.
- `over_training`: the same scores at each kept training checkpoint, and the placement solved
  there scored on the final model's held-out traces.
- `cost_rows`: cost.py's step times from the measured row bytes and the held-out crossings.
- `solver_rows`: benchmarks/exflow_solver.py's instances (planted affinity) as E and L grow.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from moe_jax.analysis import affinity, traces
from moe_jax.data.corpus import DataConfig, lm_data
from moe_jax.inference.exflow import checkpoints, cost, hierarchical, ilp, local_search
from moe_jax.inference.exflow import placement as placement_lib
from moe_jax.utils.errors import require

METHODS = ("contiguous", "random", "ilp", "ilp_polish", "bisect", "bisect_polish")
SOLVERS = ("ilp", "ilp_polish", "bisect", "bisect_polish")


def trace_windows(data: DataConfig, seq_len: int, windows: int, tokens_path: str = ""):
  """(fit [W/2, S], held_out [W/2, S]): `windows` windows of the held-out text (evenly over its
  domains' windows), or of tokens_path (a .npy of token ids [n, >= S]), alternately split."""
  if tokens_path:
    tokens = np.load(tokens_path)
    require(tokens.ndim == 2 and tokens.shape[1] >= seq_len, "traces.tokens_path",
            f"{tokens_path} holds shape {tokens.shape}, not [windows, >= {seq_len}]",
            "save token ids as a [windows, length] array")
  else:
    _, eval_sets = lm_data(data, seq_len)
    tokens = np.concatenate([eval_sets[d] for d in sorted(eval_sets)])
  require(len(tokens) >= 2, "traces.windows", f"only {len(tokens)} windows of {seq_len} tokens",
          "use shorter windows or more text")
  pick = np.unique(np.linspace(0, len(tokens) - 1, min(windows, len(tokens))).astype(np.int64))
  chosen = tokens[pick, :seq_len].astype(np.int32)
  return chosen[0::2], chosen[1::2]


def expert_trace(model, tokens: np.ndarray, batch_size: int) -> np.ndarray:
  """experts[L, N, K] the MoE layers of a LoadedModel chose for windows tokens (traces.py)."""
  return traces.capture(model, tokens, batch_size).stack("expert")


def affinity_scores(trace: np.ndarray, num_experts: int) -> dict:
  """`affinity.summary` of a trace [L, N(, K)] and its conditionals A[L-1, E, E] (lists)."""
  counts = affinity.transition_counts(trace, num_experts)
  return {**affinity.summary(trace, num_experts),
          "conditional": affinity.conditional(counts).tolist()}


def _score(p: np.ndarray, fit: np.ndarray, held: np.ndarray, seconds: float, gap: float,
           devices_per_node: Optional[int] = None) -> dict:
  out = {"fit": placement_lib.cost(p, fit), "held_out": placement_lib.cost(p, held),
         "seconds": seconds, "gap": gap, "placement": p.tolist()}
  if devices_per_node is not None:
    nodes = p // devices_per_node
    out.update(staged_fit=placement_lib.cost(p, fit, devices_per_node),
               staged_held_out=placement_lib.cost(p, held, devices_per_node),
               node_fit=placement_lib.cost(nodes, fit),
               node_held_out=placement_lib.cost(nodes, held))
  return out


def _timed_polish(counts: np.ndarray, start: ilp.Solution, num_devices: int) -> ilp.Solution:
  clock = time.perf_counter()
  polished = local_search.polish(counts, start.placement, num_devices)
  return ilp.Solution(polished, placement_lib.cost(polished, counts), float("nan"), start.gap,
                      start.seconds + time.perf_counter() - clock)


def placements(fit: np.ndarray, held: np.ndarray, num_devices: int, time_limit: float,
               seed: int = 0) -> dict:
  """Every method's placement on G devices, solved on counts `fit`, scored on `fit` and `held`."""
  num_layers, num_experts = fit.shape[0] + 1, fit.shape[1]
  found = {"ilp": ilp.solve(fit, num_devices, time_limit),
           "bisect": hierarchical.bisect(fit, num_devices, time_limit / max(num_devices - 1, 1))}
  found["ilp_polish"] = _timed_polish(fit, found["ilp"], num_devices)
  found["bisect_polish"] = _timed_polish(fit, found["bisect"], num_devices)
  out = {"contiguous": _score(placement_lib.contiguous(num_layers, num_experts, num_devices),
                              fit, held, 0.0, 0.0),
         "random": _score(placement_lib.random_balanced(num_layers, num_experts, num_devices,
                                                        seed), fit, held, 0.0, 0.0)}
  out.update({name: _score(s.placement, fit, held, s.seconds, s.gap) for name, s in found.items()})
  best = min(SOLVERS, key=lambda m: out[m]["fit"])  # chosen on the fit split only
  out["solved"] = dict(out[best], method=best)
  out["reduction_vs_contiguous"] = 1 - out["solved"]["held_out"] / out["contiguous"]["held_out"]
  return out


def staged_placements(fit: np.ndarray, held: np.ndarray, num_nodes: int, devices_per_node: int,
                      time_limit: float, seed: int = 0) -> dict:
  """Nodes then devices (hierarchical.staged) against contiguous, random and the flat program."""
  num_layers, num_experts = fit.shape[0] + 1, fit.shape[1]
  g = num_nodes * devices_per_node
  s = hierarchical.staged(fit, num_nodes, devices_per_node, time_limit)
  flat = ilp.solve(fit, g, time_limit)
  candidates = {
      "contiguous": (placement_lib.contiguous(num_layers, num_experts, g), 0.0, 0.0),
      "random": (placement_lib.random_balanced(num_layers, num_experts, g, seed), 0.0, 0.0),
      "ilp": (flat.placement, flat.seconds, flat.gap), "staged": (s.placement, s.seconds, s.gap)}
  out = {name: _score(p, fit, held, sec, gap, devices_per_node)
         for name, (p, sec, gap) in candidates.items()}
  out["solved"] = dict(out["staged"], method="staged")
  return out


def over_training(spec: str, fit_tokens: np.ndarray, held_tokens: np.ndarray,
                  final_held: np.ndarray, num_devices: int, time_limit: float,
                  batch_size: int) -> dict:
  """Per kept checkpoint of the model behind `spec`: mean affinity scores on the held-out split
  and the ILP (+ polish) placement solved on its fit split, scored on its own held-out split and
  on the final model's (counts final_held)."""
  train_dir = checkpoints.training_dir(spec)
  if train_dir is None:
    return {"available": False, "reason": f"{spec} has no training checkpoints (a HF directory)"}
  seed = checkpoints.init_seed(spec)
  kept = checkpoints.steps(train_dir)
  steps = ([0] if seed is not None and 0 not in kept else []) + kept
  rows = []
  for step in steps:
    model = checkpoints.model_at(train_dir, step, seed)
    num_experts = model.cfg.moe.num_experts
    fit = affinity.transition_counts(expert_trace(model, fit_tokens, batch_size), num_experts)
    held_trace = expert_trace(model, held_tokens, batch_size)
    held = affinity.transition_counts(held_trace, num_experts)
    scores = affinity.summary(held_trace, num_experts)
    solved = local_search.polish(fit, ilp.solve(fit, num_devices, time_limit).placement,
                                 num_devices)
    contiguous = placement_lib.contiguous(fit.shape[0] + 1, num_experts, num_devices)
    rows.append({
        "step": step,
        "max_conditional": float(np.mean(scores["max_conditional"])),
        "shuffled_max_conditional": float(np.mean(scores["shuffled_max_conditional"])),
        "mutual_information_bits": float(np.mean(scores["mutual_information_bits"])),
        "shuffled_mutual_information_bits": float(np.mean(
            scores["shuffled_mutual_information_bits"])),
        "solved_held_out": placement_lib.cost(solved, held),
        "contiguous_held_out": placement_lib.cost(contiguous, held),
        "solved_on_final": placement_lib.cost(solved, final_held)})
  return {"available": True, "train_dir": train_dir, "devices": num_devices,
          "init_reproduced": seed is not None, "checkpoints": rows}


def cost_rows(config: cost.CostConfig, traffic: cost.Traffic, widths: dict[str, float],
              placed: dict, staged: Optional[dict]) -> list[dict]:
  """Step times (us) of the standard path and the coherent path (contiguous and solved
  placements; with the K/V all-gather and tokens only) for every width (name -> factor on the
  measured bytes), layout, link and load."""
  layouts = [(f"G{g}", g, g, entry) for g, entry in placed.items()]
  if staged is not None:
    layouts.append((f"{staged['nodes']}x{staged['devices_per_node']}", staged["devices"],
                    staged["devices_per_node"], staged))
  rows = []
  for width, factor in widths.items():
    scaled = traffic.scaled(factor)
    for name, g, per_node, entry in layouts:
      for link_name, link in config.links.items():
        topo = cost.Topology(g, per_node, link, config.network)
        for tokens in config.tokens_per_device:
          rows.append({"width": width, "layout": name, "link": link_name,
                       "tokens_per_device": tokens,
                       **_step_times(topo, scaled, tokens, entry, config.compute_us)})
  return rows


def _step_times(topo: cost.Topology, traffic: cost.Traffic, tokens: int, entry: dict,
                compute_us: float) -> dict:
  """One cost row: the paths' step times, speedups and hops per token (held-out crossings)."""
  def split(method):  # (p_in, p_out): crossings inside a node and across nodes
    p = entry[method]
    out_node = p.get("node_held_out", 0.0)
    return p["held_out"] - out_node, out_node

  std = cost.standard_us(topo, traffic, tokens, compute_us)
  coh = {m: cost.coherent_us(topo, traffic, tokens, *split(m), compute_us)
         for m in ("contiguous", "solved")}
  only = cost.coherent_us(topo, traffic, tokens, *split("solved"), compute_us, tokens_only=True)
  layers, g = traffic.moe_layers, topo.devices
  return {"standard_us": std, "coherent_contiguous_us": coh["contiguous"],
          "coherent_solved_us": coh["solved"], "coherent_tokens_only_us": only,
          "speedup_contiguous": std / coh["contiguous"], "speedup_solved": std / coh["solved"],
          "speedup_tokens_only": std / only,
          "hops_standard": cost.hops_per_token(layers, g, None),
          "hops_contiguous": cost.hops_per_token(layers, g, entry["contiguous"]["held_out"]),
          "hops_solved": cost.hops_per_token(layers, g, entry["solved"]["held_out"])}


def solver_rows(instances: tuple[str, ...], time_limit: float, num_tokens: int,
                strength: float) -> list:
  """benchmarks/exflow_solver.py's row (its HEADERS) for each "ExLxG" instance."""
  from benchmarks import exflow_solver  # pylint: disable=g-import-not-at-top (a repo-root tool)
  return [exflow_solver.measure(*map(int, spec.split("x")), time_limit, seed, num_tokens,
                                strength) for seed, spec in enumerate(instances)]


def solver_headers() -> list[str]:
  """The columns of `solver_rows` (benchmarks/exflow_solver.py's HEADERS)."""
  from benchmarks import exflow_solver  # pylint: disable=g-import-not-at-top (a repo-root tool)
  return list(exflow_solver.HEADERS)
