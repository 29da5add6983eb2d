"""`experiments.slimmoe`: SlimMoE (arXiv 2506.18349) expert slimming on any MoE LM.

On a model (a base-model name, a training workdir or a Hugging Face directory), for each target
t (kept fraction of every expert's width, so of the expert parameters), the rows, every one
distilled from the full model with the same loss (top-k KL + CE) and the same total tokens:
  oneshot_taylor / oneshot_magnitude / oneshot_random: slim once to t by that score, distil;
  multistage: `stages` stages of geometric widths t^(1/n), t^(2/n), ..., t (Taylor score), the
    tokens split by `stage_shares` (schedule.py);
and at the last target, at the same expert parameters (round(t E) experts per layer):
  drop: the least-used experts removed (MC-SMoE's drop baseline), distilled alike;
  msmoe: MC-SMoE's M-SMoE merge (moe_jax/compress/mcsmoe: calibration, alignment, routing-
    guided global grouping, frequency-weighted merging), distilled alike.
Every row and the full model go through one evaluation (moe_jax/eval: held-out bits per byte,
the task suite, KL to the full model) with total and active parameters.
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from moe_jax.compress.mcsmoe import calibration, grouping, merged_lm
from moe_jax.compress.slimmoe.importance import SCORES
from moe_jax.compress.slimmoe.schedule import ScheduleConfig, distillation_hooks, run_schedule
from moe_jax.compress.slimmoe.slimmoe_report import markdown, plot, summary
from moe_jax.data.iterator import eval_windows
from moe_jax.eval import EvalConfig, evaluate
from moe_jax.eval.encoding import encoded_split, make_encoder
from moe_jax.models.loading import LoadedModel, load_model
from moe_jax.train.distill import distill_model
from moe_jax.train.loop import TrainConfig
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require
from moe_jax.utils.experiment import Claim, Experiment
from moe_jax.utils.trees import param_count

@dataclasses.dataclass(frozen=True)
class SlimMoEConfig(Section):
  """model: a base-model name (optionally :quick), a HF directory or a training workdir; dtype:
  a HF checkpoint's dtype ("": its own); eval: what every row is scored on (its data's held-out
  split; the training split calibrates and distils); targets: kept fractions of the expert
  width, decreasing (two; the baselines run at the last); stages, stage_shares: the multi-stage
  row; schedule: the distillation loss, the score's calibration batches and the attention
  ratio (its expert_ratios, token_shares and score are set by each row); kd: each row's
  distillation run (num_steps x batch_size x seq_len tokens in all); calibration_windows,
  batch_size: MC-SMoE's calibration; seed: the random score."""
  model: str = "tiny_moe"
  dtype: str = ""
  eval: EvalConfig = EvalConfig()
  targets: tuple[float, ...] = (0.5, 0.25)
  stages: int = 2
  stage_shares: tuple[float, ...] = (0.5, 0.5)
  schedule: ScheduleConfig = ScheduleConfig()
  kd: TrainConfig = TrainConfig()
  calibration_windows: int = 64
  batch_size: int = 16
  seed: int = 0

  def __post_init__(self):
    require(bool(self.model), "model", "is empty", "give a base-model name or a path")
    check_choice("dtype", self.dtype, ("", "float32", "bfloat16", "float16"))
    t = self.targets
    require(len(t) == 2 and 1 > t[0] > t[1] > 0, "targets", f"must be two decreasing "
            f"fractions in (0, 1), got {t}", "e.g. 0.5,0.25")
    require(len(self.stage_shares) == self.stages, "stage_shares", f"{len(self.stage_shares)} "
            f"shares for {self.stages} stages", "give one share per stage")
    for name in ("stages", "calibration_windows", "batch_size"):
      check_positive(name, getattr(self, name))


def _text(config: SlimMoEConfig, model: LoadedModel) -> tuple[np.ndarray, dict]:
  """The training split's tokens and the held-out windows train_lm logs."""
  train, held = encoded_split(config.eval.data, make_encoder(config.eval.tokenizer, model),
                              "eval.data.val_every")
  return train, {"held_out": eval_windows(held, config.kd.seq_len, config.batch_size)}


def schedules(config: SlimMoEConfig, target: float) -> dict[str, ScheduleConfig]:
  """row -> its schedule at `target`: one-shot by each score, and the multi-stage one."""
  out = {f"oneshot_{s}": dataclasses.replace(config.schedule, expert_ratios=(target,),
                                             token_shares=(1.0,), score=s) for s in SCORES}
  widths = tuple(target ** ((i + 1) / config.stages) for i in range(config.stages))
  out["multistage"] = dataclasses.replace(config.schedule, expert_ratios=widths,
                                          token_shares=config.stage_shares, score="taylor")
  return out


def _score(model: LoadedModel, config: SlimMoEConfig, teacher: LoadedModel | None,
           routing: bool = True) -> dict:
  """One row: held-out bits per byte, task accuracy, KL to the full model, parameters."""
  r = evaluate(model, dataclasses.replace(config.eval, routing_agreement=routing), teacher)
  total = param_count(model.variables["params"])
  return {"bpb": r["bpb"]["all"], "kl": r.get("agreement", {"kl": 0.0})["kl"],
          "task_acc": r["task_mean"]["acc"] if "task_mean" in r else math.nan,
          "params": total, "active_params": model.cfg.active_params(total),
          "expert_width": model.cfg.moe.d_ff, "experts": model.cfg.moe.num_experts}


def _baselines(teacher: LoadedModel, config: SlimMoEConfig, train: np.ndarray, kd_eval: dict,
               target: float, workdir: str) -> dict:
  """drop and M-SMoE at round(target E) experts per layer, distilled like the slimmed rows."""
  e, k = teacher.cfg.moe.num_experts, teacher.cfg.moe.top_k
  n = max(1, round(target * e))
  windows = calibration.windows(train, config.kd.seq_len, config.calibration_windows)
  cal = calibration.calibrate(teacher, windows, config.batch_size)
  hooks = distillation_hooks(teacher, config.schedule)
  students = {"msmoe": (merged_lm.merge(merged_lm.align(teacher),
                                        grouping.global_grouping(cal.freqs, cal.similarity, n),
                                        cal.freqs), True)}
  if n >= k:  # fewer experts than top-k: no drop model
    students["drop"] = (merged_lm.drop(teacher, [grouping.drop(f, n).dominant
                                                 for f in cal.freqs]), False)
  rows = {}
  for name, (student, routing) in students.items():
    trained, _ = distill_model(student, hooks, config.kd, train, kd_eval,
                               os.path.join(workdir, "baselines", name), desc=f"kd {name}")
    rows[name] = {**_score(trained, config, teacher, routing), "experts": n}
  return rows


def run(config: SlimMoEConfig, workdir: str) -> dict:
  """The recipe of the module docstring; returns the contract's results."""
  teacher = load_model(config.model, dtype=config.dtype or None)
  require(not teacher.cfg.moe.num_slots, "model", "is already merged", "give the original")
  train, kd_eval = _text(config, teacher)
  results = {"model": config.model, "source": teacher.source,
             "full": _score(teacher, config, None),
             "kd_tokens": config.kd.num_steps * config.kd.batch_size * config.kd.seq_len,
             "targets": {}}
  for j, target in enumerate(config.targets):
    entry = {"target": target, "rows": {}, "stages": {}}
    for name, schedule in schedules(config, target).items():
      student, stages = run_schedule(teacher, schedule, config.kd, train, kd_eval,
                                     os.path.join(workdir, f"target_{j}", name), desc=name)
      entry["rows"][name] = _score(student, config, teacher)
      entry["stages"][name] = stages
    if j == len(config.targets) - 1:
      entry["baselines"] = _baselines(teacher, config, train, kd_eval, target,
                                      os.path.join(workdir, f"target_{j}"))
    results["targets"][f"target_{j}"] = entry
  results["summary"] = summary(results)
  d = config.eval.data
  results.update(markdown=markdown(config, teacher, results),
                 data=f"{'user' if 'files' in d.sources else 'shipped'}: "
                      f"{', '.join(d.sources)} text; distillation on the training split, "
                      f"scores on the held-out split (every {d.val_every}th document)",
                 scale=f"{config.model}, targets {list(config.targets)}, "
                       f"{results['kd_tokens']} KD tokens per row")
  plot(results, workdir)
  return results


def _claims() -> tuple[Claim, ...]:
  out = []
  for j in (0, 1):
    s = f"summary.target_{j}"
    out.append(Claim(f"multistage_{j}", f"target {j}: multi-stage beats one-shot (Taylor) "
                     "on held-out bits per byte at equal tokens", f"{s}.multistage_bpb", "<",
                     f"{s}.oneshot_taylor_bpb", "multi-stage beats one-shot (ablations)"))
    for base in ("magnitude", "random"):
      out.append(Claim(f"taylor_vs_{base}_{j}", f"target {j}: the Taylor (KD-sensitivity) "
                       f"score beats the {base} score, one-shot", f"{s}.oneshot_taylor_bpb",
                       "<", f"{s}.oneshot_{base}_bpb", "sensitivity-based importance"))
  for base, paper in (("drop", "slimming beats expert pruning (Seer-MoE) at aggressive "
                               "ratios"),
                      ("msmoe", "slimming beats merging (M-SMoE) at aggressive ratios")):
    out.append(Claim(f"slim_vs_{base}", f"last target: multi-stage slimming beats {base} at "
                     "equal expert parameters (bits per byte)", "summary.target_1.multistage_bpb",
                     "<", f"summary.target_1.{base}_bpb", paper))
  out.append(Claim("slim_tasks", "last target: multi-stage slimming's task accuracy at least "
                   "M-SMoE's", "summary.target_1.multistage_task_acc", ">=",
                   "summary.target_1.msmoe_task_acc", "Phi-mini-MoE ~ Llama-3.1-8B MMLU"))
  return tuple(out)


EXPERIMENT = Experiment(
    name="slimmoe",
    paper="SlimMoE: Structured Compression of Large MoE Models via Expert Slimming and "
          "Distillation (Microsoft, arXiv 2506.18349)",
    config="configs/slimmoe.py",
    run=run,
    claims=_claims(),
)
