"""Merging each group of experts into one expert (MC-SMoE Sec. 3.2, M-SMoE).

Legend: E expert slots (the router's columns), G merged experts, f[E] usage frequencies.

Frequency-weighted merging (repo `_merge_mlp_experts_by_usage_frequency_weighting`), for every
weight matrix W (wi_gate, wi_up, wo, ...):
  W_g = sum_{e in g} f_e W_e / sum_{e in g} f_e,
and uniform averaging (the repo's `merge-by-averaging` baseline) is the same with f = 1. A group
whose members were never used (sum f = 0, possible only for random groups) is averaged uniformly;
the repo divides by sum f + 1e-8 there and gets a zero expert.

The router is unchanged: every member's slot points at its merged expert, slot_to_group[E]. A
merged model runs each merged expert once per token, with the gate weights of the token's slots
that map to it added up; copying the merged weights back to every slot ([E, ...]) gives the
slot-duplicated model, exactly the same function with the original layout (the repo's binding
of members to one module). Slots mapped to -1 (the drop baseline) are left out of every merged
expert and have no duplicated form: the router has to mask them. Host-side NumPy.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from moe_jax.utils.errors import require


def merge_matrix(slot_to_group, freqs=None) -> np.ndarray:
  """[G, E] merging weights: row g averages group g's slots by f (uniformly when freqs is None)."""
  groups = np.asarray(slot_to_group)
  num_groups = int(groups.max()) + 1
  member = (groups[None, :] == np.arange(num_groups)[:, None]).astype(np.float64)
  require(member.sum(-1).min() >= 1, "slot_to_group",
          f"groups must be 0..G-1 with no empty group, got {groups.tolist()}",
          "pass Grouping.slot_to_group")
  f = np.ones(groups.shape) if freqs is None else np.asarray(freqs, np.float64)
  require(f.shape == groups.shape and f.min() >= 0, "freqs",
          f"needs {groups.shape[0]} non-negative frequencies, got shape {f.shape}",
          "pass the layer's usage frequencies (or None for uniform averaging)")
  weight = member * f[None, :]
  total = weight.sum(-1, keepdims=True)
  weight = np.where(total > 0, weight, member)
  return weight / weight.sum(-1, keepdims=True)


def merge_experts(params: Mapping[str, np.ndarray], slot_to_group,
                  freqs=None) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Stacked [E, ...] weights -> (merged [G, ...] weights, slot -> merged-expert map [E])."""
  weight = merge_matrix(slot_to_group, freqs)
  merged = {}
  for name, w in params.items():
    w = np.asarray(w)
    require(w.shape[0] == weight.shape[1], f"params[{name!r}]",
            f"needs a leading axis of {weight.shape[1]} experts, got shape {w.shape}",
            "pass the layer's stacked expert weights")
    merged[name] = np.einsum("ge,e...->g...", weight, w.astype(np.float64)).astype(w.dtype)
  return merged, np.asarray(slot_to_group).copy()


def duplicate_to_slots(merged: Mapping[str, np.ndarray], slot_to_group) -> dict[str, np.ndarray]:
  """Merged [G, ...] weights copied back to every slot: [E, ...], the merged model's function."""
  groups = np.asarray(slot_to_group)
  require(groups.min() >= 0, "slot_to_group", "dropped slots (-1) have no expert to copy",
          "mask dropped slots in the router instead of duplicating")
  return {name: np.asarray(w)[groups] for name, w in merged.items()}
