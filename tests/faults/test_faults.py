"""Faults during a run: nothing trained is lost, the run says where it stopped, resuming is exact.

NaN mid-run keeps the last finite checkpoints; SIGTERM during a save, then a resume, ends
bit-identical to an uninterrupted run (the one subprocess here: the signal and the exit status
are the point); a truncated latest step falls back to the previous one; an error mid-run leaves
intact checkpoints and a metrics log that a resume cuts back to them; a shadowing save is
impossible. Each test breaks a copy of one reference run where it can (compiles are the cost);
the tests that train a run of their own are marked slow (`pytest -m slow tests/faults`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.convert.hf import load_pretrained, save_pretrained
from moe_jax.models.lm import MoELM
from moe_jax.data.iterator import WindowIterator
from moe_jax.train import guards, resume, trainer
from moe_jax.train.loop import train_lm
from moe_jax.train.metrics import MetricWriter, read_jsonl
from moe_jax.utils.errors import ConfigError, RunStopped
from tests.faults.helpers import RUN, save_tiny_hf, toy_data
from tests.helpers import ROOT
from tests.train.conftest import MODEL


@pytest.fixture(scope="module")
def data():
  return toy_data(RUN.seq_len)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
  """The uninterrupted run the interrupted ones must end equal to (its workdir: steps 2, 4, 6)."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  return train_lm(MODEL, RUN, *data, workdir), workdir


def _copy(reference, tmp_path) -> str:
  """A copy of the reference workdir to break (one compile per test, not two)."""
  import shutil  # pylint: disable=g-import-not-at-top
  return shutil.copytree(reference[1], str(tmp_path / "run"))


def _same(a, b) -> None:
  b = b[0] if isinstance(b, tuple) else b
  for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"])):
    np.testing.assert_array_equal(x, y)
  assert a["final"]["bpb_all"] == b["final"]["bpb_all"]


def _saved_params(directory: str) -> dict[int, dict]:
  """step -> the parameters of every checkpoint in `directory` (restored as saved)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  manager = ocp.CheckpointManager(directory)
  out = {step: manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))["state"]["params"] for step in manager.all_steps()}
  manager.close()
  return out


@pytest.mark.slow  # trains a run of its own
def test_nan_mid_run_keeps_the_last_finite_checkpoints(data, tmp_path):
  """lr 100 diverges at step 5: before, a NaN checkpoint per step replaced every healthy one."""
  cfg = dataclasses.replace(RUN, num_steps=12, lr=100.0, warmup_steps=4, save_every=1, keep=2)
  with pytest.raises(ConfigError) as info:
    train_lm(MODEL, cfg, *data, str(tmp_path))
  message = str(info.value)
  assert re.match(r"train\.lr: loss nan, gradient norm nan at step 5: the updates diverged "
                  r"\(lr 100\.0.*nothing non-finite was saved, the last intact checkpoint is "
                  r"step 4 in .*Fix: lower train\.lr", message), message
  saved = _saved_params(str(tmp_path / "checkpoints"))
  assert sorted(saved) == [3, 4]
  for params in saved.values():
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  assert max(r["step"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))) == 4


@pytest.mark.slow  # trains a run of its own
def test_skip_mode_skips_nonfinite_steps_and_says_which(data, tmp_path, capsys):
  """A loss that is NaN on some batches: "skip" keeps the state of the step before."""
  stream, evals = data
  nan_batch = lambda batch: np.sum(batch) % 4 == 0
  batches = WindowIterator(stream, RUN.batch_size, RUN.seq_len, RUN.seed)
  bad = [i + 1 for i in range(RUN.num_steps) if nan_batch(batches.batch(i))]
  assert 0 < len(bad) < RUN.num_steps

  def objective(logits, batch, args):
    loss, metrics = trainer.cross_entropy(logits, batch, args)
    return jnp.where(jnp.sum(batch) % 4 == 0, jnp.nan, loss), metrics

  cfg = dataclasses.replace(RUN, on_nonfinite="skip")
  run = train_lm(MODEL, cfg, stream, evals, str(tmp_path), hooks=trainer.Hooks(objective))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(run["state"]))
  assert np.isfinite(run["final"]["bpb_all"]) and int(run["state"].step) == RUN.num_steps
  skipped = re.findall(r"skipped 1 step\(s\) with a non-finite loss or gradient norm \(steps "
                       r"(\d+)\)", capsys.readouterr().err)
  assert [int(s) for s in skipped] == bad


def test_a_nonfinite_first_step_blames_the_model_a_later_one_the_learning_rate():
  first = [(1, np.float32(np.nan), np.float32(np.nan), None)]
  with pytest.raises(guards.NonFinite, match=r"^model: loss nan, gradient norm nan at step 1, "
                     "before any update"):
    guards.check_steps(first, RUN)
  later = [(7, np.float32(2.5), np.float32(1.0), None), (8, np.float32(3.0), np.float32(np.inf),
                                                         None)]
  with pytest.raises(guards.NonFinite, match=r"^train\.lr: loss 3\.0, gradient norm inf at "
                     "step 8: the updates diverged"):
    guards.check_steps(later, RUN)
  guards.check_steps(later[:1], RUN)


@pytest.mark.slow  # trains a run of its own
def test_sigterm_during_a_save_then_resume_is_bit_identical(data, reference, tmp_path):
  """A run saving every step on a slow disk gets SIGTERM once step 2 is saved: it finishes the
  pending saves, saves the step it is on and exits 143 with one last line saying so; resumed,
  it ends equal to the uninterrupted run."""
  workdir = str(tmp_path / "cut")
  proc = subprocess.Popen([sys.executable, "-m", "tests.faults.interrupted_run", workdir],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  ckpts = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and not os.path.isdir(
      os.path.join(ckpts, "2")):
    time.sleep(0.01)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
  assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
  assert "Traceback" not in err and "Event loop is closed" not in err, err[-3000:]
  stopped = re.match(r"stopped: train: stopped by SIGTERM after step (\d+); the last intact "
                     r"checkpoint is step (\d+) in .*/cut/checkpoints\. To go on: run the same "
                     r"command again to resume from it$", lines[-1])
  assert stopped and stopped.group(1) == stopped.group(2), lines[-3:]
  last = int(stopped.group(2))
  assert 2 <= last < RUN.num_steps, last
  assert max(int(s) for s in os.listdir(ckpts) if s.isdigit()) == last
  assert not [s for s in os.listdir(ckpts) if not s.isdigit()]  # no half-written save
  resumed = train_lm(MODEL, RUN, *data, workdir)  # save_every 2 again: may change on resume
  _same(resumed, reference)
  record = json.loads(open(os.path.join(workdir, "run.json")).read())
  assert record["changes"] == [{"step": last, "train.save_every": [1, 2]}]


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # no noise
def test_truncated_latest_step_falls_back_to_the_previous_one(data, reference, tmp_path,
                                                                capsys):
  workdir = _copy(reference, tmp_path)
  for folder, _, files in os.walk(os.path.join(workdir, "checkpoints", "6", "state")):
    for name in files:
      if os.path.basename(folder) == "d":  # the array data files
        path = os.path.join(folder, name)
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)
  resumed = train_lm(MODEL, RUN, *data, workdir)
  warning = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
  assert len(warning) == 1 and re.search(r"checkpoint step 6 in .* is damaged \(.*\); moved it "
                                         r"to .*checkpoints\.damaged/6 and resumed from step 4",
                                         warning[0]), warning
  _same(resumed, reference)
  assert os.listdir(workdir + "/checkpoints.damaged") == ["6"]


@pytest.mark.slow  # trains a run of its own
def test_error_mid_run_keeps_intact_steps_and_the_log_of_what_they_hold(data, tmp_path,
                                                                         monkeypatch):
  """An error at the second evaluation (step 6): pending saves finish, the line names step 4
  and how to go on; resuming from step 4 drops the log of the steps 5-6 it runs again."""
  make_eval_fn = trainer.make_eval_fn
  calls = []

  def failing(model, sharding=None):
    bpb = make_eval_fn(model, sharding)

    def call(*args):
      calls.append(1)
      if len(calls) == 2:
        raise OSError("disk quota exceeded")
      return bpb(*args)
    return call

  monkeypatch.setattr(trainer, "make_eval_fn", failing)
  with pytest.raises(RunStopped) as info:
    train_lm(MODEL, RUN, *data, str(tmp_path))
  assert info.value.exit_code == 1 and isinstance(info.value.__cause__, OSError)
  assert re.match(r"train: stopped by OSError: disk quota exceeded after step 6; the last "
                  r"intact checkpoint is step 4 in .*To go on: fix the cause, then run the "
                  r"same command again to resume from it$", str(info.value)), str(info.value)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  log = str(tmp_path / "metrics.jsonl")
  assert max(r["step"] for r in read_jsonl(log)) == 6
  with open(log, "a") as f:
    f.write('{"step": 6, "loss": 1.')  # a line a crash cut short
  MetricWriter(str(tmp_path), start_step=4).close()  # what the resumed run does first
  assert [r["step"] for r in read_jsonl(log) if "loss" in r] == [1, 2, 3, 4]
  assert open(log).read().endswith("\n")


def test_resume_accepts_more_steps_and_other_bookkeeping_and_records_them(data, reference):
  record = resume.check(reference[1], MODEL, dataclasses.replace(RUN, num_steps=9, keep=1),
                        resume.data_digest(*data))
  assert record["changes"] == [{"step": 6, "train.num_steps": [6, 9], "train.keep": [3, 1]}]
  assert resume.check(reference[1], MODEL, RUN, resume.data_digest(*data))["changes"] == []


def test_a_workdir_without_run_record_resumes_and_records_it(data, reference, tmp_path,
                                                             capsys):
  """Workdirs that moe_jax wrote before run.json existed (checkpoints and lm_config.json only)
  resume with the train config and data given, which are recorded; the model is still checked."""
  workdir = _copy(reference, tmp_path)
  os.remove(os.path.join(workdir, resume.RUN_FILE))
  other = dataclasses.replace(MODEL, moe=dataclasses.replace(MODEL.moe, top_k=1))
  with pytest.raises(ConfigError, match=r"^model\.moe\.top_k: is 1 here and 2 in the run"):
    resume.check(workdir, other, RUN, resume.data_digest(*data))
  record = resume.check(workdir, MODEL, dataclasses.replace(RUN, lr=1e-3),
                        resume.data_digest(*data))
  assert record["train"]["lr"] == 1e-3 and record["data"] == resume.data_digest(*data)
  assert record["changes"] == [{"step": 6, "recorded": "train config and data (the workdir had "
                                "no run.json)"}]
  assert re.search(r"note: .* holds no run\.json .*resuming at step 6", capsys.readouterr().err)


def test_shadowing_save_is_impossible(tmp_path):
  """A single-file save over a sharded one leaves no old index or shard (before, moe_jax read
  the old index while transformers read the new file); a tokenizer file is kept."""
  out = str(tmp_path / "model")
  old = save_tiny_hf(out, seed=1, max_shard_bytes=4000)
  (tmp_path / "model" / "tokenizer.json").write_text("{}")
  new = save_tiny_hf(out, seed=2)
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.json"]
  assert sorted(os.listdir(tmp_path)) == ["model"]  # no temporary folder left behind
  _, loaded = load_pretrained(out)
  for a, b, c in zip(jax.tree.leaves(loaded["params"]), jax.tree.leaves(new["params"]),
                     jax.tree.leaves(old["params"])):
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) or a.size == 1 or np.all(a == 1)


def test_accepted_on_purpose(tmp_path):
  """Inputs that are not errors: a UTF-8 byte-order mark, DeepSeek-V3's multi-token-prediction
  layer past num_hidden_layers (a layer past those is refused)."""
  from moe_jax.convert import tiny  # pylint: disable=g-import-not-at-top
  from moe_jax.convert.hf_config import from_hf  # pylint: disable=g-import-not-at-top
  from moe_jax.data.corpus import read_text  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
  (tmp_path / "bom.txt").write_bytes("\ufeffhello".encode("utf-8"))
  assert read_text(str(tmp_path / "bom.txt")) == "hello"

  _, fields, _ = tiny.FAMILIES["deepseek_v3"]
  cfg, _ = from_hf({**tiny._COMMON, **fields,  # pylint: disable=protected-access
                    "architectures": ["DeepseekV3ForCausalLM"]})
  path = str(tmp_path / "deepseek")
  module = MoELM(dataclasses.replace(cfg, vocab_size=64, max_len=32))
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  save_pretrained(module, jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), nn.unbox(shapes)),
                  path)  # zeros: only the tensor names matter here, and no compile is needed
  with open(os.path.join(path, "config.json")) as f:
    hf = json.load(f)
  hf["num_nextn_predict_layers"] = 1
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf, f)
  tensors = load_file(os.path.join(path, "model.safetensors"))
  extra = {n.replace("model.layers.2.", "model.layers.3."): w for n, w in tensors.items()
           if n.startswith("model.layers.2.")}
  save_file({**tensors, **extra}, os.path.join(path, "model.safetensors"))
  module, _ = load_pretrained(path)  # the MTP layer 3 is skipped
  assert module.cfg.num_layers == 3
  further = {n.replace("model.layers.3.", "model.layers.4."): w for n, w in extra.items()}
  save_file({**tensors, **extra, **further}, os.path.join(path, "model.safetensors"))
  with pytest.raises(ConfigError, match=r".*/model\.safetensors: model\.layers\.4\..*not used"):
    load_pretrained(path)  # a layer past the MTP ones is not skipped
