"""Builds a multi-task model from a config entry {"kind": ..., **attributes}."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import numpy as np

from moe_jax.recsys.home import HoME, task_wiring
from moe_jax.recsys.mmoe import MMoE
from moe_jax.recsys.ple import PLE, ple_wiring
from moe_jax.recsys.shared_bottom import SharedBottom
from moe_jax.utils.errors import check_choice

KINDS = {"shared_bottom": SharedBottom, "mmoe": MMoE, "ple": PLE, "home": HoME}


def _tuples(value: Any) -> Any:
  return tuple(value) if isinstance(value, (list, tuple)) else value


def build_model(spec: Mapping[str, Any], *, vocab_sizes: Sequence[int], embed_dim: int,
                groups: Sequence[int]) -> nn.Module:
  """spec: {"kind": one of KINDS, **module attributes}; tasks and their groups come from the data."""
  spec = dict(spec)
  kind = spec.pop("kind", None)
  check_choice("models.<name>.kind", kind, KINDS)
  kwargs = {k: _tuples(v) for k, v in spec.items()}
  if kind == "home":
    kwargs["groups"] = tuple(int(g) for g in groups)
  else:
    kwargs["num_tasks"] = len(groups)
  return KINDS[kind](vocab_sizes=tuple(vocab_sizes), embed_dim=embed_dim, **kwargs)


def own_experts(model: nn.Module) -> np.ndarray | None:
  """[T, E] bool: the task-specific experts each task gate of the last level owns (None: no such)."""
  if isinstance(model, PLE):
    owner, _, _ = ple_wiring(model.num_tasks, model.num_specific, model.num_shared, final=True)
    return np.asarray(owner)[None, :] == np.arange(model.num_tasks)[:, None]
  if isinstance(model, HoME):
    return np.asarray(task_wiring(model.groups, model.task_global, model.task_per_group,
                                  model.task_per_task, model.hierarchy_mask)[3])
  return None
