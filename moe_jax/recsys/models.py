"""Builds a multi-task model from its `models` entry (a config section chosen by `kind`)."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import numpy as np

from moe_jax.recsys.home import HoME, HoMEConfig, task_level_wiring
from moe_jax.recsys.mmoe import MMoE, MMoEConfig
from moe_jax.recsys.ple import PLE, PLEConfig, ple_wiring
from moe_jax.recsys.shared_bottom import SharedBottom, SharedBottomConfig

# A `models` entry: the section whose `kind` field matches ("shared_bottom", "mmoe", "ple", "home").
ModelConfig = SharedBottomConfig | MMoEConfig | PLEConfig | HoMEConfig
MODULES = {SharedBottomConfig: SharedBottom, MMoEConfig: MMoE, PLEConfig: PLE, HoMEConfig: HoME}


def build_model(config: ModelConfig, *, vocab_sizes: Sequence[int], embed_dim: int,
                groups: Sequence[int]) -> nn.Module:
  """The module of `config`; the tasks and their groups come from the data."""
  tasks = ({"groups": tuple(int(g) for g in groups)} if isinstance(config, HoMEConfig)
           else {"num_tasks": len(groups)})
  return MODULES[type(config)](config, vocab_sizes=tuple(vocab_sizes), embed_dim=embed_dim,
                               **tasks)


def own_experts(model: nn.Module) -> np.ndarray | None:
  """[T, E] bool: the task-specific experts each task gate of the last level owns (None: no such)."""
  if isinstance(model, PLE):
    c = model.config
    owner, _, _ = ple_wiring(model.num_tasks, c.num_specific, c.num_shared, final=True)
    return np.asarray(owner)[None, :] == np.arange(model.num_tasks)[:, None]
  if isinstance(model, HoME):
    return np.asarray(task_level_wiring(model.config, model.groups)[3])
  return None
