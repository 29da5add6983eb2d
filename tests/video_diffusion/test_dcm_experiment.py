"""End to end, as a user runs it: the DCM quick preset writes the result contract; a bad config
stops the command with one line."""
import json

import pytest

from moe_jax.video_diffusion import dcm
from tests.helpers import run_module


def test_attention_only_ablation_needs_adaln_adapters(tmp_path):
  proc = run_module("experiments.dcm", "--config=configs/dcm.py:quick",
                    "--config.lora.adaln=false", f"--workdir={tmp_path}", check=False)
  assert proc.returncode == 2
  assert "error: ablations:" in proc.stderr and "lora.adaln" in proc.stderr
  assert not (tmp_path / "results.json").exists()


@pytest.mark.slow  # ~45 s; `reproduce --preset=quick` runs it too
def test_quick_preset_end_to_end(tmp_path):
  proc = run_module("experiments.dcm", "--config=configs/dcm.py:quick", f"--workdir={tmp_path}",
                    fast_compile=True, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  for method in ("teacher", "cm", "dcm"):
    for steps in ("1", "2", "4"):
      assert set(results["methods"][method][steps]) >= {"fd", "temporal_err", "detail_err",
                                                        "coherence"}
  for method in ("cm", "dcm"):  # two distillation seeds in the quick preset
    four = results["methods"][method]["4"]
    assert len(four["fd_per_seed"]) == 2
    assert four["fd"] == pytest.approx(sum(four["fd_per_seed"]) / 2)
  assert str(results["teacher_steps"]) in results["methods"]["teacher"]
  assert results["methods"]["teacher"][str(results["teacher_steps"])]["fd_teacher"] == 0.0
  assert results["methods"]["cm"]["4"]["fd_teacher"] > 0.0
  swaps = results["expert_swap"]  # the 4-step sampler with CM's and DCM's halves exchanged
  assert set(swaps) == {"SemE+VCM", "VCM+DetE"}
  for name in swaps:
    assert len(swaps[name]["temporal_err_per_seed"]) == 2
    assert swaps[name]["fd"] != results["methods"]["cm"]["4"]["fd"]
  assert set(results["ablation"]) >= {"cm", "dcm", "no_tc", "full_detail", "attn_lora"}
  assert {"adaln", "to_q", "time_embed", "final"} <= set(results["expert_weight_difference"])
  disc = results["discriminator"]  # DCM's two seeds and the GAN-using ablations
  assert disc["chance"] == 2.0
  assert {"dcm detail expert", "dcm detail expert #1", "full_detail detail expert"} <= set(
      disc["last_quarter_loss"])
  assert "no_tc detail expert" in disc["last_quarter_loss"]
  assert len(results["per_timestep"]["CM at init (= teacher)"]["loss"]) == 10
  timeline = results["synthesis_timeline"]  # one entry per teacher step (10 grid nodes + 1)
  assert len(timeline["sigma"]) == len(timeline["layout"]) == 11
  assert timeline["layout"][-1] == pytest.approx(1.0)  # the last estimate is the sample itself
  assert timeline["motion"][-1] == pytest.approx(1.0)
  # The contract: data, scale, config, minutes; every claim computed from these numbers.
  assert results["data"].startswith("shipped: ") and "seeds" in results["scale"]
  assert results["config"]["distill"]["student_seeds"] == 2 and results["minutes"] > 0
  claims = results["claims"]
  assert set(claims) == {c.key for c in dcm.CLAIMS}
  for claim in dcm.CLAIMS:
    c = claims[claim.key]
    assert c["holds"] in (True, False), c
    ours = results
    for part in claim.ours.split("."):
      ours = ours[part]
    assert c["ours"] == ours
  markdown = (tmp_path / "results.md").read_text()
  assert "| method | steps |" in markdown and "DCM - CM, paired by seed" in markdown
  assert "‖W_detail − W_semantic‖" in markdown
  assert "| stage with the GAN loss |" in markdown
  assert "| sampler halves (paper Fig. 3 name) |" in markdown and "SemE+VCM" in markdown
  assert "## Claims" in markdown
  for name in ("samples.png", "per_timestep.png", "training.png", "samples.gif",
               "synthesis_timeline.png"):
    assert (tmp_path / name).stat().st_size > 0
