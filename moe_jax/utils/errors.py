"""Clear, early errors for bad configs and inputs.

Every check names the field that is wrong and says how to fix it, so that a user never
has to read an XLA traceback to find a typo in a config.
"""
from __future__ import annotations

from typing import Any, Iterable


class ConfigError(ValueError):
  """A config field or an input has a value that cannot work."""


def require(ok: bool, field: str, problem: str, fix: str) -> None:
  """Raises ConfigError('<field>: <problem>. Fix: <fix>') unless `ok`."""
  if not ok:
    raise ConfigError(f"{field}: {problem}. Fix: {fix}")


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
  """Raises a ConfigError naming `field` when `value` is not one of `choices`."""
  choices = list(choices)
  require(value in choices, field, f"unknown value {value!r}",
          f"use one of {', '.join(repr(c) for c in choices)}")


def check_positive(field: str, value: Any) -> None:
  require(value is not None and value > 0, field, f"must be > 0, got {value!r}",
          "set a positive value")
