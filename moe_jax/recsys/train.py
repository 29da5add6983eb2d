"""One optax loop for every multi-task model: S seeds trained at once with `jax.vmap`.

Loss: sum over tasks of the mean binary cross-entropy, L = sum_t mean_b BCE(logit_bt, y_bt).
Data arrays are stacked per seed ([S, N, ...]); each seed has its own init and its own data order.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_positive, require
from moe_jax.utils.reporting import progress

INPUTS = ("sparse", "dense")


@dataclasses.dataclass(frozen=True)
class FitConfig(Section):
  """The `train` section: Adam steps, rows per step and learning rate (the same for every model)."""
  steps: int = 1000
  batch_size: int = 512
  learning_rate: float = 2e-3

  def __post_init__(self):
    check_positive("steps", self.steps)
    check_positive("batch_size", self.batch_size)
    check_positive("learning_rate", self.learning_rate)


def _stack(arrays: Sequence[dict]) -> dict:
  return {k: jnp.asarray(np.stack([a[k] for a in arrays])) for k in ("sparse", "dense", "labels")}


def _mutable(variables: dict) -> list[str]:
  return ["batch_stats"] if "batch_stats" in variables else []


def fit(model: nn.Module, train_sets: Sequence[dict], seeds: Sequence[int], config: FitConfig,
        desc: str = "") -> dict:
  """Trains one copy of `model` per seed on train_sets[i]; returns variables stacked [S, ...]."""
  data = _stack(train_sets)
  n, batch_size = data["labels"].shape[1], config.batch_size
  require(batch_size <= n, "train.batch_size", f"{batch_size} rows per step from {n} training "
          "rows", "lower train.batch_size or add rows")
  keys = jnp.stack([jax.random.key(s) for s in seeds])
  example = {k: data[k][0, :2] for k in INPUTS}
  variables = jax.jit(jax.vmap(lambda k: model.init(k, example["sparse"], example["dense"])))(keys)
  variables = dict(variables)
  tx = optax.adam(config.learning_rate)
  opt_state = jax.jit(jax.vmap(tx.init))(variables["params"])

  def loss_fn(params, rest, batch):
    logits, updates = model.apply({"params": params, **rest}, batch["sparse"], batch["dense"],
                                  train=True, mutable=_mutable(rest))
    bce = optax.sigmoid_binary_cross_entropy(logits, batch["labels"])
    return bce.mean(0).sum(), updates

  def step(variables, opt_state, data, idx):
    batch = {k: v[idx] for k, v in data.items()}
    rest = {k: v for k, v in variables.items() if k != "params"}
    grads, updates = jax.grad(loss_fn, has_aux=True)(variables["params"], rest, batch)
    deltas, opt_state = tx.update(grads, opt_state, variables["params"])
    params = optax.apply_updates(variables["params"], deltas)
    return {**variables, **updates, "params": params}, opt_state

  step = jax.jit(jax.vmap(step), donate_argnums=(0, 1))
  rngs = [np.random.default_rng(s) for s in seeds]
  per_epoch = n // batch_size
  perms = None
  for i in progress(range(config.steps), total=config.steps, desc=desc):
    if i % per_epoch == 0:
      perms = np.stack([r.permutation(n) for r in rngs])
    j = (i % per_epoch) * batch_size
    variables, opt_state = step(variables, opt_state, data, jnp.asarray(perms[:, j:j + batch_size]))
  return variables


def predict(model: nn.Module, variables: dict, test_sets: Sequence[dict], *,
            batch_size: int = 8192) -> np.ndarray:
  """Probabilities [S, N, T] of each seed's model on its own test set."""
  data = _stack(test_sets)
  apply = jax.jit(jax.vmap(lambda v, s, d: jax.nn.sigmoid(model.apply(v, s, d, train=False))))
  n = data["labels"].shape[1]
  out = [apply(variables, data["sparse"][:, i:i + batch_size], data["dense"][:, i:i + batch_size])
         for i in range(0, n, batch_size)]
  return np.asarray(jnp.concatenate(out, axis=1))


def intermediates(model: nn.Module, variables: dict, test_sets: Sequence[dict], *,
                  rows: int = 4096) -> dict[str, Any]:
  """The sown `expert_out` [S, B, E, H] and `gate` [S, B, G, E] arrays on the first `rows` rows,
  keyed by path ("level_0/expert_out", ...)."""
  data = _stack([{k: v[:rows] for k, v in t.items()} for t in test_sets])

  def run(v, s, d):
    _, state = model.apply(v, s, d, train=False, mutable=["intermediates"])
    return state["intermediates"]

  found = jax.jit(jax.vmap(run))(variables, data["sparse"], data["dense"])
  flat = traverse_util.flatten_dict(jax.device_get(found), sep="/")
  return {k: np.asarray(v[0]) for k, v in flat.items()}  # sow keeps a tuple: take its entry

