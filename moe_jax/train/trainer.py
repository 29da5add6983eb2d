"""Language-model training: state, optimizer, jitted step, evaluation, the loop.

The objective is next-byte cross-entropy plus every leaf the model sows into 'aux_loss'
(the MoE layers' weighted balance/z losses). Non-parameter state (the DeepSeek-V3 routing bias
in 'moe_bias') rides in `TrainState.extra` and is moved by the aux-loss-free rule after each step.

`Hooks` change what a step does without a second loop: `objective` replaces the cross-entropy
(e.g. knowledge distillation from a frozen teacher whose variables ride in `objective_args`,
passed to every step and never trained), `trainable` freezes parameters by path (their updates
are zero, so their optimizer moments stay zero too), and `post_update` edits the parameters
after each update with state of its own (`TrainState.hook_state`, checkpointed with the rest:
e.g. MC-SMoE's pruning masks).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh

from moe_jax.layers.moe import SOWN
from moe_jax.layers.routers import aux_free_bias_update
from moe_jax.parallel import hosts, partitioning

LN2 = math.log(2.0)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  extra: Any  # other persistent variable collections, e.g. {"moe_bias": ...}
  hook_state: Any = None  # Hooks.post_update's own state


def cross_entropy(logits: jax.Array, batch: jax.Array, args: Any = None) -> tuple[jax.Array, dict]:
  """The default objective: mean next-token cross-entropy (nats) of logits[B, S, V] against
  batch[B, S+1]'s next tokens."""
  del args
  ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]))
  return ce, {}


@dataclasses.dataclass(frozen=True)
class Hooks:
  """Extension points of the train step (see the module docstring).

  objective(logits[B, S, V], batch[B, S+1], objective_args) -> (loss, metrics dict); the MoE
    layers' aux loss is added to it.
  objective_args: a pytree handed to every step (a frozen teacher's variables), not trained.
  trainable(path: tuple[str, ...]) -> bool for each parameter; None trains everything.
  post_update(params, grads, hook_state, step) -> (params, hook_state), inside the jitted step;
    `init_hook_state(params)` makes its first state.
  """
  objective: Callable = cross_entropy
  objective_args: Any = None
  trainable: Optional[Callable[[tuple[str, ...]], bool]] = None
  post_update: Optional[Callable] = None
  init_hook_state: Optional[Callable] = None


@functools.lru_cache(maxsize=64)
def make_optimizer(lr: float, warmup_steps: int, total_steps: int, weight_decay: float,
                   grad_clip: float, b2: float = 0.95,
                   trainable: Optional[Callable[[tuple[str, ...]], bool]] = None
                   ) -> optax.GradientTransformation:
  """AdamW on a warmup + cosine schedule, after global-norm gradient clipping; parameters for
  which `trainable(path)` is False get zero updates. Cached: equal settings give the same
  object, so a jitted step built for one run serves the next (loop.py)."""
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, warmup_steps),
                                                max(total_steps, warmup_steps + 1), lr * 0.1)
  adamw = optax.chain(optax.clip_by_global_norm(grad_clip),
                      optax.adamw(schedule, b1=0.9, b2=b2, weight_decay=weight_decay))
  if trainable is None:
    return adamw
  labels = lambda params: traverse_util.path_aware_map(
      lambda path, _: "train" if trainable(tuple(str(p) for p in path)) else "freeze",
      nn.unbox(params))
  return optax.multi_transform({"train": adamw, "freeze": optax.set_to_zero()}, labels)


def _boxed_state(model, optimizer, rng: jax.Array, seq_len: int, hooks: Hooks = Hooks(),
                 variables: Optional[dict] = None) -> TrainState:
  """The initial state with parameters and optimizer moments still in their logical boxes;
  `variables` (unboxed, of the same shapes) replace the random parameters and state."""
  init = model.init(rng, jnp.zeros((1, seq_len), jnp.int32))
  if variables is not None:
    given = {k: v for k, v in variables.items() if k in init}
    init = {**init, **jax.tree.map(lambda box, value: box.replace_boxed(value)
                                   if isinstance(box, nn.Partitioned) else value,
                                   {k: init[k] for k in given}, given,
                                   is_leaf=lambda x: isinstance(x, nn.Partitioned))}
  params = init["params"]
  extra = {k: v for k, v in init.items() if k not in ("params",) + SOWN}
  hook_state = hooks.init_hook_state(nn.unbox(params)) if hooks.init_hook_state else None
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), extra, hook_state)


def state_shardings(model, optimizer, seq_len: int, mesh: Mesh, rules,
                    hooks: Hooks = Hooks()) -> TrainState:
  """NamedShardings of every array of the train state, from the parameters' logical axes."""
  abstract = jax.eval_shape(functools.partial(_boxed_state, model, optimizer, seq_len=seq_len,
                                              hooks=hooks), jax.random.key(0))
  return partitioning.shardings(abstract, mesh, rules)


def init_state(model, optimizer, rng: jax.Array, seq_len: int, shardings=None,
               hooks: Hooks = Hooks(), variables: Optional[dict] = None) -> TrainState:
  """The initial train state (from `variables` when given, else random); with `shardings`
  (`state_shardings`) every array is created already sharded, with the same values on any mesh
  (JAX's random bits do not depend on it)."""
  init = lambda r, v: nn.unbox(_boxed_state(model, optimizer, r, seq_len, hooks, v))
  if shardings is None:
    return init(rng, variables)
  return jax.jit(init, out_shardings=shardings)(rng, variables)


def _sum_leaves(tree) -> jax.Array:
  return sum((jnp.sum(x) for x in jax.tree.leaves(tree)), jnp.zeros((), jnp.float32))


def lm_loss(model, params, extra, batch, rng, deterministic: bool, hooks: Hooks = Hooks()):
  """The objective of batch[B, S+1] (default: mean next-token cross-entropy, nats), its metrics,
  the aux loss, and the sown values."""
  mutable = ["aux_loss"] + (["intermediates"] if extra.get("moe_bias") else [])
  logits, sown = model.apply({"params": params, **extra}, batch[:, :-1],
                             deterministic=deterministic, rngs={"noise": rng},
                             mutable=mutable)
  loss, metrics = hooks.objective(logits, batch, hooks.objective_args)
  aux = _sum_leaves(sown.get("aux_loss", {}))
  return loss, metrics, aux, sown.get("intermediates", {})


def update_moe_bias(moe_bias, intermediates, rate: float):
  """Moves each router's bias by its layer's token counts (DeepSeek-V3 aux-loss-free rule)."""
  counts = traverse_util.flatten_dict(intermediates)
  flat = traverse_util.flatten_dict(moe_bias)
  out = {}
  for path, bias in flat.items():  # path: (..., 'moe', 'router', 'e_score_correction_bias')
    count = counts[path[:-2] + ("tokens_per_expert",)][0]
    out[path] = aux_free_bias_update(bias, count, rate)
  return traverse_util.unflatten_dict(out)


def train_step(state: TrainState, batch, rng, objective_args=None, *, model, optimizer,
               bias_rate: float, hooks: Hooks = Hooks()):
  hooks = dataclasses.replace(hooks, objective_args=objective_args)

  def loss_fn(params):
    loss, metrics, aux, inter = lm_loss(model, params, state.extra, batch, rng,
                                        deterministic=False, hooks=hooks)
    return loss + aux, (loss, metrics, aux, inter)

  (_, (loss, metrics, aux, inter)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  hook_state = state.hook_state
  if hooks.post_update is not None:
    params, hook_state = hooks.post_update(params, grads, hook_state, state.step)
  extra = dict(state.extra)
  if extra.get("moe_bias"):
    extra["moe_bias"] = update_moe_bias(extra["moe_bias"], inter, bias_rate)
  metrics = {**metrics, "loss": loss, "aux_loss": aux, "grad_norm": optax.global_norm(grads)}
  return TrainState(state.step + 1, params, opt_state, extra, hook_state), metrics


def make_train_step(model, optimizer, bias_rate: float = 1e-3, shardings=None,
                    batch_sharding=None, hooks: Hooks = Hooks()) -> Callable:
  """The jitted step(state, batch, rng, objective_args); with `shardings` (of the state) the
  state keeps its layout across steps.

  Trace it under `partitioning.use(mesh, rules)` so the model's logical constraints and its
  expert-parallel MoE layers see the mesh.
  """
  step = functools.partial(train_step, model=model, optimizer=optimizer, bias_rate=bias_rate,
                           hooks=hooks)
  if shardings is None:
    return jax.jit(step, donate_argnums=0)
  return jax.jit(step, in_shardings=(shardings, batch_sharding, None, None),
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
