"""The training checkpoints behind a model spec, to follow a property of the model over training.

A base model name (moe_jax/models/base_models.py) trains in its cache entry, a workdir of
experiments.train (the MoE's train_lm workdir is its `moe/`): its LMConfig (`lm_config.json`) and
orbax checkpoints of the train state, of which the trainer keeps the newest `train.keep` (2 by
default). A training workdir given by path is read the same way; a Hugging Face directory has
no checkpoints. Step 0, the initialisation, is reproduced for a base model (the trainer
initialises with jax.random.key(train.seed)); for other workdirs the seed is not recorded, so
step 0 is left out.
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax.core.scope import DenyList

from moe_jax.layers.moe import TRACE
from moe_jax.models import base_models
from moe_jax.models.lm import MoELM
from moe_jax.models.loading import LoadedModel, is_train_dir, read_lm_config

SOWN = ("intermediates", "aux_loss", TRACE)  # collections a forward writes, not model state


def training_dir(spec: str) -> Optional[str]:
  """The train_lm workdir behind `spec`, or None (a Hugging Face directory)."""
  path = spec
  if not os.path.exists(spec) and base_models.is_name(spec):
    path = os.path.dirname(base_models.ensure(spec))  # the cache entry
  for candidate in (path, os.path.join(path, "moe")):
    if is_train_dir(candidate):
      return candidate
  return None


def init_seed(spec: str) -> Optional[int]:
  """The seed the trainer initialised `spec` with (base models only)."""
  if os.path.exists(spec) or not base_models.is_name(spec):
    return None
  return base_models.base_config(spec).train.seed


def steps(train_dir: str) -> list[int]:
  """The steps of the checkpoints kept in a training workdir, ascending."""
  directory = os.path.abspath(os.path.join(train_dir, "checkpoints"))
  if not os.path.isdir(directory):
    return []
  manager = ocp.CheckpointManager(directory)
  out = sorted(manager.all_steps())
  manager.close()
  return out


def model_at(train_dir: str, step: int, seed: Optional[int] = None) -> LoadedModel:
  """The model of a training workdir's checkpoint at `step`; step 0 without a checkpoint is the
  initialisation from jax.random.key(seed). Arrays come back as plain single-device arrays (as
  load_model's), whatever mesh the trainer saved them from."""
  module = MoELM(read_lm_config(train_dir))
  if step == 0 and step not in steps(train_dir) and seed is not None:
    init = jax.jit(functools.partial(module.init, mutable=DenyList(SOWN)))
    variables = nn.unbox(init(jax.random.key(seed), jnp.zeros((1, 1), jnp.int32)))
  else:
    manager = ocp.CheckpointManager(os.path.abspath(os.path.join(train_dir, "checkpoints")))
    state = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]
    manager.close()
    variables = {"params": state["params"], **(state.get("extra") or {})}
  variables = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), variables)
  return LoadedModel(module, variables, f"{train_dir} (step {step})")
