"""AUC, GAUC and the expert diagnostics HoME plots (zero activations, output scale, gate weights).

AUC is the Mann-Whitney statistic: P(score of a random positive > score of a random negative), ties
counting one half. GAUC (Zhou et al., DIN, KDD 2018) averages per-user AUC weighted by the user's
impressions, over users that have both a positive and a negative.
"""
from __future__ import annotations

import numpy as np
from scipy import stats


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """labels 0/1 [N], scores [N] -> AUC (nan when only one class is present)."""
  labels = np.asarray(labels) > 0.5
  n_pos = int(labels.sum())
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  ranks = stats.rankdata(np.asarray(scores, np.float64))
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(labels: np.ndarray, scores: np.ndarray, users: np.ndarray) -> float:
  """sum_u n_u AUC_u / sum_u n_u over users u with both classes; n_u = impressions of u."""
  order = np.argsort(users, kind="stable")
  users, labels, scores = users[order], labels[order], scores[order]
  starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
  total, weight = 0.0, 0
  for lab, sc in zip(np.split(labels, starts[1:]), np.split(scores, starts[1:])):
    value = auc(lab, sc)
    if not np.isnan(value):
      total += lab.size * value
      weight += lab.size
  return total / weight if weight else float("nan")


def expert_stats(expert_out: np.ndarray) -> dict:
  """expert_out [B, E, H] post-activation -> per-expert zero fraction, mean and std, each [E]."""
  out = np.asarray(expert_out, np.float64)
  return {"zero_frac": (out == 0).mean(axis=(0, 2)), "mean": out.mean(axis=(0, 2)),
          "std": out.std(axis=(0, 2))}


def expert_diagnostics(found: dict, own: np.ndarray | None) -> dict:
  """Seed-averaged expert statistics of one model from its sown intermediates.

  found: {path: array} with `.../expert_out` [S, B, E, H] per level and `.../gate` [S, B, G, E];
  own: [T, E] bool, the task-specific experts of each task gate of the last level (or None).
  Returns zero_frac, out_mean, out_std [sum of E over levels]; max_zero_frac (seed mean of the
  most-zero expert); and, for gated models, gate [G, E] (last level, mean weight) and own_share [T]
  (the weight each task gate puts on its own experts).
  """
  outs = [v for k, v in sorted(found.items()) if k.endswith("expert_out")]
  per_seed = [[expert_stats(o[s]) for o in outs] for s in range(outs[0].shape[0])]
  stat = lambda key: np.mean([np.concatenate([st[key] for st in seed]) for seed in per_seed], 0)
  result = {"zero_frac": stat("zero_frac"), "out_mean": stat("mean"), "out_std": stat("std"),
            "max_zero_frac": float(np.mean([max(st["zero_frac"].max() for st in seed)
                                            for seed in per_seed]))}
  gates = [v for k, v in sorted(found.items()) if k.endswith("gate")]
  if gates:
    result["gate"] = gates[-1].mean(axis=(0, 1))  # last level, [G, E]
    if own is not None:
      result["own_share"] = (result["gate"][:own.shape[0]] * own).sum(-1)  # [T]
  return result
