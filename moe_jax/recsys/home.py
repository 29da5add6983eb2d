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
feature-gate rank) the choice is stated here and is a field of `HoMEConfig` (docs/home.md).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from moe_jax.recsys.features import FeatureEncoder
from moe_jax.recsys.layers import ExpertLevel, Towers, check_widths
from moe_jax.utils.config import Section
from moe_jax.utils.errors import require


@dataclasses.dataclass(frozen=True)
class HoMEConfig(Section):
  """A `models` entry of kind "home".

  meta_global / meta_per_group: meta-level experts (global, per group), MLPs of `meta_hidden`.
  task_global / task_per_group / task_per_task: task-level experts, MLPs of `task_hidden`.
  expert_norm: Swish(BN(.)) experts when true, ReLU experts (MMoE's) when false.
  hierarchy_mask: restrict gates as above when true; every gate sees every expert when false.
  feature_gate_rank: rank R of the per-expert feature-gates; 0 turns them off.
  self_gate: add the self-gate residual on both levels.
  """
  kind: str = "home"
  meta_global: int = 2
  meta_per_group: int = 2
  task_global: int = 2
  task_per_group: int = 1
  task_per_task: int = 1
  meta_hidden: tuple[int, ...] = (64, 32)
  task_hidden: tuple[int, ...] = (32,)
  tower_hidden: tuple[int, ...] = (16,)
  expert_norm: bool = True
  hierarchy_mask: bool = True
  feature_gate_rank: int = 8
  self_gate: bool = True

  def __post_init__(self):
    for field in ("meta_global", "meta_per_group", "task_global", "task_per_group",
                  "task_per_task"):
      require(getattr(self, field) >= 0, field, f"must be >= 0, got {getattr(self, field)}",
              "use 0 or more experts")
    require(self.meta_global + self.meta_per_group > 0, "meta_per_group",
            "a group gate over no meta experts", "give meta_global or meta_per_group a count > 0")
    require(self.task_global + self.task_per_group + self.task_per_task > 0, "task_per_task",
            "a task gate over no experts", "give one of the task_* counts a value > 0")
    check_widths("meta_hidden", self.meta_hidden)
    check_widths("task_hidden", self.task_hidden)
    check_widths("tower_hidden", self.tower_hidden, allow_empty=True)
    require(self.feature_gate_rank >= 0, "feature_gate_rank",
            f"must be >= 0, got {self.feature_gate_rank}", "use 0 (off) or a rank such as 8")

  @property
  def activation(self) -> str:
    """The experts' activation: Swish with expert normalisation, else ReLU."""
    return "swish" if self.expert_norm else "relu"


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


def task_level_wiring(config: HoMEConfig, groups: Sequence[int]):
  """`task_wiring` of a HoME model's config."""
  return task_wiring(groups, config.task_global, config.task_per_group, config.task_per_task,
                     config.hierarchy_mask)


class HoME(nn.Module):
  """sparse int [B, F], dense [B, D_d] -> logits [B, T].

  Attributes:
    config: the experts and switches (HoMEConfig).
    groups: the task group of each task, e.g. (0, 0, 1, 1, 1); T = len(groups).
  """
  config: HoMEConfig
  vocab_sizes: Sequence[int]
  embed_dim: int
  groups: Sequence[int]

  @nn.compact
  def __call__(self, sparse, dense, train: bool = False) -> jnp.ndarray:
    c = self.config
    v = FeatureEncoder(self.vocab_sizes, self.embed_dim, name="features")(sparse, dense)
    wiring = [meta_wiring(max(self.groups) + 1, c.meta_global, c.meta_per_group,
                          c.hierarchy_mask),
              task_level_wiring(c, self.groups)]
    nodes = v[:, None]
    for j, ((expert_input, gate_input, mask, own), hidden) in enumerate(
        zip(wiring, [c.meta_hidden, c.task_hidden])):
      nodes = ExpertLevel(expert_input, gate_input, mask, hidden, c.activation, c.expert_norm,
                          c.feature_gate_rank, own if c.self_gate else None,
                          name=f"level_{j}")(nodes, train)
    return Towers(c.tower_hidden, name="towers")(nodes)
