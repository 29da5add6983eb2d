"""ExFlow's experiment: the quick preset end to end (slow: `reproduce --only=exflow` runs it too),
the step-0 model of the training study (slow: it trains the quick base model), its claims and its
config (the entry point's one-line error: tests/experiments/test_cli.py)."""
import json
import os

import jax
import numpy as np
import pytest

from moe_jax.inference.exflow import checkpoints, exflow_experiment
from moe_jax.models import base_models
from moe_jax.models.lm import MoELM
from moe_jax.train import trainer
from moe_jax.utils.errors import ConfigError
from moe_jax.utils.experiment import evaluate_claims, execute

EXPERIMENT = exflow_experiment.EXPERIMENT


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
  config = EXPERIMENT.load_config("quick")
  execute(EXPERIMENT, config, str(tmp_path), echo=False)
  results = json.loads((tmp_path / "results.json").read_text())
  model = results["model"]
  assert (model["experts"], model["moe_layers"], model["top_k"]) == (4, 8, 1)
  for name, entry in results["placement"].items():
    g = int(name[1:])
    solved = np.asarray(entry["solved"]["placement"])
    assert solved.shape == (8, 4)
    assert all(np.all(np.bincount(row, minlength=g) == 4 // g) for row in solved)
    assert entry["solved"]["fit"] <= entry["contiguous"]["fit"] + 1e-12
    assert 0.0 <= entry["solved"]["held_out"] <= 1.0
  assert results["staged"]["devices"] == 4 and "staged" in results["staged"]
  assert [r["step"] for r in results["training"]["checkpoints"]] == [0, 3, 6]
  runtime = results["runtime"]["G4"]
  assert max(runtime["logits_err"].values()) < 1e-5 and runtime["tokens_equal"]
  assert runtime["placed"]["logits_err_vs_single"] < 1e-5
  step = {path: runtime["hlo"][path]["step"] for path in ("standard", "coherent")}
  assert step["coherent"]["all-to-all"]["count"] == 8
  assert step["standard"]["all-to-all"]["count"] == 16
  assert step["coherent"]["all-gather"]["count"] == 1
  assert {r["width"] for r in results["cost"]} == {"measured", "D=2048, 2 B"}
  assert results["solver"]["rows"][0][:3] == [8, 4, 2]
  claims = results["claims"]
  assert set(claims) == {c.key for c in EXPERIMENT.claims}
  assert all(c["holds"] is not None for c in claims.values()), claims
  markdown = (tmp_path / "results.md").read_text()
  assert "### Inter-layer affinity" in markdown and "## Claims" in markdown
  for png in ("affinity_heatmaps", "affinity_over_training", "placements", "placement_map"):
    assert (tmp_path / f"{png}.png").stat().st_size > 0


@pytest.mark.slow
def test_step_zero_is_the_trainers_initialisation():
  spec = "deep_top1:quick"
  train_dir = checkpoints.training_dir(spec)  # trained once per test run (the cache fixture)
  config = base_models.base_config(spec)
  model, t = MoELM(config.model), config.train
  optimizer = trainer.make_optimizer(t.lr, t.warmup_steps, t.num_steps, t.weight_decay,
                                     t.grad_clip)
  mesh, rules = config.parallel.build()  # as train_lm initialises: jitted, on its mesh
  shardings = trainer.state_shardings(model, optimizer, t.seq_len, mesh, rules)
  state = trainer.init_state(model, optimizer, jax.random.key(t.seed), t.seq_len, shardings)
  ours = checkpoints.model_at(train_dir, 0, checkpoints.init_seed(spec)).variables["params"]
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(state.params)):  # two programs: ulps
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)
  assert checkpoints.training_dir(os.path.join(os.path.dirname(train_dir), "hf")) is None


def test_claims_evaluate_from_the_numbers():
  summary = dict(max_conditional=0.4, shuffled_max_conditional=0.1, solved_held_out=0.5,
                 contiguous_held_out=0.8, random_held_out=0.45, hop_reduction=0.7,
                 all_to_all_ratio=2.0, max_logits_err=3e-7, speedup_nvlink=0.9,
                 early_solved_on_final=float("nan"))
  holds = {k: c["holds"] for k, c in evaluate_claims(EXPERIMENT, {"summary": summary}).items()}
  assert holds == {"affinity_above_chance": True, "solved_beats_contiguous": True,
                   "solved_beats_random": False, "hops_cut_like_paper": True,
                   "one_all_to_all_per_layer": True, "same_logits": True,
                   "faster_on_nvlink": False, "early_placement_holds": None}


@pytest.mark.parametrize("overrides, message", [
    ({"runtime.devices": "2", "placement.devices": "4"},
     "^runtime.devices: \\[2\\] are not in placement.devices"),
    ({"runtime.batch": "6"}, "^runtime.batch: 6 sequences do not split over \\[4\\]"),
    ({"solver.instances": "8x4"}, "^solver.instances: '8x4' is not ExLxG"),
    ({"solver.instances": "9x4x2"}, "^solver.instances: 9x4x2: 2 devices do not divide 9"),
    ({"placement.nodes": "1"}, "^placement.nodes: must be 0 or >= 2"),
    ({"cost.links.pcie.latency_us": "-1"}, "^cost.links.pcie.latency_us: must be >= 0"),
])
def test_config_refuses_bad_fields(overrides, message):
  with pytest.raises(ConfigError, match=message):
    EXPERIMENT.load_config("quick", overrides)
