"""`experiments.eaquant`: EAQuant (arXiv 2506.13329) against its rotation base at W4A4 and W3A4.

For each model (a base-model name, a training workdir or a Hugging Face directory) and each
setting "w<bits>a<bits>[g<group>]" (weights per channel or in groups, activations per token):
  baseline  rotation (QuaRot-style, Hadamard or random orthogonal) + GPTQ, A4 per token, the
            router W8A8 with min-max ranges
  smooth    + expert-aware smoothing aggregation
  align     + router logit alignment (KL-searched router clip)
  balance   + expert-level calibration balance
  eaquant   all three
each scored by moe_jax.eval (held-out bits per byte, the task suite, KL / top-1 / per-layer
routing agreement with the float model). Every row uses the same N calibration windows (balance
adds its top-up windows from further passes, as the paper's code does) and the same bits.
Claims: EAQuant loses less bits per byte than the baseline at W4A4 and at W3A4, and router
alignment keeps at least the baseline's routing agreement, on every model.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from moe_jax.eval import EvalConfig, evaluate
from moe_jax.eval.evaluate import cost_row
from moe_jax.models.loading import load_model
from moe_jax.quant import apply, calibrate, eaquant, eaquant_report
from moe_jax.quant.moequant_experiment import CalibrationConfig, check_grid, data_and_scale
from moe_jax.utils.config import Section
from moe_jax.utils.experiment import Claim, Experiment
from moe_jax.utils.reporting import progress

METHODS = {"baseline": {}, "smooth": {"smooth": True}, "align": {"align": True},
           "balance": {"balance": True},
           "eaquant": {"smooth": True, "align": True, "balance": True}}
SETTING = re.compile(r"w([2-8])a([2-8])(?:g(\d+))?$")
PASS_SEED = 1000  # calibration pass p draws its windows with seed + PASS_SEED * p


@dataclasses.dataclass(frozen=True)
class EAQuantConfig(Section):
  """models: base-model names (optionally :quick) or paths; dtype: a HF checkpoint's dtype ("":
  its own); settings: "w<bits>a<bits>[g<group>]"; methods: keys of METHODS; recipe: what every
  row shares (each row sets w_bits, group_size, act.bits and the pieces); calibration, eval."""
  models: tuple[str, ...] = ("tiny_moe", "fine_shared")
  dtype: str = ""
  settings: tuple[str, ...] = ("w4a4", "w3a4")
  methods: tuple[str, ...] = tuple(METHODS)
  recipe: eaquant.EAQuantRecipe = eaquant.EAQuantRecipe()
  calibration: CalibrationConfig = CalibrationConfig()
  eval: EvalConfig = EvalConfig()

  def __post_init__(self):
    check_grid(self, SETTING, "w<bits>a<bits>[g<group>]", "w4a4, w3a4 or w4a4g64", METHODS)


def recipe(config: EAQuantConfig, method: str, setting: str, model) -> eaquant.EAQuantRecipe:
  """The row's recipe: config.recipe with the setting's bits and group (for "g<n>", the largest
  group <= n that every input width of `model` allows) and the method's pieces."""
  w_bits, a_bits, wanted = SETTING.match(setting).groups()
  group = apply.largest_group(model, int(wanted)) if wanted else 0
  act = dataclasses.replace(config.recipe.act, bits=int(a_bits))
  pieces = {p: METHODS[method].get(p, False) for p in ("smooth", "align", "balance")}
  return dataclasses.replace(config.recipe, w_bits=int(w_bits), group_size=group, act=act,
                             **pieces)


def _row(result: dict, float_result: dict, q: eaquant.EAQuantModel) -> dict:
  report = q.report
  counts = report["gptq_tokens_per_expert"]
  return {**cost_row(result, float_result),
          "routing": result.get("agreement", {}).get("routing", {}),
          "router_ratio": float(np.mean([r["ratio"] for r in report["routers"].values()]))
          if report["routers"] else None,
          "top_up_windows": report["calibration"].get("top_up_windows", 0),
          "min_tokens": int(min(min(c) for c in counts.values())) if counts else None,
          "rtn_fallback": report["rtn_fallback"], "quant_seconds": report["seconds"],
          "report": report}


def run_model(config: EAQuantConfig, spec: str) -> dict:
  """Every setting x method on one model; the results of eaquant_report's per-model tables."""
  model = load_model(spec, dtype=config.dtype or None)
  c, e = config.calibration, config.eval
  windows = lambda seed: calibrate.corpus_windows(model, e.data, c.num_samples, c.seq_len, seed,
                                                  e.tokenizer)
  base = windows(c.seed)
  more = lambda p: windows(c.seed + PASS_SEED * p)
  float_result = evaluate(model, e)
  rows = {s: {} for s in config.settings}
  cells = [(s, m) for s in config.settings for m in config.methods]
  for setting, method in progress(cells, desc=f"eaquant {spec}"):
    q = eaquant.quantize(model, recipe(config, method, setting, model), base, more,
                         c.batch_size)
    rows[setting][method] = _row(evaluate(q.model, e, reference=model), float_result, q)
  m = model.cfg
  scale = (f"{m.num_layers} layers, d_model {m.d_model}, {m.moe.num_experts} experts of width "
           f"{m.moe.d_ff}, top-{m.moe.top_k}" + (f", shared expert {m.moe.shared_d_ff}"
                                                 if m.moe.shared_d_ff else ""))
  return {"source": model.source, "scale": scale,
          "group_size": {s: recipe(config, "baseline", s, model).group_size
                         for s in config.settings},
          "float": {"bpb": float_result["bpb"]["all"],
                    "task_mean": float_result.get("task_mean", {}).get("acc")},
          "rows": rows}


def summary(models: dict) -> dict:
  """The claims' numbers, worst over models: (EAQuant - baseline) bpb loss per setting, and the
  smallest (align - baseline) routing agreement over settings; absent where rows lack."""
  out = {}
  settings = {s for r in models.values() for s in r["rows"]}
  for s in sorted(settings):
    gaps = [r["rows"][s]["eaquant"]["bpb_loss"] - r["rows"][s]["baseline"]["bpb_loss"]
            for r in models.values() if {"eaquant", "baseline"} <= set(r["rows"].get(s, {}))]
    if gaps and len(gaps) == len(models):
      out[f"{s}_eaquant_minus_baseline"] = max(gaps)
  gains = [r["rows"][s]["align"]["routing_agreement"] - r["rows"][s]["baseline"]
           ["routing_agreement"] for r in models.values() for s in r["rows"]
           if {"align", "baseline"} <= set(r["rows"][s])]
  if gains:
    out["align_routing_gain"] = min(gains)
  return out


def run(config: EAQuantConfig, workdir: str) -> dict:
  """Every model of config.models; returns the contract's results."""
  models = {spec: run_model(config, spec) for spec in config.models}
  data, scale = data_and_scale(config, models)
  results = {"models": models, "summary": summary(models), "data": data, "scale": scale,
             "paper": eaquant_report.PAPER}
  results["markdown"] = eaquant_report.markdown(results, config)
  eaquant_report.plots(results, workdir)
  return results


EXPERIMENT = Experiment(
    name="eaquant",
    paper="EAQuant: expert-aware post-training quantization of MoE models (arXiv 2506.13329)",
    config="configs/eaquant.py",
    run=run,
    claims=(
        Claim("eaquant_w4a4", "At W4A4, EAQuant loses less held-out bits per byte than its "
              "rotation + GPTQ baseline (worst over models: EAQuant's bpb loss minus the "
              "baseline's)", "summary.w4a4_eaquant_minus_baseline", "<", 0.0,
              "+1.15 to +2.28 average accuracy points over the baseline (W4A4, W3A4; 3 models)"),
        Claim("eaquant_w3a4", "At W3A4, EAQuant loses less held-out bits per byte than the "
              "baseline (worst over models)", "summary.w3a4_eaquant_minus_baseline", "<", 0.0,
              "largest gains in reasoning tasks"),
        Claim("router_alignment", "The KL-aligned router keeps at least the baseline's routing "
              "agreement with the float model (worst over models and settings: align minus "
              "baseline)", "summary.align_routing_gain", ">=", 0.0,
              "router logit alignment reduces expert-selection shifts"),
    ),
)
