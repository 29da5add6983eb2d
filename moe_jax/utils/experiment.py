"""The experiment contract: one shape for every paper's reproduction.

A paper's package declares an `Experiment`: its config class, `run(config, workdir) -> results`
and its claims. `run` writes its PNG plots into `workdir` and returns a dict of plain numbers with
three required keys:
  "markdown": the result tables a person reads (the harness writes it to results.md),
  "data": which data the numbers come from ("synthetic: ...", "shipped: ...", "user: ..."),
  "scale": the model and budget in a few words ("4 layers, d 192, 1900 steps").
`execute` runs it: it checks the workdir, times the run, evaluates the claims on the numbers,
and writes results.json (the results, "claims", "config", "minutes", "environment") and
results.md atomically.

Claims are data, never verdicts written by hand: `Claim(key, text, ours, op, than, paper)` holds
when `value(ours) op value(than)`, with `ours` / `than` dotted paths into the results (or, for
`than`, a number), `paper` the paper's own figure for the direction.
"""
from __future__ import annotations

import dataclasses
import math
import operator
import os
import platform
import time
from typing import Any, Callable

from moe_jax.utils import reporting
from moe_jax.utils.config import to_dict
from moe_jax.utils.errors import ConfigError, require

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def lookup(results: dict, dotted: str) -> Any:
  """results["a"]["b"]... for the dotted path "a.b..."; KeyError names the missing part."""
  node = results
  for part in dotted.split("."):
    if not isinstance(node, dict) or part not in node:
      raise KeyError(f"results have no {dotted!r} (missing {part!r})")
    node = node[part]
  return node


@dataclasses.dataclass(frozen=True)
class Claim:
  """A paper's claim as a check on a run's results: value(ours) `op` value(than)."""
  key: str
  text: str
  ours: str
  op: str
  than: str | float
  paper: str

  def __post_init__(self):
    require(self.op in _OPS, f"claim {self.key}.op", f"unknown operator {self.op!r}",
            f"use one of {', '.join(_OPS)}")

  def check(self, results: dict) -> dict:
    """{"holds", "ours", "than", "text", "paper"}; holds is None when a value is not finite."""
    ours = float(lookup(results, self.ours))
    than = float(self.than if isinstance(self.than, (int, float)) else
                 lookup(results, self.than))
    finite = math.isfinite(ours) and math.isfinite(than)
    return {"holds": bool(_OPS[self.op](ours, than)) if finite else None, "ours": ours,
            "than": than, "op": self.op, "text": self.text, "paper": self.paper}


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One paper's reproduction.

  name: the short name used in every path (configs/<name>.py, docs/<name>.md, results).
  paper: title, authors, venue / arXiv id, for tables.
  config: path of the config file, relative to the repository root.
  run: run(config, workdir) -> results (see the module docstring).
  claims: the paper's claims as checks over the results.
  """
  name: str
  paper: str
  config: str
  run: Callable[[Any, str], dict]
  claims: tuple[Claim, ...] = ()

  def load_config(self, preset: str = "", overrides: dict[str, str] | None = None):
    return load_config(self.config, preset, overrides)


def _repo_root() -> str:
  return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(spec: str, preset: str = "", overrides: dict[str, str] | None = None):
  """Loads `path[:preset]` (a config file's get_config) and applies `--config.x.y` overrides.

  A relative path is looked up from the working directory, then from the repository root.
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, spec_preset = spec.partition(":")
  preset = spec_preset or preset
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(_repo_root(), path)
  require(os.path.isfile(path), "--config", f"no config file {spec.partition(':')[0]!r}",
          "pass --config=configs/<name>.py[:preset]")
  module_spec = importlib.util.spec_from_file_location(
      "config_" + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  require(hasattr(module, "get_config"), "--config", f"{path} defines no get_config(preset)",
          "point at a file of configs/")
  config = module.get_config(preset)
  return config.apply_overrides(overrides) if overrides else config


def check_workdir(workdir: str) -> None:
  """Refuses, before any work, a workdir that is a file or cannot be written."""
  require(bool(workdir), "--workdir", "is empty", "pass --workdir=DIR")
  require(not os.path.isfile(workdir), "--workdir", f"{workdir} is a file",
          "choose a directory path")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--workdir: cannot create {workdir} ({e.strerror}). Fix: choose a "
                      "writable directory") from None
  require(os.access(workdir, os.W_OK), "--workdir", f"{workdir} is not writable",
          "choose a writable directory")


def environment() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  return {"python": platform.python_version(), "jax": jax.__version__,
          "backend": jax.default_backend(), "devices": jax.device_count(),
          "cpu_cores": os.cpu_count(), "machine": platform.machine()}


def evaluate_claims(experiment: Experiment, results: dict) -> dict:
  """Each claim's check; a claim whose numbers are missing is reported, not raised."""
  out = {}
  for claim in experiment.claims:
    try:
      out[claim.key] = claim.check(results)
    except (KeyError, TypeError, ValueError) as e:
      out[claim.key] = {"holds": None, "ours": None, "than": None, "op": claim.op,
                        "text": claim.text, "paper": claim.paper, "error": str(e)}
  return out


def claims_table(claims: dict) -> str:
  verdict = {True: "holds", False: "does not hold", None: "not measured"}
  rows = [[c["text"], c["paper"], _fmt(c["ours"]), f"{c['op']} {_fmt(c['than'])}",
           verdict[c["holds"]]] for c in claims.values()]
  return reporting.markdown_table(["claim", "paper", "ours", "against", "verdict"], rows)


def _fmt(x) -> str:
  return "-" if x is None else f"{x:.4g}"


def execute(experiment: Experiment, config, workdir: str, *, echo: bool = True) -> dict:
  """Runs `experiment` into `workdir` and writes results.json / results.md; returns results."""
  check_workdir(workdir)
  start = time.time()
  results = dict(experiment.run(config, workdir))
  minutes = (time.time() - start) / 60
  for key in ("markdown", "data", "scale"):
    require(isinstance(results.get(key), str), f"{experiment.name}.run", f"returned no "
            f"{key!r} string", "return the contract's markdown, data and scale")
  markdown = results.pop("markdown")
  results.update(claims=evaluate_claims(experiment, results), config=to_dict(config),
                 minutes=minutes, environment=environment())
  if experiment.claims:
    markdown += "\n\n## Claims\n\n" + claims_table(results["claims"])
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:  # on several hosts, the first one writes the results
    reporting.write_results(workdir, results, markdown, echo=echo)
  return results

