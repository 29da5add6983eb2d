"""The GE / LE / GN run's tables (markdown) and plots (users.png, summary.png, samples.png)."""
from __future__ import annotations

import numpy as np

from moe_jax.customization.costs import PAPER_OVERHEAD
from moe_jax.customization.mixture import METHODS
from moe_jax.utils.reporting import markdown_table, save_figure

LABELS = {"ge": "GE", "le": "LE", "moe": "GE+LE+GN"}
COLORS = {"ge": "tab:gray", "le": "tab:orange", "moe": "tab:blue"}
USER_COLUMNS = {"GE user": "ge_user_acc", "LE user": "le_user_acc", "MoE user": "moe_user_acc",
                "GE generic": "ge_generic_acc", "LE generic": "le_generic_acc",
                "MoE generic": "moe_generic_acc", "to LE (user)": "to_local_user",
                "to LE (generic)": "to_local_generic"}


def markdown(config, results: dict, data_name: str, n_generic: int) -> str:
  """Per user, the summary beside the paper, the gate targets, the costs."""
  r, target = results, results["gn_target"]
  gate = (f"GN target '{target}'" + (
      f" (deviation from 'user data only': GN also sees {config.gn.reference_per_class}/class "
      "generic reference samples)" if target == "source" else " (user data only)"))
  header = "\n".join([
      "## GE / LE / GN customization (arXiv:1811.00056)", "",
      f"Data: {data_name} with {config.users.num_users} simulated users (fixed per-user slant, "
      "stroke width, elastic field and, for some, a personal glyph, applied to held-out samples; "
      "the paper: EMNIST and ten real users' handwriting); "
      f"{config.users.train_per_class} train + {config.users.test_per_class} test samples per "
      f"class per user; generic test {n_generic} samples.",
      f"GE = LeNet5 (frozen); LE and GN read GE's {config.ge.feature_layer} features; hard gate "
      f"at {config.gn.threshold}; {gate}.", ""])
  user_table = markdown_table(
      ["user", "style", *USER_COLUMNS],
      [[u["user"], u["style"], *[u[k] for k in USER_COLUMNS.values()]] for u in r["users"]]
      + [["mean", "", *[r[k] for k in USER_COLUMNS.values()]]], floatfmt=".3f")
  summary_table = markdown_table(
      ["", "ours (mean of users)", "paper (abstract)"],
      [["user accuracy, GE -> GE+LE+GN", f"{r['ge_user_acc']:.3f} -> {r['moe_user_acc']:.3f}",
        "\"significantly enhanced\""],
       ["generic accuracy, GE -> GE+LE+GN",
        f"{r['ge_generic_acc']:.3f} -> {r['moe_generic_acc']:.3f}", "\"almost no degradation\""],
       ["LE + GN overhead, energy proxy", f"{100 * r['overhead']:.2f}%", "~2.5%"],
       ["LE + GN overhead, parameters", f"{100 * r['overhead_params']:.2f}%", "~2.5%"],
       ["LE + GN overhead, FLOPs", f"{100 * r['overhead_flops']:.2f}%", "-"]])
  target_table = markdown_table(
      ["GN target", "MoE user", "MoE generic", "to LE (user)", "to LE (generic)"],
      [[t, a["moe_user_acc"], a["moe_generic_acc"], a["to_local_user"], a["to_local_generic"]]
       for t, a in r["gate_targets"].items()], floatfmt=".3f")
  cost_table = markdown_table(
      ["network", "params", "FLOPs", "memory reads", "energy proxy"],
      [[n.upper(), c["params"], c["flops"], c["reads"], f"{c['energy']:.0f}"]
       for n, c in r["costs"].items()])
  return "\n".join([header, user_table, "", summary_table, "",
                    "Gate target (same LE, same users):", "", target_table, "",
                    f"Costs per example (energy = FLOPs + {config.costs.read_weight} x reads):",
                    "", cost_table])


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_users(rows: list[dict], workdir: str) -> None:
  """users.png: per user, each method's accuracy on the user's and the generic test set."""
  plt = _pyplot()
  n = len(rows)
  cols = min(n, 5)
  nrows = (n + cols - 1) // cols
  fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.0 * nrows), squeeze=False,
                           sharey=True)
  for ax, row in zip(axes.flat, rows):
    for j, m in enumerate(METHODS):
      vals = [row[f"{m}_user_acc"], row[f"{m}_generic_acc"]]
      ax.bar(np.arange(2) + (j - 1) * 0.27, vals, 0.27, color=COLORS[m], label=LABELS[m])
    ax.set_xticks([0, 1], ["user test", "generic test"], fontsize=8)
    ax.set_title(f"user {row['user']}\n{row['style']}", fontsize=7)
    ax.set_ylim(0, 1)
  for ax in list(axes.flat)[n:]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=7, loc="lower left")
  axes.flat[0].set_ylabel("accuracy")
  fig.tight_layout()
  save_figure(fig, workdir, "users")


def plot_summary(rows: list[dict], overhead: dict[str, float], workdir: str) -> None:
  """summary.png: accuracies over users, and LE + GN's overhead beside the paper's ~2.5%."""
  plt = _pyplot()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
  for k, split in enumerate(("user", "generic")):
    for j, m in enumerate(METHODS):
      vals = [r[f"{m}_{split}_acc"] for r in rows]
      x = k + (j - 1) * 0.27
      ax1.bar(x, np.mean(vals), 0.27, color=COLORS[m], label=LABELS[m] if k == 0 else None)
      ax1.scatter(np.full(len(vals), x), vals, s=6, color="k", zorder=3)
  ax1.set_xticks([0, 1], ["users' test sets", "generic test set"])
  ax1.set_ylabel("accuracy (bars: mean over users; dots: users)")
  ax1.set_ylim(0, 1)
  ax1.legend(fontsize=8, loc="lower left")
  names = ["params", "flops", "energy"]
  ax2.bar(names, [100 * overhead[k] for k in names], color="tab:blue", label="ours (LE + GN)")
  ax2.axhline(100 * PAPER_OVERHEAD, color="tab:red", ls="--", label="paper (~2.5%)")
  ax2.set_ylabel("overhead, % of GE")
  ax2.legend(fontsize=8)
  save_figure(fig, workdir, "summary")


def plot_samples(generic: np.ndarray, per_user: list[np.ndarray], workdir: str) -> None:
  """samples.png: one generic sample per class, then each user's version of the classes."""
  plt = _pyplot()
  rows = [generic, *per_user]
  fig, axes = plt.subplots(len(rows), generic.shape[0], figsize=(generic.shape[0] * 0.6,
                                                                  len(rows) * 0.6))
  axes = np.atleast_2d(axes)
  for i, images in enumerate(rows):
    for j, image in enumerate(images):
      axes[i, j].imshow(image, cmap="gray_r", vmin=0, vmax=1)
      axes[i, j].axis("off")
    axes[i, 0].text(-4, 14, "generic" if i == 0 else f"user {i - 1}", ha="right", va="center",
                    fontsize=6)
  save_figure(fig, workdir, "samples")
