"""End to end: the quick preset of experiments/customize.py writes results, plots, checkpoints."""
import json
import os
import subprocess
import sys

import pytest

from configs import customize
from moe_jax.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_preset_end_to_end(tmp_path):
  subprocess.run([sys.executable, "-m", "experiments.customize",
                  "--config=configs/customize.py:quick", f"--workdir={tmp_path}"], cwd=ROOT,
                 check=True, capture_output=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  with open(tmp_path / "results.json") as f:
    results = json.load(f)
  for key in ("ge_user_acc", "moe_user_acc", "ge_generic_acc", "moe_generic_acc", "le_user_acc",
              "le_generic_acc", "overhead", "overhead_params"):
    assert 0.0 <= results[key] <= 1.0, (key, results[key])
  assert len(results["users"]) == 2
  assert set(results["gate_targets"]) == {"source", "ge_error"}
  assert results["costs"]["ge"]["params"] == 61706
  assert "| user |" in (tmp_path / "results.md").read_text()
  for name in ("users.png", "summary.png", "samples.png"):
    assert (tmp_path / name).stat().st_size > 0
  for name in ("ge", "user_00", "user_01"):
    assert (tmp_path / "checkpoints" / name).is_dir()


def test_config_errors_name_the_field():
  with pytest.raises(ConfigError, match="preset"):
    customize.get_config("fast")
  cfg = customize.get_config("quick")
  assert cfg.users.num_users == 2 and customize.get_config().users.num_users == 10
