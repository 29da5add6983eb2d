"""Entry-point runner: absl `app.run` with one clear line for bad flags and configs.

A misspelt `--config.x.y=...` override or a ConfigError raised by the config's validation ends
the program with `error: <what, where, how to fix>` and exit status 2, not a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable

from absl import app, flags

from moe_jax.utils.errors import ConfigError


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
    detail = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'")
    _fail(f"bad command-line flag: {detail}")


def run(main: Callable) -> None:
  """Runs `main` like `absl.app.run`, turning flag and ConfigError failures into one line."""
  def guarded(argv):
    try:
      return main(argv)
    except ConfigError as e:
      _fail(str(e))

  app.run(guarded, flags_parser=_parse)
