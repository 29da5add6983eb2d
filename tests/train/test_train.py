"""Training: exact resume, checkpoint shape checks, data, the train entry point and its errors."""
import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from moe_jax.data import corpus
from moe_jax.data.iterator import WindowIterator, eval_windows
from moe_jax.train.loop import train_lm
from moe_jax.utils.errors import ConfigError
from tests.train.conftest import MODEL, TRAIN

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_resume_equals_uninterrupted(tmp_path, data):
  stream, evals = data
  full = train_lm(MODEL, TRAIN, stream, evals, str(tmp_path / "full"))
  first = train_lm(MODEL, TRAIN, stream, evals, str(tmp_path / "cut"), until_step=3)  # "killed"
  resumed = train_lm(MODEL, TRAIN, stream, evals, str(tmp_path / "cut"))
  assert int(resumed["state"].step) == 6
  for a, b in zip(jax.tree.leaves(full["state"].params), jax.tree.leaves(resumed["state"].params)):
    np.testing.assert_array_equal(a, b)
  assert full["final"]["bpb_all"] == resumed["final"]["bpb_all"]
  # the training time counts the steps before the cut too; a finished run reports all of it
  assert resumed["final"]["train_seconds"] > first["final"]["train_seconds"] > 0
  again = train_lm(MODEL, TRAIN, stream, evals, str(tmp_path / "cut"))
  assert again["final"]["train_seconds"] == resumed["final"]["train_seconds"]


def test_checkpoint_from_other_shape_is_refused(tmp_path, data):
  stream, evals = data
  train_lm(MODEL, dataclasses.replace(TRAIN, num_steps=2), stream, evals, str(tmp_path))
  wider = dataclasses.replace(MODEL, moe=dataclasses.replace(MODEL.moe, d_ff=24))
  with pytest.raises(ConfigError, match="^model.moe.d_ff: is 24 here and 16 in the run"):
    train_lm(wider, TRAIN, stream, evals, str(tmp_path))  # the recorded config says so first
  for record in ("lm_config.json", "run.json"):  # a workdir that recorded no config
    os.remove(tmp_path / record)
  with pytest.raises(ConfigError, match="--workdir: .*other shapes.*wi_gate"):
    train_lm(wider, TRAIN, stream, evals, str(tmp_path))


def test_sigmoid_router_bias_moves_outside_params(tmp_path, data):
  stream, evals = data
  cfg = dataclasses.replace(MODEL, moe=dataclasses.replace(
      MODEL.moe, router="sigmoid_group", n_group=2, topk_group=2, load_balance_coef=0.0))
  run = train_lm(cfg, dataclasses.replace(TRAIN, num_steps=3), stream, evals, str(tmp_path))
  biases = jax.tree.leaves(run["state"].extra["moe_bias"])
  assert len(biases) == 2 and all(np.abs(b).max() > 0 for b in biases)
  assert "moe_bias" not in str(jax.tree_util.tree_structure(run["state"].params))


def test_iterator_is_deterministic_and_resumable():
  stream = np.arange(1000, dtype=np.uint8)
  a = WindowIterator(stream, 3, 8, seed=1)
  first = [next(a) for _ in range(5)]
  b = WindowIterator(stream, 3, 8, seed=1)
  b.restore({"index": 3})
  np.testing.assert_array_equal(next(b), first[3])
  assert first[0].shape == (3, 9)
  np.testing.assert_array_equal(first[0][:, 1:], (first[0][:, :-1] + 1) % 256)


def test_eval_windows_predict_each_byte_once():
  w = eval_windows(np.arange(41, dtype=np.uint8), 8)
  assert w.shape == (5, 9)
  np.testing.assert_array_equal(w[:, 1:].ravel(), np.arange(1, 41))


def test_corpus_split_is_deterministic_and_disjoint():
  docs = corpus.load_documents(["english"])
  train, val = corpus.split(docs, 10)
  assert len(val) == len(docs) // 10 and not {d.name for d in train} & {d.name for d in val}
  assert [d.name for d in corpus.split(docs, 10)[1]] == [d.name for d in val]


def test_user_files(tmp_path):
  (tmp_path / "a.txt").write_text("hello")
  (tmp_path / "b.jsonl").write_text(json.dumps({"text": "x"}) + "\n\n" +
                                    json.dumps({"text": "y"}) + "\n")
  docs = corpus.load_documents(["files"], [str(tmp_path / "*")])
  assert [d.text for d in docs] == ["hello", "x", "y"]
  with pytest.raises(ConfigError, match="data.text_field"):
    corpus.load_documents(["files"], [str(tmp_path / "b.jsonl")], text_field="body")
  with pytest.raises(ConfigError, match="data.files"):
    corpus.load_documents(["files"], [str(tmp_path / "missing*.txt")])


def _run_train(*args, cwd=ROOT):
  return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=600)


def test_train_quick_writes_results(tmp_path):
  proc = _run_train("--config=configs/lm_tiny.py:quick", f"--workdir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  assert set(results["runs"]) == {"moe", "dense"}
  assert results["runs"]["moe"]["final"]["step"] == 6
  assert (tmp_path / "learning_curves.png").stat().st_size > 0
  assert "| moe |" in (tmp_path / "results.md").read_text()
  assert os.path.exists(tmp_path / "moe" / "metrics.jsonl")
  assert os.listdir(tmp_path / "moe" / "tb")


def test_misspelt_command_line_key_names_it(tmp_path):
  proc = _run_train("--config=configs/lm_tiny.py:quick", f"--workdir={tmp_path}",
                    "--config.model.d_modle=64")
  assert proc.returncode == 2
  assert "d_modle" in proc.stderr and "Traceback" not in proc.stderr


def test_invalid_config_value_is_one_clear_line(tmp_path):
  proc = _run_train("--config=configs/lm_tiny.py:quick", f"--workdir={tmp_path}",
                    "--config.model.moe.top_k=9")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert re.search(r"model\.moe\.top_k: must be in \[1, [^\]]*\].*, got 9\. Fix:", proc.stderr)
