"""The training loop of the LM: resumable, checkpointed, logged, evaluated in bits per byte."""
from __future__ import annotations

import dataclasses
import os
import time

import flax.linen as nn
import jax
import numpy as np

from moe_jax.data.iterator import WindowIterator
from moe_jax.models.config import LMConfig
from moe_jax.models.lm import MoELM
from moe_jax.models.loading import write_lm_config
from moe_jax.parallel import expert_parallel, hosts, partitioning
from moe_jax.parallel.config import ParallelConfig
from moe_jax.train import trainer
from moe_jax.train.checkpoint import Checkpointer, param_shapes
from moe_jax.train.metrics import MetricWriter
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_positive, require
from moe_jax.utils.trees import param_count
from moe_jax.utils.reporting import progress


@dataclasses.dataclass(frozen=True)
class TrainConfig(Section):
  """Optimisation and bookkeeping of one run (the `train` section of a config)."""
  num_steps: int = 1000
  batch_size: int = 32
  seq_len: int = 128
  lr: float = 3e-3
  warmup_steps: int = 100
  weight_decay: float = 0.1
  grad_clip: float = 1.0
  seed: int = 0
  bias_update_rate: float = 1e-3
  log_every: int = 50
  eval_every: int = 500
  eval_batch_size: int = 64
  save_every: int = 500
  keep: int = 2

  def __post_init__(self):
    for field in ("num_steps", "batch_size", "seq_len", "log_every", "eval_every",
                  "eval_batch_size", "save_every", "keep"):
      check_positive(field, getattr(self, field))
    for field in ("lr", "warmup_steps", "weight_decay", "grad_clip", "bias_update_rate"):
      require(getattr(self, field) >= 0, field, f"must be >= 0, got {getattr(self, field)}",
              "set a non-negative value")


def check_layout(model_cfg: LMConfig, cfg: TrainConfig, mesh, rules) -> None:
  """Refuses at start-up, with the fix, batches or experts that do not fit the mesh."""
  shards = partitioning.batch_shards(mesh, rules)
  for name, size in (("train.batch_size", cfg.batch_size),
                     ("train.eval_batch_size", cfg.eval_batch_size)):
    require(size % shards == 0, name, f"{size} does not split over the {shards} batch shards "
            f"of the mesh {dict(mesh.shape)}", f"use a multiple of {shards}")
  with partitioning.use(mesh, rules):
    parallel = expert_parallel.active_axes()
  if parallel and model_cfg.moe_layer_ids():
    expert_parallel.check(model_cfg.moe.num_experts, model_cfg.moe.router, cfg.batch_size,
                          dict(mesh.shape), *parallel)


def check_shapes(model: MoELM, variables: dict, seq_len: int) -> None:
  """Refuses starting variables whose parameters are not the model's, naming the first one."""
  want = param_shapes(nn.unbox(jax.eval_shape(
      model.init, jax.random.key(0), jax.numpy.zeros((1, seq_len), jax.numpy.int32)))["params"])
  got = param_shapes(variables["params"])
  for name in sorted(set(want) | set(got)):
    require(want.get(name) == got.get(name), "variables", f"parameter {name!r} is "
            f"{got.get(name)} in the given variables and {want.get(name)} in the model config",
            "pass variables of the model the config describes")


def train_lm(model_cfg: LMConfig, cfg: TrainConfig, train_tokens: np.ndarray,
             eval_sets: dict[str, np.ndarray], workdir: str, *, until_step: int | None = None,
             desc: str = "train", parallel: ParallelConfig = ParallelConfig(),
             hooks: trainer.Hooks = trainer.Hooks(), variables: dict | None = None) -> dict:
  """Trains (or resumes) an MoELM in `workdir`; returns its eval history and final metrics.

  Args:
    model_cfg, cfg: the model and optimisation settings.
    train_tokens: uint8 token stream to sample training windows from.
    eval_sets: name -> eval windows [n, seq_len + 1]; bits per byte is reported for each and,
      as "all", over their union.
    workdir: checkpoints, metrics.jsonl and TensorBoard events go here.
    until_step: stop (with a checkpoint) after this step, as if the run were killed there.
    parallel: the device mesh and the rules that shard parameters, optimizer state and batches
      over it (checkpoints restore onto whatever mesh the run has now).
    hooks: another objective (e.g. distillation), frozen parameters, a post-update edit
      (moe_jax.train.trainer.Hooks); held-out evaluation stays bits per byte.
    variables: start from these variables (e.g. a pretrained or compressed model of `model_cfg`'s
      shapes) instead of a random initialisation; a checkpoint in `workdir` still wins.
  """
  mesh, rules = parallel.build()
  check_layout(model_cfg, cfg, mesh, rules)
  if jax.process_index() == 0:
    write_lm_config(workdir, model_cfg)
  model = MoELM(model_cfg)
  optimizer = trainer.make_optimizer(cfg.lr, cfg.warmup_steps, cfg.num_steps, cfg.weight_decay,
                                     cfg.grad_clip, trainable=hooks.trainable)
  shardings = trainer.state_shardings(model, optimizer, cfg.seq_len, mesh, rules, hooks)
  if variables is not None:
    check_shapes(model, variables, cfg.seq_len)
  state = trainer.init_state(model, optimizer, jax.random.key(cfg.seed), cfg.seq_len, shardings,
                             hooks, variables)
  data = WindowIterator(train_tokens, cfg.batch_size, cfg.seq_len, cfg.seed)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), cfg.save_every, cfg.keep)
  restored = ckpt.restore_latest(state)
  if restored is not None:
    state, data_state = restored
    data.restore(data_state)
  start = int(state.step)
  batch_sharding = partitioning.batch_sharding(mesh, rules)
  step_fn = trainer.make_train_step(model, optimizer, cfg.bias_update_rate, shardings,
                                    batch_sharding, hooks)
  bpb_fn = trainer.make_eval_fn(model, batch_sharding)
  writer = MetricWriter(workdir)
  rng = jax.random.key(cfg.seed + 1)
  stop = min(cfg.num_steps, until_step or cfg.num_steps)

  def evaluate(step: int, elapsed: float) -> dict:
    out = {"step": step, "train_seconds": elapsed}
    nats, count = 0.0, 0
    for name, windows in eval_sets.items():
      out[f"bpb_{name}"] = bpb_fn(state, windows, cfg.eval_batch_size)
      n = windows.shape[0] * (windows.shape[1] - 1)
      nats, count = nats + out[f"bpb_{name}"] * n, count + n
    out["bpb_all"] = nats / count
    writer.write(step, {k: v for k, v in out.items() if k.startswith("bpb")})
    return out

  history, elapsed, tokens = [], 0.0, cfg.batch_size * cfg.seq_len
  bar = progress(total=stop, initial=start, desc=desc)
  t0, t0_step = time.perf_counter(), start  # train time excludes evaluation
  with partitioning.use(mesh, rules):  # the step and eval functions trace on first call here
    for step in range(start, stop):
      batch = hosts.global_batch(next(data), batch_sharding, cfg.batch_size)
      state, metrics = step_fn(state, batch, jax.random.fold_in(rng, step), hooks.objective_args)
      done = step + 1
      bar.update(1)
      if done % cfg.log_every == 0 or done == stop:
        metrics = jax.device_get(metrics)
        now = time.perf_counter()
        elapsed += now - t0
        rate = tokens * (done - t0_step) / max(now - t0, 1e-9)
        t0, t0_step = now, done
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{rate:.0f}")
        writer.write(done, {**metrics, "tokens_per_second": rate})
      if done % cfg.eval_every == 0 or done == cfg.num_steps:
        jax.block_until_ready(state)
        elapsed += time.perf_counter() - t0
        history.append(evaluate(done, elapsed))
        t0, t0_step = time.perf_counter(), done
      ckpt.save(done, state, data.state(), force=done == stop)
    if not history:  # resumed a finished run: report its final state
      history.append(evaluate(int(state.step), elapsed))
  bar.close()
  ckpt.wait()
  ckpt.close()
  writer.close()
  return {"history": history, "final": history[-1] if history else None,
          "params": param_count(state.params), "state": state}
