r"""Fate's reproduction (Fang et al. 2025, arXiv 2502.12224): the config, the recipe, the claims.

On a trained MoE LM (a base model by name, a training workdir or a Hugging Face directory):
  1. routing traces over held-out windows, alternately calibration (the activation-path
     baseline's tables) and requests (prompt + teacher-forced continuation; fate_study);
  2. adjacent gate-input cosine, decode recall and prefill coverage per layer for Fate, the
     activation-path baseline (EAP) and load on demand (LoD);
  3. the real offloaded decoder (offload.py) with every expert resident and no quantization
     against the plain model's KV-cache decoding, timed piece by piece: the per-layer compute
     times of this machine;
  4. trace replay (timeline.py) of every request through the caches, per memory budget:
     shallow-favouring vs uniform allocation, ARC vs LRU, LoD / EAP / Fate; prefill and decode
     time per step from the two-stream timeline in two settings: "measured" (this model's expert
     bytes, this machine's layer times) and "gpu" (a GPU-scale expert and layer times given in
     the config), both over the configured link (PCIe 4.0 x16 by default);
  5. INT4 / INT2 expert error and held-out bits per byte of fake-quantized models (moe_jax.eval);
  6. the offloaded decoder with Fate at one budget (INT4 cache, INT2 prefill copies): its loads
     against the replay of its own steps, and its bits per token on the prompts.
Claims compare the numbers with the paper's: adjacent cosine above 83%, 97% decode prediction,
99% hit rate, quality kept at INT4, up to 4.5x / 4.1x prefill / decode over LoD and 1.9x / 2.2x
over EAP.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from moe_jax.analysis import token_stream
from moe_jax.analysis.token_stream import StreamConfig
from moe_jax.data.corpus import DataConfig
from moe_jax.eval import EvalConfig, evaluate
from moe_jax.inference.fate import allocation, fate_report, fate_study, prefetch
from moe_jax.inference.fate.link import Link
from moe_jax.inference.fate.offload import OffloadedLM
from moe_jax.inference.fate.store import FULL, INT2, INT4, bytes_per_weight, quant_specs
from moe_jax.layers.experts import ACTIVATIONS
from moe_jax.models.loading import load_model
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_nonnegative, check_positive, require
from moe_jax.utils.experiment import Claim, Experiment


@dataclasses.dataclass(frozen=True)
class RequestsConfig(Section):
  """prompt_len: P, the prefilled tokens of each request window (data.seq_len = P + N, the
  rest decoded); predict: decode recall is scored at P_d = m K for each m; batch_size: windows
  per traced forward."""
  prompt_len: int = 128
  predict: tuple[int, ...] = (1, 2)
  batch_size: int = 16

  def __post_init__(self):
    check_positive("prompt_len", self.prompt_len)
    check_positive("batch_size", self.batch_size)
    require(bool(self.predict) and min(self.predict) >= 1, "predict",
            f"must be multiples >= 1 of K, got {self.predict}", "use e.g. 1,2")


@dataclasses.dataclass(frozen=True)
class OffloadConfig(Section):
  """budgets: device memory for routed experts as fractions of all of them in INT4 (below 1
  some are offloaded); int2_rate: the prefill token share Fate sends as INT2 (0.3 Qwen/Mixtral,
  0.5 DeepSeek); int4_group, int2_group: quantization groups (Fate: 64, 32; each must divide
  the model's D and expert F)."""
  budgets: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75)
  int2_rate: float = 0.3
  int4_group: int = 64
  int2_group: int = 32

  def __post_init__(self):
    require(bool(self.budgets) and all(0 < b <= 1 for b in self.budgets), "budgets",
            f"must be fractions in (0, 1], got {self.budgets}", "use e.g. 0.125,0.25,0.5,0.75")
    require(0 <= self.int2_rate <= 1, "int2_rate", f"{self.int2_rate} is not in [0, 1]",
            "use 0.3 (Qwen, Mixtral) or 0.5 (DeepSeek)")
    check_positive("int4_group", self.int4_group)
    check_positive("int2_group", self.int2_group)


@dataclasses.dataclass(frozen=True)
class LinkConfig(Section):
  """The host-to-device link: effective pinned-copy bandwidth and per-copy latency (PCIe 4.0
  x16 by default; PCIe 3.0 x16, Fate's testbeds: 12 GB/s)."""
  bandwidth_gb_s: float = 25.0
  latency_us: float = 10.0

  def __post_init__(self):
    check_positive("bandwidth_gb_s", self.bandwidth_gb_s)
    check_nonnegative("latency_us", self.latency_us)

  def link(self) -> Link:
    return Link(self.bandwidth_gb_s * 1e9, self.latency_us * 1e-6)


@dataclasses.dataclass(frozen=True)
class GpuConfig(Section):
  """The "gpu" setting of the timeline: the traces' routing with a GPU-scale expert of
  `expert_params` weights (full precision `full_bytes` each) and per-layer times in ms of a
  prefill of requests.prompt_len tokens and of a decode step (attention + gate; experts).
  Defaults: docs/fate.md (Qwen1.5-MoE-A2.7B's expert, 3 x 2048 x 1408 weights, FP16)."""
  expert_params: int = 8650752
  full_bytes: float = 2.0
  attn_prefill_ms: float = 0.5
  moe_prefill_ms: float = 1.5
  attn_decode_ms: float = 0.25
  moe_decode_ms: float = 0.35

  def __post_init__(self):
    for name in ("expert_params", "full_bytes", "attn_prefill_ms", "moe_prefill_ms",
                 "attn_decode_ms", "moe_decode_ms"):
      check_positive(name, getattr(self, name))


@dataclasses.dataclass(frozen=True)
class DecoderConfig(Section):
  """The real offloaded decoder: `requests` request windows, each prefilled and then decoded
  teacher-forced for `new_tokens` - 1 steps; budget: the fraction (as offload.budgets) its Fate
  run holds."""
  requests: int = 4
  new_tokens: int = 16
  budget: float = 0.25

  def __post_init__(self):
    require(self.requests >= 2, "requests", f"must be >= 2, got {self.requests}",
            "run at least two (the first one's times include compilation)")
    check_positive("new_tokens", self.new_tokens)
    require(0 < self.budget <= 1, "budget", f"{self.budget} is not in (0, 1]",
            "use a fraction of all experts in INT4")


@dataclasses.dataclass(frozen=True)
class FateConfig(Section):
  """model: a base model name[:quick], a training workdir or a HF directory; data: the held-out
  windows (seq_len = prompt + decoded tokens); eval_windows, eval_seq_len: bits per byte of the
  fake-quantized models over that many held-out windows per domain of that length."""
  model: str = "deep_top1"
  data: StreamConfig = StreamConfig(seq_len=192, max_tokens=12288)
  requests: RequestsConfig = RequestsConfig()
  offload: OffloadConfig = OffloadConfig()
  link: LinkConfig = LinkConfig()
  gpu: GpuConfig = GpuConfig()
  decoder: DecoderConfig = DecoderConfig()
  eval_windows: int = 64
  eval_seq_len: int = 256

  def __post_init__(self):
    require(bool(self.model), "model", "is empty", "name a base model or a checkpoint")
    require(self.requests.prompt_len < self.data.seq_len, "requests.prompt_len",
            f"{self.requests.prompt_len} leaves no decoded token in windows of "
            f"data.seq_len={self.data.seq_len}", "use a prompt shorter than data.seq_len")
    require(self.requests.prompt_len + self.decoder.new_tokens <= self.data.seq_len,
            "decoder.new_tokens", f"{self.decoder.new_tokens} new tokens after a prompt of "
            f"{self.requests.prompt_len} pass the windows' {self.data.seq_len} tokens",
            "lower decoder.new_tokens or raise data.seq_len")
    check_positive("eval_windows", self.eval_windows)
    check_positive("eval_seq_len", self.eval_seq_len)


def _gpu_times(config: FateConfig, layers: int) -> fate_study.Times:
  g = config.gpu
  per_layer = lambda ms: np.full(layers, ms * 1e-3)
  return fate_study.Times(per_layer(g.attn_prefill_ms), per_layer(g.moe_prefill_ms),
                          per_layer(g.attn_decode_ms), per_layer(g.moe_decode_ms))


def _sizes(config: FateConfig, weights: float, full: float) -> dict:
  """Bytes of one expert of `weights` weights in each format (`full` bytes a weight at FULL)."""
  specs = quant_specs(config.offload.int4_group, config.offload.int2_group)
  return {fmt: weights * bytes_per_weight(fmt, specs, full) for fmt in (FULL, INT4, INT2)}


def _budget_allocations(config: FateConfig, budget: float, num_layers: int, num_experts: int,
                        size: dict) -> dict:
  nbytes = budget * num_layers * num_experts * size[INT4]
  return {name: scheme(nbytes, num_layers, num_experts, size[FULL], size[INT4])
          for name, scheme in (("shallow", allocation.shallow_favouring),
                               ("uniform", allocation.uniform))}


def _timeline(config: FateConfig, req: dict, paths, setting: dict, full_grid: bool) -> dict:
  """Replays of the requests per budget (allocation x policy x method; Fate's allocation and
  policy only unless full_grid) in one setting {times, weights, full}."""
  num_layers, _, k = req["experts"].shape
  e = req["kernels"].shape[-1]
  size, link = _sizes(config, setting["weights"], setting["full"]), config.link.link()
  p_decode = prefetch.prefetch_k(setting["times"].decode_layer, size[INT4], link, e)
  steps = {method: fate_study.request_steps(
      req, fate_study.predictions(method, req, paths, k),
      fate_study.predictions(method, req, paths, p_decode), config.data.seq_len,
      config.requests.prompt_len, setting["times"], e,
      config.offload.int2_rate if method == "fate" else 0.0) for method in fate_study.METHODS}
  grid = []
  for budget in config.offload.budgets:
    for scheme, alloc in _budget_allocations(config, budget, num_layers, e, size).items():
      for policy in ("arc", "lru"):
        if not full_grid and (scheme, policy) != ("shallow", "arc"):
          continue
        for method in fate_study.METHODS:
          out = fate_study.replay_requests(steps[method], alloc.slots, policy, link, size[INT4],
                                           size[INT2])
          grid.append({"budget": budget, "allocation": scheme, "policy": policy,
                       "method": method, "slots": list(alloc.slots), **out})
  return {"bytes": size, "prefetch_k": p_decode, "grid": grid,
          "times_ms": {name: (np.asarray(v) * 1e3).tolist()
                       for name, v in dataclasses.asdict(setting["times"]).items()}}


def _exact_decoder(config: FateConfig, model, tokens: np.ndarray) -> dict:
  """Every expert resident at full precision, timed, against the plain model's decoding."""
  num_layers, e = len(model.cfg.moe_layer_ids()), model.cfg.moe.num_experts
  p = config.requests.prompt_len
  decoder = OffloadedLM(model, allocation.Allocation((e,) * num_layers, (allocation.FULL,) *
                                                     num_layers, 0.0), quantize=False)
  err = scale = 0.0
  runs, prompts = [], []
  for r in range(len(tokens)):
    ours, steps, prompt = fate_study.decoder_logits(decoder, tokens[r:r + 1], p, timed=True)
    ref = fate_study.plain_logits(model, tokens[r:r + 1], p)
    err = max([err] + [float(np.abs(a - b).max()) for a, b in zip(ours, ref)])
    scale = max([scale] + [float(np.abs(b).max()) for b in ref])
    runs.append(steps)
    prompts.append(prompt)
  return {"max_logit_err": err, "logit_scale": scale,
          "times": fate_study.layer_times(runs[1:]), "prompt_logits": prompts}


def _fate_decoder(config: FateConfig, model, tokens: np.ndarray, size: dict, prefetch_k: int,
                  exact_prompts: list) -> dict:
  """Fate's decoder at decoder.budget: its loads against the replay, its bits per token."""
  o, p = config.offload, config.requests.prompt_len
  num_layers, e = len(model.cfg.moe_layer_ids()), model.cfg.moe.num_experts
  alloc = _budget_allocations(config, config.decoder.budget, num_layers, e, size)["shallow"]
  decoder = OffloadedLM(model, alloc, method="fate", prefetch_k=prefetch_k,
                        int2_rate=o.int2_rate, int4_group=o.int4_group, int2_group=o.int2_group)
  runs, nats = [], {"exact": 0.0, "fate": 0.0}
  for r in range(len(tokens)):
    _, steps, prompt = fate_study.decoder_logits(decoder, tokens[r:r + 1], p)
    runs.append(steps)
    targets = tokens[r:r + 1, 1:p]
    nats["exact"] += fate_study.nats(exact_prompts[r][:, :-1], targets)
    nats["fate"] += fate_study.nats(prompt[:, :-1], targets)
  replayed = fate_study.decoder_replay(runs, alloc.slots, "arc", config.link.link(),
                                       decoder.store.nbytes(INT4), decoder.store.nbytes(INT2))
  bits = len(tokens) * (p - 1) * np.log(2)
  return {"budget": config.decoder.budget, "slots": list(alloc.slots), "prefetch_k": prefetch_k,
          "bits_per_token": {name: value / bits for name, value in nats.items()}, **replayed}


def run(config: FateConfig, workdir: str) -> dict:
  """Traces, prediction scores, decoders, timeline replays, quantization; the results."""
  model = load_model(config.model)
  cfg = model.cfg
  e, k = cfg.moe.num_experts, cfg.moe.top_k
  windows = token_stream.windows(config.data, model)
  require(len(windows) >= 4, "data.max_tokens", f"{len(windows)} windows of "
          f"{config.data.seq_len} tokens", "raise data.max_tokens (>= 4 windows)")
  calib, req = fate_study.gate_traces(model, windows, config.requests.batch_size)
  requests = windows[1::2]
  require(req["experts"].shape[0] >= 2, "model", "has one MoE layer",
          "use a model with at least two MoE layers (Fate predicts the next one)")
  paths = prefetch.fit_activation_paths(calib["experts"], e)
  predict = tuple(sorted({min(e, m * k) for m in config.requests.predict}))
  scores = fate_study.prediction_scores(req, paths, e, config.data.seq_len,
                                        config.requests.prompt_len, predict)
  tokens = requests[:config.decoder.requests,
                    :config.requests.prompt_len + config.decoder.new_tokens]
  exact = _exact_decoder(config, model, tokens)
  weights = (3 if ACTIVATIONS[cfg.activation][1] else 2) * cfg.d_model * cfg.moe.d_ff
  full = jnp.dtype(cfg.param_dtype).itemsize
  settings = {"measured": {"times": exact["times"], "weights": weights, "full": full},
              "gpu": {"times": _gpu_times(config, req["experts"].shape[0]),
                      "weights": config.gpu.expert_params, "full": config.gpu.full_bytes}}
  timelines = {name: _timeline(config, req, paths, s, name == fate_report.GRID)
               for name, s in settings.items()}
  fate = _fate_decoder(config, model, tokens, _sizes(config, weights, full),
                       timelines["measured"]["prefetch_k"], exact["prompt_logits"])
  specs = quant_specs(config.offload.int4_group, config.offload.int2_group)
  eval_config = EvalConfig(
      data=DataConfig(sources=config.data.sources, files=config.data.files,
                      text_field=config.data.text_field, val_every=config.data.val_every,
                      max_eval_windows=config.eval_windows),
      seq_len=config.eval_seq_len, tokenizer=config.data.tokenizer, tasks=(), agreement=False)
  bpb = {FULL: evaluate(model, eval_config)["bpb"]["all"]}
  for fmt, spec in specs.items():
    bpb[fmt] = evaluate(fate_study.fake_quant_model(model, spec), eval_config)["bpb"]["all"]
  results = {
      "model": {"spec": config.model, "source": model.source, "layers": cfg.num_layers,
                "moe_layers": len(cfg.moe_layer_ids()), "experts": e, "top_k": k,
                "d_model": cfg.d_model, "expert_d_ff": cfg.moe.d_ff, "expert_weights": weights},
      "tokens": {"calibration": int(calib["experts"].shape[1]),
                 "requests": int(req["experts"].shape[1])},
      "scores": scores,
      "timeline": timelines,
      "quant": {"error": fate_study.quant_errors(model, specs), "bpb": bpb},
      "decoder": {"max_logit_err": exact["max_logit_err"], "logit_scale": exact["logit_scale"],
                  "requests": len(tokens), "new_tokens": config.decoder.new_tokens,
                  "fate": fate},
  }
  results["summary"] = fate_report.summary(results, config)
  results.update(fate_report.describe(config, results))
  fate_report.plot(results, workdir)
  return results


PAPER = ("Fang et al., Accurate Expert Predictions in MoE Inference via Cross-Layer Gate (Fate), "
         "arXiv 2502.12224")

EXPERIMENT = Experiment(
    name="fate",
    paper=PAPER,
    config="configs/fate.py",
    run=run,
    claims=(
        Claim("adjacent_cosine", "adjacent MoE layers' gate inputs are alike: mean cosine",
              "summary.cosine", ">", 0.83, "above 83% (Fig. 2)"),
        Claim("decode_recall", "Fate's decode prediction (P = K) recalls the routed experts",
              "summary.recall_fate", ">", 0.9, "97.15% prefetch accuracy"),
        Claim("fate_beats_eap", "... better than the activation-path baseline (same P)",
              "summary.recall_fate", ">", "summary.recall_eap", "Fate above EAP"),
        Claim("prefill_coverage", "Fate's prefill prediction covers the prompt's experts",
              "summary.coverage_fate", ">=", 0.99, "above 99.6% in prefill"),
        Claim("hit_rate", "decode hit rate (resident or prefetched) of Fate, largest budget",
              "summary.hit_rate", ">=", 0.99, "99% hit rate"),
        Claim("arc_over_lru", "ARC's decode hit rate, mean over budgets, at least LRU's",
              "summary.hit_arc", ">=", "summary.hit_lru", "ARC chosen over LRU"),
        Claim("shallow_over_uniform", "shallow-favouring allocation's hit rate at least "
              "uniform's", "summary.hit_shallow", ">=", "summary.hit_uniform",
              "shallow-favouring allocation"),
        Claim("int2_worse", "INT2 expert error above INT4's", "summary.int2_error", ">",
              "summary.int4_error", "INT2 loses more (MMLU 55.1 vs 59.4)"),
        Claim("int4_keeps_quality", "INT4 experts raise held-out bits per byte by under 1%",
              "summary.int4_bpb_increase", "<", 0.01, "MMLU 59.6 FP16 -> 59.4 INT4"),
        Claim("prefill_over_lod", "estimated prefill speedup over load on demand (gpu "
              "setting, best budget)", "summary.prefill_vs_lod", ">", 1.0, "up to 4.5x"),
        Claim("decode_over_lod", "estimated decode speedup over load on demand",
              "summary.decode_vs_lod", ">", 1.0, "up to 4.1x"),
        Claim("prefill_over_eap", "estimated prefill speedup over EAP",
              "summary.prefill_vs_eap", ">", 1.0, "up to 1.9x"),
        Claim("decode_over_eap", "estimated decode speedup over EAP",
              "summary.decode_vs_eap", ">", 1.0, "up to 2.2x"),
        Claim("same_logits", "offloading without quantization keeps the logits (max abs "
              "error, every expert resident)", "summary.max_logit_err", "<", 1e-5,
              "quality kept"),
        Claim("decoder_matches_replay", "the offloaded decoder's copies and hits equal the "
              "timeline's replay of its steps", "summary.decoder_matches", ">=", 1.0,
              "(our check of the model behind the estimates)"),
    ),
)
