"""`experiments.mcsmoe`: MC-SMoE (Li et al., ICLR 2024, arXiv 2310.01334) on any MoE LM.

On a model (a base-model name, a training workdir or a Hugging Face directory):
  1. calibration (calibration.py): usage frequencies and router-logit similarity from one
     routing trace over windows of the training split;
  2. permutation alignment of every layer's experts to its expert 0 (alignment.py);
  3. for each target (average experts per MoE layer: 16 -> 8 and 16 -> 4 on tiny_moe), the
     global group budget and routing-guided groups (grouping.py), then the rows:
       msmoe     M-SMoE: aligned, routing-guided groups, frequency-weighted merge
       average   plain averaging within the same groups (uniform weights, no alignment)
       random    random groups of the same sizes, aligned, frequency-weighted
       drop      the least-used experts removed with their router columns (the target count
                 in every layer: one config holds one router width)
       no_align  M-SMoE without permutation alignment
       uniform   M-SMoE with uniform weights (the repo's merge-by-averaging script, which
                 runs on the permuted checkpoint)
       mcsmoe    MC-SMoE: M-SMoE's merged model compressed by LoSparse (losparse_train.py)
     each scored as is ("zero": no training; MC-SMoE's is the one-shot LoSparse) and after
     knowledge-distillation recovery ("kd": CE + 0.2 KL at T = 2, routers frozen) with the
     same token budget for every row (recovery.py; MC-SMoE's LoSparse trains in that budget);
  4. every row (and the full model) through one evaluation (moe_jax/eval: held-out bits per
     byte, the task suite, KL and top-1 agreement with the full model) and its costs
     (costs.py: parameters, expert bytes, FLOPs per token with measured expert evaluations);
  5. the export of the first target's M-SMoE (KD) model to the Hugging Face format and what
     each way costs (export.py).
Claims compare M-SMoE with the baselines and MC-SMoE with the paper's headline.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from moe_jax.compress.mcsmoe import (calibration, costs, export, grouping, losparse_train,
                                     mcsmoe_report, merged_lm, recovery)
from moe_jax.compress.mcsmoe.losparse_train import LoSparseConfig
from moe_jax.data.iterator import WindowIterator, eval_windows
from moe_jax.eval import EvalConfig, evaluate
from moe_jax.eval.encoding import encoded_split, make_encoder
from moe_jax.models.loading import LoadedModel, load_model
from moe_jax.train.distill import kd_objective
from moe_jax.train.loop import TrainConfig
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require
from moe_jax.utils.experiment import Claim, Experiment

VARIANTS = ("msmoe", "average", "random", "drop", "no_align", "uniform", "mcsmoe")


@dataclasses.dataclass(frozen=True)
class MCSMoEConfig(Section):
  """model: a base-model name (optionally :quick), a HF directory or a training workdir; dtype:
  a HF checkpoint's dtype ("": its own); eval: what every row is scored on, its data's
  held-out split; its training split calibrates and distils; targets: average experts per MoE
  layer after merging (the global budget is targets x MoE layers); variants: the rows (module
  docstring); calibration_windows x calibration_seq_len: calibration tokens; reference_expert:
  the alignment's reference; kd: the recovery run of every row (num_steps x batch_size x
  seq_len tokens); kd_alpha, kd_temperature: the distillation loss; losparse: MC-SMoE's
  compression; usage_windows: held-out windows of eval.seq_len on which experts evaluated per
  token are counted; batch_size: windows per traced / counted forward; export: the HF export
  study; seed: random grouping."""
  model: str = "tiny_moe"
  dtype: str = ""
  eval: EvalConfig = EvalConfig()
  targets: tuple[int, ...] = (8, 4)
  variants: tuple[str, ...] = VARIANTS
  calibration_windows: int = 64
  calibration_seq_len: int = 256
  reference_expert: int = 0
  kd: TrainConfig = TrainConfig()
  kd_alpha: float = 0.2
  kd_temperature: float = 2.0
  losparse: LoSparseConfig = LoSparseConfig()
  usage_windows: int = 16
  batch_size: int = 16
  export: bool = True
  seed: int = 0

  def __post_init__(self):
    require(bool(self.model), "model", "is empty", "give a base-model name or a path")
    check_choice("dtype", self.dtype, ("", "float32", "bfloat16", "float16"))
    require(bool(self.targets) and min(self.targets) >= 1, "targets", f"must be >= 1 experts "
            f"per layer, got {self.targets}", "give e.g. 8,4")
    for v in self.variants:
      check_choice("variants", v, VARIANTS)
    require("mcsmoe" not in self.variants or "msmoe" in self.variants, "variants",
            "mcsmoe compresses M-SMoE's merged model", "list msmoe too")
    for name in ("calibration_windows", "calibration_seq_len", "usage_windows", "batch_size"):
      check_positive(name, getattr(self, name))
    require(self.kd_alpha >= 0 and self.kd_temperature > 0, "kd_alpha", f"kd_alpha "
            f"{self.kd_alpha}, kd_temperature {self.kd_temperature}", "use 0.2 and 2.0")


@dataclasses.dataclass(frozen=True)
class Text:
  """The token streams of a run: the training split (calibration, distillation), the held-out
  windows train_lm logs, and held-out windows for counting expert evaluations."""
  train: np.ndarray
  kd_eval: dict
  usage: np.ndarray


def _text(config: MCSMoEConfig, model: LoadedModel) -> Text:
  train, held = encoded_split(config.eval.data, make_encoder(config.eval.tokenizer, model),
                              "eval.data.val_every")
  return Text(train, {"held_out": eval_windows(held, config.kd.seq_len, config.batch_size)},
              calibration.windows(held, config.eval.seq_len, config.usage_windows))


def _builders(config: MCSMoEConfig, model: LoadedModel, aligned: LoadedModel,
              cal: calibration.Calibration, target: int) -> tuple[dict, list]:
  """variant -> a function building its compressed model (before recovery), and the groups."""
  groups = grouping.global_grouping(cal.freqs, cal.similarity, target)
  rng = np.random.default_rng([config.seed, target])
  shuffled = [grouping.random_like(g, f, rng) for g, f in zip(groups, cal.freqs)]
  kept = [grouping.drop(f, min(target, len(f))).dominant for f in cal.freqs]
  builders = {
      "msmoe": lambda: merged_lm.merge(aligned, groups, cal.freqs),
      "average": lambda: merged_lm.merge(model, groups),
      "random": lambda: merged_lm.merge(aligned, shuffled, cal.freqs),
      "drop": lambda: merged_lm.drop(model, kept),
      "no_align": lambda: merged_lm.merge(model, groups, cal.freqs),
      "uniform": lambda: merged_lm.merge(aligned, groups),
  }
  return builders, groups


def _score(model: LoadedModel, config: MCSMoEConfig, text: Text,
           teacher: LoadedModel | None = None, storage: dict | None = None,
           routing: bool = True) -> dict:
  """One row: the evaluation (against the full model `teacher` when given) and the costs;
  `routing`: whether expert ids mean the teacher's (routing agreement)."""
  r = evaluate(model, dataclasses.replace(config.eval, routing_agreement=routing), teacher)
  usage = costs.expert_usage(model, text.usage, config.batch_size)
  agree = r.get("agreement", {"kl": 0.0, "top1": 1.0, "routing_mean": 1.0})
  row = {"bpb": r["bpb"]["all"], "bpb_domains": r["bpb"], "top1": r["top1"]["all"],
         "kl": agree["kl"], "top1_agreement": agree["top1"],
         "routing_agreement": agree.get("routing_mean"),
         "experts_per_token": float(np.mean(np.sum(usage, axis=-1))),
         **costs.model_cost(model, usage, config.eval.seq_len, storage)}
  if "tasks" in r:
    row.update(task_acc=r["task_mean"]["acc"],
               tasks={t: v["acc"] for t, v in r["tasks"].items()})
  return row


def _counts(model: LoadedModel) -> dict[int, int]:
  return dict(zip(model.cfg.moe_layer_ids(), costs.referenced(model)))


def _mcsmoe_rows(merged: LoadedModel, teacher: LoadedModel, config: MCSMoEConfig, text: Text,
                 workdir: str) -> dict:
  """MC-SMoE's two rows: one-shot LoSparse, and LoSparse trained with distillation."""
  counts = _counts(merged)
  objective = kd_objective(teacher.module, teacher.variables, alpha=config.kd_alpha,
                           temperature=config.kd_temperature)
  loss = lambda logits, batch: objective.objective(logits, batch, objective.objective_args)[0]
  data = WindowIterator(text.train, config.kd.batch_size, config.kd.seq_len, config.seed)
  batches = [next(data) for _ in range(config.losparse.one_shot_batches)]
  zero, factors = losparse_train.one_shot(merged, counts, config.losparse, loss, batches)
  rows = {"zero": _score(zero, config, text, teacher, losparse_train.storage(factors))}
  post, init = losparse_train.hooks(merged.variables["params"], counts, config.losparse,
                                    config.kd)
  trained, run = recovery.distill(merged, teacher, text.train, text.kd_eval, config.kd, workdir,
                                  alpha=config.kd_alpha, temperature=config.kd_temperature,
                                  trainable=losparse_train.frozen, post_update=post,
                                  init_hook_state=init, desc="kd mcsmoe")
  rows["kd"] = _score(trained, config, text, teacher,
                      losparse_train.storage(run["hook_state"]["factors"]))
  return rows


def _export_study(merged: LoadedModel, config: MCSMoEConfig, text: Text, cal_windows,
                  workdir: str) -> dict:
  """Each export choice against the merged model: quality, bytes, transformers' logits."""
  ev = dataclasses.replace(config.eval, tasks=(), routing_agreement=False)
  usage = costs.expert_usage(merged, text.usage, config.batch_size)
  out = {"shared_slot_share": export.shared_slot_share(merged, usage),
         "merged_bpb": evaluate(merged, ev)["bpb"]["all"]}
  models = {"duplicate": merged_lm.duplicate(merged),
            "group_router": export.group_router(merged, cal_windows, config.batch_size),
            "lse_groups": export.lse_groups(merged)}
  probe = text.usage[:2]
  for name, model in models.items():
    r = evaluate(model, ev, reference=merged)
    row = {"bpb": r["bpb"]["all"], "kl": r["agreement"]["kl"],
           "top1_agreement": r["agreement"]["top1"],
           "expert_params": model.cfg.moe.num_experts * len(model.cfg.moe_layer_ids())
           * costs.dense_expert_params(model)}
    if name != "lse_groups":
      path = os.path.join(workdir, "export", name)
      row["safetensors_bytes"] = (export.save_merged(merged, path) if name == "duplicate"
                                  else export.save(model, path))
      try:
        row["transformers_max_abs_diff"] = export.transformers_gap(model, path, probe)
      except ImportError:
        row["transformers_max_abs_diff"] = None  # torch / transformers not installed
    out[name] = row
  back = export.load_merged(os.path.join(workdir, "export", "duplicate"))
  out["round_trip"] = {"stored_experts": back.cfg.moe.num_experts,
                       "max_abs_diff": export.logit_gap(back, merged, probe)}
  return out


def run(config: MCSMoEConfig, workdir: str) -> dict:
  """The recipe of the module docstring; returns the contract's results."""
  teacher = load_model(config.model, dtype=config.dtype or None)
  require(not teacher.cfg.moe.num_slots, "model", "is already merged", "give the original")
  e = teacher.cfg.moe.num_experts
  require(max(config.targets) <= e, "targets", f"{list(config.targets)} asks for more experts "
          f"per layer than the model's {e}", f"give targets in [1, {e}]")
  text = _text(config, teacher)
  cal_windows = calibration.windows(text.train, config.calibration_seq_len,
                                    config.calibration_windows)
  cal = calibration.calibrate(teacher, cal_windows, config.batch_size)
  aligned = merged_lm.align(teacher, config.reference_expert)
  results = {"model": config.model, "source": teacher.source,
             "full": _score(teacher, config, text), "targets": {}, "calibration_tokens": cal.tokens,
             "kd_tokens": config.kd.num_steps * config.kd.batch_size * config.kd.seq_len,
             "rank": losparse_train.scaled_rank(teacher.cfg.d_model, teacher.cfg.moe.d_ff)
             if not config.losparse.rank else config.losparse.rank}
  for j, target in enumerate(config.targets):
    builders, groups = _builders(config, teacher, aligned, cal, target)
    rows, models = {}, {}  # models: variant -> (as built, after KD)
    for variant in (v for v in VARIANTS if v in config.variants and v != "mcsmoe"):
      if variant == "drop" and target < teacher.cfg.moe.top_k:
        continue  # fewer experts than top-k: no drop model
      student = builders[variant]()
      routing = variant != "drop"
      trained, _ = recovery.distill(student, teacher, text.train, text.kd_eval, config.kd,
                                    os.path.join(workdir, "kd", str(target), variant),
                                    alpha=config.kd_alpha, temperature=config.kd_temperature,
                                    desc=f"kd {variant} {target}")
      rows[variant] = {"zero": _score(student, config, text, teacher, routing=routing),
                       "kd": _score(trained, config, text, teacher, routing=routing)}
      models[variant] = (student, trained)
    if "mcsmoe" in config.variants:
      rows["mcsmoe"] = _mcsmoe_rows(models["msmoe"][0], teacher, config, text,
                                    os.path.join(workdir, "kd", str(target), "mcsmoe"))
    entry = {"target": target, "groups_per_layer": [g.num_groups for g in groups],
             "rows": rows}
    if j == 0 and config.export and "msmoe" in models:
      entry["export"] = _export_study(models["msmoe"][1], config, text, cal_windows, workdir)
    results["targets"][f"target_{j}"] = entry
  results["summary"] = mcsmoe_report.summary(results)
  results.update(mcsmoe_report.contract(config, teacher, results))
  mcsmoe_report.plot(results, workdir)
  return results


def _claims() -> tuple[Claim, ...]:
  out = []
  for j, name in ((0, "first target (16 -> 8 on tiny_moe)"), (1, "second target (16 -> 4)")):
    s = f"summary.target_{j}"
    for base in mcsmoe_report.BASELINES:
      out.append(Claim(f"msmoe_bpb_vs_{base}_{j}", f"{name}: M-SMoE (KD) has lower held-out "
                       f"bits per byte than {base} (KD)", f"{s}.msmoe_bpb", "<",
                       f"{s}.{base}_bpb", "M-SMoE beats averaging, random merging and "
                       "dropping at equal expert count (Tables 2-4)"))
    out.append(Claim(f"msmoe_tasks_{j}", f"{name}: M-SMoE (KD) task accuracy at least the best "
                     "baseline's (KD)", f"{s}.msmoe_task_acc", ">=", f"{s}.best_baseline_task_acc",
                     "M-SMoE beats the baselines on 8 tasks (Tables 2-4)"))
  s = "summary.target_0"
  out += [
      Claim("mcsmoe_memory", "MC-SMoE (KD, first target) saves >= 80% of the full model's "
            "memory (row-sparse storage)", f"{s}.mcsmoe_memory_saved", ">=", 0.8,
            "up to 80% memory saved with virtually no loss"),
      Claim("mcsmoe_flops", "MC-SMoE (KD, first target) saves >= 20% of the FLOPs per token "
            "(run factored)", f"{s}.mcsmoe_flops_saved", ">=", 0.2,
            "up to 20% FLOPs saved with virtually no loss"),
      Claim("mcsmoe_loss", "MC-SMoE (KD, first target) stays within 2% of the full model's "
            "bits per byte", f"{s}.mcsmoe_bpb_ratio", "<=", 1.02,
            "virtually no performance loss on 8 benchmarks"),
      Claim("mcsmoe_further", "MC-SMoE (KD) costs at most 0.05 bits per byte over M-SMoE (KD)",
            f"{s}.mcsmoe_extra_bpb", "<=", 0.05, "compression after merging loses little "
            "(MC-SMoE vs M-SMoE)"),
  ]
  return tuple(out)


EXPERIMENT = Experiment(
    name="mcsmoe",
    paper="Merge, Then Compress: Demystify Efficient SMoE with Hints from Its Routing Policy "
          "(MC-SMoE; Li et al., ICLR 2024, arXiv 2310.01334)",
    config="configs/mcsmoe.py",
    run=run,
    claims=_claims(),
)
