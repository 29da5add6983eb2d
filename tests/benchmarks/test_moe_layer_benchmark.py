"""benchmarks/moe_layer.py at a tiny shape: the output checks, the tables and both headline
lines, in this process and through the per-thread-setting processes (no timing asserts)."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks import moe_layer

pytest.importorskip("transformers")


def _check_tiny(shape_results):
  assert set(shape_results["seconds"]) == {moe_layer.default_impl(), "capacity/1.25",
                                           "limit/xla", "limit/torch", "limit/numpy",
                                           "transformers/eager"}
  # ours against transformers, and the three dense chains against each other
  errors = shape_results["relative_max_error"]
  assert set(errors) >= {"transformers/eager", "limit/torch", "limit/numpy"}
  assert max(errors.values()) < 1e-4
  assert shape_results["reference"]["forward"]["limit"].startswith("limit/")


def _check_headlines(markdown, results):
  fwd_bwd, fwd = markdown.strip().splitlines()[-2:]
  assert fwd_bwd.startswith("moe_layer fwd+bwd: vs_transformers=") and "x vs_limit=" in fwd_bwd
  assert fwd.startswith("moe_layer: vs_transformers=") and "x vs_limit=" in fwd
  assert {"vs_transformers", "vs_limit", "forward_backward", "default"} <= set(results)


def test_run_and_summarize_at_a_tiny_shape():
  shapes = moe_layer.run(tokens=32, reps=1, shapes=("tiny",), jax_impls=["capacity/1.25"],
                         torch_impls=("eager",))
  process = dict(cores=[0], torch_threads=1, xla_flags="")
  results, markdown = moe_layer.summarize({"1": {"process": process, "shapes": shapes}})
  _check_tiny(results["settings"]["1"]["shapes"]["tiny"])
  _check_headlines(markdown, results)


@pytest.mark.slow  # two processes importing jax, torch and transformers: ~35 s of CPU
def test_command_runs_each_thread_setting_in_its_own_pinned_process(tmp_path):
  subprocess.run([sys.executable, "-m", "benchmarks.moe_layer", "--threads=1,all",
                  "--shapes=tiny", "--tokens=64", "--reps=1", "--impls=capacity/1.25",
                  "--torch_impls=eager", f"--workdir={tmp_path}"],
                 cwd=moe_layer.ROOT, check=True, capture_output=True)
  results = json.loads((tmp_path / "results.json").read_text())
  _check_headlines((tmp_path / "results.md").read_text(), results)
  assert set(results["settings"]) == {"1", "all"}
  one, every = results["settings"]["1"], results["settings"]["all"]
  assert len(one["process"]["cores"]) == one["process"]["torch_threads"] == 1
  assert "--xla_cpu_multi_thread_eigen=false" in one["process"]["xla_flags"]
  assert len(every["process"]["cores"]) == len(os.sched_getaffinity(0))
  _check_tiny(one["shapes"]["tiny"])


@pytest.mark.parametrize("threads", ["0", "two", str(len(os.sched_getaffinity(0)) + 1)])
def test_bad_thread_setting_names_the_flag(threads):
  with pytest.raises(ValueError, match="--threads"):
    moe_layer.run_setting(threads)
