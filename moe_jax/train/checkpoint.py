"""Orbax checkpoints of the train state, the data iterator position and the model shapes.

Saved every `save_every` steps, newest `keep` kept. A save is atomic (orbax writes a temporary
folder and renames it when complete; a folder left half-written by a killed process is removed
on the next start) and runs in the background; `finish` waits for it, so a run that stops (an
error, a signal) leaves only complete steps. `restore_latest` refuses, with a message that names
the first mismatching parameter, a directory saved from a model of other shapes, and falls back
from a damaged step (truncated or missing files) to the newest intact one, with a warning that
names the damaged step and moves it aside to `<directory>.damaged/<step>`. While a Checkpointer
is open, the `RuntimeError: Event loop is closed` that reads or writes left in flight by a failed
restore or a cancelled save raise from tensorstore's threads (after orbax closed its event loop)
are dropped: they are noise that buries the message that matters.
"""
from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from moe_jax.utils.errors import ConfigError, one_line


def param_shapes(params: Any) -> dict[str, list[int]]:
  flat = traverse_util.flatten_dict(jax.tree.map(lambda x: list(np.shape(x)), params,
                                                 is_leaf=lambda x: hasattr(x, "shape")), sep="/")
  return {k: v for k, v in sorted(flat.items())}


def saved_steps(directory: str) -> list[int]:
  """The finished checkpoint steps in `directory` (orbax's step folders), oldest first."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _quiet_closed_loops(previous: Callable) -> Callable:
  """An unraisable-exception hook that drops `RuntimeError('Event loop is closed')` and hands
  everything else to `previous`."""
  def hook(unraisable) -> None:
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      previous(unraisable)
  hook.previous = previous
  return hook


class Checkpointer:
  """Wraps `ocp.CheckpointManager` with the items this project saves."""

  def __init__(self, directory: str, save_every: int, keep: int):
    self.directory = os.path.abspath(directory)
    self._options = ocp.CheckpointManagerOptions(save_interval_steps=save_every,
                                                 max_to_keep=keep, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=self._options)
    self._hook = _quiet_closed_loops(sys.unraisablehook)
    sys.unraisablehook = self._hook

  def save(self, step: int, state: Any, data_state: dict, force: bool = False) -> bool:
    shapes = param_shapes(state.params)
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        shapes=ocp.args.JsonSave(shapes)), force=force)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _check_shapes(self, step: int, saved: dict, abstract_state: Any) -> None:
    expected = param_shapes(abstract_state.params)
    for name in sorted(set(saved) | set(expected)):
      if saved.get(name) != expected.get(name):
        raise ConfigError(
            f"--workdir: the checkpoint at {self.directory} (step {step}) was saved "
            f"from a model of other shapes: parameter {name!r} is {saved.get(name)} there and "
            f"{expected.get(name)} in this config. Fix: use a fresh --workdir, or the config "
            "that wrote this checkpoint")

  def _restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    saved = self.manager.restore(step, args=ocp.args.Composite(
        shapes=ocp.args.JsonRestore()))["shapes"]
    self._check_shapes(step, saved, abstract_state)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    """Returns (state, data_state) of the newest intact checkpoint, or None if there is none.

    A step that fails to restore is damaged when an older one restores: it is moved aside
    with a warning. When no step restores, nothing is moved and the error names the newest.
    """
    damaged = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self._restore(step, abstract_state)
      except ConfigError:
        raise
      except Exception as e:  # pylint: disable=broad-except  (orbax, tensorstore, json, os)
        damaged.append((step, one_line(e, 160)))
        continue
      if damaged:
        self._move_aside(damaged, step)
      return restored
    if damaged:
      step, reason = damaged[0]
      raise ConfigError(
          f"{os.path.join(self.directory, str(step))}: no checkpoint step of this workdir "
          f"restores (step {step}: {reason}). Fix: if its files are damaged, move "
          f"{self.directory} aside to start afresh; if the config changed, resume with the "
          "one that wrote it")
    return None

  def _move_aside(self, damaged: list[tuple[int, str]], intact: int) -> None:
    aside = self.directory + ".damaged"
    for step, reason in damaged:
      target = os.path.join(aside, str(step))
      if jax.process_index() == 0:  # one host moves (the folder is shared), each reopens
        os.makedirs(aside, exist_ok=True)
        if os.path.exists(target):
          shutil.rmtree(target)
        shutil.move(os.path.join(self.directory, str(step)), target)
        print(f"warning: checkpoint step {step} in {self.directory} is damaged ({reason}); "
              f"moved it to {target} and resumed from step {intact}", file=sys.stderr,
              flush=True)
    self.manager.close()  # the manager lists steps once: reopen it without the moved ones
    self.manager = ocp.CheckpointManager(self.directory, options=self._options)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    try:
      self.manager.close()
    finally:
      if sys.unraisablehook is self._hook:
        sys.unraisablehook = self._hook.previous

  def finish(self) -> tuple[int | None, str]:
    """Waits for pending saves and closes the manager, whatever happens (a failed save, a
    second Ctrl-C while waiting); returns (the newest complete step or None, what went wrong)."""
    problem = ""
    try:
      self.manager.wait_until_finished()
    except KeyboardInterrupt:
      problem = "the pending save was cancelled"
    except Exception as e:  # pylint: disable=broad-except
      problem = f"the pending save failed ({one_line(e, 160)})"
    finally:
      try:
        self.close()
      except Exception:  # pylint: disable=broad-except
        pass
    steps = saved_steps(self.directory)
    return (steps[-1] if steps else None), problem
