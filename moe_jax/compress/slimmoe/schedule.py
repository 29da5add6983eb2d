"""SlimMoE's multi-stage schedule: slim to an intermediate width, distil, repeat to the target.

Legend: F expert width, G key/value groups, T the total distillation steps (T x batch x seq_len
tokens), s_i stage i's token share.

SlimMoE (arXiv 2506.18349, Sec. 3.2): instead of pruning once to the target, each stage i
  1. scores the current student (importance.py) against the frozen original model,
  2. slims it one-shot to the stage's width F_i = round(ratio_i F) (slimming.py),
  3. distils it from the original model for round(s_i T) steps (the trainer's loop with
     moe_jax.train.distill.kd_objective hooks: KL on the teacher's top-k logits + CE).
Stage widths and token shares are config fields; the shares sum to 1, so any schedule spends
the same T steps and one-shot is the one-stage schedule. Each stage is its own train_lm run
(warmup + cosine over its steps, in workdir/stage_<i>, resumable). The paper's stage widths,
split, temperature and whether an LM loss is added are not public: the defaults here are ours.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from moe_jax.compress.slimmoe.importance import SCORES, saliency
from moe_jax.compress.slimmoe.slimming import slim
from moe_jax.data.iterator import WindowIterator
from moe_jax.models.lm import MoELM
from moe_jax.models.loading import LoadedModel
from moe_jax.train.distill import distill_model, kd_objective
from moe_jax.train.loop import TrainConfig
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require


@dataclasses.dataclass(frozen=True)
class ScheduleConfig(Section):
  """expert_ratios: kept fraction of the expert width after each stage (decreasing, the last
  is the target); token_shares: each stage's share of the distillation steps (sum 1);
  attention_ratio: kept fraction of GQA groups (reached at the first stage; 1 keeps all);
  score: "taylor" | "magnitude" | "random"; calibration_batches: training batches the score
  averages over; kd_top_k, kd_temperature, kd_alpha, ce_weight: the distillation loss."""
  expert_ratios: tuple[float, ...] = (0.5, 0.25)
  token_shares: tuple[float, ...] = (0.5, 0.5)
  attention_ratio: float = 1.0
  score: str = "taylor"
  calibration_batches: int = 4
  kd_top_k: int = 8
  kd_temperature: float = 1.0
  kd_alpha: float = 1.0
  ce_weight: float = 1.0

  def __post_init__(self):
    r, s = self.expert_ratios, self.token_shares
    require(bool(r) and len(r) == len(s), "token_shares", f"{len(s)} shares for {len(r)} "
            "stages", "give one share per entry of expert_ratios")
    require(all(0 < x <= 1 for x in r) and all(a > b for a, b in zip(r, r[1:])),
            "expert_ratios", f"must decrease within (0, 1], got {r}", "e.g. 0.5,0.25")
    require(all(x > 0 for x in s) and abs(sum(s) - 1) < 1e-6, "token_shares",
            f"must be positive and sum to 1, got {s}", "e.g. 0.5,0.5")
    require(0 < self.attention_ratio <= 1, "attention_ratio",
            f"must be in (0, 1], got {self.attention_ratio}", "use 1 to keep every group")
    check_choice("score", self.score, SCORES)
    for field in ("calibration_batches", "kd_top_k", "kd_temperature"):
      check_positive(field, getattr(self, field))


def stage_steps(total: int, shares: tuple[float, ...]) -> list[int]:
  """Steps of each stage: differences of round(total * cumulative share), summing to total."""
  ends = [round(total * c) for c in np.cumsum(shares)[:-1]] + [total]
  steps = np.diff([0] + ends).tolist()
  require(min(steps) >= 1, "train.num_steps", f"{total} steps leave a stage without a step "
          f"({steps})", "raise num_steps or even out token_shares")
  return steps


def stage_widths(cfg, ratios: tuple[float, ...]) -> list[int]:
  """Expert width F_i = max(1, round(ratio_i * F)) of each stage."""
  return [max(1, round(r * cfg.moe.d_ff)) for r in ratios]


def distillation_hooks(teacher: LoadedModel, config: ScheduleConfig):
  """The trainer's Hooks of the config's distillation loss against the frozen `teacher`."""
  return kd_objective(teacher.module, teacher.variables, alpha=config.kd_alpha,
                      temperature=config.kd_temperature, ce_weight=config.ce_weight,
                      top_k=config.kd_top_k)


def run_schedule(teacher: LoadedModel, config: ScheduleConfig, train: TrainConfig,
                 train_tokens: np.ndarray, eval_sets: dict, workdir: str,
                 desc: str = "slimmoe") -> tuple[LoadedModel, list[dict]]:
  """Slims and distils `teacher` stage by stage (module docstring): (final student, one record
  per stage: width, groups, steps, parameters, held-out bits per byte after its distillation).

  train: the distillation run's settings; its num_steps is the total T over all stages.
  """
  hooks = distillation_hooks(teacher, config)
  calibration = WindowIterator(train_tokens, train.batch_size, train.seq_len, train.seed + 7)
  batches = np.stack([calibration.batch(i) for i in range(config.calibration_batches)])
  kv_heads = max(1, round(config.attention_ratio * teacher.cfg.num_kv_heads))
  student, records = teacher, []
  steps = stage_steps(train.num_steps, config.token_shares)
  for i, (width, n) in enumerate(zip(stage_widths(teacher.cfg, config.expert_ratios), steps)):
    scores = saliency(config.score, student.module, student.variables, batches,
                      hooks.objective, hooks.objective_args, seed=train.seed + i)
    cfg, variables = slim(student.cfg, student.variables, scores, width, kv_heads)
    stage_train = dataclasses.replace(
        train, num_steps=n, warmup_steps=round(train.warmup_steps * n / train.num_steps),
        eval_every=min(train.eval_every, n), save_every=min(train.save_every, n))
    student, run = distill_model(
        LoadedModel(MoELM(cfg), variables, f"{teacher.source} slimmed to {width}"), hooks,
        stage_train, train_tokens, eval_sets, os.path.join(workdir, f"stage_{i}"),
        desc=f"{desc} stage {i + 1}/{len(steps)}")
    records.append({"stage": i, "d_ff": width, "num_kv_heads": cfg.num_kv_heads, "steps": n,
                    "params": run["params"], "active_params": cfg.active_params(run["params"]),
                    **{k: v for k, v in run["final"].items() if k.startswith("bpb")}})
  return student, records
