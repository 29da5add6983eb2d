"""ExFlow's result tables, plots and headline numbers, from what exflow_experiment.run measured.

Tables: affinity per layer pair; affinity over training checkpoints; the fraction of held-out token
hops that cross devices for every placement method and G (and the staged layout); the decoders'
logit agreement and the collectives of their compiled steps; the cost model's step times; the
paper's figures beside ours; the solver's times. Plots: affinity_heatmaps.png (P(b at l+1 | a at
l) per layer pair), affinity_over_training.png, placements.png (held-out crossings by method),
placement_map.png (the solved placement of the largest G).
"""
from __future__ import annotations

import math
import platform
from typing import TYPE_CHECKING

import numpy as np

from moe_jax.inference.exflow import cost
from moe_jax.inference.exflow.exflow_study import METHODS
from moe_jax.utils.reporting import markdown_table, save_figure

if TYPE_CHECKING:
  from moe_jax.inference.exflow.exflow_experiment import ExFlowConfig

NAN = float("nan")


def summary(results: dict, largest: int) -> dict:
  """The numbers the claims read (nan where a section was not measured)."""
  a = results["affinity"]
  entry = results["placement"][f"G{largest}"]
  layers = results["model"]["moe_layers"]
  hops_std = cost.hops_per_token(layers, largest, None)
  out = {
      "devices": largest,
      "max_conditional": float(np.mean(a["max_conditional"])),
      "shuffled_max_conditional": float(np.mean(a["shuffled_max_conditional"])),
      "mutual_information_bits": float(np.mean(a["mutual_information_bits"])),
      "solved_held_out": entry["solved"]["held_out"],
      "contiguous_held_out": entry["contiguous"]["held_out"],
      "random_held_out": entry["random"]["held_out"],
      "hop_reduction": 1 - cost.hops_per_token(layers, largest,
                                               entry["solved"]["held_out"]) / hops_std,
      "all_to_all_ratio": NAN, "max_logits_err": NAN, "speedup_nvlink": NAN,
      "early_solved_on_final": NAN,
  }
  runtime = results.get("runtime") or {}
  if runtime:
    hlo = runtime[max(runtime, key=lambda k: int(k[1:]))]["hlo"]
    out["all_to_all_ratio"] = (hlo["standard"]["step"]["all-to-all"]["count"] /
                               hlo["coherent"]["step"]["all-to-all"]["count"])
    out["max_logits_err"] = max(max(r["logits_err"].values()) for r in runtime.values())
  rows = [r for r in results.get("cost") or [] if r["width"] == "measured" and
          r["layout"] == f"G{largest}" and r["link"] == "nvlink"]
  if rows:
    out["speedup_nvlink"] = max(rows, key=lambda r: r["tokens_per_device"])["speedup_solved"]
  trained = [r for r in results["training"].get("checkpoints", []) if r["step"] > 0]
  if trained:
    out["early_solved_on_final"] = trained[0]["solved_on_final"]
  return out


def _affinity_table(a: dict) -> str:
  rows = [[f"{l} -> {l + 1}", a["max_conditional"][l], a["shuffled_max_conditional"][l],
           a["max_conditional_unweighted"][l], a["mutual_information_bits"][l],
           a["shuffled_mutual_information_bits"][l]] for l in range(len(a["max_conditional"]))]
  return markdown_table(["MoE layers", "max_b P(b|a), weighted", "shuffled", "unweighted",
                         "MI bits", "shuffled MI bits"], rows)


def _training_table(training: dict) -> str:
  if not training.get("available"):
    return f"Not measured: {training.get('reason')}."
  rows = [[r["step"], r["max_conditional"], r["shuffled_max_conditional"],
           r["mutual_information_bits"], r["contiguous_held_out"], r["solved_held_out"],
           r["solved_on_final"]] for r in training["checkpoints"]]
  init = ("step 0 is the initialisation, reproduced with the training seed" if
          training["init_reproduced"] else "the initialisation was not reproducible")
  return (f"Checkpoints kept in {training['train_dir']} ({init}); G = {training['devices']}; "
          "scores on each checkpoint's own held-out traces, the last column on the final "
          "model's.\n\n" + markdown_table(
              ["step", "max_b P(b|a)", "shuffled", "MI bits", "contiguous crossing",
               "solved crossing", "its placement on the final model"], rows))


def _placement_table(placement: dict) -> str:
  rows = []
  for name, entry in placement.items():
    base = entry["contiguous"]["held_out"]
    for method in METHODS:
      m = entry[method]
      solver = method not in ("contiguous", "random")
      rows.append([name, method, m["fit"], m["held_out"], f"{1 - m['held_out'] / base:+.1%}",
                   f"{m['seconds']:.1f}" if solver else "-", m["gap"] if solver else "-"])
    rows.append([name, f"solved = {entry['solved']['method']}", entry["solved"]["fit"],
                 entry["solved"]["held_out"], f"{entry['reduction_vs_contiguous']:+.1%}", "-",
                 entry["solved"]["gap"]])
  return markdown_table(["devices", "method", "crossing (fit)", "crossing (held-out)",
                         "held-out cut vs contiguous", "solve s", "MIP gap"], rows)


def _staged_table(staged: dict | None) -> str:
  if staged is None:
    return "Not measured (no staged layout, or it does not divide the experts)."
  rows = [[m, staged[m]["held_out"], staged[m]["node_held_out"], staged[m]["staged_fit"],
           staged[m]["staged_held_out"], f"{staged[m]['seconds']:.1f}"]
          for m in ("contiguous", "random", "ilp", "staged")]
  return (f"{staged['nodes']} nodes x {staged['devices_per_node']} devices; staged cost = mean hop "
          "cost, a hop inside a node 1, across nodes 2.\n\n" + markdown_table(
              ["method", "device crossing (held-out)", "node crossing (held-out)",
               "staged cost (fit)", "staged cost (held-out)", "solve s"], rows))


def _runtime_table(runtime: dict, moe_layers: int) -> str:
  rows = []
  for name, r in runtime.items():
    for path in ("standard", "coherent"):
      step, pre = r["hlo"][path]["step"], r["hlo"][path]["prefill"]
      others = sum(step[op]["count"] for op in ("all-reduce", "collective-permute",
                                                  "reduce-scatter"))
      rows.append([name, path, step["all-to-all"]["count"], step["all-to-all"]["bytes"],
                   step["all-to-all"]["bytes"] // moe_layers, step["all-to-all"]["bytes_per_row"],
                   step["all-gather"]["count"], step["all-gather"]["bytes"], others,
                   pre["all-to-all"]["count"], pre["all-gather"]["count"]])
  table = markdown_table(["devices", "path", "all-to-alls / step", "bytes / step",
                          "bytes / MoE layer", "bytes / row", "all-gathers / step",
                          "all-gather bytes", "other collectives", "prefill all-to-alls",
                          "prefill all-gathers"], rows)
  agree = markdown_table(
      ["devices", "standard vs one device", "coherent vs one device", "coherent vs standard",
       "placed coherent vs one device", "tokens equal", "cache copies vs one device",
       "inner hops crossing (placed, measured)"],
      [[name, r["logits_err"]["standard_vs_single"], r["logits_err"]["coherent_vs_single"],
        r["logits_err"]["coherent_vs_standard"], r["placed"]["logits_err_vs_single"],
        r["tokens_equal"] and r["placed"]["tokens_equal"], r["cache_err"],
        _inner_crossing(r)] for name, r in runtime.items()], floatfmt=".2e")
  return ("Collectives of the compiled prefill and decode step (XLA:CPU, float32) on G "
          "simulated devices. Static buffers: dropless slots, mostly empty in the coherent "
          "step (a ragged collective would send only the filled rows: the cost model's "
          "input). Bytes: all-to-all sent, all-gather held, per device. The standard step's "
          "all-gathers are XLA's, of the router probabilities [B, E] for top_k over a "
          "batch-split array; the coherent prefill's gather the caches.\n\n" + table +
          "\n\nGreedy decoding, relative max logit error over every step:\n\n" + agree)


def _inner_crossing(r: dict) -> float:
  """Fraction of the placed coherent run's hops between consecutive MoE layers that left the
  device (runtime count; the first MoE layer's hop from home is left out)."""
  crossings = np.asarray(r["placed"]["crossings"], np.float64)
  if crossings.size == 0 or crossings.shape[1] < 2:
    return NAN
  return float(crossings[:, 1:].sum() / (crossings.shape[0] * (crossings.shape[1] - 1) *
                                         r["batch"]))


def _cost_table(rows: list, traffic: dict) -> str:
  table = markdown_table(
      ["width", "layout", "link", "tokens / device", "standard us", "coherent contiguous us",
       "coherent solved us", "coherent solved, tokens only us", "speedup contiguous",
       "speedup solved", "speedup tokens only", "hops std / contig / solved"],
      [[r["width"], r["layout"], r["link"], r["tokens_per_device"], r["standard_us"],
        r["coherent_contiguous_us"], r["coherent_solved_us"], r["coherent_tokens_only_us"],
        r["speedup_contiguous"], r["speedup_solved"], r["speedup_tokens_only"],
        f"{r['hops_standard']:.2f} / {r['hops_contiguous']:.2f} / {r['hops_solved']:.2f}"]
       for r in rows], floatfmt=".2f")
  return ("Microseconds per decode step (= per token of each sequence), alpha-beta model "
          "(moe_jax/inference/exflow/cost.py, communication only unless cost.compute_us), "
          f"from the measured rows per token: standard {traffic['standard_row_bytes']:.0f} B "
          f"(dispatch + combine), coherent {traffic['coherent_row_bytes']:.0f} B, all-gather "
          f"{traffic['gather_bytes']:.0f} B (float32), and the same scaled to a wider model; "
          "crossings from the held-out traces. 'tokens only' leaves the K/V out of the "
          "all-gather, as ExFlow's traffic formula does.\n\n" + table)


def _paper_table(results: dict) -> str:
  s = results["summary"]
  contiguous = {k: v["contiguous"]["held_out"] for k, v in results["placement"].items()}
  rows = [
      ["cross-device routing cut (hops per token, standard -> coherent + solved, largest G)",
       f"{s['hop_reduction']:.1%}", "up to 67% less cross-GPU routing latency"],
      ["estimated throughput, coherent + solved vs standard (NVLink, largest G, measured "
       "width, most tokens per device)", f"{s['speedup_nvlink']:.2f}x",
       "up to 2.2x vs DeepSpeed-MoE (8 to 64 experts)"],
      ["the same range over every width, link and load: with the K/V all-gather / tokens only",
       _speedup_range(results.get("cost") or []), "-"],
      ["transitions crossing devices before placement (contiguous)",
       ", ".join(f"{k}: {v:.1%}" for k, v in contiguous.items()),
       "Mixtral-8x7B in the repo: 56% on 4 GPUs, 72% on 8 (no affinity: 75%, 87.5%)"],
      ["crossing after placement (solved)",
       ", ".join(f"{k}: {v['solved']['held_out']:.1%}" for k, v in results["placement"].items()),
       "MoE-64: cross-GPU routing -40% on 4 GPUs, -25% on 32 (survey notes)"],
  ]
  return markdown_table(["figure", "ours", "paper"], rows)


def _speedup_range(rows: list) -> str:
  if not rows:
    return "not measured"
  kv = [r["speedup_solved"] for r in rows]
  only = [r["speedup_tokens_only"] for r in rows]
  return (f"{min(kv):.2f}x to {max(kv):.2f}x / {min(only):.2f}x to {max(only):.2f}x")


def describe(config: ExFlowConfig, results: dict) -> dict:
  """The contract's markdown, data and scale strings."""
  m, t = results["model"], config.traces
  data = (f"user: token ids {t.tokens_path}" if t.tokens_path else
          f"shipped: CPython {platform.python_version()}'s held-out help texts and standard "
          f"library ({', '.join(config.data.sources)})")
  scale = (f"{m['spec']}: {m['moe_layers']} MoE layers of {m['experts']} experts, top-"
           f"{m['top_k']}, d_model {m['d_model']}; {results['tokens']['fit']} + "
           f"{results['tokens']['held_out']} traced tokens")
  parts = [
      f"## ExFlow on {m['spec']} ({m['source']})\n\n{scale}; data: {data}. Traces: fit split "
      "(placements solved on it) and held-out split (scored), alternating windows.",
      "### Inter-layer affinity (all traced tokens)\n\n" + _affinity_table(results["affinity"]),
      "### Affinity over training\n\n" + _training_table(results["training"]),
      "### Fraction of token hops between consecutive MoE layers that cross devices\n\n" +
      _placement_table(results["placement"]),
      "### Staged: nodes, then devices\n\n" + _staged_table(results["staged"]),
  ]
  if results.get("runtime"):
    parts += ["### Standard vs context-coherent expert parallelism\n\n" +
              _runtime_table(results["runtime"], m["moe_layers"]),
              "### Cost model\n\n" + _cost_table(results["cost"], results["traffic"])]
  else:
    parts.append("### Decoders and cost model\n\nNot measured: the coherent path needs top-1 "
                 "routing and a device count dividing the experts.")
  parts += ["### The paper's figures beside ours\n\n" + _paper_table(results),
            "### Solver time as E and L grow (planted affinity, benchmarks/exflow_solver.py)"
            "\n\n" + markdown_table(results["solver"]["headers"], results["solver"]["rows"])]
  return {"markdown": "\n\n".join(parts), "data": data, "scale": scale}


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot(results: dict, workdir: str) -> None:
  """The four PNGs of the module docstring (affinity_over_training only with checkpoints)."""
  plt = _pyplot()
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  cond = np.asarray(results["affinity"]["conditional"])
  cols = min(4, len(cond))
  rows = math.ceil(len(cond) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
  for ax in axes.ravel()[len(cond):]:
    ax.axis("off")
  for l, (ax, a) in enumerate(zip(axes.ravel(), cond)):
    ax.imshow(a, vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"P(b at {l + 1} | a at {l})", fontsize=8)
    ax.set_xlabel("b", fontsize=7)
    ax.set_ylabel("a", fontsize=7)
    for axis in (ax.xaxis, ax.yaxis):
      axis.set_major_locator(MaxNLocator(integer=True))
  fig.tight_layout()
  save_figure(fig, workdir, "affinity_heatmaps")

  training = results["training"]
  if training.get("available"):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    steps = [r["step"] for r in training["checkpoints"]]
    for key, label in (("max_conditional", "max_b P(b|a)"),
                       ("shuffled_max_conditional", "shuffled"),
                       ("solved_held_out", "solved crossing"),
                       ("solved_on_final", "its placement on the final model")):
      ax.plot(steps, [r[key] for r in training["checkpoints"]], marker="o", label=label)
    ax.set_xlabel("training step")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, workdir, "affinity_over_training")

  fig, ax = plt.subplots(figsize=(6, 3.5))
  names = list(results["placement"])
  width = 0.8 / len(METHODS)
  for i, method in enumerate(METHODS):
    ax.bar(np.arange(len(names)) + i * width,
           [results["placement"][n][method]["held_out"] for n in names], width, label=method)
  ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
  ax.set_xticklabels(names)
  ax.set_ylabel("held-out hops crossing devices")
  ax.legend(fontsize=7)
  save_figure(fig, workdir, "placements")

  largest = f"G{results['summary']['devices']}"
  fig, ax = plt.subplots(figsize=(5, 3))
  ax.imshow(np.asarray(results["placement"][largest]["solved"]["placement"]), cmap="tab10",
            aspect="auto")
  ax.set_xlabel("expert")
  ax.set_ylabel("MoE layer")
  ax.set_title(f"solved placement, {largest} (colour: device)", fontsize=8)
  save_figure(fig, workdir, "placement_map")
