"""SlimMoE's experiment: the quick preset end to end (slow: 10 distillation runs), its config."""
import json

import pytest

from moe_jax.compress.slimmoe import slimmoe_experiment, slimmoe_report
from moe_jax.utils.errors import ConfigError
from moe_jax.utils.experiment import execute

EXPERIMENT = slimmoe_experiment.EXPERIMENT


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
  config = EXPERIMENT.load_config("quick")
  execute(EXPERIMENT, config, str(tmp_path), echo=False)
  results = json.loads((tmp_path / "results.json").read_text())
  full = results["full"]
  for j, target in enumerate(config.targets):
    entry = results["targets"][f"target_{j}"]
    assert set(entry["rows"]) == set(slimmoe_report.ROWS)
    for name, row in entry["rows"].items():
      assert row["expert_width"] == round(target * 32) and row["params"] < full["params"], name
      assert sum(s["steps"] for s in entry["stages"][name]) == config.kd.num_steps
  baselines = results["targets"]["target_1"]["baselines"]
  slim = results["targets"]["target_1"]["rows"]["multistage"]
  assert set(baselines) == {"drop", "msmoe"} and baselines["drop"]["experts"] == 2
  assert abs(baselines["drop"]["params"] - slim["params"]) < 0.02 * full["params"]
  assert set(results["claims"]) == {c.key for c in EXPERIMENT.claims}
  assert all(c["holds"] is not None for c in results["claims"].values()), results["claims"]
  assert (tmp_path / "slimmoe_bpb.png").stat().st_size > 0


@pytest.mark.parametrize("override, field", [
    ({"targets": "0.25,0.5"}, "targets"), ({"targets": "0.5"}, "targets"),
    ({"stages": "3"}, "stage_shares"), ({"schedule.kd_top_k": "0"}, "schedule.kd_top_k")])
def test_bad_config_names_the_field(override, field):
  with pytest.raises(ConfigError, match=f"^{field.replace('.', '[.]')}"):
    EXPERIMENT.load_config("quick", override)
