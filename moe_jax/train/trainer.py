"""Language-model training: state, optimizer, jitted step, evaluation, the loop.

The objective is next-byte cross-entropy plus every leaf the model sows into 'aux_loss'
(the MoE layers' weighted balance/z losses). Non-parameter state (the DeepSeek-V3 routing bias
in 'moe_bias') rides in `TrainState.extra` and is moved by the aux-loss-free rule after each step.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh

from moe_jax.layers.routers import aux_free_bias_update
from moe_jax.parallel import hosts, partitioning

LN2 = math.log(2.0)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  extra: Any  # other persistent variable collections, e.g. {"moe_bias": ...}


def make_optimizer(lr: float, warmup_steps: int, total_steps: int, weight_decay: float,
                   grad_clip: float, b2: float = 0.95) -> optax.GradientTransformation:
  """AdamW on a warmup + cosine schedule, after global-norm gradient clipping."""
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, warmup_steps),
                                                max(total_steps, warmup_steps + 1), lr * 0.1)
  return optax.chain(optax.clip_by_global_norm(grad_clip),
                     optax.adamw(schedule, b1=0.9, b2=b2, weight_decay=weight_decay))


def _boxed_state(model, optimizer, rng: jax.Array, seq_len: int) -> TrainState:
  """The initial state with parameters and optimizer moments still in their logical boxes."""
  variables = model.init(rng, jnp.zeros((1, seq_len), jnp.int32))
  params = variables["params"]
  extra = {k: v for k, v in variables.items() if k not in ("params", "intermediates",
                                                           "aux_loss")}
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), extra)


def state_shardings(model, optimizer, seq_len: int, mesh: Mesh, rules) -> TrainState:
  """NamedShardings of every array of the train state, from the parameters' logical axes."""
  abstract = jax.eval_shape(functools.partial(_boxed_state, model, optimizer, seq_len=seq_len),
                            jax.random.key(0))
  return partitioning.shardings(abstract, mesh, rules)


def init_state(model, optimizer, rng: jax.Array, seq_len: int, shardings=None) -> TrainState:
  """The initial train state; with `shardings` (`state_shardings`) every array is created
  already sharded, with the same values on any mesh (JAX's random bits do not depend on it)."""
  init = lambda r: nn.unbox(_boxed_state(model, optimizer, r, seq_len))
  if shardings is None:
    return init(rng)
  return jax.jit(init, out_shardings=shardings)(rng)


def _sum_leaves(tree) -> jax.Array:
  return sum((jnp.sum(x) for x in jax.tree.leaves(tree)), jnp.zeros((), jnp.float32))


def lm_loss(model, params, extra, batch, rng, deterministic: bool):
  """Mean next-token cross-entropy (nats) of batch[B, S+1], the aux loss, and the sown values."""
  mutable = ["aux_loss"] + (["intermediates"] if extra.get("moe_bias") else [])
  logits, sown = model.apply({"params": params, **extra}, batch[:, :-1],
                             deterministic=deterministic, rngs={"noise": rng},
                             mutable=mutable)
  ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]))
  aux = _sum_leaves(sown.get("aux_loss", {}))
  return ce, aux, sown.get("intermediates", {})


def update_moe_bias(moe_bias, intermediates, rate: float):
  """Moves each router's bias by its layer's token counts (DeepSeek-V3 aux-loss-free rule)."""
  counts = traverse_util.flatten_dict(intermediates)
  flat = traverse_util.flatten_dict(moe_bias)
  out = {}
  for path, bias in flat.items():  # path: (..., 'moe', 'router', 'e_score_correction_bias')
    count = counts[path[:-2] + ("tokens_per_expert",)][0]
    out[path] = aux_free_bias_update(bias, count, rate)
  return traverse_util.unflatten_dict(out)


def train_step(state: TrainState, batch, rng, *, model, optimizer, bias_rate: float):
  def loss_fn(params):
    ce, aux, inter = lm_loss(model, params, state.extra, batch, rng, deterministic=False)
    return ce + aux, (ce, aux, inter)

  (_, (ce, aux, inter)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  extra = dict(state.extra)
  if extra.get("moe_bias"):
    extra["moe_bias"] = update_moe_bias(extra["moe_bias"], inter, bias_rate)
  metrics = {"loss": ce, "aux_loss": aux, "grad_norm": optax.global_norm(grads)}
  return TrainState(state.step + 1, params, opt_state, extra), metrics


def make_train_step(model, optimizer, bias_rate: float = 1e-3, shardings=None,
                    batch_sharding=None) -> Callable:
  """The jitted step; with `shardings` (of the state) the state keeps its layout across steps.

  Trace it under `partitioning.use(mesh, rules)` so the model's logical constraints and its
  expert-parallel MoE layers see the mesh.
  """
  step = functools.partial(train_step, model=model, optimizer=optimizer, bias_rate=bias_rate)
  if shardings is None:
    return jax.jit(step, donate_argnums=0)
  return jax.jit(step, in_shardings=(shardings, batch_sharding, None),
                 out_shardings=(shardings, None), donate_argnums=0)


def make_eval_fn(model, batch_sharding=None) -> Callable:
  """Returns bits_per_byte(state, windows[n, S+1], batch_size) -> float.

  Every host passes all windows; with `batch_sharding` each feeds only its rows of a batch.
  """
  @jax.jit
  def nats(params, extra, batch, num_valid):
    logits = model.apply({"params": params, **extra}, batch[:, :-1])
    rows = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]), -1)
    return jnp.sum(jnp.where(jnp.arange(batch.shape[0]) < num_valid, rows, 0.0))

  def bits_per_byte(state: TrainState, windows: np.ndarray, batch_size: int) -> float:
    total = 0.0
    for i in range(0, len(windows), batch_size):
      chunk = windows[i:i + batch_size]
      n = len(chunk)
      if n < batch_size:  # pad to keep one compiled shape; padded rows are not counted
        chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - n, axis=0)])
      batch = hosts.global_batch(hosts.local_rows(chunk), batch_sharding, batch_size)
      total += float(nats(state.params, state.extra, batch, n))
    return total / (windows.shape[0] * (windows.shape[1] - 1)) / LN2

  return bits_per_byte
