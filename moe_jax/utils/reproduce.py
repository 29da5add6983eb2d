"""`reproduce`: every registered paper's experiment in one run, and one table of their claims.

Each experiment runs into DIR/<name>/ under the contract (moe_jax/utils/experiment.py); one that
raises is reported as failed with its error while the others go on. DIR/results.json holds
`papers.<name>.{status, error, minutes, data, scale, claims.<key>.{holds, ours, than, paper}}`;
DIR/results.md one row per claim. `update_docs` merges the run's papers into docs/results.json
(per preset, per paper, with the date and the machine; a paper not in the run keeps its last
measurement, so the default preset can be measured a few papers at a time) and rewrites the
generated tables of docs/results.md and docs/<name>.md between `<!-- reproduce:<preset>
begin/end -->` markers.
"""
from __future__ import annotations

import datetime
import importlib
import json
import os
import re
import time
import traceback

from moe_jax.registry import EXPERIMENTS
from moe_jax.utils import reporting
from moe_jax.utils.experiment import Experiment, environment, execute
from moe_jax.utils.errors import require

PRESETS = {"quick": "quick", "default": ""}
_VERDICT = {True: "holds", False: "does not hold", None: "not measured"}


def registered() -> dict[str, Experiment]:
  """name -> Experiment of every registered paper (imports their modules)."""
  return {name: importlib.import_module(module).EXPERIMENT
          for name, module in EXPERIMENTS.items()}


def select(experiments: dict[str, Experiment], only: str) -> dict[str, Experiment]:
  names = [n.strip() for n in only.split(",") if n.strip()] or list(experiments)
  unknown = [n for n in names if n not in experiments]
  require(not unknown, "--only", f"unknown experiments {unknown}",
          f"use names from {', '.join(experiments)}")
  return {n: experiments[n] for n in names}


def run_all(experiments: dict[str, Experiment], workdir: str, preset: str) -> dict:
  """Runs each experiment at `preset` ("quick" | "default"); returns the combined results."""
  require(preset in PRESETS, "--preset", f"unknown preset {preset!r}",
          f"use one of {', '.join(PRESETS)}")
  os.makedirs(workdir, exist_ok=True)
  papers, start = {}, time.time()
  bar = reporting.progress(total=len(experiments), desc="papers")
  for name, experiment in experiments.items():
    bar.set_postfix(paper=name)
    t0 = time.time()
    entry = {"paper": experiment.paper}
    try:
      config = experiment.load_config(PRESETS[preset])
      results = execute(experiment, config, os.path.join(workdir, name), echo=False)
      entry.update(status="ok", data=results["data"], scale=results["scale"],
                   claims=results["claims"])
    except Exception as e:  # pylint: disable=broad-except  # one paper must not stop the rest
      last = traceback.format_exception_only(type(e), e)[-1].strip()
      entry.update(status="failed", error=last, claims={})
      print(f"reproduce: {name} failed: {last}", flush=True)
    entry["minutes"] = (time.time() - t0) / 60
    papers[name] = entry
    bar.update(1)
  bar.close()
  results = {"preset": preset, "papers": papers, "minutes": (time.time() - start) / 60,
             "date": datetime.date.today().isoformat(), "environment": environment()}
  reporting.write_results(workdir, results, report(results))
  return results


def table(papers: dict) -> str:
  """One row per claim (and one per failed paper) of papers {name: entry}."""
  rows = []
  for name, p in papers.items():
    if p["status"] != "ok":
      rows.append([name, f"failed: {p['error']}", "-", "-", "failed", "-", "-",
                   f"{p['minutes']:.1f}"])
      continue
    for c in p["claims"].values():
      ours = "-" if c["ours"] is None else f"{c['ours']:.4g} {c['op']} {c['than']:.4g}"
      rows.append([name, c["text"], c["paper"], ours, _VERDICT[c["holds"]], p["data"],
                   p["scale"], f"{p['minutes']:.1f}"])
  return reporting.markdown_table(["paper", "claim", "paper's figure", "ours", "verdict", "data",
                                   "scale", "minutes"], rows)


def machine(entry: dict) -> str:
  """Where and when a run (or one paper of it) was measured."""
  env = entry["environment"]
  return (f"{entry['date']}, {env['cpu_cores']} CPU cores, backend {env['backend']} "
          f"({env['devices']} device(s)), Python {env['python']}, JAX {env['jax']}")


def report(results: dict) -> str:
  return (f"# Reproduction: every paper's claims\n\nMeasured {machine(results)}, preset "
          f"`{results['preset']}`; total {results['minutes']:.1f} minutes.\n\n"
          f"{table(results['papers'])}\n")


def _replace_block(text: str, tag: str, body: str) -> str:
  begin, end = f"<!-- reproduce:{tag} begin -->", f"<!-- reproduce:{tag} end -->"
  block = f"{begin}\n{body.strip()}\n{end}"
  pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
  if pattern.search(text):
    return pattern.sub(lambda _: block, text)
  return text.rstrip() + "\n\n" + block + "\n"


def update_docs(results: dict, docs_dir: str, workdir: str) -> list[str]:
  """Rewrites the generated blocks of docs/results.md and docs/<name>.md; returns the paths."""
  tag = results["preset"]
  papers = merge_measured(os.path.join(docs_dir, "results.json"), results)
  written = [os.path.join(docs_dir, "results.json")]
  runs = sorted({machine(p) for p in papers.values()})
  head = (f"Preset `{tag}`: {len(papers)} papers, {sum(p['minutes'] for p in papers.values()):.1f} "
          f"minutes in all (each paper's own run time). Measured on: {'; '.join(runs)}.\n\n"
          f"{table(papers)}")
  written.append(_rewrite(os.path.join(docs_dir, "results.md"), tag, head,
                          "# Results of `reproduce`\n"))
  for name, p in results["papers"].items():
    if p["status"] != "ok":
      continue
    with open(os.path.join(workdir, name, "results.md")) as f:
      body = f.read()
    body = f"Measured {machine(results)}; {p['minutes']:.1f} minutes.\n\n{body}"
    written.append(_rewrite(os.path.join(docs_dir, f"{name}.md"), tag, body,
                            f"# {p['paper']}\n"))
  return written


def merge_measured(path: str, results: dict) -> dict:
  """Merges the run's papers (stamped with its date and machine) into the JSON file at `path`
  ({preset: {name: entry}}); returns the preset's papers in registry order."""
  stored = json.load(open(path)) if os.path.exists(path) else {}
  papers = stored.setdefault(results["preset"], {})
  for name, p in results["papers"].items():
    papers[name] = {**p, "date": results["date"], "environment": results["environment"]}
  order = [n for n in EXPERIMENTS if n in papers] + [n for n in papers if n not in EXPERIMENTS]
  stored[results["preset"]] = {n: papers[n] for n in order}
  reporting.write_text(path, json.dumps(stored, indent=2, sort_keys=False) + "\n")
  return stored[results["preset"]]


def _rewrite(path: str, tag: str, body: str, title: str) -> str:
  text = open(path).read() if os.path.exists(path) else title
  reporting.write_text(path, _replace_block(text, tag, body))
  return path
