"""What a training workdir remembers of its run, and the check that resuming it continues that run.

`train_lm` records the model config (`lm_config.json`, what load_model rebuilds the model from)
and `run.json`: the train config, digests of the training and held-out tokens, and every change
accepted on resume. Resuming a workdir that holds checkpoints with another model config, train
config or data is refused, naming the first difference, before anything is written; the fields
of RESUMABLE change nothing the checkpoints hold and may differ (`num_steps` only upward, to at
least the step the workdir reached: a longer run), each change recorded in run.json with the
step it took effect at. A field that only one side knows (a record written by another version
of moe_jax) is not compared; a workdir without run.json (written before it existed) resumes
with the given train config and data, which are recorded then. Start variables and hooks are
the caller's to keep the same.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

import numpy as np

from moe_jax.models.config import LMConfig
from moe_jax.models.loading import LM_CONFIG_FILE, write_lm_config
from moe_jax.train.checkpoint import saved_steps
from moe_jax.utils.errors import ConfigError, require
from moe_jax.utils.reporting import write_text

RUN_FILE = "run.json"
RESUMABLE = ("num_steps", "log_every", "eval_every", "eval_batch_size", "save_every", "keep")


def digest(tokens: np.ndarray) -> str:
  """A short sha256 of a token array's shape and values (any integer dtype)."""
  a = np.ascontiguousarray(tokens, dtype=np.int32)
  return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()[:16]


def data_digest(train_tokens: np.ndarray, eval_sets: dict[str, np.ndarray]) -> dict:
  return {"train_tokens": digest(train_tokens),
          "eval_sets": {name: digest(w) for name, w in sorted(eval_sets.items())}}


def _plain(config) -> Any:
  """A config as JSON would give it back (tuples as lists)."""
  return json.loads(json.dumps(config.to_dict() if hasattr(config, "to_dict") else config))


def _differences(old: Any, new: Any, path: str) -> list[tuple[str, Any, Any]]:
  """(dotted field, old, new) where the values differ; a field only one side has (a record of
  another moe_jax version) is not compared: the checkpoint's shape check still stands."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) & set(new), key=str):
      out += _differences(old[key], new[key], f"{path}.{key}")
    return out
  return [] if old == new else [(path, old, new)]


def _read(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path}: cannot be read ({e}). Fix: restore the file, or use a fresh "
                      "--workdir") from None


def check(workdir: str, model_cfg: LMConfig, train_cfg, data: dict) -> dict:
  """Refuses resuming `workdir` with another run; returns the run record to write.

  A workdir without checkpoints starts afresh (its old record, if any, is replaced).
  """
  steps = saved_steps(os.path.join(workdir, "checkpoints"))
  record = {"train": _plain(train_cfg), "data": data, "changes": []}
  if not steps:
    return record
  reached = steps[-1]
  old = {"model": None, "train": None, "data": None}
  if os.path.exists(os.path.join(workdir, LM_CONFIG_FILE)):
    old["model"] = _read(os.path.join(workdir, LM_CONFIG_FILE))
  if os.path.exists(os.path.join(workdir, RUN_FILE)):
    saved = _read(os.path.join(workdir, RUN_FILE))
    require(isinstance(saved, dict) and {"train", "data"} <= set(saved),
            os.path.join(workdir, RUN_FILE), "is not a run record of train_lm",
            "restore the file, or use a fresh --workdir")
    old.update(train=saved["train"], data=saved["data"])
    record["changes"] = list(saved.get("changes", []))
  else:  # a workdir of an earlier moe_jax (shapes and lm_config.json only): accept, record
    record["changes"].append({"step": reached, "recorded": "train config and data (the workdir "
                              "had no run.json)"})
    print(f"note: {workdir} holds no {RUN_FILE} (an earlier moe_jax wrote it): resuming at step"
          f" {reached} with this train config and data, now recorded", file=sys.stderr,
          flush=True)
  new = {"model": _plain(model_cfg), "train": record["train"], "data": data}
  differ = [d for part in old if old[part] is not None
            for d in _differences(old[part], new[part], part)]
  fixed = [d for d in differ if d[0] not in {f"train.{f}" for f in RESUMABLE}]
  if fixed:
    field, was, now = fixed[0]
    more = f" (and {len(fixed) - 1} more: {', '.join(d[0] for d in fixed[1:4])})" if (
        len(fixed) > 1) else ""
    if field.startswith("data"):
      what, fix = "these tokens differ from the ones of the run", (
          "resume with the data (data.*) the workdir was trained on, or use a fresh --workdir")
    else:
      what, fix = f"is {now!r} here and {was!r} in the run", (
          f"resume with {field}={was!r} (the workdir's config), or use a fresh --workdir")
    raise ConfigError(f"{field}: {what} that {workdir} holds (step {reached}); resuming would "
                      f"mix two runs{more}. Fix: {fix}")
  require(train_cfg.num_steps >= reached, "train.num_steps",
          f"{train_cfg.num_steps} is below step {reached}, which {workdir} already reached",
          f"resume with num_steps >= {reached}, or use a fresh --workdir")
  if differ:
    record["changes"].append({"step": reached, **{d[0]: [d[1], d[2]] for d in differ}})
  return record


def write(workdir: str, model_cfg: LMConfig, record: dict) -> None:
  """Records the run (after `check` passed and before the first step)."""
  write_lm_config(workdir, model_cfg)
  write_text(os.path.join(workdir, RUN_FILE), json.dumps(record, indent=2, sort_keys=True))
