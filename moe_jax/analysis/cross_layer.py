"""Cross-layer gate prediction: how well layer l's gate input foretells layer l+1's experts.

Legend: L MoE layers, T tokens, D model width, E experts, K experts per token (the router's top-k),
P experts predicted per token (decode: prefetch_k; prefill: K).

Fate (Fang et al. 2025, arXiv 2502.12224, Sec. 3) feeds layer l's gate input x_l (the
post-attention RMSNorm output of layer l) through the next layer's router before layer l's experts
run, and takes

  pred_{l+1}(t) = TopP(softmax(x_l(t) W_gate^(l+1)))

as the experts token t will use at layer l+1 (our router computes logits = x W with W[D, E];
softmax is monotone, so the top-P of the logits is the same set). Its premise is that adjacent
gate inputs are alike:

  cos_l = mean_t <x_l(t), x_{l+1}(t)> / (|x_l(t)| |x_{l+1}(t)|)          (0 against a zero vector)

Decode (one token per step) scores the recall of the P predicted experts against the K real ones,
  recall_{l+1} = mean_t |pred_{l+1}(t) n actual_{l+1}(t)| / K;
prefill (a whole prompt at once) predicts K experts per token, prefetches the union over the
prompt's tokens (ranked by count, `moe_jax.inference.fate.prefetch.prefill_ranking`) and scores
  coverage_{l+1} = |U_t pred_{l+1}(t) n U_t actual_{l+1}(t)| / |U_t actual_{l+1}(t)|.

The scores take predictions from any method (Fate's, an activation-path baseline's): arrays
pred[L-1, T, P] for layers 1..L-1 and the routing trace actual[L, T, K]. Pass the MoE layers only
(a model whose first layers are dense starts at its first MoE layer).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.analysis.affinity import selections
from moe_jax.utils.errors import require


def adjacent_cosine(x) -> np.ndarray:
  """Gate inputs x[L, T, D] -> [L-1] mean over tokens of cos(x_l(t), x_{l+1}(t)), float64."""
  x = np.asarray(x, np.float64)
  require(x.ndim == 3 and x.shape[0] >= 2, "x", f"shape {x.shape} is not [L >= 2, T, D]",
          "pass the gate inputs of every MoE layer as [layers, tokens, width]")
  dot = np.einsum("ltd,ltd->lt", x[:-1], x[1:])
  norm = np.linalg.norm(x, axis=-1)
  denom = norm[:-1] * norm[1:]
  cos = np.divide(dot, denom, out=np.zeros_like(dot), where=denom > 0)
  return cos.mean(-1)


def route_topk(x, w, k: int) -> np.ndarray:
  """Top-k experts of softmax(x W) per layer: x[L, T, D], w[L, D, E] -> [L, T, k] int32.

  float32 logits and `jax.lax.top_k`, as the router computes them, so equal inputs give the
  router's own choice (ties included).
  """
  require(np.ndim(x) == 3 and np.ndim(w) == 3 and np.shape(x)[0] == np.shape(w)[0]
          and np.shape(x)[2] == np.shape(w)[1], "x, w",
          f"shapes {np.shape(x)} and {np.shape(w)} are not [L, T, D] and [L, D, E]",
          "pass gate inputs [layers, tokens, width] and router kernels [layers, width, experts]")
  require(1 <= k <= np.shape(w)[2], "k", f"{k} is not in [1, {np.shape(w)[2]}]",
          "predict at least one and at most num_experts experts")
  logits = jnp.einsum("ltd,lde->lte", jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
  return np.asarray(jax.lax.top_k(logits, k)[1])


def predict_next(x, w, k: int) -> np.ndarray:
  """Fate's cross-layer prediction: x[L, T, D], w[L, D, E] -> pred[L-1, T, k] for layers 1..L-1.

  pred[l - 1] = TopK(softmax(x_{l-1} W^(l))): layer l-1's gate input through layer l's router.
  """
  require(np.ndim(x) == 3 and np.shape(x)[0] >= 2, "x",
          f"shape {np.shape(x)} is not [L >= 2, T, D]", "pass at least two MoE layers")
  return route_topk(np.asarray(x)[:-1], np.asarray(w)[1:], k)


def _masks(pred, actual, num_experts: int):
  """pred[L-1, T, P], actual[L, T, K] -> multi-hot [L-1, T, E] of both, for layers 1..L-1."""
  actual = selections(actual, num_experts)
  pred = np.asarray(pred)
  require(pred.ndim == 3 and pred.shape[:2] == (actual.shape[0] - 1, actual.shape[1]), "pred",
          f"shape {pred.shape} does not match [L-1, T, P] = [{actual.shape[0] - 1}, "
          f"{actual.shape[1]}, P] of actual {actual.shape}",
          "pass the predictions of layers 1..L-1 for the tokens of `actual`")
  require(pred.size == 0 or (pred.min() >= 0 and pred.max() < num_experts), "pred",
          f"ids outside [0, {num_experts})", "pass expert ids below num_experts")
  eye = np.eye(num_experts, dtype=bool)
  return eye[pred].any(-2), eye[actual[1:]].any(-2)


def decode_recall(pred, actual, num_experts: int) -> np.ndarray:
  """[L-1] mean over tokens of |pred_l(t) n actual_l(t)| / |actual_l(t)|, layers 1..L-1."""
  p, a = _masks(pred, actual, num_experts)
  return ((p & a).sum(-1) / a.sum(-1)).mean(-1)


def prefill_coverage(pred, actual, num_experts: int) -> dict:
  """One prompt's union scores per layer 1..L-1 (each [L-1]).

  Returns coverage = |U pred n U actual| / |U actual|, precision = |U pred n U actual| / |U pred|
  (the share of prefetched experts that get used), and the union sizes `predicted`, `actual`.
  """
  p, a = _masks(pred, actual, num_experts)
  p, a = p.any(1), a.any(1)
  both = (p & a).sum(-1)
  return {"coverage": both / a.sum(-1), "precision": both / np.maximum(p.sum(-1), 1),
          "predicted": p.sum(-1), "actual": a.sum(-1)}
