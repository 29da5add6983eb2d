"""HoME's experiment: the quick preset end to end, its claims, its config and the entry point."""
import json

import pytest

from moe_jax.recsys import home_experiment
from moe_jax.recsys.home import HoMEConfig
from moe_jax.recsys.ple import PLEConfig
from moe_jax.utils.errors import ConfigError
from moe_jax.utils.experiment import evaluate_claims, execute
from tests.helpers import run_module
from tests.recsys.test_data import write_kuairand_log

EXPERIMENT = home_experiment.EXPERIMENT
MEASURED_IN_QUICK = {"home_beats_mmoe_mean", "home_beats_mmoe_sparse", "home_beats_ple_mean",
                     "home_beats_ple_sparse", "relu_expert_collapse"}


def test_quick_preset_end_to_end(tmp_path):
  execute(EXPERIMENT, EXPERIMENT.load_config("quick"), str(tmp_path), echo=False)
  results = json.loads((tmp_path / "results.json").read_text())
  assert list(results["models"]) == ["home", "mmoe", "ple"]  # json keys are sorted
  for name, entry in results["models"].items():
    for key in ("mean_auc", "sparse_auc", "max_zero_frac"):
      assert 0.0 <= entry[key] <= 1.0, (name, key, entry[key])
    assert entry["params"] > 0 and len(entry["task_auc"]) == 8
  # Swish(x) is 0 in float32 only where it underflows (x below about -100): practically never.
  assert results["models"]["home"]["max_zero_frac"] < 1e-3
  assert results["collapse"]["model"] in ("mmoe", "ple")
  assert results["data"].startswith("synthetic: MMoE protocol, 8 tasks in 2 groups")
  assert results["scale"] == "3 models, 20 Adam steps x 128 rows, 2 seeds"
  claims = results["claims"]
  assert set(claims) == {c.key for c in EXPERIMENT.claims}
  for key, claim in claims.items():  # the ablations are not in the quick preset
    assert (claim["holds"] in (True, False)) == (key in MEASURED_IN_QUICK), (key, claim)
  markdown = (tmp_path / "results.md").read_text()
  assert "| model |" in markdown and "## Claims" in markdown
  assert (tmp_path / "gate_heatmaps.png").stat().st_size > 0
  assert (tmp_path / "expert_diagnostics.png").stat().st_size > 0


def _entry(mean, sparse, zero=0.5, ratio=2.0):
  return {"mean_auc": mean, "sparse_auc": sparse, "max_zero_frac": zero,
          "expert_std_ratio": ratio}


def test_claims_evaluate_from_the_numbers():
  results = {"models": {"mmoe": _entry(0.80, 0.70), "ple": _entry(0.82, 0.76),
                        "home": _entry(0.81, 0.75, zero=0.0, ratio=1.5),
                        "home_no_norm": _entry(0.79, 0.72, ratio=9.0),
                        "home_no_mask": _entry(0.83, 0.70),
                        "home_no_feature_gate": _entry(0.70, 0.60),
                        "home_no_self_gate": _entry(0.80, 0.74)},
             "collapse": {"relu_max_zero_frac": 0.93, "model": "ple"}}
  claims = evaluate_claims(EXPERIMENT, results)
  holds = {k: c["holds"] for k, c in claims.items()}
  assert holds == {"home_beats_mmoe_mean": True, "home_beats_mmoe_sparse": True,
                   "home_beats_ple_mean": False, "home_beats_ple_sparse": False,
                   "relu_expert_collapse": True, "norm_aligns_experts": True,
                   "norm_helps": True, "mask_helps": False, "feature_gate_helps": True,
                   "self_gate_helps": True}
  assert claims["relu_expert_collapse"]["than"] == 0.9
  assert all('"' in c.paper and "2408.05430" in c.paper for c in EXPERIMENT.claims)
  del results["models"]["ple"]
  assert evaluate_claims(EXPERIMENT, results)["home_beats_ple_mean"]["holds"] is None


def test_every_field_is_set_from_the_command_line():
  config = EXPERIMENT.load_config("", {
      "models.home.expert_norm": "false", "seeds": "0,1", "train.steps": "7",
      "data.positive_rates": "0.3,0.2,0.1,0.05,0.3,0.1,0.05,0.01", "models.cgc.num_levels": "2",
      "models.mmoe.expert_hidden": "16,8"})
  assert config.models["home"].expert_norm is False and config.models["home"].self_gate
  assert config.seeds == (0, 1) and config.train.steps == 7
  assert config.data.positive_rates[-1] == 0.01
  assert isinstance(config.models["cgc"], PLEConfig) and config.models["cgc"].num_levels == 2
  assert config.models["mmoe"].expert_hidden == (16, 8)
  for overrides, message in [
      ({"models.home.expert_nrom": "false"}, "^models.home.expert_nrom: unknown field"),
      ({"models.home.expert_norm": "maybe"}, "^models.home.expert_norm: expected true or false"),
      ({"data.task_names": "a,b"}, "^data.task_names: 2 names for 8 tasks"),
      ({"data.positive_rates": "0.3,2"}, "^data.positive_rates: 2 rates for 8 tasks"),
      ({"sparse_rate": "0"}, "^sparse_rate: must lie in"),
      ({"seeds": ""}, "^seeds: is empty"),
      ({"train.batch_size": "0"}, "^train.batch_size: must be > 0")]:
    with pytest.raises(ConfigError, match=message):
      EXPERIMENT.load_config("", overrides)
  with pytest.raises(ConfigError, match="^models.x.kind: unknown value 'moe'"):
    home_experiment.HomeExperimentConfig.from_dict({"models": {"x": {"kind": "moe"}}})
  with pytest.raises(ConfigError, match="^preset: unknown value 'slow'"):
    EXPERIMENT.load_config("slow")


def test_kuairand_preset_reads_a_log(tmp_path):
  path = tmp_path / "log.csv"
  write_kuairand_log(path, 50)
  config = EXPERIMENT.load_config("kuairand", {"data.path": str(path), "seeds": "0,1"})
  assert isinstance(config.models["home"], HoMEConfig)
  tasks = home_experiment.load_data(config)
  assert len(tasks.train) == 2 and len(tasks.train[0]["labels"]) == 40
  assert tasks.names[1] == "long_view" and tasks.groups == (1, 0, 1, 1, 1, 1, 1)
  assert tasks.description == f"user: KuaiRand log {path} (50 rows, time split)"
  with pytest.raises(ConfigError, match="^data.path: no file"):
    home_experiment.load_data(EXPERIMENT.load_config("kuairand"))


def test_entry_point_reports_a_bad_field_in_one_line(tmp_path):
  proc = run_module("experiments.home", "--config=configs/home.py:quick",
                    f"--workdir={tmp_path}", "--config.models.home.feature_gate_rank=-1",
                    check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "error: models.home.feature_gate_rank: must be >= 0, got -1")
  assert not (tmp_path / "results.json").exists()
