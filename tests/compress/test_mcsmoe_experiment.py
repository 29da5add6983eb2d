"""MC-SMoE's experiment: the quick preset end to end (slow: 15 distillation runs), its config."""
import json

import pytest

from moe_jax.compress.mcsmoe import mcsmoe_experiment
from moe_jax.utils.errors import ConfigError
from moe_jax.utils.experiment import execute

EXPERIMENT = mcsmoe_experiment.EXPERIMENT


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
  config = EXPERIMENT.load_config("quick")
  execute(EXPERIMENT, config, str(tmp_path), echo=False)
  results = json.loads((tmp_path / "results.json").read_text())
  first, second = results["targets"]["target_0"], results["targets"]["target_1"]
  assert sum(first["groups_per_layer"]) == 3 * len(first["groups_per_layer"])
  assert set(first["rows"]) == set(mcsmoe_experiment.VARIANTS)
  full = results["full"]
  for entry in (first, second):
    for variant, row in entry["rows"].items():
      for recovery in ("zero", "kd"):
        r = row[recovery]
        assert r["expert_bytes"] < full["expert_bytes"], (variant, recovery)
        assert 0 < r["experts_per_token"] <= 2 + 1e-9
  mc, ms = first["rows"]["mcsmoe"]["kd"], first["rows"]["msmoe"]["kd"]
  assert mc["expert_bytes"] < ms["expert_bytes"] and mc["params"] < ms["params"]
  study = first["export"]
  assert study["duplicate"]["transformers_max_abs_diff"] < 1e-4
  assert study["duplicate"]["kl"] < 1e-6 and study["duplicate"]["top1_agreement"] == 1.0
  assert study["group_router"]["transformers_max_abs_diff"] < 1e-4
  assert study["round_trip"]["max_abs_diff"] < 1e-5
  assert set(results["claims"]) == {c.key for c in EXPERIMENT.claims}
  assert all(c["holds"] is not None for c in results["claims"].values()), results["claims"]
  assert "## Export to the Hugging Face format" in (tmp_path / "results.md").read_text()
  assert (tmp_path / "tradeoff.png").stat().st_size > 0


@pytest.mark.parametrize("override, field", [
    ({"targets": "0"}, "targets"), ({"variants": "mcsmoe"}, "variants"),
    ({"variants": "merge"}, "variants"), ({"kd_temperature": "0"}, "kd_alpha"),
    ({"losparse.final_fraction": "0"}, "losparse.final_fraction")])
def test_bad_config_names_the_field(override, field):
  with pytest.raises(ConfigError, match=f"^{field.replace('.', '[.]')}"):
    EXPERIMENT.load_config("quick", override)
