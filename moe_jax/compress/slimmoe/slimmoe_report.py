"""SlimMoE's report: the claims' summary, the results table and the bits-per-byte plot."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from moe_jax.compress.slimmoe.importance import SCORES
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.reporting import markdown_table, save_figure

ROWS = tuple(f"oneshot_{s}" for s in SCORES) + ("multistage",)
BASELINES = ("drop", "msmoe")


def summary(results: dict) -> dict:
  """Flat numbers the claims read: per target each row's bpb and task accuracy."""
  out = {}
  for j, entry in enumerate(results["targets"].values()):
    rows = {**entry["rows"], **entry.get("baselines", {})}
    out[f"target_{j}"] = {f"{name}_{m}": rows[name][m] if name in rows else math.nan
                          for name in ROWS + BASELINES for m in ("bpb", "task_acc")}
  return out


def markdown(config, teacher: LoadedModel, results: dict) -> str:
  """The results table (every row with its parameters) and the setting in a few lines."""
  cfg, full = teacher.cfg, results["full"]
  rows = [["1", "full model", f"{full['bpb']:.4f}", "-", f"{full['task_acc']:.3f}", "-",
           full["params"], full["active_params"]]]
  for entry in results["targets"].values():
    for name, r in {**entry["rows"], **entry.get("baselines", {})}.items():
      shape = (f"{r['experts']} experts" if name in BASELINES
               else f"width {r['expert_width']}")
      rows.append([f"{entry['target']:g}", f"{name} ({shape})", f"{r['bpb']:.4f}",
                   f"{r['bpb'] - full['bpb']:+.4f}", f"{r['task_acc']:.3f}", f"{r['kl']:.4f}",
                   r["params"], r["active_params"]])
  table = markdown_table(["kept expert fraction", "method", "bpb all", "Δbpb vs full",
                          "task acc", "KL(full‖row)", "params", "active params"], rows)
  k = config.kd
  return (f"SlimMoE on {config.model} ({len(cfg.moe_layer_ids())} MoE layers, "
          f"{cfg.moe.num_experts} experts of width {cfg.moe.d_ff}, top-{cfg.moe.top_k}). Every "
          f"row distils {results['kd_tokens']} tokens ({k.num_steps} x {k.batch_size} x "
          f"{k.seq_len}) from the full model: KL on its top-{config.schedule.kd_top_k} logits "
          f"at T = {config.schedule.kd_temperature} (weight {config.schedule.kd_alpha}) + CE "
          f"(weight {config.schedule.ce_weight}).\n\n{table}")


def plot(results: dict, workdir: str) -> None:
  """DIR/slimmoe_bpb.png: every row's held-out bits per byte less the full model's, per target."""
  fig, ax = plt.subplots(figsize=(8, 4))
  entries = list(results["targets"].values())
  names = list(ROWS + BASELINES)
  for i, entry in enumerate(entries):
    rows = {**entry["rows"], **entry.get("baselines", {})}
    delta = [rows[n]["bpb"] - results["full"]["bpb"] if n in rows else np.nan for n in names]
    ax.bar(np.arange(len(names)) + 0.4 * i, delta, 0.4, label=f"kept {entry['target']:g}")
  ax.axhline(0.0, color="k", lw=0.8)
  ax.set_xticks(np.arange(len(names)) + 0.2, names, rotation=20)
  ax.set_ylabel("held-out bits per byte - full model's")
  ax.legend()
  save_figure(fig, workdir, "slimmoe_bpb")
