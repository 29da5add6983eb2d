"""Two processes x 4 simulated CPU devices train exactly as one process x 8 devices.

jax.distributed on localhost with gloo CPU collectives: checks the multi-host start-up, each
host feeding its own rows of the batch, and first-host-only result writing. Slow (~4 minutes).
"""
import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ["-m", "experiments.train", "--config=configs/lm_tiny.py:quick",
        "--config.parallel.mesh=data:2,expert:4", "--config.train.batch_size=8"]


def _env(devices: int) -> dict:
  return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _bpb(workdir: str) -> dict:
  with open(os.path.join(workdir, "results.json")) as f:
    runs = json.load(f)["runs"]
  return {name: run["final"]["bpb_all"] for name, run in runs.items()}


@pytest.mark.slow
def test_two_hosts_equal_one(tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  multi = str(tmp_path / "multi")
  procs = [subprocess.Popen(
      [sys.executable, *ARGS, f"--workdir={multi}", "--config.parallel.distributed=True",
       f"--config.parallel.coordinator_address=localhost:{port}",
       "--config.parallel.num_processes=2", f"--config.parallel.process_id={i}"],
      cwd=ROOT, env=_env(4), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
  single = str(tmp_path / "single")
  subprocess.run([sys.executable, *ARGS, f"--workdir={single}"], cwd=ROOT, env=_env(8),
                 check=True, capture_output=True, timeout=900)
  assert _bpb(multi) == pytest.approx(_bpb(single), rel=1e-6)
