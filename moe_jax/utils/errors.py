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


def section_fields(section: str, cls, d: Any) -> dict:
  """A config section (dict or ConfigDict) as a plain dict of `cls`'s dataclass fields.

  Unknown keys raise a ConfigError naming the section, the keys and the allowed fields.
  """
  import dataclasses  # pylint: disable=g-import-not-at-top
  d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(d) - names)
  require(not unknown, section, f"unknown fields {unknown}",
          f"use only the fields of {cls.__name__}: {', '.join(sorted(names))}")
  return d
