"""Entry-point runner: absl `app.run` with one clear line for bad flags, configs and inputs.

`--config.<dotted field>=<value>` arguments are taken out of argv before absl parses it and handed
to `main` as overrides (text, parsed later by the field's type: moe_jax/utils/config.py). A bad
flag, a misspelt override or a ConfigError raised anywhere ends the program with
`error: <what, where, how to fix>` on stderr and exit status 2, not a traceback. A run that
stops early (`RunStopped`: a signal, an error mid-training) ends with `stopped: <what happened,
the last intact checkpoint, how to resume>` as its last line and the run's exit status (after
the traceback of an unexpected error, which a bug report needs); Ctrl-C before a run could say
more ends with `stopped: interrupted (Ctrl-C)` and status 130.
"""
from __future__ import annotations

import sys
import traceback
from typing import Callable

from absl import app, flags

from moe_jax.utils.errors import ConfigError, RunStopped

OVERRIDE_PREFIX = "--config."


def fail(message: str, code: int = 2, prefix: str = "error") -> None:
  print(f"{prefix}: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


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
    except RunStopped as e:
      cause = e.__cause__
      if cause is not None and not isinstance(cause, (ConfigError, KeyboardInterrupt)):
        traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
      fail(str(e), e.exit_code, "stopped")
    except KeyboardInterrupt:
      fail("interrupted (Ctrl-C); this run wrote no results", 130, "stopped")

  app.run(guarded, flags_parser=parse)
