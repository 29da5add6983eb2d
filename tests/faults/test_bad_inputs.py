"""A table of bad inputs across the command line and the API, by class.

Each refused input must end in one line naming the field or file that is wrong (on the command
line: `error: <field>: ...`, exit status 2, nothing else on stderr) and leave every file that
was already in the workdir, the data folder and the checkpoint folder unchanged. A few inputs
are accepted by design (documented where they are handled); their rows check what happens.
Everything runs in this process (the entry points through `experiments.app.run` as `python -m`
would call it); training happens twice per module, in fixtures.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.convert import tiny
from moe_jax.convert.hf import load_pretrained, save_pretrained
from moe_jax.layers.moe import MoE
from moe_jax.models.config import LMConfig
from moe_jax.models.generate import generate
from moe_jax.models.lm import MoELM
from moe_jax.models.loading import load_model
from moe_jax.train.loop import TrainConfig, train_lm
from moe_jax.utils.errors import ConfigError
from tests.faults.helpers import HF_MODEL, edit_json, run_cli, save_tiny_hf, snapshot, toy_data
from tests.train.conftest import MODEL, TRAIN

QUICK = "--config=configs/lm_tiny.py:quick"
GEN = "--config=configs/generate.py:quick"
PROGRESS = re.compile(r"^[\w ]+:\s+\d+%\|")  # a progress bar's line (loading, training)
RUN = dataclasses.replace(TRAIN, num_steps=4, save_every=2, log_every=2, eval_every=4)


def _files(pattern: str, *more: str) -> list[str]:
  """Training on the data folder's files matching `pattern` (and further arguments)."""
  return [QUICK, "--config.data.sources=files", f"--config.data.files={{d}}/{pattern}", *more]


# --- the command line: (id, class, entry, arguments, the field / file the line starts with) ---
# {w}: the test's workdir (a user's file in it; for class "resume" a trained run), {d}: a folder
# of prepared data files, {hf}: a tiny Hugging Face directory saved by moe_jax.
CLI = [
    ("config-file-missing", "config", "train", ["--config=configs/nope.py"],
     r"--config: no config file"),
    ("config-preset-unknown", "config", "train", ["--config=configs/lm_tiny.py:fast"],
     r"preset: unknown value 'fast'"),
    ("override-without-value", "config", "train", [QUICK, "--config.train.num_steps"],
     r"--config\.train\.num_steps: an override needs a value"),
    ("field-misspelt", "config", "train", [QUICK, "--config.model.d_modle=64"],
     r"model\.d_modle: unknown field"),
    ("steps-not-a-number", "config", "train", [QUICK, "--config.train.num_steps=ten"],
     r"train\.num_steps: expected an integer"),
    ("batch-size-zero", "config", "train", [QUICK, "--config.train.batch_size=0"],
     r"train\.batch_size: must be > 0"),
    ("log-every-zero", "config", "train", [QUICK, "--config.train.log_every=0"],
     r"train\.log_every: must be > 0"),
    ("save-every-negative", "config", "train", [QUICK, "--config.train.save_every=-1"],
     r"train\.save_every: must be > 0"),
    ("eval-every-zero", "config", "train", [QUICK, "--config.train.eval_every=0"],
     r"train\.eval_every: must be > 0"),
    ("keep-zero", "config", "train", [QUICK, "--config.train.keep=0"], r"train\.keep: must be"),
    ("seed-negative", "config", "train", [QUICK, "--config.train.seed=-1"],
     r"train\.seed: must be >= 0"),
    ("lr-infinite", "config", "train", [QUICK, "--config.train.lr=inf"],
     r"train\.lr: must be >= 0, got inf"),
    ("lr-nan", "config", "train", [QUICK, "--config.train.lr=nan"], r"train\.lr: must be >= 0"),
    ("grad-clip-zero", "config", "train", [QUICK, "--config.train.grad_clip=0"],
     r"train\.grad_clip: must be > 0"),
    ("on-nonfinite-unknown", "config", "train", [QUICK, "--config.train.on_nonfinite=ignore"],
     r"train\.on_nonfinite: unknown value 'ignore'"),
    ("val-every-one", "config", "train", [QUICK, "--config.data.val_every=1"],
     r"data\.val_every: must be >= 2"),
    ("eval-windows-zero", "config", "train", [QUICK, "--config.data.max_eval_windows=0"],
     r"data\.max_eval_windows: must be > 0"),
    ("d-ff-zero", "config", "train", [QUICK, "--config.model.d_ff=0"],
     r"model\.d_ff: must be > 0"),
    ("head-dim-zero", "config", "train", [QUICK, "--config.model.head_dim=0"],
     r"model\.head_dim: must be > 0"),
    ("head-dim-negative", "config", "train", [QUICK, "--config.model.head_dim=-8"],
     r"model\.head_dim: must be > 0"),
    ("norm-eps-negative", "config", "train", [QUICK, "--config.model.norm_eps=-1e-6"],
     r"model\.norm_eps: must be > 0"),
    ("norm-eps-zero", "config", "train", [QUICK, "--config.model.norm_eps=0"],
     r"model\.norm_eps: must be > 0"),
    ("dtype-unknown", "config", "train", [QUICK, "--config.model.dtype=fp8"],
     r"model\.dtype: unknown value 'fp8'"),
    ("param-dtype-integer", "config", "train", [QUICK, "--config.model.param_dtype=int8"],
     r"model\.param_dtype: unknown value 'int8'"),
    ("vocab-zero", "config", "train", [QUICK, "--config.model.vocab_size=0"],
     r"model\.vocab_size: must be > 0"),
    ("top-k-above-experts", "config", "train", [QUICK, "--config.model.moe.top_k=9"],
     r"model\.moe\.top_k: must be in \[1, "),
    ("mesh-malformed", "config", "train", [QUICK, "--config.parallel.mesh=data:x"],
     r"parallel\.mesh: 'data:x' is not name:size"),
    ("generate-dtype", "config", "generate", [GEN, "--config.dtype=int8"],
     r"dtype: unknown value 'int8'"),
    ("generate-family", "config", "generate", [GEN, "--config.families=gpt2"],
     r"families: unknown value 'gpt2'"),
    ("workdir-is-a-file", "workdir", "train", [QUICK, "--workdir={w}/notes.txt"],
     r"--workdir: .*notes\.txt is a file"),
    ("workdir-under-a-file", "workdir", "train", [QUICK, "--workdir={w}/notes.txt/run"],
     r"--workdir: cannot create"),
    ("workdir-empty", "workdir", "train", [QUICK, "--workdir="], r"--workdir: is empty"),
    ("files-no-match", "data", "train", _files("missing*.txt"),
     r"data\.files: no file matches"),
    ("files-not-given", "data", "train", [QUICK, "--config.data.sources=files"],
     r"data\.files: is empty while data\.sources names 'files'"),
    ("text-binary", "data", "train", _files("weights.txt"),
     r"data\.files: .*weights\.txt is a binary file \(a NUL byte at offset 4\)"),
    ("text-latin1", "data", "train", _files("latin1.txt"),
     r"data\.files: .*latin1\.txt is not UTF-8 text \(byte 0xe9 at offset 14, line 2\)"),
    ("jsonl-malformed-line", "data", "train", _files("broken.jsonl"),
     r"data\.files: line 3 of .*broken\.jsonl is not valid JSON"),
    ("jsonl-not-utf8", "data", "train", _files("cp1252.jsonl"),
     r"data\.files: .*cp1252\.jsonl is not UTF-8 text \(.* line 2\)"),
    ("jsonl-record-a-list", "data", "train", _files("lists.jsonl"),
     r"data\.files: line 2 of .*lists\.jsonl is a JSON list, not an object"),
    ("jsonl-field-missing", "data", "train",
     _files("docs.jsonl", "--config.data.text_field=body"),
     r"data\.text_field: line 1 of .*docs\.jsonl has no field 'body'"),
    ("jsonl-field-a-number", "data", "train", _files("numbers.jsonl"),
     r"data\.text_field: line 4 of .*numbers\.jsonl: field 'text' holds a int"),
    ("jsonl-binary", "data", "train", _files("packed.jsonl"),
     r"data\.files: .*packed\.jsonl is a binary file"),
    ("glob-matches-a-folder", "data", "train", _files("nest*"),
     r"data\.files: .*/nested is not a file"),
    ("single-document", "data", "train", _files("one.txt"),
     r"data\.val_every: the 'user' text has 1 document\(s\) and every 10th is held out"),
    ("held-out-shorter-than-a-window", "data", "train", _files("short.jsonl"),
     r"data\.val_every: the held-out 'user' text \(5 bytes\) is shorter than one window"),
    ("bytes-beyond-vocab", "data", "train",
     _files("docs.jsonl", "--config.data.val_every=2", "--config.model.vocab_size=128"),
     r"train_tokens: token ids must be in \[0, 128\)"),
    ("resume-other-router-k", "resume", "train", [QUICK, "--config.model.moe.top_k=1"],
     r"model\.moe\.top_k: is 1 here and 2 in the run that .* holds \(step 6\)"),
    ("resume-other-width", "resume", "train", [QUICK, "--config.model.d_model=48"],
     r"model\.d_model: is 48 here and 32 in the run"),
    ("resume-fewer-steps", "resume", "train", [QUICK, "--config.train.num_steps=4"],
     r"train\.num_steps: 4 is below step 6, which .* already reached"),
    ("resume-other-lr", "resume", "train", [QUICK, "--config.train.lr=0.01"],
     r"train\.lr: is 0\.01 here and 0\.003 in the run"),
    ("resume-other-seed", "resume", "train", [QUICK, "--config.train.seed=1"],
     r"train\.seed: is 1 here and 0 in the run"),
    ("resume-other-split", "resume", "train", [QUICK, "--config.data.val_every=5"],
     r"data\.eval_sets\.english: these tokens differ from the ones of the run"),
    ("resume-skip-mode", "resume", "train", [QUICK, "--config.train.on_nonfinite=skip"],
     r"train\.on_nonfinite: is 'skip' here and 'stop' in the run"),
    ("resume-run-record-damaged", "resume", "train", [QUICK],
     r".*/moe/run\.json: cannot be read"),
    ("generate-prompt-negative", "boundary", "generate", [
        GEN, "--config.hf_path={hf}", "--config.compare=false", "--config.prompt=-1,3"],
     r"prompt: token ids must be in \[0, 64\) .*got ids from -1 to 3"),
    ("generate-prompt-beyond-vocab", "boundary", "generate", [
        GEN, "--config.hf_path={hf}", "--config.compare=false", "--config.prompt=5,300"],
     r"prompt: token ids must be in \[0, 64\)"),
    ("generate-hf-path-missing", "hf", "generate", [GEN, "--config.hf_path={d}/no_model"],
     r"hf_path: .*no_model is not a directory"),
    ("generate-text-without-tokenizer", "hf", "generate", [
        GEN, "--config.hf_path={hf}", "--config.compare=false", "--config.prompt_text=Hello"],
     r"prompt_text: .*/hf holds no tokenizer transformers can load"),
    ("generate-text-without-model", "config", "generate", [GEN, "--config.prompt_text=Hello"],
     r"prompt_text: needs hf_path"),
    ("generate-hf-dir-without-config", "hf", "generate", [
        GEN, "--config.hf_path={d}/nested", "--config.compare=false"],
     r".*/nested/config\.json: missing"),
]


def _write_data(d: str) -> None:
  """The data files the CLI rows point at."""
  os.makedirs(os.path.join(d, "nested"))
  files = {
      "weights.txt": b"\x93NUM\x00PY\x01\x00" * 4,
      "latin1.txt": "first line\ncaf\u00e9 au lait\n".encode("latin-1"),
      "broken.jsonl": b'{"text": "a"}\n{"text": "b"}\n{"text": "c"\n',
      "cp1252.jsonl": '{"text": "a"}\n{"text": "\u201cquoted\u201d"}\n'.encode("cp1252"),
      "lists.jsonl": b'{"text": "a"}\n["text", "b"]\n',
      "numbers.jsonl": b'{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n{"text": 42}\n',
      "packed.jsonl": b'{"text": "a"}\n\x00\x01\x02\n',
      "one.txt": ("a single long document. " * 200).encode(),
      "short.jsonl": "".join(json.dumps({"text": "hello"}) + "\n" for _ in range(10)).encode(),
      "docs.jsonl": "".join(json.dumps({"text": f"caf\u00e9 number {i}. " * 30}) + "\n"
                            for i in range(12)).encode(),
  }
  for name, data in files.items():
    with open(os.path.join(d, name), "wb") as f:
      f.write(data)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """{d: data folder, hf: tiny HF dir (and its variables), trained: a finished quick run of
  experiments.train (its MoE in trained/moe), quick: that run's config and data, stream /
  evals: toy data for tests/train's model}."""
  from moe_jax.data.corpus import lm_data  # pylint: disable=g-import-not-at-top
  from moe_jax.utils.experiment import load_config  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("prepared")
  d, hf, trained = str(root / "data"), str(root / "hf"), str(root / "trained")
  _write_data(d)
  variables = save_tiny_hf(hf)
  code, lines = run_cli("train", [QUICK, f"--workdir={trained}", "--config.compare_dense=false"])
  assert code == 0, lines[-5:]
  quick = load_config("configs/lm_tiny.py:quick")
  stream, evals = toy_data()
  return {"d": d, "hf": hf, "hf_variables": variables, "trained": trained, "quick": quick,
          "quick_data": lm_data(quick.data, quick.train.seq_len), "stream": stream,
          "evals": evals}


def _workdir(tmp_path, prepared, trained: str | None = None) -> str:
  w = str(tmp_path / "work")
  if trained:
    shutil.copytree(prepared[trained], w)
  else:
    os.makedirs(w)
  with open(os.path.join(w, "notes.txt"), "w") as f:
    f.write("a user's notes: must survive every refused run\n")
  return w


@pytest.mark.parametrize("cls, entry, args, field",
                         [pytest.param(c, e, a, f, id=f"{c}:{i}") for i, c, e, a, f in CLI])
def test_command_line_refuses_in_one_line(cls, entry, args, field, prepared, tmp_path):
  w = _workdir(tmp_path, prepared, "trained" if cls == "resume" else None)
  if field.endswith(r"/run\.json: cannot be read"):  # the row that damages the record
    with open(os.path.join(w, "moe", "run.json"), "w") as f:
      f.write('{"train": {"num_steps": 6')
  fill = lambda a: a.format(w=w, d=prepared["d"], hf=prepared["hf"])
  args = [fill(a) for a in args]
  if not any(a.startswith("--workdir=") for a in args):
    args.append(f"--workdir={w}")
  before = snapshot(w, prepared["d"], prepared["hf"])
  code, lines = run_cli(entry, args)
  lines = [line for line in lines if not PROGRESS.match(line)]
  assert code == 2 and len(lines) == 1, lines
  assert lines[0].startswith("error: ") and ". Fix: " in lines[0], lines
  assert re.match(field, lines[0][len("error: "):]), lines[0]
  assert snapshot(w, prepared["d"], prepared["hf"]) == before


# --- the API: (id, class, set-up(env) -> x, call(env, x) that must raise, the field / file) ---
# The set-up writes the row's bad files (not a change the call may make); env["w"] is the
# workdir (for classes "resume" and "checkpoint" a finished train_lm run of tests/train's model).

def _hf_copy(env, edit=None, drop=None, add=None, retype=None) -> str:
  """A copy of the tiny HF dir, its config.json edited and tensors dropped, added or retyped."""
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
  path = os.path.join(env["w"], "model")
  shutil.copytree(env["hf"], path)
  if edit:
    edit_json(os.path.join(path, "config.json"), **edit)
  if drop or add or retype:
    tensors = load_file(os.path.join(path, "model.safetensors"))
    tensors.pop(drop, None)
    tensors.update(add or {})
    if retype:
      tensors[retype] = tensors[retype].astype(np.int64)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
  return path


def _write(path: str, data: bytes) -> str:
  with open(path, "wb") as f:
    f.write(data)
  return path


def _truncate(path: str) -> str:
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  return path


def _sharded(env) -> str:
  path = os.path.join(env["w"], "sharded")
  save_pretrained(MoELM(HF_MODEL), env["hf_variables"], path, max_shard_bytes=4000)
  return path


def _model(env) -> tuple:
  module, variables = load_pretrained(env["hf"])
  return module.cfg, variables


def _resume(env, model=None, tokens=None, **train):
  """train_lm on the quick run of experiments.train (workdir/moe), with changes."""
  quick = env["quick"]
  stream, evals = env["quick_data"]
  return train_lm(model or quick.model, dataclasses.replace(quick.train, **train),
                  stream if tokens is None else tokens, evals, os.path.join(env["w"], "moe"))


_none = lambda env: None
_in = lambda *parts: lambda env: os.path.join(env["w"], *parts)

API = [
    ("load-path-missing", "hf", _none, lambda env, _: load_pretrained(env["w"] + "/nothing"),
     r"path: .*nothing is not a directory"),
    ("load-no-config", "hf", _none, lambda env, _: load_pretrained(env["w"]),
     r".*/work/config\.json: missing"),
    ("load-config-malformed", "hf", lambda env: _write(
        os.path.join(_hf_copy(env), "config.json"), b'{"architectures": ["Mixtral'),
     lambda env, x: load_pretrained(os.path.dirname(x)),
     r".*/model/config\.json: not valid JSON \(Unterminated string"),
    ("load-config-a-list", "hf", lambda env: _write(
        os.path.join(_hf_copy(env), "config.json"), b"[1, 2]"),
     lambda env, x: load_pretrained(os.path.dirname(x)),
     r".*/model/config\.json: holds a JSON list, not an object"),
    ("load-config-field-missing", "hf",
     lambda env: _hf_copy(env, edit=dict(num_local_experts=None)),
     lambda env, x: load_pretrained(x),
     r".*/model/config\.json: num_local_experts: missing from config\.json"),
    ("load-config-field-a-string", "hf",
     lambda env: _hf_copy(env, edit=dict(num_hidden_layers="two")),
     lambda env, x: load_pretrained(x), r".*/model/config\.json: .*expected an integer, got 'two'"),
    ("load-config-eps-negative", "hf", lambda env: _hf_copy(env, edit=dict(rms_norm_eps=-1e-5)),
     lambda env, x: load_pretrained(x), r".*/model/config\.json: norm_eps: must be > 0"),
    ("load-config-dtype-unknown", "hf",
     lambda env: _hf_copy(env, edit=dict(torch_dtype="int8", dtype=None)),
     lambda env, x: load_pretrained(x), r".*/model/config\.json: dtype: unknown value 'int8'"),
    ("load-dtype-argument", "hf", _none, lambda env, _: load_pretrained(env["hf"], dtype="fp8"),
     r"dtype: unknown value 'fp8'"),
    ("load-safetensors-truncated", "hf",
     lambda env: os.path.dirname(_truncate(os.path.join(_hf_copy(env), "model.safetensors"))),
     lambda env, x: load_pretrained(x), r".*/model/model\.safetensors: cannot be read"),
    ("load-shard-missing", "hf", lambda env: os.remove(os.path.join(
        _sharded(env), "model-00002-of-00008.safetensors")),
     lambda env, _: load_pretrained(os.path.join(env["w"], "sharded")),
     r".*/sharded/model-00002-of-00008\.safetensors: missing: model\.safetensors\.index\.json "
     r"names it for"),
    ("load-index-malformed", "hf", lambda env: _write(
        os.path.join(_sharded(env), "model.safetensors.index.json"), b"{"),
     lambda env, x: load_pretrained(os.path.dirname(x)),
     r".*/sharded/model\.safetensors\.index\.json: not valid JSON"),
    ("load-index-without-map", "hf", lambda env: _write(
        os.path.join(_sharded(env), "model.safetensors.index.json"), b'{"a": 1}'),
     lambda env, x: load_pretrained(os.path.dirname(x)),
     r".*/sharded/model\.safetensors\.index\.json: weight_map: is missing"),
    ("load-integer-weights", "hf",
     lambda env: _hf_copy(env, retype="model.layers.0.self_attn.q_proj.weight"),
     lambda env, x: load_pretrained(x),
     r".*/model/model\.safetensors: model\.layers\.0\.self_attn\.q_proj\.weight: holds I64 "
     r"values where floating-point weights belong"),
    ("load-unused-tensor", "hf", lambda env: _hf_copy(
        env, add={"model.layers.0.self_attn.q_proj.bias": np.zeros(16, np.float32)}),
     lambda env, x: load_pretrained(x),
     r".*/model/model\.safetensors: model\.layers\.0\.self_attn\.q_proj\.bias: 1 checkpoint "
     r"tensors are not used"),
    ("load-fewer-layers-in-config", "hf",
     lambda env: _hf_copy(env, edit=dict(num_hidden_layers=1)), lambda env, x: load_pretrained(x),
     r".*/model/model\.safetensors: model\.layers\.1\..*checkpoint tensors are not used"),
    ("load-more-layers-in-config", "hf",
     lambda env: _hf_copy(env, edit=dict(num_hidden_layers=3)), lambda env, x: load_pretrained(x),
     r".*/model: model\.layers\.2\..*: missing from the checkpoint"),
    ("load-other-width", "hf",
     lambda env: _hf_copy(env, edit=dict(intermediate_size=12)), lambda env, x: load_pretrained(x),
     r".*/model/model\.safetensors: model\.layers\.0\..*: has shape \[8, 16\], the config "
     r"implies \[12, 16\]"),
    ("save-into-a-file", "hf", _model, lambda env, x: save_pretrained(
        MoELM(x[0]), x[1], os.path.join(env["w"], "notes.txt")),
     r"path: .*notes\.txt is a file"),
    ("save-into-a-user-folder", "hf", _model,
     lambda env, x: save_pretrained(MoELM(x[0]), x[1], env["w"]),
     r"path: .*/work is a non-empty folder that holds no Hugging Face checkpoint"),
    ("save-dtype-unknown", "hf", _model, lambda env, x: save_pretrained(
        MoELM(x[0]), x[1], os.path.join(env["w"], "out"), dtype="int4"),
     r"dtype: unknown value 'int4'"),
    ("generate-id-at-vocab", "boundary", _model,
     lambda env, x: generate(*x, np.array([[1, 64]]), 2),
     r"prompt: token ids must be in \[0, 64\) \(the model's vocab_size\), got ids from 1 to 64"),
    ("generate-negative-id", "boundary", _model,
     lambda env, x: generate(*x, jnp.array([[-3, 2]]), 2),
     r"prompt: token ids must be in \[0, 64\)"),
    ("generate-float-ids", "boundary", _model,
     lambda env, x: generate(*x, np.array([[1.5, 2.0]]), 2),
     r"prompt: token ids must be integers, got dtype float64"),
    ("generate-one-dimensional", "boundary", _model,
     lambda env, x: generate(*x, np.array([1, 2]), 2),
     r"prompt: expected token ids \[batch, length >= 1\], got shape \[2\]"),
    ("generate-no-new-tokens", "boundary", _model,
     lambda env, x: generate(*x, np.array([[1, 2]]), 0),
     r"max_new_tokens: must be an integer >= 1"),
    ("generate-temperature-negative", "boundary", _model,
     lambda env, x: generate(*x, np.array([[1, 2]]), 2, temperature=-1.0),
     r"temperature: must be >= 0"),
    ("generate-top-k-negative", "boundary", _model,
     lambda env, x: generate(*x, np.array([[1, 2]]), 2, temperature=1.0, top_k=-1),
     r"top_k: must be an integer in \[0, 64\]"),
    ("apply-id-beyond-vocab", "boundary", _model,
     lambda env, x: MoELM(x[0]).apply(x[1], np.array([[3, 99]])),
     r"tokens: token ids must be in \[0, 64\)"),
    ("apply-negative-id", "boundary", _model,
     lambda env, x: MoELM(x[0]).apply(x[1], jnp.array([[-1, 3]])),
     r"tokens: token ids must be in \[0, 64\)"),
    ("train-eval-ids-beyond-vocab", "boundary", _none, lambda env, _: train_lm(
        dataclasses.replace(MODEL, vocab_size=128), RUN, env["stream"] % 128,
        {"toy": env["evals"]["toy"] + 100}, env["w"]),
     r"eval_sets\['toy'\]: token ids must be in \[0, 128\)"),
    ("train-ids-beyond-vocab", "boundary", _none, lambda env, _: train_lm(
        dataclasses.replace(MODEL, vocab_size=64), RUN, env["stream"], env["evals"], env["w"]),
     r"train_tokens: token ids must be in \[0, 64\)"),
    ("train-config-string-value", "train", _none, lambda env, _: TrainConfig(batch_size="4"),
     r"batch_size: must be > 0, got '4'"),
    ("model-config-string-width", "config", _none, lambda env, _: LMConfig.from_dict(
        {**MODEL.to_dict(), "d_model": "64"}, "model"),
     r"model\.d_model: expected an integer, got '64'"),
    ("model-config-dtype-unknown", "config", _none, lambda env, _: LMConfig.from_dict(
        {**MODEL.to_dict(), "dtype": "float8"}, "model"), r"model\.dtype: unknown value"),
    ("moe-input-two-dimensional", "boundary", _none, lambda env, _: MoE(
        MODEL.moe, "silu", "float32", "float32").init(jax.random.key(0), jnp.zeros((4, 16))),
     r"MoE input: expected x\[batch, seq, width\], got shape \(4, 16\)"),
    ("moe-input-other-width", "boundary", _none, lambda env, _: MoE(
        MODEL.moe, "silu", "float32", "float32").apply(MoE(
            MODEL.moe, "silu", "float32", "float32").init(jax.random.key(0), jnp.zeros((1, 4, 16))),
            jnp.zeros((1, 4, 8))),
     r"MoE input: width 8 does not match the layer's weights \(width 16\)"),
    ("load-model-unknown-name", "hf", _none, lambda env, _: load_model("tiny_mo"),
     r"model: 'tiny_mo' is neither a directory nor a base model"),
    ("tiny-family-unknown", "hf", _none, lambda env, _: tiny.build(
        "gpt2", os.path.join(env["w"], "gpt2")), r"family: unknown value 'gpt2'"),
    ("train-config-fractional-steps", "train", _none, lambda env, _: train_lm(
        MODEL, dataclasses.replace(RUN, num_steps=5.5), env["stream"], env["evals"], env["w"]),
     r"train\.num_steps: expected an integer, got 5\.5"),
    ("train-model-config-a-dict", "train", _none, lambda env, _: train_lm(
        MODEL.to_dict(), RUN, env["stream"], env["evals"], env["w"]),
     r"model: expected an LMConfig, got dict"),
    ("train-no-eval-sets", "train", _none,
     lambda env, _: train_lm(MODEL, RUN, env["stream"], {}, env["w"]), r"eval_sets: is empty"),
    ("train-eval-set-one-dimensional", "train", _none, lambda env, _: train_lm(
        MODEL, RUN, env["stream"], {"toy": env["stream"][:100]}, env["w"]),
     r"eval_sets\['toy'\]: expected windows \[n >= 1, length >= 2\], got shape \[100\]"),
    ("train-eval-set-empty", "train", _none, lambda env, _: train_lm(
        MODEL, RUN, env["stream"], {"toy": env["evals"]["toy"][:0]}, env["w"]),
     r"eval_sets\['toy'\]: expected windows"),
    ("train-stream-shorter-than-window", "train", _none, lambda env, _: train_lm(
        MODEL, RUN, env["stream"][:10], env["evals"], env["w"]),
     r"train\.seq_len: the training stream \(10 tokens\) is shorter than one window"),
    ("train-stream-two-dimensional", "train", _none, lambda env, _: train_lm(
        MODEL, RUN, env["stream"][:1000].reshape(10, 100), env["evals"], env["w"]),
     r"train_tokens: expected one token stream \[n\], got shape \[10, 100\]"),
    ("train-workdir-a-file", "workdir", _none, lambda env, _: train_lm(
        MODEL, RUN, env["stream"], env["evals"], os.path.join(env["w"], "notes.txt")),
     r"--workdir: .*notes\.txt is a file"),
    ("resume-api-other-router", "resume", _none, lambda env, _: _resume(
        env, dataclasses.replace(env["quick"].model, moe=dataclasses.replace(
            env["quick"].model.moe, router="expert_choice"))),
     r"model\.moe\.router: is 'expert_choice' here and 'topk' in the run .* \(step 6\)"),
    ("resume-api-fewer-steps", "resume", _none, lambda env, _: _resume(env, num_steps=3),
     r"train\.num_steps: 3 is below step 6"),
    ("resume-api-other-warmup", "resume", _none, lambda env, _: _resume(env, warmup_steps=3),
     r"train\.warmup_steps: is 3 here and 2 in the run"),
    ("resume-api-other-data", "resume", _none, lambda env, _: _resume(
        env, tokens=env["quick_data"][0][::-1].copy()),
     r"data\.train_tokens: these tokens differ from the ones of the run"),
    ("resume-api-model-record-damaged", "resume",
     lambda env: _write(os.path.join(env["w"], "moe", "lm_config.json"), b"{"),
     lambda env, _: _resume(env), r".*/work/moe/lm_config\.json: cannot be read"),
    ("resume-api-every-step-damaged", "checkpoint", lambda env: [
        _write(os.path.join(env["w"], "moe", "checkpoints", s, "state", "_METADATA"), b"{")
        for s in ("3", "6")], lambda env, _: _resume(env, num_steps=8),
     r".*/work/moe/checkpoints/6: no checkpoint step of this workdir restores \(step 6: "
     r"JSONDecodeError"),
]


@pytest.mark.parametrize("cls, setup, call, field", [
    pytest.param(c, s, f, m, id=f"{c}:{i}") for i, c, s, f, m in API])
def test_api_refuses_in_one_line(cls, setup, call, field, prepared, tmp_path):
  w = _workdir(tmp_path, prepared, "trained" if cls in ("resume", "checkpoint") else None)
  env = {**prepared, "w": w}
  x = setup(env)
  before = snapshot(w, prepared["hf"])
  with pytest.raises(ConfigError) as info:
    call(env, x)
  message = str(info.value)
  assert "\n" not in message and ". Fix: " in message, message
  assert re.match(field, message), message
  assert snapshot(w, prepared["hf"]) == before
