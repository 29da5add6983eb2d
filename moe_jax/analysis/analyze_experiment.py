"""`experiments.analyze`: one routing report for any MoE LM, joining the papers' diagnostics.

On a model (a base-model name, a training workdir or a Hugging Face directory of any zoo family):
  1. a routing trace (traces.capture) over token windows (token_stream.windows: held-out text by
     default), in memory or streamed to DIR/trace;
  2. per MoE layer (analyze_study.layer_stats): expert load (counts, CV, entropy; MoEQuant's
     frequency spread), HoME's zero-activation fraction and output scale per expert, MC-SMoE's
     router-logit similarity between experts;
  3. per layer pair: ExFlow's affinity P(j at l+1 | i at l) with its scalars against a
     token-shuffled twin, and the cross-device fraction of the best placement on G devices
     (solved on the even windows, scored on the odd ones); Fate's adjacent gate-input cosine and
     next-layer prediction recall.
Claims compare the numbers with the papers' (ExFlow: strong inter-layer affinity, up to 67% less
cross-GPU routing; Fate: adjacent gate inputs alike, about 97% prefetch accuracy).
"""
from __future__ import annotations

import dataclasses
import os
import platform

import numpy as np

from moe_jax.analysis import analyze_report, analyze_study, token_stream, traces
from moe_jax.analysis.token_stream import StreamConfig
from moe_jax.models.loading import load_model
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require
from moe_jax.utils.experiment import Claim, Experiment


@dataclasses.dataclass(frozen=True)
class AnalyzeConfig(Section):
  """model: a base-model name (optionally :quick), a HF directory or a training workdir;
  dtype: a HF checkpoint's dtype ("": its own); data: the token windows; batch_size: windows per
  traced forward; save_trace: stream the trace to DIR/trace (read back lazily) instead of
  holding it in memory; devices: G values to place on (those dividing E); time_limit: seconds
  per placement integer program; seed: of the random placement and the shuffled affinity
  reference; plot_layers: at most this many layers (pairs) in each heatmap figure."""
  model: str = "tiny_moe"
  dtype: str = ""
  data: StreamConfig = StreamConfig()
  batch_size: int = 16
  save_trace: bool = False
  devices: tuple[int, ...] = (2, 4, 8)
  time_limit: float = 5.0
  seed: int = 0
  plot_layers: int = 8

  def __post_init__(self):
    require(bool(self.model), "model", "is empty", "give a base-model name or a path")
    check_choice("dtype", self.dtype, ("", "float32", "bfloat16", "float16"))
    check_positive("batch_size", self.batch_size)
    require(bool(self.devices) and min(self.devices) >= 2, "devices",
            f"must be >= 2, got {self.devices}", "give device counts such as 2,4,8")
    check_positive("time_limit", self.time_limit)
    check_positive("plot_layers", self.plot_layers)


def _mean(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def _summary(layers: list, scores: dict, placed: dict, fate: dict) -> dict:
  """The scalars the claims and the tables read (None where the model has one MoE layer)."""
  shuffled = _mean(scores.get("shuffled_max_conditional", []))
  solved = sorted((g for g, row in placed.items() if "skipped" not in row), key=int)
  return {"load_cv": _mean([r["load_cv"] for r in layers]),
          "frequency_std": _mean([r["frequency_std"] for r in layers]),
          "affinity_max_conditional": _mean(scores.get("max_conditional", [])),
          "affinity_shuffled": shuffled,
          "affinity_twice_shuffled": None if shuffled is None else 2 * shuffled,
          "affinity_mutual_information_bits": _mean(scores.get("mutual_information_bits", [])),
          "placement_devices": int(solved[-1]) if solved else None,
          "placement_reduction": placed[solved[-1]]["reduction_vs_contiguous"] if solved else None,
          "fate_cosine": _mean(fate["cosine"]), "fate_recall": _mean(fate["recall"])}


def run(config: AnalyzeConfig, workdir: str) -> dict:
  """Traces config.model over config.data and returns the contract's results."""
  model = load_model(config.model, dtype=config.dtype or None)
  cfg = model.cfg
  tokens = token_stream.windows(config.data, model)
  trace = traces.capture(model, tokens, config.batch_size, config.data.max_tokens,
                         os.path.join(workdir, "trace") if config.save_trace else None)
  e = trace.num_experts
  layers = [analyze_study.layer_stats(trace, l) for l in range(trace.num_layers)]
  conditional, scores, placed = [], {}, {}
  if trace.num_layers >= 2:
    route = trace.stack("expert")
    conditional, scores = analyze_study.affinity_section(route, e, config.seed)
    fit, held = analyze_study.split_counts(route, trace.seq_len, e)
    placed = analyze_study.placement_section(fit, held, config.devices, config.time_limit,
                                             config.seed)
  fate = analyze_study.fate_section(trace)
  d = config.data
  data = (f"user token ids ({d.tokens_path})" if d.tokens_path else
          f"{'user' if 'files' in d.sources else 'shipped'}: {', '.join(d.sources)} text "
          f"({d.split.replace('_', '-')} documents; CPython {platform.python_version()}; "
          f"tokenizer {d.tokenizer})")
  scale = (f"{trace.num_layers} MoE layers of {cfg.num_layers}, {e} experts, top-{trace.top_k}, "
           f"d_model {cfg.d_model}; {trace.num_tokens} tokens in windows of {trace.seq_len}")
  results = {"model": config.model, "source": model.source, "tokens": trace.num_tokens,
             "moe_layers": list(trace.layers), "num_experts": e, "top_k": trace.top_k,
             "layers": layers, "affinity": conditional, "affinity_scores": scores,
             "placement": placed, "fate": fate, "data": data, "scale": scale,
             "summary": _summary(layers, scores, placed, fate)}
  results["markdown"] = analyze_report.markdown(results)
  analyze_report.plots(results, workdir, config.plot_layers)
  return results


EXPERIMENT = Experiment(
    name="analyze",
    paper="Routing report: HoME, MC-SMoE, ExFlow, Fate and MoEQuant diagnostics of any MoE LM",
    config="configs/analyze.py",
    run=run,
    claims=(
        Claim("exflow_affinity", "Inter-layer affinity: the mean over layer pairs of max_j "
              "P(j at l+1 given i at l) is more than twice its token-shuffled reference",
              "summary.affinity_max_conditional", ">", "summary.affinity_twice_shuffled",
              "strong inter-layer expert affinity in pre-trained GPT-MoE (ExFlow, Yao et al. "
              "2024)"),
        Claim("exflow_placement", "The solved placement sends fewer held-out transitions "
              "across devices than the contiguous one (largest G)",
              "summary.placement_reduction", ">", 0.0,
              "up to 67% less cross-GPU routing (ExFlow)"),
        Claim("fate_cosine", "Adjacent MoE layers' gate inputs are alike: mean cosine above 0.83",
              "summary.fate_cosine", ">", 0.83,
              "adjacent-layer gate-input cosine above 0.83 (Fate, Fang et al. 2025)"),
        Claim("fate_recall", "Layer l's gate input through layer l+1's router recalls most of "
              "its K experts: mean recall above 0.9", "summary.fate_recall", ">", 0.9,
              "about 97% prefetch accuracy in decode (Fate)"),
    ),
)
