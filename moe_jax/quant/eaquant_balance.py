"""EAQuant (3): expert-level calibration balance.

Legend: A routed assignments, E experts, L MoE layers, W calibration windows.

Every expert of a layer gets a target number of calibration tokens (the code: (k / E) x seq_len x
ratio, 1024 for OLMoE's 8 of 64 experts at 4096 tokens and ratio 2): its inputs are taken in
calibration order up to the target (`capped`), and while an expert of any layer has fewer,
further calibration passes run and the windows that hold tokens for such experts are added
(`select_windows`: prioritised sampling), so each expert ends with min(available, target).
An expert with no token at all falls back to the layer's tokens (moe_jax/quant/eaquant_smooth.py).
"""
from __future__ import annotations

import math

import numpy as np


def target(top_k: int, num_experts: int, seq_len: int, ratio: float) -> int:
  """The code's per-expert token target ceil((k / E) seq_len ratio)."""
  return math.ceil(top_k / num_experts * seq_len * ratio)


def capped(expert: np.ndarray, num_experts: int, limit: int) -> np.ndarray:
  """keep [A] bool: the first `limit` assignments of each expert, in the order given."""
  order = np.argsort(expert, kind="stable")
  count = np.bincount(expert, minlength=num_experts)
  start = np.concatenate([[0], np.cumsum(count)[:-1]])
  rank = np.empty(len(expert), np.int64)
  rank[order] = np.arange(len(expert)) - start[expert[order]]
  return rank < limit


def window_counts(token: np.ndarray, expert: np.ndarray, seq_len: int, num_windows: int,
                  num_experts: int) -> np.ndarray:
  """[W, E] assignments each window gives each expert (token ids in window order)."""
  out = np.zeros((num_windows, num_experts), np.int64)
  np.add.at(out, (token // seq_len, expert), 1)
  return out


def select_windows(counts: np.ndarray, need: np.ndarray) -> list[int]:
  """Greedy in order: the windows of counts [W, L, E] that give an expert with need [L, E] > 0
  any token, each lowering the need it meets."""
  need = need.copy()
  chosen = []
  for w, c in enumerate(counts):
    if np.any((c > 0) & (need > 0)):
      chosen.append(w)
      need = np.maximum(need - c, 0)
  return chosen
