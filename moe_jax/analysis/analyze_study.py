"""The measurements of `experiments.analyze`, one function per section of its results.

Legend: L MoE layers, T traced tokens, S tokens per window, E experts, K experts per token,
G devices, n_l the transition counts of layer pair l -> l+1 (moe_jax.analysis.affinity).

- `layer_stats`: one layer's load (expert_load), HoME's per-expert zero fraction and output
  scale, MC-SMoE's router-logit similarity between experts (similarity.py).
- `affinity_section`: ExFlow's conditionals A_l(a -> b) = P(b at l+1 | a at l) per layer pair
  and their scalars against a token-shuffled twin of the trace (affinity.summary).
- `split_counts`: n_l over the even windows (fit) and the odd windows (held-out).
- `placement_section`: ExFlow's placement on G devices: the compact integer program (ilp.solve,
  HiGHS) polished layer by layer (local_search.polish), solved on the fit counts; it and the
  contiguous and a random balanced placement scored on both splits (the fraction of transitions
  that cross devices, placement.cost).
- `fate_section`: Fate's adjacent gate-input cosine and the recall of its cross-layer prediction
  with P = K (cross_layer.py), over blocks of tokens, so that at most two layers' gate inputs
  are in memory and one block of them in float64.
"""
from __future__ import annotations

import numpy as np

from moe_jax.analysis import affinity, cross_layer, expert_load, similarity
from moe_jax.inference.exflow import ilp, local_search, placement


def layer_stats(trace, l: int) -> dict:
  """MoE layer l's load, per-expert zero_frac / output_norm [E], similarity [E, E] (+ scalars)."""
  e = trace.num_experts
  experts = trace.experts(l)
  sim = similarity.router_logit_similarity(trace.logits(l))
  others = sim[~np.eye(e, dtype=bool)]
  return {"layer": trace.layers[l], **expert_load.load_stats(experts, e),
          "zero_frac": expert_load.per_expert_mean(trace.zero_fracs(l), experts, e),
          "output_norm": expert_load.per_expert_mean(trace.output_norms(l), experts, e),
          "similarity": sim.tolist(),
          "similarity_max": float(others.max()) if others.size else None,
          "similarity_mean": float(others.mean()) if others.size else None}


def affinity_section(route: np.ndarray, num_experts: int, seed: int) -> tuple[list, dict]:
  """route[L, T, K] -> (A[L-1, E, E] as lists, affinity.summary's per-pair scalars)."""
  counts = affinity.transition_counts(route, num_experts)
  return affinity.conditional(counts).tolist(), affinity.summary(route, num_experts, seed)


def split_counts(route: np.ndarray, seq_len: int, num_experts: int):
  """(fit, held_out) n[L-1, E, E] over even / odd windows; one window: both from it, the same."""
  window = np.arange(route.shape[1]) // seq_len
  if window[-1] == 0:
    counts = affinity.transition_counts(route, num_experts)
    return counts, counts
  return tuple(affinity.transition_counts(route[:, window % 2 == side], num_experts)
               for side in (0, 1))


def placement_section(fit: np.ndarray, held: np.ndarray, devices: tuple[int, ...],
                      time_limit: float, seed: int) -> dict:
  """Per G (a string key): each placement's cross-device fraction on fit and held-out counts,
  the solve's gap and seconds, and the held-out reduction of solved against contiguous."""
  num_layers, num_experts = fit.shape[0] + 1, fit.shape[1]
  out = {}
  for g in devices:
    if num_experts % g:
      out[str(g)] = {"skipped": f"{g} devices do not divide {num_experts} experts"}
      continue
    solution = ilp.solve(fit, g, time_limit)
    placed = {"contiguous": placement.contiguous(num_layers, num_experts, g),
              "random": placement.random_balanced(num_layers, num_experts, g, seed),
              "solved": local_search.polish(fit, solution.placement, g)}
    row = {name: {"fit": placement.cost(p, fit), "held_out": placement.cost(p, held)}
           for name, p in placed.items()}
    base = row["contiguous"]["held_out"]
    row.update(gap=solution.gap, seconds=solution.seconds,
               reduction_vs_contiguous=1 - row["solved"]["held_out"] / base if base else None)
    out[str(g)] = row
  return out


def fate_section(trace, block: int = 8192) -> dict:
  """Per layer pair l -> l+1: mean cosine of gate inputs x_l, x_{l+1} and the recall of
  TopK(x_l W^(l+1)) against layer l+1's experts; recall_chance = K / E (a random guess)."""
  k, e, total = trace.top_k, trace.num_experts, trace.num_tokens
  cosine, recall = [], []
  x_prev, experts_prev = trace.gate_inputs(0), trace.experts(0)
  for l in range(1, trace.num_layers):
    x, experts = trace.gate_inputs(l), trace.experts(l)
    kernels = trace.kernels[l - 1:l + 1]
    cos_sum = recall_sum = 0.0
    for start in range(0, total, block):
      part = slice(start, start + block)
      pair = np.stack([x_prev[part], x[part]])
      n = pair.shape[1]
      cos_sum += cross_layer.adjacent_cosine(pair)[0] * n
      pred = cross_layer.predict_next(pair, kernels, k)
      recall_sum += cross_layer.decode_recall(
          pred, np.stack([experts_prev[part], experts[part]]), e)[0] * n
    cosine.append(float(cos_sum / total))
    recall.append(float(recall_sum / total))
    x_prev, experts_prev = x, experts
  return {"cosine": cosine, "recall": recall, "recall_chance": k / e}
