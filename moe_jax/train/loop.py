"""The training loop of the LM: resumable, checkpointed, logged, evaluated in bits per byte.

Before loading anything onto a device the loop checks every config value, the workdir, the
data (token ids inside the vocabulary, at least one held-out window) and that a workdir with
checkpoints is resumed by the same run (moe_jax/train/resume.py). While it runs, a non-finite
step stops it (or is skipped) before anything non-finite is saved, and a signal or an error
ends it with pending saves finished and one line naming the last intact checkpoint
(moe_jax/train/guards.py).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time

import flax.linen as nn
import jax
import numpy as np

from moe_jax.data.iterator import WindowIterator
from moe_jax.models.config import LMConfig
from moe_jax.models.lm import MoELM, check_token_ids
from moe_jax.parallel import expert_parallel, hosts, partitioning
from moe_jax.parallel.config import ParallelConfig
from moe_jax.train import guards, resume, trainer
from moe_jax.train.checkpoint import Checkpointer, param_shapes
from moe_jax.train.metrics import MetricWriter
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_nonnegative, check_positive, require
from moe_jax.utils.experiment import check_workdir
from moe_jax.utils.trees import param_count
from moe_jax.utils.reporting import progress


@dataclasses.dataclass(frozen=True)
class TrainConfig(Section):
  """Optimisation and bookkeeping of one run (the `train` section of a config).

  grad_clip: the global gradient norm is clipped to it (> 0).
  on_nonfinite: a step whose loss or gradient norm is not finite "stop"s the run (nothing
    non-finite is saved; the line names the step) or is "skip"ped (the state is kept as it
    was; each skipped step is reported).
  """
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
  on_nonfinite: str = "stop"

  def __post_init__(self):
    for field in ("num_steps", "batch_size", "seq_len", "log_every", "eval_every",
                  "eval_batch_size", "save_every", "keep", "grad_clip"):
      check_positive(field, getattr(self, field))
    for field in ("lr", "warmup_steps", "weight_decay", "bias_update_rate", "seed"):
      check_nonnegative(field, getattr(self, field))
    check_choice("on_nonfinite", self.on_nonfinite, guards.NONFINITE)


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


def check_inputs(model_cfg: LMConfig, cfg: TrainConfig, train_tokens: np.ndarray,
                 eval_sets: dict[str, np.ndarray], workdir: str) -> None:
  """Refuses, before anything is compiled or written, a bad config value (of either type, as
  the config loader would), a workdir that cannot be written, and data the model cannot take:
  token ids outside its vocabulary, a training stream shorter than one window, no held-out
  windows."""
  require(isinstance(model_cfg, LMConfig), "model", f"expected an LMConfig, got "
          f"{type(model_cfg).__name__}", "pass moe_jax.models.config.LMConfig(...)")
  require(isinstance(cfg, TrainConfig), "train", f"expected a TrainConfig, got "
          f"{type(cfg).__name__}", "pass moe_jax.train.loop.TrainConfig(...)")
  LMConfig.from_dict(model_cfg.to_dict(), "model")
  TrainConfig.from_dict(cfg.to_dict(), "train")
  check_workdir(workdir)
  tokens = np.asarray(train_tokens)
  require(tokens.ndim == 1, "train_tokens", f"expected one token stream [n], got shape "
          f"{list(tokens.shape)}", "concatenate the training text into one stream")
  require(len(tokens) > cfg.seq_len + 1, "train.seq_len", f"the training stream ({len(tokens)}"
          f" tokens) is shorter than one window of seq_len + 1 = {cfg.seq_len + 1}",
          "lower train.seq_len or add training text")
  check_token_ids(tokens, model_cfg.vocab_size, "train_tokens")
  require(isinstance(eval_sets, dict) and bool(eval_sets), "eval_sets", "is empty: there is no "
          "held-out text to evaluate", "give at least one held-out set of windows")
  for name, windows in eval_sets.items():
    windows = np.asarray(windows)
    require(windows.ndim == 2 and windows.shape[0] >= 1 and windows.shape[1] >= 2,
            f"eval_sets[{name!r}]", f"expected windows [n >= 1, length >= 2], got shape "
            f"{list(windows.shape)}", "make them with moe_jax.data.iterator.eval_windows")
    check_token_ids(windows, model_cfg.vocab_size, f"eval_sets[{name!r}]")


@functools.lru_cache(maxsize=16)
def jitted_functions(model: MoELM, optimizer, bias_rate: float, layout: tuple, batch_sharding,
                     hooks: trainer.Hooks, on_nonfinite: str, rules) -> tuple:
  """(step, bits per byte) of a run, built once per process for equal arguments: runs of equal
  model, optimizer, hooks (without objective_args: those are the step's argument) and layout,
  e.g. the distillation rows of one compressed shape, share their compilations.

  layout: (treedef, leaves) of the state's shardings; rules: those the functions trace under
  (partitioning.use), a part of the key.
  """
  del rules
  return (guards.make_step(model, optimizer, bias_rate, jax.tree.unflatten(*layout),
                           batch_sharding, hooks, on_nonfinite),
          trainer.make_eval_fn(model, batch_sharding))


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
    workdir: checkpoints, lm_config.json, run.json, metrics.jsonl and TensorBoard events go
      here. A workdir with checkpoints resumes only with the same model, train config (but for
      resume.RESUMABLE) and data.
    until_step: stop (with a checkpoint) after this step, as if the run were killed there.
    parallel: the device mesh and the rules that shard parameters, optimizer state and batches
      over it (checkpoints restore onto whatever mesh the run has now).
    hooks: another objective (e.g. distillation), frozen parameters, a post-update edit
      (moe_jax.train.trainer.Hooks); held-out evaluation stays bits per byte.
    variables: start from these variables (e.g. a pretrained or compressed model of `model_cfg`'s
      shapes) instead of a random initialisation; a checkpoint in `workdir` still wins.

  Raises:
    ConfigError: a bad input (before anything is written), or a non-finite step (nothing
      non-finite saved); RunStopped: a signal or an error stopped it (pending saves finished).
  """
  check_inputs(model_cfg, cfg, train_tokens, eval_sets, workdir)
  record = resume.check(workdir, model_cfg, cfg, resume.data_digest(train_tokens, eval_sets))
  mesh, rules = parallel.build()
  check_layout(model_cfg, cfg, mesh, rules)
  model = MoELM(model_cfg)
  if variables is not None:
    check_shapes(model, variables, cfg.seq_len)
  optimizer = trainer.make_optimizer(cfg.lr, cfg.warmup_steps, cfg.num_steps, cfg.weight_decay,
                                     cfg.grad_clip, trainable=hooks.trainable)
  shardings = trainer.state_shardings(model, optimizer, cfg.seq_len, mesh, rules, hooks)
  init = lambda shard: trainer.init_state(model, optimizer, jax.random.key(cfg.seed),
                                          cfg.seq_len, shard, hooks, variables)
  abstract = jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                   sharding=sharding),
                          jax.eval_shape(lambda: init(None)), shardings)
  data = WindowIterator(train_tokens, cfg.batch_size, cfg.seq_len, cfg.seed)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), cfg.save_every, cfg.keep)
  prior_seconds = 0.0  # training time of the steps a resumed run's checkpoint holds
  try:
    restored = ckpt.restore_latest(abstract)  # a resumed run never builds the random start
    if restored is not None:
      state, data_state = restored
      data.restore(data_state)
      prior_seconds = float(data_state.get("train_seconds", 0.0))
    else:
      state = init(shardings)
  except BaseException:  # nothing was trained: close the manager and let the error through
    ckpt.close()
    raise
  start, done = int(state.step), int(state.step)  # done: the last step this process ran
  batch_sharding = partitioning.batch_sharding(mesh, rules)
  rng = jax.random.key(cfg.seed + 1)
  stop = min(cfg.num_steps, until_step or cfg.num_steps)
  history, elapsed, tokens = [], prior_seconds, cfg.batch_size * cfg.seq_len
  pending = []  # (step, loss, grad norm, skipped) of the steps not yet fetched
  writer = bar = None
  try:
    if jax.process_index() == 0:
      resume.write(workdir, model_cfg, record)
    leaves, treedef = jax.tree.flatten(shardings)
    step_fn, bpb_fn = jitted_functions(
        model, optimizer, cfg.bias_update_rate, (treedef, tuple(leaves)), batch_sharding,
        dataclasses.replace(hooks, objective_args=None), cfg.on_nonfinite, rules)
    writer = MetricWriter(workdir, start)

    def evaluate(step: int, elapsed: float, write: bool = True) -> dict:
      out = {"step": step, "train_seconds": elapsed}
      nats, count = 0.0, 0
      for name, windows in eval_sets.items():
        out[f"bpb_{name}"] = bpb_fn(state, windows, cfg.eval_batch_size)
        n = windows.shape[0] * (windows.shape[1] - 1)
        nats, count = nats + out[f"bpb_{name}"] * n, count + n
      out["bpb_all"] = nats / count
      if write:
        writer.write(step, {k: v for k, v in out.items() if k.startswith("bpb")})
      return out

    bar = progress(total=stop, initial=start, desc=desc)
    t0, t0_step = time.perf_counter(), start  # train time excludes evaluation
    # the step and eval functions trace on first call under the mesh
    with guards.StopSignals() as signals, partitioning.use(mesh, rules):
      for step in range(start, stop):
        batch = hosts.global_batch(next(data), batch_sharding, cfg.batch_size)
        state, metrics = step_fn(state, batch, jax.random.fold_in(rng, step),
                                 hooks.objective_args)
        done = step + 1
        bar.update(1)
        pending.append((done, metrics["loss"], metrics["grad_norm"], metrics.get("skipped")))
        log_now = done % cfg.log_every == 0 or done == stop
        eval_now = done % cfg.eval_every == 0 or done == cfg.num_steps
        save_now = done % cfg.save_every == 0 or done == stop or signals.received is not None
        if log_now or eval_now or save_now:  # the loop syncs here anyway: check the steps
          fetched, metrics = jax.device_get((pending, metrics))
          pending = []
          guards.check_steps(fetched, cfg)
        if log_now:
          now = time.perf_counter()
          elapsed += now - t0
          rate = tokens * (done - t0_step) / max(now - t0, 1e-9)
          t0, t0_step = now, done
          bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{rate:.0f}")
          writer.write(done, {**metrics, "tokens_per_second": rate})
        if eval_now:
          jax.block_until_ready(state)
          elapsed += time.perf_counter() - t0
          history.append(evaluate(done, elapsed))
          t0, t0_step = time.perf_counter(), done
        if save_now:  # only a finite state is saved
          guards.check_state(state, done)
          ckpt.save(done, state, {**data.state(), "train_seconds": elapsed}, force=True)
        if signals.received is not None:
          raise guards.Signalled(signals.received)
      if not history:  # resumed a finished run: report its final state
        history.append(evaluate(int(state.step), elapsed, write=False))
    ckpt.wait()
  except BaseException as e:  # pylint: disable=broad-except
    for closing in (bar, writer):
      if closing is not None:
        closing.close()
    last, problem = ckpt.finish()
    raise guards.stopped(e, done, last, problem, ckpt.directory) from (
        e if guards.unexpected(e) else None)
  bar.close()
  ckpt.close()
  writer.close()
  return {"history": history, "final": history[-1] if history else None,
          "params": param_count(state.params), "state": state}
