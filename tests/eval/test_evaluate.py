"""evaluate(): one dict for a base model (against itself as reference) and for a user's jsonl
file, its markdown table, and EvalConfig's checks and command-line overrides."""
import json

import numpy as np
import pytest

from moe_jax.data.corpus import DataConfig
from moe_jax.eval import EvalConfig, evaluate, markdown_table
from moe_jax.models.loading import load_model
from moe_jax.utils.errors import ConfigError
from tests.eval.tiny import random_model

SMALL = dict(seq_len=128, batch_size=8, num_items=12, tasks=("continuation", "python_cloze"),
             data=DataConfig(sources=("english", "python"), max_eval_windows=4))


def test_evaluate_a_base_model_against_itself():
  model = load_model("tiny_moe:quick")
  config = EvalConfig(**SMALL)
  got = evaluate(model, config, reference=model)
  assert got["model"] == got["reference"] == model.source and got["tokenizer"] == "bytes"
  assert set(got["bpb"]) == set(got["top1"]) == {"english", "python", "all"}
  assert got["tokens"] == {"english": 4 * 128, "python": 4 * 128, "all": 8 * 128}
  assert 0 < got["bpb"]["all"] < 9 and 0 <= got["top1"]["all"] <= 1
  assert set(got["tasks"]) == {"continuation", "python_cloze"}
  for r in got["tasks"].values():
    assert r["n"] == 12 and r["chance"] == 0.25
    assert r["acc_stderr"] == pytest.approx(np.sqrt(r["acc"] * (1 - r["acc"]) / 12))
  assert got["task_mean"]["acc"] == pytest.approx(np.mean([r["acc"] for r in
                                                           got["tasks"].values()]))
  agree = got["agreement"]
  assert agree["kl"] == pytest.approx(0.0, abs=1e-7) and agree["top1"] == 1.0
  assert agree["routing"] == {"layer_0": 1.0, "layer_1": 1.0}
  table = markdown_table({"float": got, "again": got})
  lines = table.splitlines()
  assert lines[0].startswith("| model | bpb english | bpb python | bpb all | top-1 all |")
  assert lines[2].startswith("| float |") and lines[3].startswith("| again |")
  assert "stand-in for the papers' 7-task zero-shot averages" in table


def test_evaluate_a_users_jsonl_file(tmp_path):
  rng = np.random.default_rng()
  words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa"]
  path = tmp_path / "mine.jsonl"
  with open(path, "w") as f:
    for i in range(4):
      lines = [" ".join(rng.choice(words, size=5)) for _ in range(40)]
      f.write(json.dumps({"body": "\n".join(lines)}) + "\n")
  data = DataConfig(sources=("files",), files=(str(path),), text_field="body")
  config = EvalConfig(data=data, split="all", seq_len=128, batch_size=8, num_items=10,
                      tasks=("continuation", "line_order"))
  got = evaluate(random_model(), config)
  assert set(got["bpb"]) == {"user", "all"} and got["bpb"]["user"] == got["bpb"]["all"]
  assert {t: (r["n"], r["chance"]) for t, r in got["tasks"].items()} == {
      "continuation": (10, 0.25), "line_order": (10, 0.5)}
  assert "agreement" not in got


def test_config_checks_and_overrides():
  config = EvalConfig().apply_overrides({"tasks": "line_order,continuation", "seq_len": "128",
                                         "data.sources": "files", "data.files": "/d/a.jsonl"})
  assert config.tasks == ("line_order", "continuation") and config.seq_len == 128
  assert config.data.files == ("/d/a.jsonl",)
  for field, value, message in [("tasks", ("hellaswag",), r"^tasks: unknown value 'hellaswag'"),
                                ("seq_len", 0, r"^seq_len: must be > 0"),
                                ("split", "test", r"^split: unknown value 'test'"),
                                ("tokenizer", "sp", r"^tokenizer: unknown value 'sp'"),
                                ("tasks", ("line_order",) * 2, r"^tasks: .* repeats a task")]:
    with pytest.raises(ConfigError, match=message):
      EvalConfig.from_dict({field: value})
