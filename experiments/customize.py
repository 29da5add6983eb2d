r"""GE / LE / GN low-cost customization on ten simulated users (arXiv:1811.00056).

  python -m experiments.customize --config=configs/customize.py[:quick] --workdir=DIR

Trains the LeNet5 global expert once (orbax checkpoint DIR/checkpoints/ge), then for each user a
local expert and gating network on the user's small set (DIR/checkpoints/user_XX), and reports per
user the accuracy of GE alone, LE alone and GE+LE+GN on the user's test set and on the generic test
set, plus the LE + GN cost overhead. Writes results.json, results.md, users.png, summary.png and
samples.png.
"""
from __future__ import annotations

import os
import time

from absl import flags
from absl import logging
import jax
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags
import numpy as np

from moe_jax.customization import costs, data, gating, lenet, local_expert, mixture, train, users
from moe_jax.utils import cli, reporting
from moe_jax.utils.errors import check_choice, check_positive, require

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to configs/customize.py[:preset].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")

PAPER_OVERHEAD = 0.025  # Abstract: LE + GN "around 2.5%" of GE in energy and network size.
METHODS = ("ge", "le", "moe")
LABELS = {"ge": "GE", "le": "LE", "moe": "GE+LE+GN"}
COLORS = {"ge": "tab:gray", "le": "tab:orange", "moe": "tab:blue"}


def accuracy(logits, labels) -> float:
  return float(np.mean(np.argmax(np.asarray(logits), -1) == labels))


def evaluate(out_user: dict, y_user, out_generic: dict, y_generic, *methods: str) -> dict:
  """Accuracies of `methods` on the user's and the generic test set, and the share sent to LE."""
  key = {"ge": "ge_logits", "le": "le_logits", "moe": "logits"}
  result = {}
  for m in methods:
    result[f"{m}_user_acc"] = accuracy(out_user[key[m]], y_user)
    result[f"{m}_generic_acc"] = accuracy(out_generic[key[m]], y_generic)
  result["to_local_user"] = float(np.mean(out_user["to_local"]))
  result["to_local_generic"] = float(np.mean(out_generic["to_local"]))
  return result


USER_COLUMNS = {"GE user": "ge_user_acc", "LE user": "le_user_acc", "MoE user": "moe_user_acc",
                "GE generic": "ge_generic_acc", "LE generic": "le_generic_acc",
                "MoE generic": "moe_generic_acc", "to LE (user)": "to_local_user",
                "to LE (generic)": "to_local_generic"}


def report(cfg, results: dict, n_generic: int, target: str) -> str:
  """The markdown tables: per user, the summary beside the paper, gate targets, costs."""
  gate = (f"GN target '{target}'" + (
      f" (deviation from 'user data only': GN also sees {cfg.gn.reference_per_class}/class generic"
      " reference samples)" if target == "source" else " (user data only)"))
  header = "\n".join([
      "## GE / LE / GN customization (arXiv:1811.00056)", "",
      f"Data: {results['data']} with {cfg.users.num_users} simulated users (fixed per-user slant, "
      "stroke width, elastic field and, for some, a personal glyph, applied to held-out samples; "
      "the paper: EMNIST and ten real users' handwriting); "
      f"{cfg.users.train_per_class} train + {cfg.users.test_per_class} test samples per class "
      f"per user; generic test {n_generic} samples.",
      f"GE = LeNet5 (frozen); LE and GN read GE's {cfg.ge.feature_layer} features; hard gate at "
      f"{cfg.gn.threshold}; {gate}.", ""])
  user_table = reporting.markdown_table(
      ["user", "style", *USER_COLUMNS],
      [[r["user"], r["style"], *[r[k] for k in USER_COLUMNS.values()]] for r in results["users"]]
      + [["mean", "", *[results[k] for k in USER_COLUMNS.values()]]], floatfmt=".3f")
  r = results
  summary_table = reporting.markdown_table(
      ["", "ours (mean of users)", "paper (abstract)"],
      [["user accuracy, GE -> GE+LE+GN", f"{r['ge_user_acc']:.3f} -> {r['moe_user_acc']:.3f}",
        "\"significantly enhanced\""],
       ["generic accuracy, GE -> GE+LE+GN",
        f"{r['ge_generic_acc']:.3f} -> {r['moe_generic_acc']:.3f}", "\"almost no degradation\""],
       ["LE + GN overhead, energy proxy", f"{100 * r['overhead']:.2f}%", "~2.5%"],
       ["LE + GN overhead, parameters", f"{100 * r['overhead_params']:.2f}%", "~2.5%"],
       ["LE + GN overhead, FLOPs", f"{100 * r['overhead_flops']:.2f}%", "-"]])
  target_table = reporting.markdown_table(
      ["GN target", "MoE user", "MoE generic", "to LE (user)", "to LE (generic)"],
      [[t, a["moe_user_acc"], a["moe_generic_acc"], a["to_local_user"], a["to_local_generic"]]
       for t, a in r["gate_targets"].items()], floatfmt=".3f")
  cost_table = reporting.markdown_table(
      ["network", "params", "FLOPs", "memory reads", "energy proxy"],
      [[n.upper(), c["params"], c["flops"], c["reads"], f"{c['energy']:.0f}"]
       for n, c in r["costs"].items()])
  return "\n".join([header, user_table, "", summary_table, "",
                    "Gate target (same LE, same users):", "", target_table, "",
                    f"Costs per example (energy = FLOPs + {cfg.costs.read_weight} x reads):", "",
                    cost_table])


def plot_users(rows: list[dict], workdir: str) -> None:
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
  reporting.save_figure(fig, workdir, "users")


def plot_summary(rows: list[dict], overhead: dict[str, float], workdir: str) -> None:
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
  reporting.save_figure(fig, workdir, "summary")


def plot_samples(generic: np.ndarray, per_user: list[np.ndarray], workdir: str) -> None:
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
  reporting.save_figure(fig, workdir, "samples")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO.
  start = time.time()
  cfg, workdir = _CONFIG.value, _WORKDIR.value
  require(cfg is not None, "--config", "missing", "pass --config=configs/customize.py")
  require(bool(workdir), "--workdir", "missing", "pass --workdir=DIR")
  check_positive("users.num_users", cfg.users.num_users)
  targets = tuple(cfg.gn.targets)
  require(len(targets) > 0, "gn.targets", "empty",
          "name at least one of " + ", ".join(gating.TARGETS))
  for t in targets:
    check_choice("gn.targets", t, gating.TARGETS)

  images, labels, data_name = data.load(cfg.data.source, box=cfg.data.box,
                                        emnist_dir=cfg.data.emnist_dir,
                                        emnist_split=cfg.data.emnist_split)
  split = data.stratified_split(labels, {"ge_train": cfg.data.ge_train_per_class,
                                         "generic_test": cfg.data.generic_test_per_class},
                                cfg.seed)
  num_classes = int(labels.max()) + 1
  ge = lenet.LeNet5(num_classes, cfg.ge.input_pad, cfg.ge.activation, cfg.ge.pooling,
                    cfg.ge.feature_layer)
  le = local_expert.LocalExpert(num_classes, cfg.le.hidden)
  gn = gating.GatingNetwork(cfg.gn.hidden)

  # Off the device: GE on the generic training set, then frozen.
  ge_params = train.train_global_expert(ge, images[split["ge_train"]], labels[split["ge_train"]],
                                        cfg.ge, cfg.seed)
  train.save_checkpoint(os.path.join(workdir, "checkpoints", "ge"), ge_params)
  ge_apply = jax.jit(lambda x: ge.apply({"params": ge_params}, x))
  moe_apply = jax.jit(lambda lp, gp, x: mixture.predict(ge, ge_params, le, lp, gn, gp, x,
                                                        cfg.gn.threshold))

  rng = np.random.default_rng(cfg.seed + 1)
  x_generic, y_generic = images[split["generic_test"]], labels[split["generic_test"]]
  reference, = data.per_class_draw(split["ge_train"], labels, (cfg.gn.reference_per_class,), rng)
  _, reference_features = ge_apply(images[reference])
  styles = users.make_styles(
      cfg.users.num_users, slant=tuple(cfg.users.slant), stroke_max=cfg.users.stroke_max,
      elastic_alpha=tuple(cfg.users.elastic_alpha), elastic_sigma=cfg.users.elastic_sigma,
      jitter_alpha=cfg.users.jitter_alpha, glyph_fraction=cfg.users.glyph_fraction,
      seed=cfg.seed + 2)

  rows, ablation, samples = [], {t: [] for t in targets}, []
  for u in reporting.progress(range(cfg.users.num_users), total=cfg.users.num_users, desc="users"):
    tr, te = data.per_class_draw(split["pool"], labels, (cfg.users.train_per_class,
                                                         cfg.users.test_per_class), rng)
    x_tr = users.render(images[tr], labels[tr], styles[u], seed=cfg.seed + 1000 + 2 * u)
    x_te = users.render(images[te], labels[te], styles[u], seed=cfg.seed + 1001 + 2 * u)
    samples.append(x_tr[[int(np.flatnonzero(labels[tr] == c)[0]) for c in np.unique(labels[tr])]])

    # On the device: LE, then GN, from the user's set (and, for gate target 'source', the generic
    # reference set); GE is frozen and only its features are read.
    ge_logits_tr, features_tr = ge_apply(x_tr)
    le_params = train.train_local_expert(le, np.asarray(features_tr), labels[tr], cfg.le,
                                         cfg.seed + u)
    gn_params = {}
    for t in targets:
      gn_x, gn_y = gating.training_set(t, features_tr, ge_logits_tr, labels[tr],
                                       reference_features)
      gn_params[t] = train.train_gate(gn, gn_x, gn_y, cfg.gn, cfg.seed + u)
      out_user = moe_apply(le_params, gn_params[t], x_te)
      out_generic = moe_apply(le_params, gn_params[t], x_generic)
      ablation[t].append(evaluate(out_user, labels[te], out_generic, y_generic, "moe"))
      if t == targets[0]:
        rows.append({"user": u, "style": styles[u].describe(),
                     **evaluate(out_user, labels[te], out_generic, y_generic, *METHODS),
                     "ge_errors_train": float(np.mean(gating.ge_errors(ge_logits_tr,
                                                                        labels[tr])))})
    train.save_checkpoint(os.path.join(workdir, "checkpoints", f"user_{u:02d}"),
                          {"le": le_params, "gn": gn_params})

  # Costs per example of GE, LE and GN, and LE + GN over GE.
  example = images[:1]
  _, features = ge_apply(example)
  cost = {
      "ge": costs.total_cost(costs.layer_costs(ge, ge_params, example), cfg.costs.read_weight),
      "le": costs.total_cost(costs.layer_costs(le, le_params, features), cfg.costs.read_weight),
      "gn": costs.total_cost(costs.layer_costs(gn, gn_params[targets[0]], features),
                             cfg.costs.read_weight)}
  overhead = costs.overhead([cost["le"], cost["gn"]], cost["ge"])

  mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]
          if k not in ("user", "style")}
  ablation_mean = {t: {k: float(np.mean([r[k] for r in v])) for k in v[0]}
                   for t, v in ablation.items()}
  results = {**mean, "overhead": overhead["energy"],
             "overhead_params": overhead["params"], "overhead_flops": overhead["flops"],
             "gn_target": targets[0], "users": rows, "gate_targets": ablation_mean, "costs": cost,
             "data": data_name, "num_users": cfg.users.num_users,
             "paper": {"overhead": PAPER_OVERHEAD}, "runtime_s": time.time() - start}

  markdown = report(cfg, results, len(y_generic), targets[0]) + (
      f"\n\nRun time: {time.time() - start:.0f} s.")
  reporting.write_results(workdir, results, markdown)
  plot_users(rows, workdir)
  plot_summary(rows, overhead, workdir)
  plot_samples(x_generic[[int(np.flatnonzero(y_generic == c)[0]) for c in np.unique(y_generic)]],
               samples, workdir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run(main)
