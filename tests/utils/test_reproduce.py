"""`reproduce`: every paper runs, a broken one is reported as failed, docs tables regenerate."""
from __future__ import annotations

import json

import pytest

from moe_jax.registry import EXPERIMENTS
from moe_jax.utils import reproduce
from moe_jax.utils.errors import ConfigError
from moe_jax.utils.experiment import Claim, Experiment

CONFIG = '''
import dataclasses
from moe_jax.utils.config import Section

@dataclasses.dataclass(frozen=True)
class Cfg(Section):
  value: float = 1.0

def get_config(preset=""):
  return Cfg(value=0.5 if preset == "quick" else 2.0)
'''


def _good(cfg, workdir):
  del workdir
  return {"score": cfg.value, "markdown": f"| score |\n|---|\n| {cfg.value} |",
          "data": "synthetic: toy", "scale": "one number"}


def _broken(cfg, workdir):
  raise ValueError("deliberately broken")


@pytest.fixture
def experiments(tmp_path):
  path = tmp_path / "toy_config.py"
  path.write_text(CONFIG)
  claim = Claim("above_one", "score above one", "score", ">", 1.0, "paper: 1.5")
  return {"good": Experiment("good", "Good et al.", str(path), _good, (claim,)),
          "broken": Experiment("broken", "Broken et al.", str(path), _broken, (claim,)),
          "after": Experiment("after", "After et al.", str(path), _good, (claim,))}


def test_a_failing_paper_does_not_stop_the_others(experiments, tmp_path):
  out = tmp_path / "run"
  results = reproduce.run_all(experiments, str(out), "quick")
  papers = json.loads((out / "results.json").read_text())["papers"]
  assert papers["broken"]["status"] == "failed"
  assert "ValueError: deliberately broken" in papers["broken"]["error"]
  for name in ("good", "after"):
    claim = papers[name]["claims"]["above_one"]
    assert papers[name]["status"] == "ok" and claim["holds"] is False and claim["ours"] == 0.5
    assert claim["paper"] == "paper: 1.5" and papers[name]["minutes"] >= 0
    assert (out / name / "results.json").exists()
  md = (out / "results.md").read_text()
  assert "| broken | failed: ValueError: deliberately broken |" in md
  assert "| good | score above one | paper: 1.5 | 0.5 > 1 | does not hold | synthetic: toy |" in md
  assert results["preset"] == "quick"
  default = reproduce.run_all({"good": experiments["good"]}, str(tmp_path / "d"), "default")
  assert default["papers"]["good"]["claims"]["above_one"]["holds"] is True


def test_update_docs_rewrites_only_its_block(experiments, tmp_path):
  out, docs = tmp_path / "run", tmp_path / "docs"
  docs.mkdir()
  (docs / "good.md").write_text("# Good\n\nProse stays.\n\n<!-- reproduce:quick begin -->\nSTALE-TABLE"
                                "\n<!-- reproduce:quick end -->\n\nMore prose.\n")
  results = reproduce.run_all({"good": experiments["good"]}, str(out), "quick")
  reproduce.update_docs(results, str(docs), str(out))
  text = (docs / "good.md").read_text()
  assert "Prose stays." in text and "More prose." in text and "STALE-TABLE" not in text
  assert "| 0.5 |" in text and text.count("reproduce:quick begin") == 1
  assert "| good | score above one |" in (docs / "results.md").read_text()
  reproduce.update_docs(results, str(docs), str(out))  # idempotent
  assert (docs / "good.md").read_text() == text


def test_a_partial_run_keeps_the_other_papers_measurements(experiments, tmp_path):
  docs = tmp_path / "docs"
  docs.mkdir()
  first = reproduce.run_all(experiments, str(tmp_path / "all"), "quick")
  reproduce.update_docs(first, str(docs), str(tmp_path / "all"))
  later = reproduce.run_all({"good": experiments["good"]}, str(tmp_path / "one"), "default")
  reproduce.update_docs(later, str(docs), str(tmp_path / "one"))
  stored = json.loads((docs / "results.json").read_text())
  assert list(stored["quick"]) == ["good", "broken", "after"] and list(stored["default"]) == ["good"]
  assert stored["default"]["good"]["claims"]["above_one"]["holds"] is True
  text = (docs / "results.md").read_text()
  quick = text.split("<!-- reproduce:quick begin -->")[1].split("<!-- reproduce:quick end -->")[0]
  assert "| after | score above one |" in quick and "Preset `quick`: 3 papers" in quick
  assert "Preset `default`: 1 papers" in text


def test_selection_and_registry():
  with pytest.raises(ConfigError, match="--only: unknown experiments"):
    reproduce.select({"a": None}, "a,b")
  assert reproduce.select({"a": 1, "b": 2}, "b") == {"b": 2}
  for name, experiment in reproduce.registered().items():
    assert experiment.name == name and name in EXPERIMENTS
    assert experiment.claims, f"{name} declares no claims"
