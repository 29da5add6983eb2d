"""Tables and plots of `experiments.eaquant` (moe_jax/quant/eaquant_experiment.py).

Per model: one row per setting x method (held-out bits per byte and its loss against the float
model, the task suite's mean accuracy, KL / top-1 / routing agreement with the float model, the
routers' mean clip ratio, the balance's top-up windows, the fewest GPTQ calibration tokens of
any expert, RTN fallbacks, seconds), the routing agreement per MoE layer, and the paper's
reported gain beside ours. Plots: each method's bits-per-byte loss minus the baseline's, per
setting (bpb_loss.png); routing agreement per layer (routing.png).
"""
from __future__ import annotations

import numpy as np

from moe_jax.utils.reporting import markdown_table, save_figure

# EAQuant's abstract (v2): average accuracy gains over the baseline at W4A4 / W3A4 on three MoE
# models (OLMoE-1B-7B, DeepSeek-MoE-16B, a third); the per-table values are not verified here.
PAPER = {"gain_points_low": 1.15, "gain_points_high": 2.28,
         "where": "average over zero-shot tasks, W4A4 and W3A4, three MoE models; most in "
                  "reasoning tasks"}
LABELS = {"baseline": "rotation + GPTQ (baseline)", "smooth": "+ smoothing aggregation",
          "align": "+ router logit alignment", "balance": "+ calibration balance",
          "eaquant": "EAQuant (all three)"}


def _setting(setting: str, group: int) -> str:
  return setting.split("g")[0].upper() + (f" g{group}" if group else " per-channel")


def _num(x, fmt=".4f"):
  return "-" if x is None else format(x, fmt)


def model_table(r: dict) -> str:
  """The rows of one model (results["models"][spec])."""
  f = r["float"]
  rows = [["float", "-", f["bpb"], "-", _num(f["task_mean"], ".3f")] + ["-"] * 8]
  for setting, methods in r["rows"].items():
    for method, row in methods.items():
      rows.append([_setting(setting, r["group_size"][setting]), LABELS[method], row["bpb"],
                   _num(row["bpb_loss"], "+.4f"), _num(row["task_mean"], ".3f"),
                   _num(row["kl"]), _num(row["top1_agreement"], ".3f"),
                   _num(row["routing_agreement"], ".3f"), _num(row["router_ratio"], ".3f"),
                   row["top_up_windows"], "-" if row["min_tokens"] is None else row["min_tokens"],
                   row["rtn_fallback"], f"{row['quant_seconds']:.1f}"])
  return markdown_table(["setting", "method", "bpb all", "Δ bpb", "task mean acc",
                         "KL(float||q)", "top-1 agr.", "routing agr.", "router clip",
                         "top-up windows", "min tokens/expert", "RTN fallbacks", "quant s"],
                        rows)


def routing_table(r: dict) -> str:
  """Routing agreement with the float model per MoE layer, one row per setting x method."""
  layers = sorted({l for m in r["rows"].values() for row in m.values() for l in row["routing"]},
                  key=lambda name: int(name.split("_")[-1]))
  rows = [[_setting(s, r["group_size"][s]), LABELS[m]] + [row["routing"].get(l) for l in layers]
          for s, methods in r["rows"].items() for m, row in methods.items()]
  return markdown_table(["setting", "method"] + layers, rows, floatfmt=".3f")


def paper_table(results: dict) -> str:
  p = results["paper"]
  rows = [["paper", p["where"], f"+{p['gain_points_low']} to +{p['gain_points_high']}", "-"]]
  for spec, r in results["models"].items():
    for s, methods in r["rows"].items():
      if {"eaquant", "baseline"} <= set(methods):
        e, b = methods["eaquant"], methods["baseline"]
        gain = (None if e["task_mean"] is None or b["task_mean"] is None
                else 100 * (e["task_mean"] - b["task_mean"]))
        rows.append([spec, f"{s.upper()}, task mean accuracy", _num(gain, "+.2f"),
                     _num(e["bpb_loss"] - b["bpb_loss"], "+.4f")])
  return markdown_table(["model", "measure", "EAQuant - baseline (points)",
                         "EAQuant - baseline (Δ bpb)"], rows)


def markdown(results: dict, config) -> str:
  """results.md: the header, per model its tables, the paper's figures beside ours."""
  c, rc = config.calibration, config.recipe
  parts = [f"EAQuant vs its rotation base; data: {results['data']}; calibration: "
           f"{c.num_samples} x {c.seq_len} tokens (corpus windows), GPTQ weights (symmetric"
           f"{', MSE clip' if rc.options.mse_clip else ''}), activations per token (clip "
           f"{rc.act.clip_ratio}), router W{rc.act.router_bits}A{rc.act.router_bits}, rotation "
           f"{rc.rotation}; smoothing alpha {rc.alpha}; router clip grid {rc.clip_low}..1 "
           f"({rc.clip_grid}); balance ratio {rc.balance_ratio}, up to {rc.max_passes} more "
           "passes. Δ bpb: bits per byte minus the float model's (lower is better)."]
  for spec, r in results["models"].items():
    parts += [f"## {spec} ({r['scale']})", model_table(r),
              "Routing agreement with the float model per MoE layer (top-k sets equal):",
              routing_table(r)]
  parts += ["## The paper's figures beside ours (for direction)", paper_table(results),
            "Our task mean is the suite's stand-in for the papers' zero-shot averages "
            "(moe_jax/eval/tasks.py)."]
  return "\n\n".join(parts)


def plots(results: dict, workdir: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  models = results["models"]
  fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
  for ax, (spec, r) in zip(axes[0], models.items()):
    for k, (s, methods) in enumerate(r["rows"].items()):
      names = list(methods)
      base = methods.get("baseline", {}).get("bpb_loss", 0.0)
      ax.barh(np.arange(len(names)) + 0.4 * k, [methods[m]["bpb_loss"] - base for m in names],
              0.4, label=_setting(s, r["group_size"][s]))
      ax.set_yticks(np.arange(len(names)) + 0.2, [LABELS[m] for m in names], fontsize=7)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("Δ bpb minus the baseline's (left of 0: better)")
    ax.set_title(spec)
    ax.legend(fontsize=7)
  save_figure(fig, workdir, "bpb_loss")
  fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
  for ax, (spec, r) in zip(axes[0], models.items()):
    for s, methods in r["rows"].items():
      for method, row in methods.items():
        layers = sorted(row["routing"], key=lambda name: int(name.split("_")[-1]))
        ax.plot(range(len(layers)), [row["routing"][l] for l in layers], marker=".",
                label=f"{s} {method}")
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("routing agreement with float")
    ax.set_title(spec)
    ax.legend(fontsize=6)
  save_figure(fig, workdir, "routing")
