"""Orbax checkpoints of the train state, the data iterator position and the model shapes.

Saved every `save_every` steps, newest `keep` kept; `restore_latest` refuses, with a message that
names the first mismatching parameter, a directory saved from a model of other shapes.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from moe_jax.utils.errors import ConfigError


def param_shapes(params: Any) -> dict[str, list[int]]:
  flat = traverse_util.flatten_dict(jax.tree.map(lambda x: list(np.shape(x)), params,
                                                 is_leaf=lambda x: hasattr(x, "shape")), sep="/")
  return {k: v for k, v in sorted(flat.items())}


class Checkpointer:
  """Wraps `ocp.CheckpointManager` with the items this project saves."""

  def __init__(self, directory: str, save_every: int, keep: int):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(save_interval_steps=save_every, max_to_keep=keep,
                                             create=True))

  def save(self, step: int, state: Any, data_state: dict, force: bool = False) -> bool:
    shapes = param_shapes(state.params)
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        shapes=ocp.args.JsonSave(shapes)), force=force)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    """Returns (state, data_state) of the newest checkpoint, or None if there is none."""
    step = self.manager.latest_step()
    if step is None:
      return None
    saved = self.manager.restore(step, args=ocp.args.Composite(
        shapes=ocp.args.JsonRestore()))["shapes"]
    expected = param_shapes(abstract_state.params)
    for name in sorted(set(saved) | set(expected)):
      if saved.get(name) != expected.get(name):
        raise ConfigError(
            f"--workdir: the checkpoint at {self.manager.directory} (step {step}) was saved "
            f"from a model of other shapes: parameter {name!r} is {saved.get(name)} there and "
            f"{expected.get(name)} in this config. Fix: use a fresh --workdir, or the config "
            "that wrote this checkpoint")
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
