"""Entry-point runner: absl `app.run` with one clear line for bad flags, configs and inputs.

`--config.<dotted field>=<value>` arguments are taken out of argv before absl parses it and handed
to `main` as overrides (text, parsed later by the field's type: moe_jax/utils/config.py). A bad
flag, a misspelt override or a ConfigError raised anywhere ends the program with
`error: <what, where, how to fix>` on stderr and exit status 2, not a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable

from absl import app, flags

from moe_jax.utils.errors import ConfigError

OVERRIDE_PREFIX = "--config."


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """(argv without the overrides, {dotted field: text}) for `--config.a.b=text` arguments."""
  rest, overrides = [], {}
  for arg in argv:
    if arg.startswith(OVERRIDE_PREFIX):
      name, eq, text = arg[len(OVERRIDE_PREFIX):].partition("=")
      if not eq or not name:
        fail(f"{arg}: an override needs a value. Fix: write {OVERRIDE_PREFIX}<field>=<value>")
      overrides[name] = text
    else:
      rest.append(arg)
  return rest, overrides


def run(main: Callable[[list[str], dict[str, str]], object]) -> None:
  """Runs `main(argv, overrides)` like `absl.app.run`, every known failure as one line."""
  overrides: dict[str, str] = {}

  def parse(argv: list[str]) -> list[str]:
    rest, found = split_overrides(argv)
    overrides.update(found)
    try:
      return flags.FLAGS(rest)
    except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
      detail = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'")
      fail(f"bad command-line flag: {detail}")

  def guarded(argv):
    try:
      return main(argv, overrides)
    except ConfigError as e:
      fail(str(e))

  app.run(guarded, flags_parser=parse)
