"""Clear, early errors for bad configs and inputs, and the one line a stopped run ends with.

Every check names the field that is wrong and says how to fix it, so that a user never
has to read an XLA traceback to find a typo in a config. A run that stops before its end (a
signal, an error mid-training) raises `RunStopped`, whose message says what happened, the last
intact checkpoint and how to resume.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable


class ConfigError(ValueError):
  """A config field or an input has a value that cannot work."""


class RunStopped(Exception):
  """A run stopped before its end; `exit_code` is the status the command line exits with
  (128 + the signal's number for a signal, 1 for an error)."""

  def __init__(self, message: str, exit_code: int = 1):
    super().__init__(message)
    self.exit_code = exit_code


def one_line(error: BaseException, limit: int = 200) -> str:
  """`<type>: <message>` of a library's error, folded onto one line and cut to `limit`
  characters of message (for the one line a user sees)."""
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def require(ok: bool, field: str, problem: str, fix: str) -> None:
  """Raises ConfigError('<field>: <problem>. Fix: <fix>') unless `ok`."""
  if not ok:
    raise ConfigError(f"{field}: {problem}. Fix: {fix}")


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
  """Raises a ConfigError naming `field` when `value` is not one of `choices`."""
  choices = list(choices)
  require(value in choices, field, f"unknown value {value!r}",
          f"use one of {', '.join(repr(c) for c in choices)}")


def _number(value: Any) -> bool:
  return (isinstance(value, numbers.Real) and not isinstance(value, bool) and
          math.isfinite(value))


def check_positive(field: str, value: Any) -> None:
  """Refuses anything but a finite number > 0 (a string, None, nan, inf, 0, -1)."""
  require(_number(value) and value > 0, field, f"must be > 0, got {value!r}",
          "set a positive value")


def check_nonnegative(field: str, value: Any) -> None:
  """Refuses anything but a finite number >= 0."""
  require(_number(value) and value >= 0, field, f"must be >= 0, got {value!r}",
          "set a non-negative value")
