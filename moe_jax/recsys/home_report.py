"""HoME's result tables and plots, from the results `home_experiment.run` measured.

Tables: one row per model (AUC / GAUC means and the paired difference to MMoE over seeds, expert
diagnostics), then the test AUC of every task. Plots: gate_heatmaps.png (mean gate weight each
task puts on each expert of the last level), expert_diagnostics.png (per-expert fraction of
exactly-zero activations; per-expert output mean and std).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from moe_jax.utils.reporting import markdown_table, save_figure

if TYPE_CHECKING:
  from moe_jax.recsys.home_experiment import HomeExperimentConfig


def _pm(entry: dict, key: str) -> str:
  return f"{entry[key]:.4f} ± {entry[key + '_std']:.4f}"


def _delta(entry: dict, base: dict | None, key: str) -> str:
  """Paired over seeds (each seed's data draw is shared by every model): mean ± std."""
  if base is None:
    return "-"
  d = np.asarray(entry[key + "_per_seed"]) - np.asarray(base[key + "_per_seed"])
  return f"{d.mean():+.4f} ± {d.std():.4f}"


def markdown(results: dict, config: HomeExperimentConfig) -> str:
  """The model table and the per-task table of `run`'s results."""
  entries, names = results["models"], results["tasks"]
  base = entries.get("mmoe")
  rows = [[name, r["params"], _pm(r, "mean_auc"), _delta(r, base, "mean_auc"),
           _pm(r, "sparse_auc"), _delta(r, base, "sparse_auc"), r["mean_gauc"],
           r["sparse_gauc"], r["max_zero_frac"], r["expert_std_ratio"],
           "-" if r["sparse_own_share"] is None else f"{r['sparse_own_share']:.3f}",
           f"{r['seconds']:.0f}"] for name, r in entries.items()]
  t = config.train
  head = (f"## HoME and baselines on {results['data']}\n\n"
          f"Same data, {t.steps} Adam steps (batch {t.batch_size}, lr {t.learning_rate}) and "
          f"seeds {list(config.seeds)} for every model; mean ± std over seeds. Sparse tasks "
          f"(rate <= {config.sparse_rate}): {', '.join(results['sparse_tasks'])}. CPU-scale "
          "sizes (see configs/home.py). Δ: paired difference to mmoe per seed (mean ± std). Max "
          "zero frac: the largest per-expert fraction of exactly-zero activations. Expert std "
          "max/min: spread of the experts' output scales (1 = aligned). Own-expert share: gate "
          "weight sparse tasks put on their task-specific experts (last level).\n\n")
  table = markdown_table(
      ["model", "params", "mean AUC", "Δ vs mmoe", "sparse AUC", "Δ vs mmoe", "mean GAUC",
       "sparse GAUC", "max zero frac", "expert std max/min", "sparse own-expert share",
       "train+eval s"], rows)
  rates = results["positive_rates"]
  per_task = markdown_table(
      ["model"] + [f"{n} ({rates[k]:.3f})" for k, n in enumerate(names)],
      [[name] + list(r["task_auc"]) for name, r in entries.items()])
  return f"{head}{table}\n\nPer-task test AUC (train positive rate):\n\n{per_task}\n"


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_gates(diagnostics: dict, names: list[str], workdir: str) -> None:
  """gate_heatmaps.png: task x expert mean gate weight of each gated model's last level."""
  gated = [n for n in diagnostics if "gate" in diagnostics[n]]
  if not gated:
    return
  plt = _pyplot()
  cols = min(len(gated), 5)
  rows = -(-len(gated) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
  for ax in axes.flat[len(gated):]:
    ax.axis("off")
  for ax, name in zip(axes.flat, gated):
    g = diagnostics[name]["gate"]
    ax.imshow(g, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_title(name, fontsize=8)
    ax.set_xlabel("expert (last level)", fontsize=7)
    ax.set_yticks(range(g.shape[0]))
    ax.set_yticklabels((names + ["shared"])[:g.shape[0]], fontsize=6)
  fig.suptitle("mean gate weight, task x expert (seed mean)")
  fig.tight_layout()
  save_figure(fig, workdir, "gate_heatmaps")


def plot_experts(diagnostics: dict, workdir: str) -> None:
  """expert_diagnostics.png: per-expert zero fraction, and output mean ± std, of every model."""
  plt = _pyplot()
  fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(9, 6))
  for i, (name, d) in enumerate(diagnostics.items()):
    x = np.arange(d["zero_frac"].size) + 0.1 * i
    ax0.plot(x, d["zero_frac"], "o", ms=3, label=name)
    ax1.errorbar(x, d["out_mean"], yerr=d["out_std"], fmt="o", ms=3, label=name)
  ax0.set_ylabel("fraction of zero activations")
  ax0.legend(fontsize=6, ncol=3)
  ax1.set_ylabel("expert output mean ± std")
  ax1.set_xlabel("expert index (all levels)")
  save_figure(fig, workdir, "expert_diagnostics")
