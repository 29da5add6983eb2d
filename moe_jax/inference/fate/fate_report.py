"""Fate's result tables, plot and headline numbers, from what fate_experiment.run measured.

Tables: the setting; per layer pair the gate-input cosine, decode recall and prefill coverage
of each method; hit rates over budgets (allocation x policy x method); prefill and decode time
per step and Fate's speedups in both timeline settings, the paper's figures beside them;
quantization error and bits per byte; the offloaded decoder's checks. Plot: hit_rates.png
(decode hit rate against the budget) beside the speedups.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from moe_jax.inference.fate.fate_study import METHODS
from moe_jax.utils.reporting import markdown_table, save_figure

if TYPE_CHECKING:
  from moe_jax.inference.fate.fate_experiment import FateConfig

GRID = "gpu"  # the setting replayed over every allocation and policy
PAPER = {"prefill_vs_lod": 4.5, "decode_vs_lod": 4.1, "prefill_vs_eap": 1.9,
         "decode_vs_eap": 2.2}


def _pick(grid: list, **match) -> list:
  return [r for r in grid if all(r[k] == v for k, v in match.items())]


def speedups(grid: list) -> list[dict]:
  """Per budget: each method's prefill time per prompt and decode time per token (ms), and
  Fate's speedups over LoD and EAP (Fate's shallow-favouring allocation and ARC for all)."""
  out = []
  for budget in sorted({r["budget"] for r in grid}):
    row = {"budget": budget}
    for m in METHODS:
      (r,) = _pick(grid, budget=budget, allocation="shallow", policy="arc", method=m)
      for phase in ("prefill", "decode"):
        row[f"{phase}_ms_{m}"] = r[phase]["time_per_step"] * 1e3
        row[f"{phase}_hit_{m}"] = r[phase]["hit_rate"]
    for phase in ("prefill", "decode"):
      for base in ("lod", "eap"):
        row[f"{phase}_vs_{base}"] = row[f"{phase}_ms_{base}"] / row[f"{phase}_ms_fate"]
    out.append(row)
  return out


def _hit(grid: list, allocation: str, policy: str) -> float:
  rows = _pick(grid, allocation=allocation, policy=policy, method="fate")
  return float(np.mean([r["decode"]["hit_rate"] for r in rows]))


def summary(results: dict, config: "FateConfig") -> dict:
  """The numbers the claims read."""
  del config
  s, k = results["scores"], results["model"]["top_k"]
  grid = results["timeline"][GRID]["grid"]
  largest = max(r["budget"] for r in grid)
  (best,) = _pick(grid, budget=largest, allocation="shallow", policy="arc", method="fate")
  bpb, err = results["quant"]["bpb"], results["quant"]["error"]
  fast = speedups(grid)
  return {
      "cosine": float(np.mean(s["cosine"])),
      "recall_fate": float(np.mean(s["recall"]["fate"][k])),
      "recall_eap": float(np.mean(s["recall"]["eap"][k])),
      "coverage_fate": float(np.mean(s["coverage"]["fate"])),
      "coverage_eap": float(np.mean(s["coverage"]["eap"])),
      "hit_rate": best["decode"]["hit_rate"],
      "hit_arc": _hit(grid, "shallow", "arc"), "hit_lru": _hit(grid, "shallow", "lru"),
      "hit_shallow": _hit(grid, "shallow", "arc"), "hit_uniform": _hit(grid, "uniform", "arc"),
      "int4_error": float(np.mean(err["int4"])), "int2_error": float(np.mean(err["int2"])),
      "int4_bpb_increase": (bpb["int4"] - bpb["full"]) / bpb["full"],
      "int2_bpb_increase": (bpb["int2"] - bpb["full"]) / bpb["full"],
      **{key: max(r[key] for r in fast) for key in PAPER},
      "max_logit_err": results["decoder"]["max_logit_err"],
      "decoder_matches": float(results["decoder"]["fate"]["matches"]),
  }


def _setting_table(results: dict) -> str:
  rows = []
  for name, t in results["timeline"].items():
    ms = t["times_ms"]
    rows.append([name, f"{t['bytes']['full']:,.0f}", f"{t['bytes']['int4']:,.0f}",
                 f"{t['bytes']['int2']:,.0f}", t["prefetch_k"],
                 float(np.mean(ms["attn_prefill"])), float(np.mean(ms["moe_prefill"])),
                 float(np.mean(ms["attn_decode"])), float(np.mean(ms["moe_decode"]))])
  return markdown_table(["setting", "expert bytes full", "INT4", "INT2", "prefetch_k",
                         "attn ms (prefill)", "experts ms (prefill)", "attn ms (decode)",
                         "experts ms (decode)"], rows)


def _scores_table(s: dict) -> str:
  ps = sorted(s["recall"]["fate"])
  headers = ["layers", "cosine"] + [f"recall {m} P={p}" for p in ps for m in ("fate", "eap")]
  headers += ["coverage fate", "coverage eap", "precision fate", "precision eap"]
  rows = []
  for l, cos in enumerate(s["cosine"]):
    row = [f"{l} -> {l + 1}", cos]
    row += [s["recall"][m][p][l] for p in ps for m in ("fate", "eap")]
    row += [s[name][m][l] for name in ("coverage", "precision") for m in ("fate", "eap")]
    rows.append(row)
  chance = ", ".join(f"P={p}: {c:.3f}" for p, c in sorted(s["recall_chance"].items()))
  return (markdown_table(headers, rows) + f"\n\nLoad on demand predicts nothing (recall and "
          f"coverage 0); a random guess recalls P / E ({chance}).")


def _hit_table(grid: list) -> str:
  rows = []
  for r in grid:
    if r["method"] != "fate":
      continue
    others = {m: _pick(grid, budget=r["budget"], allocation=r["allocation"],
                       policy=r["policy"], method=m)[0] for m in ("lod", "eap")}
    rows.append([r["budget"], r["allocation"], r["policy"], str(r["slots"]),
                 others["lod"]["decode"]["hit_rate"], others["eap"]["decode"]["hit_rate"],
                 r["decode"]["hit_rate"], r["decode"]["cache_hit_rate"],
                 r["prefill"]["hit_rate"]])
  return markdown_table(["budget (of all INT4)", "allocation", "policy", "slots per layer",
                         "decode hit LoD", "decode hit EAP", "decode hit Fate",
                         "Fate cache hit (resident)", "prefill hit Fate"], rows)


def _speed_table(results: dict) -> str:
  rows = []
  for name, t in results["timeline"].items():
    for r in speedups(t["grid"]):
      rows.append([name, r["budget"]] + [r[f"prefill_ms_{m}"] for m in METHODS] +
                  [r[f"decode_ms_{m}"] for m in METHODS] +
                  [f"{r[key]:.2f}x" for key in PAPER])
  rows.append(["paper (up to)", "-"] + ["-"] * 6 + [f"{v}x" for v in PAPER.values()])
  return markdown_table(["setting", "budget", "prefill ms LoD", "EAP", "Fate", "decode ms/token "
                         "LoD", "EAP", "Fate", "prefill vs LoD", "decode vs LoD",
                         "prefill vs EAP", "decode vs EAP"], rows, floatfmt=".3f")


def _quant_table(q: dict) -> str:
  rows = [[l, a, b] for l, (a, b) in enumerate(zip(q["error"]["int4"], q["error"]["int2"]))]
  bpb = q["bpb"]
  return (markdown_table(["MoE layer", "INT4 relative error", "INT2 relative error"], rows) +
          "\n\n" + markdown_table(["routed experts", "held-out bits per byte", "change"],
                                  [[fmt, v, f"{(v - bpb['full']) / bpb['full']:+.2%}"]
                                   for fmt, v in bpb.items()]))


def _decoder_table(d: dict) -> str:
  f = d["fate"]
  rows = [[name, f["measured"][name], f["replayed"][name]] for name in f["measured"]]
  bits = f["bits_per_token"]
  return (f"Every expert resident, full precision: the largest logit difference from the plain "
          f"model's KV-cache decoding over {d['requests']} requests x {d['new_tokens']} "
          f"positions is {d['max_logit_err']:.2e} (logits up to {d['logit_scale']:.1f}).\n\n"
          f"Fate at budget {f['budget']} (slots {f['slots']}, prefetch_k {f['prefetch_k']}, "
          f"INT4 cache, INT2 prefill copies): its counts against the timeline's replay of its "
          f"own steps (equal: {f['matches']}; {f['refills']} admitted INT2 copies re-copied as "
          f"INT4).\n\n" + markdown_table(["count", "decoder (measured)", "replay (modelled)"],
                                         rows) +
          f"\n\nBits per prompt token: every expert resident at full precision {bits['exact']:.4f}"
          f", Fate's offloaded decoder {bits['fate']:.4f}.")


def describe(config: "FateConfig", results: dict) -> dict:
  """The contract's markdown, data and scale."""
  m, t = results["model"], results["tokens"]
  link = config.link
  md = "\n\n".join([
      f"## Fate on {m['spec']}",
      f"{m['moe_layers']} MoE layers of {m['experts']} experts, top-{m['top_k']}, d_model "
      f"{m['d_model']}, expert width {m['expert_d_ff']}; {t['calibration']} calibration and "
      f"{t['requests']} request tokens (windows of {config.data.seq_len}: "
      f"{config.requests.prompt_len} prompt + the rest decoded); link {link.bandwidth_gb_s} "
      f"GB/s + {link.latency_us} us per copy.",
      "### Timeline settings\n\n" + _setting_table(results) +
      "\n\nmeasured: this model's expert bytes and this machine's per-layer times (the exact "
      "offloaded decoder, medians); gpu: a GPU-scale expert and layer times from the config.",
      "### Cross-layer prediction per layer pair\n\n" + _scores_table(results["scores"]),
      f"### Hit rates over budgets ({GRID} setting)\n\n" + _hit_table(
          results["timeline"][GRID]["grid"]),
      "### Estimated time per step and Fate's speedups (shallow-favouring, ARC for every "
      "method)\n\n" + _speed_table(results),
      "### Quantization\n\n" + _quant_table(results["quant"]),
      "### The offloaded decoder\n\n" + _decoder_table(results["decoder"]),
  ])
  return {"markdown": md, "data": f"held-out windows via {config.data.sources} "
          f"({config.data.split}) of {results['model']['source']}",
          "scale": f"{m['moe_layers']} MoE layers x {m['experts']} experts, "
                   f"{t['requests']} request tokens, {len(config.offload.budgets)} budgets"}


def plot(results: dict, workdir: str) -> None:
  """hit_rates.png: decode hit rate vs budget ({GRID} grid) and Fate's speedups vs budget."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  grid = results["timeline"][GRID]["grid"]
  budgets = sorted({r["budget"] for r in grid})
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  for allocation, policy, method in [("shallow", "arc", "fate"), ("shallow", "lru", "fate"),
                                     ("uniform", "arc", "fate"), ("shallow", "arc", "eap"),
                                     ("shallow", "arc", "lod")]:
    hits = [_pick(grid, budget=b, allocation=allocation, policy=policy,
                  method=method)[0]["decode"]["hit_rate"] for b in budgets]
    left.plot(budgets, hits, marker="o", label=f"{method}, {allocation}, {policy}")
  left.set(xlabel="budget (fraction of all experts in INT4)", ylabel="decode hit rate",
           title=f"hit rate ({GRID} setting)")
  left.legend(fontsize=8)
  fast = speedups(grid)
  for key in PAPER:
    right.plot(budgets, [r[key] for r in fast], marker="o", label=key.replace("_", " "))
  right.axhline(1.0, color="gray", lw=0.5)
  right.set(xlabel="budget", ylabel="Fate's speedup", title=f"estimated speedup ({GRID})")
  right.legend(fontsize=8)
  save_figure(fig, workdir, "hit_rates")
