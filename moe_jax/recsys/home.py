"""HoME: Hierarchy of Multi-Gate Experts (Wang, Cao, Fu, Gai, Zhou; arXiv 2408.05430, KDD 2025).

Tasks fall into groups (Kuaishou: passive watch-time tasks / active interaction tasks). Two levels:
  meta level (reads v):   global meta experts E^g and per-group meta experts E^c;
    group c:   G^c = Sum(Gate_c(v), [E^g, E^c])         (the hierarchy mask: own group + global only)
    global:    G^g = Sum(Gate_g(v), [E^g, E^1..E^C])
  task level:  global experts read G^g, group-c experts read G^c, task-t experts read G^{c(t)};
    task t:    T^t = Sum(Gate_t(G^{c(t)}), [E^g, E^{c(t)}, E^t])   (other groups' experts masked out)
Fixes, each switchable for the ablation:
  expert normalisation + Swish: every expert layer is Swish(BN(x W + b)) instead of ReLU(x W + b);
  feature-gate: expert e reads x * 2 * sigmoid(x B_e A_e) (own low-rank gate per expert);
  self-gate: each gate output adds its node's own experts, weighted by sigmoid (one expert) or softmax
    (several) of the gate input: a residual path that keeps gradient flowing into own experts.
Where the paper body could not be read (what the task gates read, where the self-gate sits, the
feature-gate rank) the choice is stated here and in configs/home.py.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from moe_jax.recsys.features import FeatureEncoder
from moe_jax.recsys.layers import ExpertLevel, Towers


def _as_tuples(mask: np.ndarray):
  return tuple(map(tuple, mask.tolist()))


def meta_wiring(num_groups: int, num_global: int, num_per_group: int, hierarchy_mask: bool):
  """Meta level over one node (v). Experts [global, group 0's, ..., group C-1's]; gates
  [group 0, ..., group C-1, global]. Returns (expert_input, gate_input, gate_mask, own_mask)."""
  owner = np.concatenate([np.full(num_global, num_groups),
                          np.repeat(np.arange(num_groups), num_per_group)])
  gates = np.arange(num_groups + 1)
  own = owner[None, :] == gates[:, None]
  mask = own | (owner[None, :] == num_groups) | (gates[:, None] == num_groups)
  if not hierarchy_mask:
    mask = np.ones_like(mask)
  return ((0,) * owner.size, (0,) * gates.size, _as_tuples(mask), _as_tuples(own))


def task_wiring(groups: Sequence[int], num_global: int, num_per_group: int, num_per_task: int,
                hierarchy_mask: bool):
  """Task level over nodes [G^0..G^{C-1}, G^global]. Experts [global, group 0's, .., task 0's, ..];
  gates one per task. Returns (expert_input, gate_input, gate_mask, own_mask)."""
  groups = np.asarray(groups)
  c, t = int(groups.max()) + 1, groups.size
  kind = np.concatenate([np.zeros(num_global), np.ones(c * num_per_group),
                         np.full(t * num_per_task, 2)]).astype(int)
  idx = np.concatenate([np.zeros(num_global), np.repeat(np.arange(c), num_per_group),
                        np.repeat(np.arange(t), num_per_task)]).astype(int)
  expert_input = np.where(kind == 0, c, np.where(kind == 1, idx, groups[np.minimum(idx, t - 1)]))
  task = np.arange(t)[:, None]
  own = (kind == 2) & (idx == task)
  mask = (kind == 0) | ((kind == 1) & (idx == groups[:, None])) | own
  if not hierarchy_mask:
    mask = np.ones_like(mask)
  return (tuple(expert_input.tolist()), tuple(groups.tolist()), _as_tuples(mask), _as_tuples(own))


class HoME(nn.Module):
  """sparse int [B, F], dense [B, D_d] -> logits [B, T].

  Attributes:
    groups: the task group of each task, e.g. (0, 0, 1, 1, 1); T = len(groups).
    meta_global / meta_per_group: meta-level experts (global, per group).
    task_global / task_per_group / task_per_task: task-level experts.
    expert_norm: Swish(BN(.)) experts when True, ReLU experts (MMoE's) when False.
    hierarchy_mask: restrict gates as above when True; every gate sees every expert when False.
    feature_gate_rank: rank R of the per-expert feature-gates; 0 turns them off.
    self_gate: add the self-gate residual on both levels.
  """
  vocab_sizes: Sequence[int]
  embed_dim: int
  groups: Sequence[int]
  meta_global: int
  meta_per_group: int
  task_global: int
  task_per_group: int
  task_per_task: int
  meta_hidden: Sequence[int]
  task_hidden: Sequence[int]
  tower_hidden: Sequence[int]
  expert_norm: bool = True
  hierarchy_mask: bool = True
  feature_gate_rank: int = 8
  self_gate: bool = True

  @nn.compact
  def __call__(self, sparse, dense, train: bool = False) -> jnp.ndarray:
    v = FeatureEncoder(self.vocab_sizes, self.embed_dim, name="features")(sparse, dense)
    act = "swish" if self.expert_norm else "relu"
    num_groups = max(self.groups) + 1
    wiring = [
        meta_wiring(num_groups, self.meta_global, self.meta_per_group, self.hierarchy_mask),
        task_wiring(self.groups, self.task_global, self.task_per_group, self.task_per_task,
                    self.hierarchy_mask)]
    nodes = v[:, None]
    for j, ((expert_input, gate_input, mask, own), hidden) in enumerate(
        zip(wiring, [self.meta_hidden, self.task_hidden])):
      nodes = ExpertLevel(expert_input, gate_input, mask, hidden, act, self.expert_norm,
                          self.feature_gate_rank, own if self.self_gate else None,
                          name=f"level_{j}")(nodes, train)
    return Towers(self.tower_hidden, name="towers")(nodes)
