"""Which experts merge: MC-SMoE's routing-guided grouping under a global budget, and baselines.

Legend: L MoE layers, E experts per layer, k_l groups (merged experts) of layer l, G the budget.

Budget over layers (MC-SMoE Sec. 3.2; repo `_assign_num_groups_per_layer`): with f[L, E] the usage
frequencies, set each layer's most used expert to 1 (every layer keeps at least one group) and
every expert of a layer left unmerged to 1; G = average_groups x merged layers + E x unmerged
layers; the threshold is the (G+1)-th largest of the L*E values (the repo's 0-based index G) and
k_l = #{e : f_le > threshold}. Without ties at the threshold, sum_l k_l = G exactly; ties make it
smaller (the repo's strict >). Where the repo differs: at average_groups == E it lowers its index
to G - 1 (to stay in range) and so can merge away the least used experts; here every expert is
kept. Its error for a threshold of 1.0 (a budget below one group per merged layer) is the
1 <= average_groups check here.

Routing-guided grouping of one layer (repo `group_experts_into_clusters_by_routing_guided_
globally`, without its group capacity, unset in the published scripts): the k_l most used experts
are dominant, group g = the g-th most used (ties: the lower index first; the repo's torch argsort
leaves them unspecified); every other expert joins the dominant expert most similar to it
(ties: the more used dominant, as the repo's argmax over the usage-ordered dominants).

Baselines: random grouping with the same group sizes (the repo's `generate_random_group_labels`
instead draws the sizes: one expert per group, the rest uniformly), and dropping (keep the k_l
most used experts; the router must mask the dropped ones, repo `_prune_mlp_experts_by_dropping_
non_core`).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from moe_jax.utils.errors import require


@dataclasses.dataclass(frozen=True)
class Grouping:
  """One layer's grouping.

  Attributes:
    slot_to_group: [E] int, the group (merged expert) of each original expert slot; -1 = dropped.
    dominant: [k] int, the dominant expert of each group (group g = dominant[g]'s group).
  """
  slot_to_group: np.ndarray
  dominant: np.ndarray

  @property
  def num_groups(self) -> int:
    return len(self.dominant)


def _usage_order(freqs: np.ndarray) -> np.ndarray:
  """Experts by decreasing frequency, ties to the lower index."""
  return np.argsort(-freqs, kind="stable")


def groups_per_layer(freqs, average_groups: int,
                     merged: Sequence[bool] | None = None) -> np.ndarray:
  """[L] k_l from f[L, E] and the global budget (layers with merged[l] False keep all E)."""
  f = np.array(freqs, np.float64)
  require(f.ndim == 2, "freqs", f"needs [L, E], got shape {f.shape}",
          "stack the layers' usage frequencies")
  num_layers, e = f.shape
  merged = np.ones(num_layers, bool) if merged is None else np.asarray(merged, bool)
  require(merged.shape == (num_layers,), "merged", f"needs {num_layers} flags, got {merged.shape}",
          "pass one bool per layer")
  require(1 <= average_groups <= e, "average_groups", f"must lie in [1, {e}], got {average_groups}",
          "ask for at least one group per merged layer and at most one per expert")
  f[~merged] = 1.0
  f[np.arange(num_layers), np.argmax(f, axis=-1)] = 1.0
  budget = average_groups * int(merged.sum()) + e * int((~merged).sum())
  if budget >= f.size:
    return np.full(num_layers, e)
  threshold = np.sort(f, axis=None)[::-1][budget]
  return np.sum(f > threshold, axis=-1)


def routing_guided(freqs, similarity, num_groups: int) -> Grouping:
  """One layer: the num_groups most used experts dominate, the rest join the most similar one."""
  f = np.asarray(freqs, np.float64)
  sim = np.asarray(similarity, np.float64)
  e = f.shape[0]
  require(sim.shape == (e, e), "similarity", f"needs [{e}, {e}], got {sim.shape}",
          "pass the layer's expert similarity matrix")
  require(1 <= num_groups <= e, "num_groups", f"must lie in [1, {e}], got {num_groups}",
          "take it from groups_per_layer")
  order = _usage_order(f)
  dominant, rest = order[:num_groups], order[num_groups:]
  groups = np.empty(e, np.int64)
  groups[dominant] = np.arange(num_groups)
  groups[rest] = np.argmax(sim[np.ix_(rest, dominant)], axis=-1)
  return Grouping(groups, dominant)


def global_grouping(freqs, similarity, average_groups: int,
                    merged: Sequence[bool] | None = None) -> list[Grouping]:
  """MC-SMoE's grouping of every layer: f[L, E], similarity [L, E, E] -> L Groupings."""
  counts = groups_per_layer(freqs, average_groups, merged)
  return [routing_guided(f, s, k) for f, s, k in zip(freqs, similarity, counts)]


def random_like(grouping: Grouping, freqs, rng: np.random.Generator) -> Grouping:
  """The same group sizes, members drawn at random; a group's dominant is its most used member."""
  groups = rng.permutation(grouping.slot_to_group)
  f = np.asarray(freqs, np.float64)
  member = groups[None, :] == np.arange(grouping.num_groups)[:, None]
  dominant = np.argmax(np.where(member, f[None, :], -np.inf), axis=-1)
  return Grouping(groups, dominant)


def drop(freqs, num_kept: int) -> Grouping:
  """Keep the num_kept most used experts (each its own group); the others map to -1."""
  f = np.asarray(freqs, np.float64)
  require(1 <= num_kept <= f.shape[0], "num_kept", f"must lie in [1, {f.shape[0]}], got {num_kept}",
          "keep at least one expert")
  kept = _usage_order(f)[:num_kept]
  groups = np.full(f.shape[0], -1, np.int64)
  groups[kept] = np.arange(num_kept)
  return Grouping(groups, kept)
