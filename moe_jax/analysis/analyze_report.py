"""Tables and heatmaps of `experiments.analyze` (results as analyze_experiment.run builds them).

Legend: L MoE layers, E experts, G devices.

Figures written into the workdir:
  experts.png     L x E heatmaps: usage share, zero-activation fraction, mean output norm;
  similarity.png  E x E router-logit similarity of each layer (MC-SMoE);
  affinity.png    E x E conditional P(j at l+1 | i at l) of each layer pair (ExFlow);
  layer_pairs.png per pair: affinity against its shuffled reference, Fate's cosine and recall.
A model with more layers (pairs) than `plot_layers` shows that many, evenly spaced.
"""
from __future__ import annotations

import numpy as np

from moe_jax.utils.reporting import markdown_table, save_figure


def _num(x) -> float:
  return float("nan") if x is None else float(x)


def _known(values) -> list[float]:
  return [v for v in values if v is not None]


def markdown(results: dict) -> str:
  """The report: per-layer load and experts, per-pair affinity and Fate, placements."""
  layers, scores, fate = results["layers"], results["affinity_scores"], results["fate"]
  head = (f"Routing report of {results['model']} ({results['source']}): {results['scale']}; "
          f"data: {results['data']}.")
  per_layer = markdown_table(
      ["layer", "tokens/expert min-max", "load CV", "load entropy", "frequency std",
       "zero frac max", "output norm min-max", "similarity max (mean)"],
      [[r["layer"], f"{min(r['tokens_per_expert'])}-{max(r['tokens_per_expert'])}",
        r["load_cv"], r["load_entropy"], r["frequency_std"],
        max(_known(r["zero_frac"]), default=float("nan")),
        f"{min(_known(r['output_norm']), default=0):.3g}-"
        f"{max(_known(r['output_norm']), default=0):.3g}",
        f"{_num(r['similarity_max']):.3f} ({_num(r['similarity_mean']):.3f})"] for r in layers])
  parts = [head, "Per MoE layer (load over the K choices per token; zero frac and output norm "
           "per expert, over its tokens; MC-SMoE's router-logit similarity between experts):",
           per_layer]
  if scores:
    ids = results["moe_layers"]
    parts += [f"Per layer pair: ExFlow's max_j P(j at l+1 | i at l), weighted over i, of the "
              f"trace and of its token-shuffled twin (uniform: "
              f"{scores['uniform_max_conditional']:.3f}), the mutual information between the "
              f"experts of l and l+1; Fate's gate-input cosine and recall with P = K (a random "
              f"guess: {fate['recall_chance']:.3f}):",
              markdown_table(
                  ["pair", "max P", "shuffled", "MI bits", "shuffled MI", "Fate cosine",
                   "Fate recall"],
                  [[f"{ids[i]}->{ids[i + 1]}", scores["max_conditional"][i],
                    scores["shuffled_max_conditional"][i], scores["mutual_information_bits"][i],
                    scores["shuffled_mutual_information_bits"][i], fate["cosine"][i],
                    fate["recall"][i]] for i in range(len(ids) - 1)])]
    parts += ["ExFlow placement: fraction of consecutive-layer transitions that cross devices "
              "(solved on the even windows, scored on the odd ones):", _placement_table(results)]
  else:
    parts.append("One MoE layer: no layer pair for affinity, placement or Fate.")
  return "\n\n".join(parts)


def _placement_table(results: dict) -> str:
  rows = []
  for g, row in results["placement"].items():
    if "skipped" in row:
      rows.append([g] + ["-"] * 6 + [row["skipped"]])
      continue
    rows.append([g, row["contiguous"]["held_out"], row["random"]["held_out"],
                 row["solved"]["fit"], row["solved"]["held_out"],
                 _num(row["reduction_vs_contiguous"]),
                 f"{row['gap']:.3g} in {row['seconds']:.1f} s", ""])
  return markdown_table(["G", "contiguous", "random", "solved (fit)", "solved (held-out)",
                         "reduction vs contiguous", "MIP gap", "note"], rows)


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _pick(count: int, most: int) -> list[int]:
  return sorted(set(np.linspace(0, count - 1, min(count, most)).astype(int).tolist()))


def _grid(plt, matrices: list, titles: list, name: str, workdir: str, label: str, axes_labels):
  cols = min(len(matrices), 4)
  rows = -(-len(matrices) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
  for ax in axes.flat[len(matrices):]:
    ax.axis("off")
  for ax, matrix, title in zip(axes.flat, matrices, titles):
    image = ax.imshow(np.asarray(matrix), vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(axes_labels[0], fontsize=7)
    ax.set_ylabel(axes_labels[1], fontsize=7)
  fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label=label)
  save_figure(fig, workdir, name)


def plots(results: dict, workdir: str, plot_layers: int) -> None:
  """Writes the module docstring's figures."""
  plt = _pyplot()
  layers, ids = results["layers"], results["moe_layers"]
  fig, axes = plt.subplots(1, 3, figsize=(14, 0.5 + 0.35 * len(layers) + 1.5))
  for ax, key, title in zip(axes, ("frequency", "zero_frac", "output_norm"),
                            ("usage share", "zero-activation fraction", "mean output norm")):
    image = ax.imshow(np.array([[_num(v) for v in r[key]] for r in layers]), aspect="auto",
                      cmap="viridis")
    ax.set(title=title, xlabel="expert", ylabel="layer", yticks=range(len(ids)), yticklabels=ids)
    fig.colorbar(image, ax=ax)
  save_figure(fig, workdir, "experts")
  shown = _pick(len(layers), plot_layers)
  _grid(plt, [layers[i]["similarity"] for i in shown], [f"layer {ids[i]}" for i in shown],
        "similarity", workdir, "router-logit similarity", ("expert j", "expert i"))
  if not results["affinity"]:
    return
  pairs = _pick(len(results["affinity"]), plot_layers)
  _grid(plt, [results["affinity"][i] for i in pairs],
        [f"layer {ids[i]} -> {ids[i + 1]}" for i in pairs], "affinity", workdir,
        "P(j at l+1 | i at l)", ("expert j at l+1", "expert i at l"))
  scores, fate = results["affinity_scores"], results["fate"]
  fig, ax = plt.subplots(figsize=(6, 4))
  x = np.arange(len(fate["cosine"]))
  for values, label in ((scores["max_conditional"], "ExFlow max P(j at l+1 | i at l)"),
                        (scores["shuffled_max_conditional"], "the same, tokens shuffled"),
                        (fate["cosine"], "Fate gate-input cosine"),
                        (fate["recall"], "Fate recall (P = K)")):
    ax.plot(x, values, marker="o", label=label)
  ax.set(xticks=x, xticklabels=[f"{ids[i]}->{ids[i + 1]}" for i in x], xlabel="layer pair")
  ax.set_ylim(top=1.05)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  save_figure(fig, workdir, "layer_pairs")
