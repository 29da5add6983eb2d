"""Named base models: small MoE LMs trained here once, cached as Hugging Face directories.

The LLM-method papers (quantization, merging, slimming, placement, offloading) start from a
trained MoE LM; none can be downloaded here, so each method names one of these (or a path):

  tiny_moe     configs/lm_tiny.py        the foundation LM: 4 layers, 16 experts, top-2
  deep_top1    configs/lm_deep_top1.py   8 MoE layers, top-1 (ExFlow's setting, cross-layer
                                         statistics)
  fine_shared  configs/lm_fine_shared.py fine-grained experts, top-4, one shared expert (the
                                         DeepSeek-MoE / Qwen-MoE shape)

`name:quick` is the config's quick preset (trains in seconds; the tests use it). `ensure(spec)`
returns the model's HF directory under the cache (`$MOE_JAX_CACHE`, else `~/.cache/moe_jax`),
training it first when the cache has no complete entry for this config: the entry's directory
name carries a hash of the config, the Python version (the shipped corpus differs between
versions) and FORMAT, and a `complete.json` stamp written last marks it whole. The MoE trains in
the entry's `moe/` (a train_lm workdir), so `python -m experiments.train --config=<its config>
--workdir=<entry>` trains it together with its dense twin, and `ensure` then only exports it. A missing or
mismatching stamp means the entry is rebuilt (training resumes from its own checkpoints, which
train_lm checks against the config), never trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil

from moe_jax.utils.config import changed_fields
from moe_jax.utils.errors import require

BASE_MODELS = {
    "tiny_moe": "configs/lm_tiny.py",
    "deep_top1": "configs/lm_deep_top1.py",
    "fine_shared": "configs/lm_fine_shared.py",
}
FORMAT = 1
CACHE_ENV = "MOE_JAX_CACHE"
STAMP = "complete.json"


def split(spec: str) -> tuple[str, str]:
  name, _, preset = spec.partition(":")
  return name, preset


def is_name(spec: str) -> bool:
  return split(spec)[0] in BASE_MODELS


def cache_root(cache_dir: str = "") -> str:
  """The cache directory: the argument, else $MOE_JAX_CACHE, else ~/.cache/moe_jax."""
  return os.path.expanduser(cache_dir or os.environ.get(CACHE_ENV) or "~/.cache/moe_jax")


def base_config(spec: str):
  """The LMExperimentConfig of a base model name[:preset]."""
  from moe_jax.utils.experiment import load_config  # pylint: disable=g-import-not-at-top
  name, preset = split(spec)
  require(name in BASE_MODELS, "model", f"unknown base model {name!r}",
          f"use one of {', '.join(BASE_MODELS)}, or a path")
  return load_config(BASE_MODELS[name], preset)


def fingerprint(config) -> dict:
  """What a cache entry must match: the model, training and data fields that differ from their
  defaults, Python, FORMAT (so a new field whose default keeps the old behaviour leaves entries
  valid; changing a default's value needs FORMAT raised)."""
  return {"format": FORMAT, "python": platform.python_version(),
          **{k: changed_fields(getattr(config, k)) for k in ("model", "train", "data")}}


def entry_dir(spec: str, config, cache_dir: str = "") -> str:
  stamp = json.dumps(fingerprint(config), sort_keys=True, default=list)
  digest = hashlib.sha256(stamp.encode()).hexdigest()[:12]
  name, preset = split(spec)
  return os.path.join(cache_root(cache_dir), f"{name}{'-' + preset if preset else ''}-{digest}")


def _complete(entry: str, config) -> bool:
  try:
    with open(os.path.join(entry, STAMP)) as f:
      stamp = json.load(f)
  except (OSError, json.JSONDecodeError):
    return False
  want = json.loads(json.dumps(fingerprint(config), default=list))
  return stamp == want and os.path.isfile(os.path.join(entry, "hf", "config.json"))


def ensure(spec: str, cache_dir: str = "") -> str:
  """The HF directory of base model `spec`, trained and saved first if the cache lacks it."""
  from moe_jax.convert.hf import save_pretrained  # pylint: disable=g-import-not-at-top
  from moe_jax.data.corpus import lm_data  # pylint: disable=g-import-not-at-top
  from moe_jax.train.loop import train_lm  # pylint: disable=g-import-not-at-top
  from moe_jax.utils.reporting import write_text  # pylint: disable=g-import-not-at-top
  config = base_config(spec)
  entry = entry_dir(spec, config, cache_dir)
  hf_dir = os.path.join(entry, "hf")
  if _complete(entry, config):
    return hf_dir
  for stale in (os.path.join(entry, STAMP), hf_dir):  # never trust a partial entry
    if os.path.isdir(stale):
      shutil.rmtree(stale)
    elif os.path.exists(stale):
      os.remove(stale)
  print(f"base model {spec}: training once into {entry} (cached for later runs)", flush=True)
  train_tokens, eval_sets = lm_data(config.data, config.train.seq_len)
  run = train_lm(config.model, config.train, train_tokens, eval_sets,
                 os.path.join(entry, "moe"), desc=f"base model {spec}",
                 parallel=config.parallel)
  state = run["state"]
  tmp = hf_dir + ".tmp"
  if os.path.isdir(tmp):
    shutil.rmtree(tmp)
  from moe_jax.models.lm import MoELM  # pylint: disable=g-import-not-at-top
  save_pretrained(MoELM(config.model), {"params": state.params, **state.extra}, tmp)
  os.replace(tmp, hf_dir)
  write_text(os.path.join(entry, "metrics.json"), json.dumps(run["final"], indent=2))
  write_text(os.path.join(entry, STAMP),
             json.dumps(fingerprint(config), indent=2, sort_keys=True, default=list))
  return hf_dir
