"""MC-SMoE's tables, summary numbers (what the claims read) and trade-off plot.

Legend: bpb held-out bits per byte (lower is better), "zero" a row scored as built, "kd" after
the distillation recovery; memory and FLOPs counted as moe_jax/compress/mcsmoe/costs.py says.
"""
from __future__ import annotations

import platform

from moe_jax.utils.reporting import markdown_table, save_figure

LABELS = {"msmoe": "M-SMoE", "average": "averaging (no alignment, uniform)",
          "random": "random groups", "drop": "drop least-used", "no_align": "M-SMoE, no alignment",
          "uniform": "M-SMoE, uniform weights", "mcsmoe": "MC-SMoE (M-SMoE + LoSparse)"}
BASELINES = ("average", "random", "drop")
PAPER = ("Paper (Li et al. 2024): MC-SMoE saves up to 80% of the memory and 20% of the FLOPs "
         "with virtually no loss on 8 benchmarks (Switch-base-32 and fairseq-MoE, KD-recovered);"
         " M-SMoE beats averaging, random merging and dropping at equal expert count.")


def summary(results: dict) -> dict:
  """Per target: the KD rows' numbers the claims compare (missing rows leave keys out)."""
  full, out = results["full"], {}
  for key, entry in results["targets"].items():
    kd = {v: r["kd"] for v, r in entry["rows"].items()}
    s = {f"{v}_bpb": r["bpb"] for v, r in kd.items()}
    s.update({f"{v}_task_acc": r["task_acc"] for v, r in kd.items() if "task_acc" in r})
    accs = [kd[b]["task_acc"] for b in BASELINES if b in kd and "task_acc" in kd[b]]
    if accs:
      s["best_baseline_task_acc"] = max(accs)
    for v, r in kd.items():
      s[f"{v}_memory_saved"] = 1.0 - r["model_bytes"] / full["model_bytes"]
      s[f"{v}_flops_saved"] = 1.0 - r["flops_per_token"] / full["flops_per_token"]
      s[f"{v}_bpb_ratio"] = r["bpb"] / full["bpb"]
    if "mcsmoe" in kd and "msmoe" in kd:
      s["mcsmoe_extra_bpb"] = kd["mcsmoe"]["bpb"] - kd["msmoe"]["bpb"]
    out[key] = s
  return out


def _metrics(r: dict, full: dict) -> list:
  return [r["bpb"], r["bpb"] - full["bpb"], r.get("task_acc", float("nan")), r["kl"],
          r["top1_agreement"], r["experts_per_token"], r["params"], r["expert_bytes"] / 2**20,
          r["flops_per_token"] / 1e6]


def _misordered(results: dict) -> list[str]:
  """Where a baseline matches or beats M-SMoE (bits per byte), per target and recovery."""
  lines = []
  for entry in results["targets"].values():
    rows = entry["rows"]
    for recovery in ("zero", "kd"):
      if "msmoe" not in rows:
        continue
      ours = rows["msmoe"][recovery]["bpb"]
      for base in BASELINES + ("no_align", "uniform"):
        if base in rows and rows[base][recovery]["bpb"] <= ours:
          lines.append(f"target {entry['target']}, {recovery}: {LABELS[base]} "
                       f"{rows[base][recovery]['bpb']:.4f} <= M-SMoE {ours:.4f} bpb")
  return lines


def _export_table(study: dict) -> str:
  rows = []
  for name in ("duplicate", "group_router", "lse_groups"):
    r = study[name]
    gap = r.get("transformers_max_abs_diff")
    rows.append([name, r["bpb"], r["bpb"] - study["merged_bpb"], r["kl"], r["top1_agreement"],
                 r["expert_params"], r.get("safetensors_bytes", float("nan")) / 2**20,
                 "not saved (no linear router expresses it)" if name == "lse_groups" else
                 ("transformers not installed" if gap is None else f"{gap:.2e}")])
  table = markdown_table(["export", "bpb", "Δbpb vs merged", "KL(merged‖export)",
                          "top-1 agreement", "expert params stored", "safetensors MiB",
                          "max |Δlogits| transformers vs ours"], rows)
  trip = study["round_trip"]
  return (f"{table}\n\nMerged model: {study['merged_bpb']:.4f} bpb. The merged model's own "
          "file is the duplicate directory: read back (experts identical bit for bit stored "
          f"once) it holds {trip['stored_experts']} experts per layer again, logits within "
          f"{trip['max_abs_diff']:.1e} of the merged model's. "
          f"{100 * study['shared_slot_share']:.1f}% of the token-slot choices share their "
          "merged expert with another of the token's slots: there the merged model runs one "
          "expert, while top-k over experts always runs k distinct ones, so no group-level "
          "router can match those tokens.")


def contract(config, teacher, results: dict) -> dict:
  """{"markdown", "data", "scale"} of the run."""
  cfg, full = teacher.cfg, results["full"]
  d = config.eval.data
  data = (f"{'user' if 'files' in d.sources else 'shipped'}: {', '.join(d.sources)} text; "
          f"CPython {platform.python_version()}; calibration and distillation on the training "
          f"split, scores on the held-out split (every {d.val_every}th document)")
  scale = (f"{config.model}: {len(cfg.moe_layer_ids())} MoE layers, {cfg.moe.num_experts} "
           f"experts of width {cfg.moe.d_ff}, top-{cfg.moe.top_k}, d_model {cfg.d_model}; "
           f"targets {list(config.targets)} experts per layer; {results['kd_tokens']} KD tokens "
           "per row")
  rows = [[cfg.moe.num_experts, "full model", "-", *_metrics(full, full)]]
  for entry in results["targets"].values():
    for variant, r in entry["rows"].items():
      for recovery in ("zero", "kd"):
        rows.append([entry["target"], LABELS[variant], recovery,
                     *_metrics(r[recovery], full)])
  table = markdown_table(["experts/layer", "method", "recovery", "bpb all", "Δbpb vs full",
                          "task acc", "KL(full‖row)", "top-1 agreement", "experts run/token",
                          "params", "expert MiB", "MFLOPs/token"], rows)
  groups = "; ".join(f"{e['target']}: {e['groups_per_layer']}"
                     for e in results["targets"].values())
  k = config.kd
  parts = [
      f"MC-SMoE on {scale}. Data: {data}.",
      f"\"kd\": {results['kd_tokens']} tokens of distillation per row ({k.num_steps} steps x "
      f"{k.batch_size} x {k.seq_len}; CE + {config.kd_alpha} KL at T = {config.kd_temperature},"
      " routers frozen; MC-SMoE's LoSparse trains within the same budget). \"zero\": as built "
      f"(MC-SMoE: one-shot LoSparse from {config.losparse.one_shot_batches} batches' gradients)."
      f" LoSparse rank {results['rank']} (the repo's 32 at 768 x 3072 kept at its share of a "
      f"matrix's parameters), S pruned in whole rows to {config.losparse.final_fraction:.0%}. "
      f"Calibration: {results['calibration_tokens']} training tokens.",
      "Memory and FLOPs count what a deployment stores and runs: referenced experts only, a "
      "LoSparse expert as L, R and the kept rows of S with their int32 indices (a pruned S "
      "stored dense would save nothing; our runtime holds W = L R + S dense), FLOPs run "
      "factored with the experts each token actually runs.",
      "## Every row\n\n" + table,
      f"Groups per MoE layer (global budget): {groups}.",
  ]
  first = next(iter(results["targets"].values()), {})
  if "export" in first:
    parts.append("## Export to the Hugging Face format (first target, M-SMoE after KD)\n\n"
                 + _export_table(first["export"]))
  s = results["summary"].get("target_0", {})
  ours = ("" if "mcsmoe_memory_saved" not in s else
          f"Ours (first target, KD): MC-SMoE saves {s['mcsmoe_memory_saved']:.1%} of the memory "
          f"and {s['mcsmoe_flops_saved']:.1%} of the FLOPs per token at "
          f"{s['mcsmoe_bpb_ratio']:.3f}x the full model's bits per byte. ")
  wrong = _misordered(results)
  parts.append("## Paper vs ours\n\n" + PAPER + "\n\n" + ours + (
      "Where our ordering does not hold: " + "; ".join(wrong) + "." if wrong else
      "M-SMoE has the lowest bits per byte of the merged and dropped rows at every target."))
  return {"markdown": "\n\n".join(parts), "data": data, "scale": scale}


def plot(results: dict, workdir: str) -> None:
  """tradeoff.png: expert memory against held-out bits per byte for every row."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  full = results["full"]
  ax.scatter([full["expert_bytes"] / 2**20], [full["bpb"]], marker="*", s=150, c="k",
             label="full model")
  colors = plt.get_cmap("tab10")
  for c, variant in enumerate(LABELS):
    for entry in results["targets"].values():
      r = entry["rows"].get(variant)
      if r is None:
        continue
      for recovery, face in (("zero", "none"), ("kd", colors(c))):
        ax.scatter([r[recovery]["expert_bytes"] / 2**20], [r[recovery]["bpb"]],
                   edgecolors=colors(c), facecolors=face, marker="o")
    ax.scatter([], [], color=colors(c), label=LABELS[variant])
  ax.set_xscale("log")
  ax.set_xlabel("expert memory (MiB, row-sparse storage)")
  ax.set_ylabel("held-out bits per byte")
  ax.set_title("filled: after KD recovery; hollow: as built")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  save_figure(fig, workdir, "tradeoff")
