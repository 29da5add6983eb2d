"""experiments.analyze end to end: a tiny random model of every zoo family, a quick base model
through the command line; the load statistics against hand counts; config errors."""
import json
import os

import numpy as np
import pytest

from moe_jax.analysis import analyze_experiment, expert_load
from moe_jax.utils.errors import ConfigError
from moe_jax.utils.experiment import execute, load_config
from tests.helpers import run_module

PLOTS = ("experts.png", "similarity.png")
PAIR_PLOTS = ("affinity.png", "layer_pairs.png")


def _check(results: dict, workdir: str) -> None:
  """The contract's keys for every MoE layer and layer pair, and the figures."""
  e, pairs = results["num_experts"], len(results["moe_layers"]) - 1
  for row in results["layers"]:
    assert sum(row["tokens_per_expert"]) == results["tokens"] * results["top_k"]
    assert len(row["zero_frac"]) == e and np.shape(row["similarity"]) == (e, e)
    assert 0 < row["load_entropy"] <= 1 and row["load_cv"] >= 0
  assert np.shape(results["affinity"]) == ((pairs, e, e) if pairs else (0,))
  if pairs:
    np.testing.assert_allclose(np.sum(results["affinity"], -1), 1.0)
  assert len(results["fate"]["cosine"]) == len(results["fate"]["recall"]) == pairs
  for name in PLOTS + (PAIR_PLOTS if pairs else ()):
    assert os.path.getsize(os.path.join(workdir, name)) > 0


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "phimoe",
                                    "deepseek_v3", "deepseek_v3_yarn"])
def test_analyze_runs_on_a_tiny_model_of_every_zoo_family(family, tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from moe_jax.convert import tiny  # pylint: disable=g-import-not-at-top
  assert family in tiny.FAMILIES
  path = str(tmp_path / family)
  tiny.build(family, path)
  ids = str(tmp_path / "ids.npy")
  np.save(ids, np.random.default_rng(0).integers(0, tiny.VOCAB, 200))
  config = load_config("configs/analyze.py:quick", overrides={
      "model": path, "data.tokens_path": ids, "data.seq_len": "16", "data.max_tokens": "64",
      "batch_size": "2", "devices": "2,4", "save_trace": "true"})
  workdir = str(tmp_path / "out")
  results = execute(analyze_experiment.EXPERIMENT, config, workdir, echo=False)
  assert results["tokens"] == 64 and os.path.isfile(os.path.join(workdir, "trace", "meta.json"))
  _check(results, workdir)


def test_analyze_quick_base_model_from_the_command_line(tmp_path):
  workdir = str(tmp_path)
  run_module("experiments.analyze", "--config=configs/analyze.py:quick", f"--workdir={workdir}",
             fast_compile=True)
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  _check(results, workdir)
  assert results["model"] == "tiny_moe:quick" and results["tokens"] == 1024
  assert {"exflow_affinity", "exflow_placement", "fate_cosine", "fate_recall"} <= set(
      results["claims"])
  assert all(c["holds"] in (True, False) for c in results["claims"].values())
  assert results["placement"]["2"]["solved"]["fit"] <= results["placement"]["2"]["contiguous"][
      "fit"]


def test_load_stats_match_hand_counts():
  experts = np.array([[0, 1], [0, 2], [0, 1]])  # counts 3, 2, 1, 0 over E = 4
  stats = expert_load.load_stats(experts, 4)
  assert stats["tokens_per_expert"] == [3, 2, 1, 0]
  counts = np.array([3, 2, 1, 0])
  assert stats["load_cv"] == pytest.approx(counts.std() / counts.mean())
  f = counts / 6
  assert stats["load_entropy"] == pytest.approx(-sum(p * np.log(p) for p in f[:3]) / np.log(4))
  assert stats["frequency_std"] == pytest.approx(f.std())
  uniform = expert_load.load_stats(np.arange(8).reshape(4, 2) % 4, 4)
  assert uniform["load_cv"] == 0 and uniform["load_entropy"] == pytest.approx(1)
  assert expert_load.per_expert_mean([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], experts, 4) == [
      3.0, 4.0, 4.0, None]


@pytest.mark.parametrize("field, value, message", [
    ("devices", "1", "devices: must be >= 2"),
    ("data.split", "train", "data.split: unknown value 'train'"),
    ("data.max_tokens", "8", "data.max_tokens: 8 is less than one window"),
])
def test_bad_config_fields_are_named(field, value, message):
  with pytest.raises(ConfigError, match=message):
    load_config("configs/analyze.py", overrides={field: value})
