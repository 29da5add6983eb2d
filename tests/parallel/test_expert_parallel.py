"""Expert parallelism and sharded training on 8 simulated CPU devices.

The checks run in subprocesses (ep_checks.py, sharded_train_checks.py: JAX here has one device)
and print what they measured; these tests assert on it.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
E, D, TOKENS_PER_DEVICE = 8, 24, 16 * 6 // 8  # the layer and input of ep_checks.py


def run_checks(script: str) -> dict:
  seed = int(np.random.default_rng().integers(0, 10_000))  # fresh inputs every run
  proc = subprocess.run([sys.executable, os.path.join(HERE, script), str(seed)],
                        capture_output=True, text=True, timeout=900,
                        cwd=os.path.dirname(os.path.dirname(HERE)))
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def checks():
  return run_checks("ep_checks.py")


@pytest.mark.parametrize("mesh", ["expert8", "expert4xdata2", "data2xexpert4"])
def test_expert_parallel_equals_single_device(checks, mesh):
  assert checks["devices"] == 8
  assert checks[mesh]["y_err"] < 1e-5
  assert checks[mesh]["grad_err"] < 1e-5
  assert checks[mesh]["dropped"] == 0
  assert checks[mesh]["tokens_per_expert_equal"]  # counts summed over the mesh
  assert checks[mesh]["zero_frac_err"] < 1e-6


@pytest.mark.parametrize("mesh", ["expert8", "expert4xdata2", "data2xexpert4"])
def test_two_all_to_alls_per_layer(checks, mesh):
  assert checks[mesh]["all_to_all_forward"] == 2
  # dropless: C = T_l slots per (source device, expert); D + 1 wide out (the filled flag), D back
  assert checks[mesh]["all_to_all_bytes"] == E * TOKENS_PER_DEVICE * (2 * D + 1) * 4


def test_expert_weights_split_over_expert_shards(checks):
  info = checks["expert_bytes"]
  for name, per_device in info["per_device"].items():
    assert per_device * info["expert_shards"] == info["total"][name]


def test_capacity_drops_counted_over_the_mesh(checks):
  cap = checks["capacity"]
  assert cap["dropped"] == cap["brute_force"] > 0
  assert cap["all_to_all_bytes"] == E * cap["slots"] * (2 * D + 1) * 4


def test_bad_mesh_fails_with_the_fix(checks):
  assert checks["errors"]["mesh_too_big"].startswith("mesh: axes")
  assert "Fix:" in checks["errors"]["mesh_too_big"]
  assert checks["errors"]["experts_not_divisible"].startswith("num_experts: 12 experts")


@pytest.fixture(scope="module")
def train_checks():
  return run_checks("sharded_train_checks.py")


MESHES = ["data:2,fsdp:1,expert:4,tensor:1", "data:1,fsdp:2,expert:2,tensor:2",
          "data:8,fsdp:1,expert:1,tensor:1"]


@pytest.mark.parametrize("mesh", MESHES)
def test_sharded_train_steps_equal_one_device(train_checks, mesh):
  # Relative Frobenius error per leaf after 3 AdamW steps (elementwise maxima are not a fair
  # criterion: Adam maps rounding-level differences of near-zero gradients to +-lr updates).
  assert train_checks["devices"] == 8
  assert train_checks[mesh]["param_err"] < 1e-5
  assert train_checks[mesh]["opt_err"] < 1e-5
  assert train_checks[mesh]["loss_err"] < 1e-5


def test_train_step_has_two_all_to_alls_per_moe_layer_and_pass(train_checks):
  # 2 MoE layers x (dispatch + combine) x (forward + backward); none without expert sharding
  assert train_checks[MESHES[0]]["all_to_all"] == 8
  assert train_checks[MESHES[1]]["all_to_all"] == 8
  assert train_checks[MESHES[2]]["all_to_all"] == 0


def test_sharded_state_holds_a_shard_of_each_expert_weight(train_checks):
  info = train_checks["expert_bytes"]
  assert info["per_device"] * info["expert_shards"] == info["total"]
  assert info["adam_mu_spec"] == "P('expert', 'tensor', 'fsdp')"  # moments sharded as params


@pytest.mark.parametrize("target", ["data8xexpert1", "one_device"])
def test_checkpoint_restores_on_another_mesh(train_checks, target):
  restored = train_checks[target]
  assert restored["identical"] and restored["data_index"] == 1
  assert restored["devices"] == (8 if target == "data8xexpert1" else 1)
  assert restored["expert_shard_shape"] == [8, 32, 32]  # experts now whole on every device
  assert restored["next_loss_finite"]


def test_layouts_that_do_not_fit_fail_at_start_up(train_checks):
  errors = train_checks["errors"]
  assert errors["mesh_too_big"].startswith("mesh: axes") and "Fix:" in errors["mesh_too_big"]
  assert errors["experts_not_divisible"].startswith("num_experts: 12 experts do not divide")
  assert errors["batch_not_divisible"].startswith("train.batch_size: 12 does not split")
