"""Small optax loops for GE (off the device) and LE + GN (on the device), and orbax checkpoints.

Order (the paper's): GE is trained once on the generic set and frozen; then, per user, LE and GN are
trained from that user's small set only, reading the frozen GE's features.
"""
from __future__ import annotations

import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from moe_jax.utils.errors import check_positive
from moe_jax.utils.reporting import progress


def fit(loss_fn: Callable, params, data: tuple[np.ndarray, ...], *, steps: int, batch_size: int,
        learning_rate: float, weight_decay: float, seed: int, desc: str = ""):
  """Minimises `loss_fn(params, *batch)` with AdamW on shuffled minibatches of `data`.

  A `batch_size` >= the data size gives full-batch steps. `desc` shows a progress bar.
  """
  check_positive("steps", steps)
  check_positive("batch_size", batch_size)
  check_positive("learning_rate", learning_rate)
  opt = optax.adamw(learning_rate, weight_decay=weight_decay)
  state = opt.init(params)

  @jax.jit
  def step(params, state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  n = len(data[0])
  batch_size = min(batch_size, n)
  rng = np.random.default_rng(seed)
  order, pos = rng.permutation(n), 0
  steps_iter = progress(range(steps), total=steps, desc=desc) if desc else range(steps)
  for _ in steps_iter:
    if pos + batch_size > n:
      order, pos = rng.permutation(n), 0
    idx = order[pos:pos + batch_size]
    pos += batch_size
    params, state, _ = step(params, state, tuple(jnp.asarray(d[idx]) for d in data))
  return params


def train_global_expert(model: nn.Module, images: np.ndarray, labels: np.ndarray, cfg,
                        seed: int):
  """Cross-entropy training of the GE on the generic set; returns its params."""
  params = model.init(jax.random.key(seed), jnp.asarray(images[:1]))["params"]

  def loss_fn(p, x, y):
    logits, _ = model.apply({"params": p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return fit(loss_fn, params, (images, labels), steps=cfg.steps, batch_size=cfg.batch_size,
             learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, seed=seed,
             desc="GE (generic set)")


def train_local_expert(model: nn.Module, features: np.ndarray, labels: np.ndarray, cfg,
                       seed: int):
  """Cross-entropy training of the LE on one user's GE features [N, F]; returns its params."""
  params = model.init(jax.random.key(seed), jnp.asarray(features[:1]))["params"]

  def loss_fn(p, f, y):
    return optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p}, f), y).mean()

  return fit(loss_fn, params, (features, labels), steps=cfg.steps, batch_size=cfg.batch_size,
             learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, seed=seed)


def train_gate(model: nn.Module, features: np.ndarray, targets: np.ndarray, cfg, seed: int):
  """Binary cross-entropy training of the GN on one user's [N, F] features and {0,1} targets.

  With `cfg.balance` the positive term is weighted by #negatives / #positives (GE errors are the
  minority on most users).
  """
  params = model.init(jax.random.key(seed), jnp.asarray(features[:1]))["params"]
  pos = float(targets.sum())
  pos_weight = (len(targets) - pos) / max(pos, 1.0) if cfg.balance else 1.0

  def loss_fn(p, f, t):
    g = jnp.clip(model.apply({"params": p}, f), 1e-6, 1 - 1e-6)
    return -(pos_weight * t * jnp.log(g) + (1 - t) * jnp.log1p(-g)).mean()

  return fit(loss_fn, params, (features, targets), steps=cfg.steps, batch_size=cfg.batch_size,
             learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, seed=seed)


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
