"""experiments/generate.py quick preset end to end: results.json, results.md, parity.png."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("transformers")


def test_generate_quick_preset(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  subprocess.run([sys.executable, "-m", "experiments.generate",
                  "--config=configs/generate.py:quick", f"--workdir={tmp_path}"],
                 cwd=root, check=True, capture_output=True, text=True,
                 env={**os.environ, "JAX_PLATFORMS": "cpu"})
  results = json.loads((tmp_path / "results.json").read_text())
  mixtral = results["models"]["mixtral"]
  assert mixtral["rel_err"] < 1e-4 and mixtral["identical"]
  assert {"params", "load_s", "tokens_per_s", "continuation"} <= set(mixtral)
  assert "| mixtral |" in (tmp_path / "results.md").read_text()
  assert (tmp_path / "parity.png").stat().st_size > 0
