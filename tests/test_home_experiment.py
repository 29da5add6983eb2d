"""End to end: the quick preset of experiments/home.py writes results, a table and plots."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The quick run is dominated by XLA compiling 3 train steps; cheaper LLVM passes cut that ~3x.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def test_quick_preset_end_to_end(tmp_path):
  subprocess.run([sys.executable, "-m", "experiments.home", "--config=configs/home.py:quick",
                  f"--workdir={tmp_path}"], cwd=ROOT, check=True, capture_output=True,
                 env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": FAST_COMPILE})
  with open(tmp_path / "results.json") as f:
    results = json.load(f)
  for name in ("mmoe", "ple", "home"):
    entry = results["models"][name]
    for key in ("mean_auc", "sparse_auc", "max_zero_frac"):
      assert 0.0 <= entry[key] <= 1.0, (name, key, entry[key])
  # Swish(x) is 0 in float32 only where it underflows (x below about -100): practically never.
  assert results["models"]["home"]["max_zero_frac"] < 1e-3
  assert "| model |" in (tmp_path / "results.md").read_text()
  assert any(p.suffix == ".png" for p in tmp_path.iterdir())
