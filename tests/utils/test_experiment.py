"""The experiment contract: claims computed from results, execute's files, config loading."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from moe_jax.utils.config import Section
from moe_jax.utils.errors import ConfigError
from moe_jax.utils.experiment import Claim, Experiment, check_workdir, execute, load_config


def test_claims_are_computed_from_the_numbers():
  rng = np.random.default_rng()
  a, b = rng.normal(size=2)
  results = {"m": {"x": float(a), "y": float(b)}}
  claim = Claim("k", "x beats y", "m.x", ">", "m.y", "paper: +1")
  got = claim.check(results)
  assert got["holds"] == (a > b) and got["ours"] == a and got["than"] == b
  assert Claim("k", "x below 0", "m.x", "<", 0.0, "p").check(results)["holds"] == (a < 0)
  assert Claim("k", "nan", "m.x", "<", float("nan"), "p").check(results)["holds"] is None
  with pytest.raises(KeyError, match="m.z"):
    Claim("k", "missing", "m.z", "<", 1.0, "p").check(results)
  with pytest.raises(ConfigError, match="claim k.op"):
    Claim("k", "bad op", "m.x", "!=", 1.0, "p")


@dataclasses.dataclass(frozen=True)
class Cfg(Section):
  value: float = 1.0


def _run(cfg: Cfg, workdir: str) -> dict:
  with open(os.path.join(workdir, "plot.png"), "wb") as f:
    f.write(b"png")
  return {"score": cfg.value * 2, "markdown": "| a |\n|---|\n| 1 |", "data": "synthetic: test",
          "scale": "tiny"}


EXP = Experiment("toy", "A toy paper", "configs/none.py", _run,
                 (Claim("pos", "score is positive", "score", ">", 0.0, "paper: > 0"),
                  Claim("gone", "absent number", "nothing.here", ">", 0.0, "paper")))


def test_execute_writes_the_contract(tmp_path):
  results = execute(EXP, Cfg(value=-0.5), str(tmp_path), echo=False)
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk["claims"]["pos"]["holds"] is False and on_disk["claims"]["pos"]["ours"] == -1.0
  assert on_disk["claims"]["gone"]["holds"] is None and "nothing.here" in on_disk["claims"]["gone"]["error"]
  assert on_disk["config"] == {"value": -0.5} and on_disk["minutes"] >= 0
  assert {"python", "jax", "backend", "cpu_cores"} <= set(on_disk["environment"])
  assert "markdown" not in on_disk and results["data"] == "synthetic: test"
  md = (tmp_path / "results.md").read_text()
  assert "| score is positive | paper: > 0 | -1 | > 0 | does not hold |" in md
  assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]  # atomic writes leave nothing


def test_execute_requires_the_contract_keys(tmp_path):
  bad = dataclasses.replace(EXP, run=lambda cfg, workdir: {"markdown": "x"})
  with pytest.raises(ConfigError, match="toy.run: returned no 'data' string"):
    execute(bad, Cfg(), str(tmp_path))


def test_workdir_checks(tmp_path):
  a_file = tmp_path / "f"
  a_file.write_text("x")
  with pytest.raises(ConfigError, match="--workdir: .* is a file"):
    check_workdir(str(a_file))
  with pytest.raises(ConfigError, match="--workdir: cannot create"):
    check_workdir(str(a_file / "sub"))


def test_load_config_errors(tmp_path):
  with pytest.raises(ConfigError, match="^--config: no config file 'configs/nope.py'"):
    load_config("configs/nope.py")
  path = tmp_path / "c.py"
  path.write_text("X = 1\n")
  with pytest.raises(ConfigError, match="defines no get_config"):
    load_config(str(path))
  cfg = load_config("configs/lm_tiny.py:quick", overrides={"train.num_steps": "2"})
  assert cfg.train.num_steps == 2 and cfg.model.d_model == 32
