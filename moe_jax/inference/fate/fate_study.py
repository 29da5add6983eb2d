"""The measurements of the Fate experiment, one function per section of its results.

Legend: L MoE layers, E experts, K experts per token, T tokens, R requests, S = P + N tokens per
request window (P prompt tokens prefilled, N decoded), P_d experts predicted per decode token.

A request is one window of held-out text: its first P tokens are the prompt (one prefill step),
the next N are decoded teacher-forced, so a decode step's routing is the window's own (a causal
forward routes each position as incremental decoding does). Windows alternate between the
calibration split (the activation-path baseline's tables) and the requests.

- `gate_traces`: gate inputs, routing and router kernels of the MoE layers (analysis.traces),
  split into calibration and requests.
- `prediction_scores`: adjacent gate-input cosine; decode recall and prefill coverage per layer
  for Fate (cross-layer gate), EAP (activation paths) and load on demand (no prediction).
- `request_steps` / `replay_requests`: the requests as timeline steps of one method, replayed in
  order through one set of caches (a serving process: caches carry over between requests).
- `quant_errors`, `fake_quant_model`: INT4 / INT2 expert weight error; a model whose routed
  experts are fake-quantized, for held-out bits per byte (moe_jax.eval).
- `decoder_logits`, `plain_logits`, `decoder_replay`, `layer_times`: the real offloaded decoder
  against the plain model, against the timeline's replay of its own steps, and its per-layer
  compute times.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.analysis import cross_layer, traces
from moe_jax.inference.fate import cache, prefetch, timeline
from moe_jax.inference.fate.link import Link
from moe_jax.models.loading import LoadedModel
from moe_jax.quant.core import QuantSpec, fake_quant

METHODS = ("lod", "eap", "fate")


def gate_traces(model: LoadedModel, windows: np.ndarray, batch_size: int) -> tuple[dict, dict]:
  """The calibration and request traces of windows[N, S] (alternate windows), each
  {"x": gate inputs [L, T, D], "experts": [L, T, K], "kernels": [L, D, E]}."""
  trace = traces.capture(model, windows, batch_size)
  n, s = windows.shape
  split = lambda a, first: a.reshape(a.shape[0], n, s, -1)[:, first::2].reshape(
      a.shape[0], -1, a.shape[-1])
  fields = {"x": trace.stack("gate_input"), "experts": trace.stack("expert")}
  return tuple({**{k: split(v, first) for k, v in fields.items()}, "kernels": trace.kernels}
               for first in (0, 1))


def predictions(method: str, req: dict, paths: prefetch.ActivationPaths, k: int):
  """pred[L-1, T, k] of layers 1..L-1 for every request token, None for load on demand."""
  if method == "fate":
    return cross_layer.predict_next(req["x"], req["kernels"], k)
  if method == "eap":
    return prefetch.predict_from_paths(paths, req["experts"], k)
  return None


def prediction_scores(req: dict, paths: prefetch.ActivationPaths, num_experts: int,
                      seq_len: int, prompt_len: int, predict: tuple[int, ...]) -> dict:
  """Per layer: cosine [L-1]; recall[method][P] [L-1] over request tokens; prefill coverage
  and precision[method] [L-1], mean over the requests' prompts (P = K per token)."""
  actual, k = req["experts"], req["experts"].shape[-1]
  num_layers, tokens = actual.shape[:2]
  out = {"cosine": cross_layer.adjacent_cosine(req["x"]).tolist(), "recall": {},
         "coverage": {}, "precision": {}, "recall_chance": {p: p / num_experts for p in predict}}
  prompts = [slice(r, r + prompt_len) for r in range(0, tokens, seq_len)]
  for method in METHODS:
    out["recall"][method] = {}
    for p in predict:
      pred = predictions(method, req, paths, p)
      out["recall"][method][p] = (np.zeros(num_layers - 1) if pred is None else
                                  cross_layer.decode_recall(pred, actual, num_experts)).tolist()
    pred = predictions(method, req, paths, k)
    if pred is None:
      out["coverage"][method] = out["precision"][method] = [0.0] * (num_layers - 1)
      continue
    scores = [cross_layer.prefill_coverage(pred[:, s], actual[:, s], num_experts)
              for s in prompts]
    for name in ("coverage", "precision"):
      out[name][method] = np.mean([sc[name] for sc in scores], 0).tolist()
  return out


@dataclasses.dataclass(frozen=True)
class Times:
  """Seconds per MoE layer [L] of a prefill (one prompt) and of a decode step."""
  attn_prefill: np.ndarray
  moe_prefill: np.ndarray
  attn_decode: np.ndarray
  moe_decode: np.ndarray

  @property
  def decode_layer(self) -> float:
    """Mean decoder-layer time of a decode step (Fate's T_layer of prefetch_k)."""
    return float(np.mean(self.attn_decode + self.moe_decode))


def request_steps(req: dict, pred_prefill, pred_decode, seq_len: int, prompt_len: int,
                  times: Times, num_experts: int, int2_rate: float) -> list:
  """Each request as [prefill step, decode steps...] of timeline LayerSteps."""
  actual = req["experts"]
  out = []
  for r in range(0, actual.shape[1], seq_len):
    pre, dec = slice(r, r + prompt_len), slice(r + prompt_len, r + seq_len)
    cut = lambda pred, s: None if pred is None else pred[:, s]
    swap = lambda a: None if a is None else np.swapaxes(a, 0, 1)
    out.append([timeline.prefill_step(actual[:, pre], cut(pred_prefill, pre), times.attn_prefill,
                                      times.moe_prefill, num_experts, int2_rate),
                *timeline.decode_steps(swap(actual[:, dec]), swap(cut(pred_decode, dec)),
                                       times.attn_decode, times.moe_decode, num_experts)])
  return out


def replay_requests(requests: list, slots, policy: str, link: Link, int4_bytes: float,
                    int2_bytes: float) -> dict:
  """Replays the requests in order through one set of warm caches; prefill and decode
  summaries (`timeline.summarize`: per-step time, hit rates, copies)."""
  stats = timeline.replay([s for r in requests for s in r], cache.make_caches(slots, policy),
                          link, int4_bytes, int2_bytes)
  first = np.cumsum([0] + [len(r) for r in requests])[:-1]
  is_prefill = np.zeros(len(stats), bool)
  is_prefill[first] = True
  return {"prefill": timeline.summarize([s for s, f in zip(stats, is_prefill) if f]),
          "decode": timeline.summarize([s for s, f in zip(stats, is_prefill) if not f])}


def _expert_kernels(model: LoadedModel) -> list[dict]:
  params = nn.unbox(model.variables["params"])
  return [params[f"layer_{i}"]["moe"]["experts"] for i in model.cfg.moe_layer_ids()]


def quant_errors(model: LoadedModel, specs: dict[str, QuantSpec]) -> dict:
  """fmt -> [L] relative Frobenius error |W_hat - W| / |W| of the routed experts per layer."""
  out = {}
  for fmt, spec in specs.items():
    rows = []
    for layer in _expert_kernels(model):
      err = sq = 0.0
      for w in layer.values():
        w = jnp.asarray(w, jnp.float32).swapaxes(-1, -2)
        err += float(jnp.sum(jnp.square(fake_quant(w, spec) - w)))
        sq += float(jnp.sum(jnp.square(w)))
      rows.append(float(np.sqrt(err / sq)))
    out[fmt] = rows
  return out


def fake_quant_model(model: LoadedModel, spec: QuantSpec) -> LoadedModel:
  """`model` with every routed expert's weights fake-quantized by `spec` (per output row)."""
  params = nn.unbox(model.variables["params"])
  params = dict(params)
  for i in model.cfg.moe_layer_ids():
    name = f"layer_{i}"
    experts = {k: fake_quant(jnp.asarray(w).swapaxes(-1, -2), spec).swapaxes(-1, -2)
               for k, w in params[name]["moe"]["experts"].items()}
    params[name] = {**params[name], "moe": {**params[name]["moe"], "experts": experts}}
  variables = {**model.variables, "params": params}
  return LoadedModel(model.module, variables, f"{model.source} (experts {spec.bits}-bit)")


@functools.partial(jax.jit, static_argnums=0)
def _forward(module, variables, tokens):
  return module.apply(variables, tokens)


def plain_logits(model: LoadedModel, tokens: np.ndarray, prompt_len: int) -> list:
  """The plain model's logits [B, V] for what `decoder_logits` decodes from tokens[B, P + N]:
  the prompt's last position, then each of the next N - 1 (one causal forward)."""
  logits = np.asarray(_forward(model.module, model.variables, jnp.asarray(tokens[:, :-1])))
  return [logits[:, i] for i in range(prompt_len - 1, tokens.shape[1] - 1)]


def decoder_logits(decoder, tokens: np.ndarray, prompt_len: int, timed: bool = False) -> tuple:
  """The offloaded decoder teacher-forced over tokens[B, P + N] as one request: (logits as
  `plain_logits` gives them, its OffloadSteps, the prompt's logits [B, P, V])."""
  b, s = tokens.shape
  decoder.start(b, s)
  logits, step = decoder.step(tokens[:, :prompt_len], timed)
  prompt, out, steps = np.asarray(logits), [np.asarray(logits[:, -1])], [step]
  for i in range(prompt_len, s - 1):
    logits, step = decoder.step(tokens[:, i:i + 1], timed)
    out.append(np.asarray(logits[:, -1]))
    steps.append(step)
  return out, steps, prompt


def layer_times(runs: list) -> Times:
  """Per-layer medians of timed OffloadSteps: runs[request] = [prefill, decode steps...]."""
  def median(steps, field):
    return np.median([[getattr(layer, field) for layer in step.layers] for step in steps], 0)
  prefill = [r[0] for r in runs]
  decode = [s for r in runs for s in r[1:]]
  return Times(median(prefill, "attn"), median(prefill, "moe"), median(decode, "attn"),
               median(decode, "moe"))


def decoder_replay(runs: list, slots, policy: str, link: Link, int4_bytes: float,
                   int2_bytes: float) -> dict:
  """The timeline's replay of the decoder's own steps (routing and prefetches as it ran them)
  against its own counts: {"matches": all equal, "measured": totals, "replayed": totals}."""
  steps = [s for r in runs for s in r]
  replayed = timeline.replay([s.layers for s in steps], cache.make_caches(slots, policy), link,
                             int4_bytes, int2_bytes)
  fields = ("needed", "resident", "prefetched", "copies", "wasted")
  ours = [[getattr(s.stats, f) for f in fields] for s in steps]
  theirs = [[getattr(s, f) for f in fields] for s in replayed]
  total = lambda rows: dict(zip(fields, np.sum(rows, 0).tolist()))
  return {"matches": ours == theirs, "measured": total(ours), "replayed": total(theirs),
          "refills": sum(s.refills for s in steps)}


def nats(logits: np.ndarray, targets: np.ndarray) -> float:
  """Summed -log p(target) of logits[..., V] (float64)."""
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1)
  return -float(np.sum(np.take_along_axis(np.asarray(logp, np.float64), targets[..., None], -1)))
