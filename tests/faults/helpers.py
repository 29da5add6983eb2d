"""Shared by the fault tests: the entry points run in-process, workdir snapshots, tiny models."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.layers.moe import MoEConfig
from moe_jax.models.config import LMConfig
from moe_jax.models.lm import MoELM
from tests.train.conftest import TRAIN

# tests/train's tiny model trains 6 steps, saving every 2nd and keeping 3, evaluating every 3rd.
RUN = dataclasses.replace(TRAIN, num_steps=6, save_every=2, keep=3, log_every=1, eval_every=3)

# A Mixtral-shaped model small enough to init and save in a blink (vocab 64: ids 64+ are bad).
HF_MODEL = LMConfig(vocab_size=64, d_model=16, num_layers=2, num_heads=2, num_kv_heads=1,
                    d_ff=24, max_len=32, tie_embeddings=False, scale_tied_logits=False,
                    moe=MoEConfig(num_experts=4, top_k=2, d_ff=8))


def run_cli(entry: str, args: list[str]) -> tuple[int, list[str]]:
  """`python -m experiments.<entry> <args>` in this process: (exit status, stderr lines)."""
  from experiments import app  # pylint: disable=g-import-not-at-top
  experiment = {"train": "moe_jax.train.lm_experiment",
                "generate": "moe_jax.convert.generate_experiment"}[entry]
  module = __import__(experiment, fromlist=["EXPERIMENT"])
  err, argv = io.StringIO(), sys.argv
  sys.argv = [entry, *args]
  try:
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
      app.run(module.EXPERIMENT)
    code = 0
  except SystemExit as e:
    code = 0 if e.code is None else e.code
  finally:
    sys.argv = argv
  return code, [line for line in err.getvalue().replace("\r", "\n").splitlines() if line.strip()]


def snapshot(*roots: str) -> dict[str, str]:
  """path -> sha256 of every file under `roots` (what "unchanged" is checked against)."""
  out = {}
  for root in roots:
    for folder, _, files in os.walk(root):
      for name in files:
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
          out[path] = hashlib.sha256(f.read()).hexdigest()
  return out


@functools.lru_cache(maxsize=None)
def _init(cfg: LMConfig):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  init = jax.jit(MoELM(cfg).init)  # compiled once per config and process
  return lambda seed: nn.unbox(init(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32)))


def save_tiny_hf(path: str, cfg: LMConfig = HF_MODEL, seed: int = 0, **kwargs) -> dict:
  """A random model of `cfg` saved as a HF directory (no torch needed); returns its variables."""
  from moe_jax.convert.hf import save_pretrained  # pylint: disable=g-import-not-at-top
  variables = _init(cfg)(seed)
  save_pretrained(MoELM(cfg), variables, path, **kwargs)
  return variables


def edit_json(path: str, **changes) -> None:
  with open(path) as f:
    data = json.load(f)
  for key, value in changes.items():
    if value is None:
      data.pop(key, None)
    else:
      data[key] = value
  with open(path, "w") as f:
    json.dump(data, f)


def toy_data(seq_len: int = 16) -> tuple[np.ndarray, dict]:
  """The byte stream of tests/train/conftest.py: random letters, spaces and newlines."""
  from moe_jax.data import tokenizer  # pylint: disable=g-import-not-at-top
  from moe_jax.data.iterator import eval_windows  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  stream = tokenizer.encode("".join(rng.choice(list("abcdefgh \n"), size=4000)))
  return stream, {"toy": eval_windows(stream[:600], seq_len)}
