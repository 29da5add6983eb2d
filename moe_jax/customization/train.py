"""Small optax loops for GE (off the device) and LE + GN (on the device), and orbax checkpoints.

Order (the paper's): GE is trained once on the generic set and frozen; then, per user, LE is trained
on that user's small set and GN on it (plus, for gate target 'source', a small generic reference
set), both reading the frozen GE's features.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from moe_jax.utils.reporting import progress


def _classifier_loss(model: nn.Module, params, inputs, labels):
  """Mean softmax cross-entropy; `model` returns logits or (logits, features)."""
  out = model.apply({"params": params}, inputs)
  logits = out[0] if isinstance(out, tuple) else out
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _gate_loss(model: nn.Module, params, features, targets, weights):
  """Weighted binary cross-entropy of g(x) against {0, 1} targets."""
  g = jnp.clip(model.apply({"params": params}, features), 1e-6, 1 - 1e-6)
  return -(weights * (targets * jnp.log(g) + (1 - targets) * jnp.log1p(-g))).mean()


@functools.partial(jax.jit, static_argnums=0)
def _init(model: nn.Module, key, example):
  return model.init(key, example)["params"]


@functools.partial(jax.jit, static_argnames=("loss", "model", "learning_rate", "weight_decay"))
def _step(params, opt_state, batch, *, loss, model, learning_rate, weight_decay):
  opt = optax.adamw(learning_rate, weight_decay=weight_decay)
  grads = jax.grad(functools.partial(loss, model))(params, *batch)
  updates, opt_state = opt.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def fit(loss: Callable, model: nn.Module, data: tuple[np.ndarray, ...], cfg, seed: int,
        name: str, show_progress: bool = False):
  """Initialises `model` and minimises `loss(model, params, *batch)` with AdamW.

  `cfg` is a checked `config.FitConfig`. Minibatches are drawn from shuffled epochs of `data`;
  `cfg.batch_size` >= the data size gives full-batch steps. The jitted step is shared by every call
  with the same model and optimiser settings (one compilation for all users). `name` is the config
  section, for the progress bar.
  """
  params = _init(model, jax.random.key(seed), jnp.asarray(data[0][:1]))
  opt_state = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay).init(params)
  n = len(data[0])
  batch_size = min(cfg.batch_size, n)
  rng = np.random.default_rng(seed)
  order, pos = rng.permutation(n), 0
  steps = range(cfg.steps)
  if show_progress:
    steps = progress(steps, total=cfg.steps, desc=f"{name} steps")
  for _ in steps:
    if pos + batch_size > n:
      order, pos = rng.permutation(n), 0
    idx = order[pos:pos + batch_size]
    pos += batch_size
    params, opt_state = _step(params, opt_state, tuple(jnp.asarray(d[idx]) for d in data),
                              loss=loss, model=model, learning_rate=cfg.learning_rate,
                              weight_decay=cfg.weight_decay)
  return params


def train_global_expert(model: nn.Module, images: np.ndarray, labels: np.ndarray, cfg,
                        seed: int):
  """Cross-entropy training of the GE on the generic set; returns its params."""
  return fit(_classifier_loss, model, (images, labels), cfg, seed, "ge", show_progress=True)


def train_local_expert(model: nn.Module, features: np.ndarray, labels: np.ndarray, cfg,
                       seed: int):
  """Cross-entropy training of the LE on one user's GE features [N, F]; returns its params."""
  return fit(_classifier_loss, model, (features, labels), cfg, seed, "le")


def train_gate(model: nn.Module, features: np.ndarray, targets: np.ndarray, cfg, seed: int):
  """Binary cross-entropy training of the GN on [N, F] features and {0, 1} targets [N].

  With `cfg.balance` each positive is weighted by #negatives / #positives, so both decisions
  count equally whatever the class balance.
  """
  targets = np.asarray(targets, np.float32)
  pos = float(targets.sum())
  pos_weight = (len(targets) - pos) / max(pos, 1.0) if cfg.balance else 1.0
  weights = np.where(targets > 0, pos_weight, 1.0).astype(np.float32)
  return fit(_gate_loss, model, (np.asarray(features), targets, weights), cfg, seed, "gn")


def save_checkpoint(directory: str, tree) -> str:
  """Writes `tree` (a params pytree or a dict of them) as an orbax checkpoint; returns the path."""
  path = os.path.abspath(directory)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, tree, force=True)
  checkpointer.wait_until_finished()
  return path


def restore_checkpoint(directory: str, like):
  """Reads the orbax checkpoint at `directory` into the structure of `like`."""
  return ocp.StandardCheckpointer().restore(os.path.abspath(directory), like)
