"""End to end: the quick preset through the experiment contract writes results, plots,
checkpoints, and its claims evaluate; the command line reports a bad field in one line."""
import json

from moe_jax.customization.experiment import EXPERIMENT
from moe_jax.utils.experiment import execute
from tests.helpers import run_module


def test_quick_preset_end_to_end(tmp_path):
  config = EXPERIMENT.load_config("quick", {"gn.targets": "source,ge_error"})
  execute(EXPERIMENT, config, str(tmp_path), echo=False)
  with open(tmp_path / "results.json") as f:
    results = json.load(f)
  for key in ("ge_user_acc", "moe_user_acc", "ge_generic_acc", "moe_generic_acc", "le_user_acc",
              "le_generic_acc", "overhead", "overhead_params"):
    assert 0.0 <= results[key] <= 1.0, (key, results[key])
  assert results["generic_drop"] == results["ge_generic_acc"] - results["moe_generic_acc"]
  assert len(results["users"]) == 2
  assert set(results["gate_targets"]) == {"source", "ge_error"}
  assert results["costs"]["ge"]["params"] == 61706
  assert results["data"].startswith("shipped: scikit-learn digits") and results["scale"]
  assert results["config"]["users"]["num_users"] == 2
  claims = results["claims"]
  assert set(claims) == {c.key for c in EXPERIMENT.claims}
  for claim in claims.values():
    assert isinstance(claim["holds"], bool) and "error" not in claim, claim
  # The costs do not depend on training: LE + GN are 1331 of GE's 61706 parameters.
  assert claims["size_overhead"]["holds"] and claims["energy_overhead"]["holds"]
  markdown = (tmp_path / "results.md").read_text()
  assert "| user |" in markdown and "## Claims" in markdown
  for name in ("users.png", "summary.png", "samples.png"):
    assert (tmp_path / name).stat().st_size > 0
  for name in ("ge", "user_00", "user_01"):
    assert (tmp_path / "checkpoints" / name).is_dir()


def test_bad_override_is_one_line_naming_the_field(tmp_path):
  out = run_module("experiments.customization", "--config=configs/customization.py:quick",
                   f"--workdir={tmp_path}", "--config.gn.targets=source,confidence", check=False)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [out.stderr.strip()]
  assert out.stderr.startswith("error: gn.targets: unknown value 'confidence'")
