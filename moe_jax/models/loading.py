"""One way to load an LM: a Hugging Face directory, a training workdir, or a named base model.

  model = load_model("/models/OLMoE-1B-7B-0924")       # any family the model zoo reads
  model = load_model("/tmp/moe_jax/lm_tiny")            # experiments.train's workdir (its MoE)
  model = load_model("tiny_moe:quick")                  # a base model, trained once and cached
  logits = model.module.apply(model.variables, tokens)  # [B, S, V]

A training workdir (moe_jax.train.loop.train_lm) stores its LMConfig in `lm_config.json`, so its
newest checkpoint is enough to rebuild the model; experiments.train's workdir holds one such
workdir per variant (`moe/`, `dense/`): the MoE is loaded unless the path names the variant.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import orbax.checkpoint as ocp

from moe_jax.models.config import LMConfig
from moe_jax.models.lm import MoELM
from moe_jax.utils.errors import ConfigError, require

LM_CONFIG_FILE = "lm_config.json"


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """module.apply(variables, tokens[B, S]) -> logits[B, S, V]; `source` says where it came from."""
  module: MoELM
  variables: dict
  source: str

  @property
  def cfg(self) -> LMConfig:
    return self.module.cfg


def is_hf_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "config.json"))


def is_train_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, LM_CONFIG_FILE))


def write_lm_config(workdir: str, cfg: LMConfig) -> None:
  """Records the model config of a training workdir (what load_model rebuilds it from)."""
  from moe_jax.utils.reporting import write_text  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  write_text(os.path.join(workdir, LM_CONFIG_FILE),
             json.dumps(cfg.to_dict(), indent=2, sort_keys=True))


def read_lm_config(workdir: str) -> LMConfig:
  path = os.path.join(workdir, LM_CONFIG_FILE)
  try:
    with open(path) as f:
      return LMConfig.from_dict(json.load(f))
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path}: cannot read the model config ({e}). Fix: point at a training "
                      "workdir written by experiments.train") from None


def load_train_dir(workdir: str) -> LoadedModel:
  """The newest checkpoint's parameters (and non-parameter state) of a training workdir."""
  cfg = read_lm_config(workdir)
  directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
  manager = ocp.CheckpointManager(directory)
  step = manager.latest_step()
  require(step is not None, "model", f"{workdir} has no checkpoint yet",
          "train it first (python -m experiments.train ...)")
  state = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))["state"]
  manager.close()
  variables = {"params": state["params"], **(state.get("extra") or {})}
  return LoadedModel(MoELM(cfg), variables, f"{workdir} (step {step})")


def load_model(spec: str, dtype: Optional[str] = None, **hf_kwargs: Any) -> LoadedModel:
  """Loads `spec`: a HF directory, a training workdir, or a base-model name[:preset].

  dtype: parameter and compute dtype of a HF checkpoint (default: the checkpoint's own);
  hf_kwargs: passed to moe_jax.convert.hf.load_pretrained (place, progress).
  """
  from moe_jax.convert.hf import load_pretrained  # pylint: disable=g-import-not-at-top
  from moe_jax.models import base_models  # pylint: disable=g-import-not-at-top
  require(bool(spec), "model", "is empty", "give a HF directory, a training workdir or one of "
          f"the base models {', '.join(base_models.BASE_MODELS)}")
  path = spec
  if not os.path.exists(spec):
    require(base_models.is_name(spec), "model", f"{spec!r} is neither a directory nor a base "
            "model", f"give a HF directory, a training workdir or one of "
            f"{', '.join(base_models.BASE_MODELS)} (optionally :quick)")
    path = base_models.ensure(spec)
  require(os.path.isdir(path), "model", f"{path} is not a directory",
          "give a HF directory or a training workdir")
  if is_hf_dir(path):
    module, variables = load_pretrained(path, dtype=dtype, **hf_kwargs)
    return LoadedModel(module, variables, path)
  if is_train_dir(path):
    return load_train_dir(path)
  if is_train_dir(os.path.join(path, "moe")):
    return load_train_dir(os.path.join(path, "moe"))
  raise ConfigError(f"model: {path} holds neither a Hugging Face checkpoint (config.json + "
                    f"safetensors) nor a training workdir ({LM_CONFIG_FILE} + checkpoints/). "
                    "Fix: point at one of those")
