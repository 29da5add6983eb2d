"""Expert parallelism on 8 simulated CPU devices (run in a subprocess: JAX here has one device)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def checks():
  seed = int(np.random.default_rng().integers(0, 10_000))  # fresh inputs every run
  proc = subprocess.run([sys.executable, os.path.join(HERE, "ep_checks.py"), str(seed)],
                        capture_output=True, text=True, timeout=900,
                        cwd=os.path.dirname(HERE))
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mesh", ["expert8", "expert4xdata2", "data2xexpert4"])
def test_expert_parallel_equals_single_device(checks, mesh):
  assert checks["devices"] == 8
  assert checks[mesh]["y_err"] < 1e-5
  assert checks[mesh]["grad_err"] < 1e-5
  assert checks[mesh]["dropped"] == 0
  assert checks[mesh]["tokens"] == 16 * 6 * 2  # every assignment counted once over the mesh


def test_two_all_to_alls_per_layer(checks):
  assert checks["all_to_all_forward"] == 2


def test_expert_weights_split_over_expert_shards(checks):
  info = checks["expert_bytes"]
  for name, per_device in info["per_device"].items():
    assert per_device * info["expert_shards"] == info["total"][name]


def test_capacity_drops_counted_over_the_mesh(checks):
  assert checks["capacity"]["dropped"] == checks["capacity"]["brute_force"] > 0


def test_bad_mesh_fails_with_the_fix(checks):
  assert checks["errors"]["mesh_too_big"].startswith("mesh: axes")
  assert "Fix:" in checks["errors"]["mesh_too_big"]
  assert checks["errors"]["experts_not_divisible"].startswith("num_experts: 12 experts")
