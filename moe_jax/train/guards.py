"""What the training loop guards against: non-finite steps, signals, and how a stopped run ends.

Non-finite steps. The check rides on values every step already returns (its loss and gradient
norm), fetched only where the loop syncs anyway: at logging, evaluation and saving steps, all
the steps since the last fetch at once, so the first bad step is named exactly. A checkpoint is
written only after that check and a check of the state itself (one reduction per save), so a
non-finite state is never saved. `on_nonfinite="stop"` stops the run there; "skip" makes the
jitted step keep the old state when its own loss or gradient norm is not finite (a select over
the state: a little slower, and each skipped step is reported).

Signals. Inside `StopSignals`, SIGINT (Ctrl-C) and SIGTERM (a scheduler's preemption) ask the
loop to save the step it is on and stop; a second one stops at once. `stopped` turns whatever
ended a run into its last line: what happened, the last intact checkpoint, how to resume.
"""
from __future__ import annotations

import functools
import logging
import signal
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.train import trainer
from moe_jax.utils.errors import ConfigError, RunStopped, one_line

NONFINITE = ("stop", "skip")


class NonFinite(Exception):
  """A step's loss or gradient norm, or the state, is not finite (stop mode)."""

  def __init__(self, field: str, problem: str, fix: str):
    super().__init__(f"{field}: {problem}")
    self.field, self.problem, self.fix = field, problem, fix


class Signalled(Exception):
  """The loop stopped, after saving, because of a signal."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


def make_step(model, optimizer, bias_rate: float, shardings, batch_sharding,
              hooks: trainer.Hooks, on_nonfinite: str):
  """The jitted train step; with "skip", a step whose loss or gradient norm is not finite
  leaves the state as it was (but for the step counter) and reports `skipped`."""
  if on_nonfinite == "stop":
    return trainer.make_train_step(model, optimizer, bias_rate, shardings, batch_sharding, hooks)
  step = functools.partial(trainer.train_step, model=model, optimizer=optimizer,
                           bias_rate=bias_rate, hooks=hooks)

  def skipping(state, batch, rng, objective_args=None):
    new, metrics = step(state, batch, rng, objective_args)
    ok = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
    return kept.replace(step=new.step), {**metrics, "skipped": ~ok}

  if shardings is None:
    return jax.jit(skipping, donate_argnums=0)
  return jax.jit(skipping, in_shardings=(shardings, batch_sharding, None, None),
                 out_shardings=(shardings, None), donate_argnums=0)


def check_steps(fetched: list[tuple], cfg) -> None:
  """`fetched`: (step, loss, grad_norm, skipped or None) of the steps since the last check.
  Stop mode: raises NonFinite at the first bad step. Skip mode: reports the skipped ones."""
  skipped = [s for s, _, _, skip in fetched if skip is not None and bool(skip)]
  if skipped:
    print(f"warning: train: skipped {len(skipped)} step(s) with a non-finite loss or gradient "
          f"norm (steps {', '.join(map(str, skipped[:5]))}{'...' if len(skipped) > 5 else ''});"
          " the state was kept as it was", file=sys.stderr, flush=True)
    return
  for step, loss, grad_norm, _ in fetched:
    if np.isfinite(loss) and np.isfinite(grad_norm):
      continue
    values = f"loss {float(loss)}, gradient norm {float(grad_norm)} at step {step}"
    if step == 1:
      raise NonFinite("model", f"{values}, before any update: the model config (e.g. "
                      "model.norm_eps, model.dtype) or the data make it non-finite",
                      "check the model config and the data")
    raise NonFinite("train.lr", f"{values}: the updates diverged (lr {cfg.lr}, warmup "
                    f"{cfg.warmup_steps} steps, grad_clip {cfg.grad_clip})",
                    "lower train.lr or raise train.warmup_steps (or set "
                    "train.on_nonfinite=skip to skip such steps)")


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def check_state(state, step: int) -> None:
  """Raises NonFinite unless every float of the train state is finite (before a save)."""
  if not bool(_all_finite(state)):
    raise NonFinite("train", f"the train state after step {step} is not finite although the "
                    "step's loss and gradient norm are", "check Hooks.post_update and the "
                    "start variables")


class StopSignals:
  """Within `with`: the first SIGINT / SIGTERM sets `received` (the loop saves and stops after
  its step); a second one raises KeyboardInterrupt at once. Only the main thread takes
  signals; elsewhere this does nothing."""

  def __init__(self):
    self.received: int | None = None
    self._old: dict = {}

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._old[sig] = signal.signal(sig, self._handle)
      logging.getLogger("absl").addFilter(_no_interrupt_tracebacks)
    return self

  def _handle(self, signum, frame) -> None:
    del frame
    if self.received is not None:
      raise KeyboardInterrupt
    self.received = signum
    print(f"{signal.Signals(signum).name}: saving this step and stopping (send it again to "
          "stop at once)", file=sys.stderr, flush=True)

  def __exit__(self, *exc) -> None:
    for sig, old in self._old.items():
      signal.signal(sig, old if old is not None else signal.SIG_DFL)
    self._old = {}
    logging.getLogger("absl").removeFilter(_no_interrupt_tracebacks)


def _no_interrupt_tracebacks(record: logging.LogRecord) -> bool:
  """Drops a log record of the interrupt itself (orbax logs a save that a second Ctrl-C cut
  short with its traceback; the run's last line says what happened)."""
  return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


def unexpected(error: BaseException) -> bool:
  """An error none of the guards foresaw: its traceback belongs in front of the last line."""
  return not isinstance(error, (Signalled, KeyboardInterrupt, NonFinite, ConfigError))


def stopped(error: BaseException, done: int, last: int | None, problem: str,
            directory: str) -> BaseException:
  """The exception a run that stopped after step `done` ends with (its message is one line)."""
  where = (f"the last intact checkpoint is step {last} in {directory}" if last is not None
           else "no checkpoint was saved")
  if problem:
    where += f" ({problem})"
  again = ("run the same command again to resume from it" if last is not None else
           "run the same command again to start afresh")
  if isinstance(error, Signalled):
    return RunStopped(f"train: stopped by {error} after step {done}; {where}. To go on: "
                      f"{again}", 128 + error.signum)
  if isinstance(error, KeyboardInterrupt):
    return RunStopped(f"train: interrupted (Ctrl-C) after step {done}; {where}. To go on: "
                      f"{again}", 128 + signal.SIGINT)
  if isinstance(error, NonFinite):
    return ConfigError(f"{error.field}: {error.problem}; nothing non-finite was saved, {where}."
                       f" Fix: {error.fix}, then {again}")
  if isinstance(error, ConfigError):
    return ConfigError(f"{error} (training stopped after step {done}; {where})")
  return RunStopped(f"train: stopped by {one_line(error, 300)} after step {done}; {where}. To "
                    f"go on: fix the cause, then {again}", 1)
