"""Tables and plots of `experiments.moequant` (moe_jax/quant/moequant_experiment.py).

Per model: one row per weight setting x method (held-out bits per byte and its loss against the
float model, the task suite's mean accuracy, agreement with the float model, the calibration
set's expert-frequency spread and the fewest tokens an expert got, RTN fallbacks, seconds), the
two calibration sets side by side, and the paper's 4-bit averages beside our W4 per-channel
task means. Plots: bits-per-byte loss per method and setting (bpb_loss.png); each expert's
calibration tokens under corpus text and EBSS, sorted (expert_tokens.png).
"""
from __future__ import annotations

import json

import numpy as np

from moe_jax.utils.reporting import markdown_table, save_figure

# MoEQuant's Table R7 (repo Tables_for_R2_NkUk.md): 4-bit weights, 7-task average accuracy.
# Its MoEQuant++ adds QuaRot's rotation to EBSS + AGQ (we do not rotate).
PAPER = {"Mixtral-8x7B": {"fp": 56.80, "gptq": 48.84, "moequant": 55.58},
         "DeepSeek-MoE-16B": {"fp": 40.86, "gptq": 37.38, "moequant": 40.01},
         "Qwen-MoE-14B": {"fp": 51.20, "gptq": 40.16, "moequant": 49.59}}
LABELS = {"rtn": "RTN", "gptq": "GPTQ (corpus)", "gptq_ebss": "GPTQ (EBSS)",
          "gptq_agq": "GPTQ + AGQ (corpus)", "moequant": "EBSS + AGQ (MoEQuant)"}


def _setting(setting: str, group: int) -> str:
  bits = setting[1:].split("g")[0]
  return f"W{bits} g{group}" if group else f"W{bits} per-channel"


def _num(x, fmt=".4f"):
  return "-" if x is None else format(x, fmt)


def model_table(r: dict) -> str:
  """The rows of one model (results["models"][spec])."""
  f = r["float"]
  rows = [["float", "-", f["bpb"], "-", _num(f["task_mean"], ".3f"), "-", "-", "-", "-", "-",
           "-", "-"]]
  for setting, methods in r["rows"].items():
    for method, row in methods.items():
      rows.append([_setting(setting, r["group_size"][setting]), LABELS[method], row["bpb"],
                   _num(row["bpb_loss"], "+.4f"), _num(row["task_mean"], ".3f"),
                   _num(row["kl"]), _num(row["top1_agreement"], ".3f"),
                   _num(row["routing_agreement"], ".3f"), _num(row["frequency_std"]),
                   "-" if row["min_tokens"] is None else row["min_tokens"], row["rtn_fallback"],
                   f"{row['quant_seconds']:.1f}"])
  return markdown_table(["setting", "method", "bpb all", "Δ bpb", "task mean acc",
                         "KL(float||q)", "top-1 agr.", "routing agr.", "calib. freq. std",
                         "min tokens/expert", "RTN fallbacks", "quant s"], rows)


def calibration_table(r: dict) -> str:
  rows = [[name, s["frequency_std"], s["min_tokens"], s["under_threshold"],
           _num(s.get("seconds"), ".1f")] for name, s in r["calibration"].items()]
  return markdown_table(["calibration set", "freq. std (mean over layers)",
                         "min tokens/expert", "experts < 0.5% of tokens", "generation s"], rows)


def paper_table(results: dict) -> str:
  rows = [[name, "paper, 7-task avg acc (%)", *(_num(p[k], ".2f") for k in ("fp", "gptq",
                                                                            "moequant"))]
          for name, p in results["paper"].items()]
  for spec, r in results["models"].items():
    w4 = r["rows"].get("w4", {})
    get = lambda m: _num(w4[m]["task_mean"] * 100, ".2f") if m in w4 and w4[m]["task_mean"] \
        is not None else "-"
    fp = r["float"]["task_mean"]
    rows.append([spec, "ours, task mean acc (%)", _num(fp and fp * 100, ".2f"), get("gptq"),
                 get("moequant")])
  return markdown_table(["model", "measure", "FP", "GPTQ W4", "MoEQuant W4"], rows)


def markdown(results: dict, config) -> str:
  """results.md: the header, per model its tables, the paper's figures, EBSS samples."""
  c, e = config.calibration, config.ebss
  clip = ", MSE clip" if config.quant.mse_clip else ""
  parts = [f"MoEQuant vs RTN / GPTQ, weight-only, symmetric{clip}; data: {results['data']}; "
           f"calibration: {c.num_samples} x {c.seq_len} tokens (corpus windows or EBSS with w "
           f"{e.width}, tau {e.tau}, {e.branch} candidates per beam, sigma over layers "
           f"'{e.spread}'). Δ bpb: bits per byte minus the float model's (lower is better)."]
  for spec, r in results["models"].items():
    parts += [f"## {spec} ({r['scale']})", model_table(r), calibration_table(r)]
    examples = r["calibration"].get("ebss", {}).get("examples")
    if examples:
      parts.append("EBSS samples: " + "; ".join(f"`{json.dumps(x)[1:-1][:80]}`"
                                                 if isinstance(x, str) else f"ids {x[:16]}"
                                                 for x in examples))
  t = results["summary"]
  if "gptq_seconds_max" in t:
    parts.append(f"GPTQ time (calibration passes and every layer, compilation included, "
                 f"evaluation not): slowest row {t['gptq_seconds_max']:.1f} s; median "
                 f"{t['seconds_per_expert_matrix'] * 1e3:.1f} ms per routed expert matrix "
                 "(one batched call per layer and stage, its time divided by E matrices).")
  parts += ["## The paper's figures beside ours (for direction)", paper_table(results),
            "Our task mean is the suite's stand-in for the papers' zero-shot averages "
            "(moe_jax/eval/tasks.py); the paper's MoEQuant row is MoEQuant++ (with QuaRot)."]
  return "\n\n".join(parts)


def bpb_loss_plot(results: dict, workdir: str, labels: dict, setting_label) -> None:
  """bpb_loss.png: per model, bars of each method's bits-per-byte loss per setting; any
  quantization experiment whose results hold models.<spec>.rows.<setting>.<method>.bpb_loss and
  models.<spec>.group_size.<setting>; setting_label(setting, group) names a setting."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  models = results["models"]
  fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
  for ax, (spec, r) in zip(axes[0], models.items()):
    settings = list(r["rows"])
    methods = list(next(iter(r["rows"].values())))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
      ax.bar(np.arange(len(settings)) + k * width, [r["rows"][s][method]["bpb_loss"]
                                                    for s in settings], width,
             label=labels[method])
    ax.set_xticks(np.arange(len(settings)) + 0.4 - width / 2,
                  [setting_label(s, r["group_size"][s]) for s in settings])
    ax.set_ylabel("bits per byte minus float")
    ax.set_title(spec)
    ax.legend(fontsize=7)
  save_figure(fig, workdir, "bpb_loss")


def plots(results: dict, workdir: str) -> None:
  """bpb_loss.png and expert_tokens.png (module docstring)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  bpb_loss_plot(results, workdir, LABELS, _setting)
  models = results["models"]
  fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
  for ax, (spec, r) in zip(axes[0], models.items()):
    for name, s in r["calibration"].items():
      ax.plot(np.sort(np.ravel(s["tokens_per_expert"])), marker=".", label=name)
    ax.set_xlabel("(layer, expert), sorted")
    ax.set_ylabel("calibration assignments (float model)")
    ax.set_yscale("symlog")
    ax.set_title(spec)
    ax.legend()
  save_figure(fig, workdir, "expert_tokens")
