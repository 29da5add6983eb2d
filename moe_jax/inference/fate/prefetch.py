"""What to prefetch: Fate's prefetch budget, prefill ranking and INT2 choice, and the path baseline.

Legend: L MoE layers, T tokens, E experts, K experts per token, P predicted experts per token,
U the experts in a prefill prediction's union, N calibration tokens.

Decode (Fate's `utils/prefetch_k.py`): one token's prediction is copied while the current layer
computes, so as many INT4 experts as one layer's time covers,
  prefetch_k = floor(T_layer / T_transfer(one INT4 expert)),
with T_layer the measured decoder-layer time of a decode step and T_transfer from the link
(`link.Link.copy_time`); capped here at E (Fate's torch.topk would fail above it).

Prefill (`Qwen2MoeDecoderLayer.forward`): each prompt token predicts K experts; their union is
ranked by count (most tokens first; ties here by the lower id, Fate's Counter keeps first
appearance) and copied in that order. The least popular go as INT2 while their cumulative count
stays <= int2_rate x the total count (0.3 for Qwen and Mixtral, 0.5 for DeepSeek in the paper),
stopping at the first that would exceed it.

The expert-activation-path baseline (EAP, after MoE-Infinity's activation tracing; Fate's repo
has none) built here is first-order: from calibration traces, the conditional frequencies
P(b at l+1 | a at l) (`moe_jax.analysis.affinity`, each of a token's K choices at l spreading one
unit over its K choices at l+1); a token that chose S_l at layer l scores b by
sum_{a in S_l} P(b | a) and the top-P are its prediction for layer l+1. Ties, and tokens whose
experts calibration never saw, fall back to the experts' calibration popularity at l+1. Unlike
Fate it needs layer l's routing, which is known at the same point (after layer l's attention).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from moe_jax.analysis.affinity import conditional, selections, transition_counts
from moe_jax.inference.fate.link import Link
from moe_jax.utils.errors import check_positive, require


def prefetch_k(layer_time: float, int4_bytes: float, link: Link, num_experts: int) -> int:
  """min(E, floor(layer_time / link.copy_time(int4_bytes))): decode experts to prefetch."""
  check_positive("layer_time", layer_time)
  check_positive("int4_bytes", int4_bytes)
  return min(num_experts, math.floor(layer_time / link.copy_time(int4_bytes)))


def prefill_ranking(pred, num_experts: int) -> tuple:
  """One layer's predictions pred[T, P] -> (experts[U], counts[U]): the union, most tokens first."""
  pred = np.asarray(pred)
  require(pred.ndim == 2 and (pred.size == 0 or (pred.min() >= 0 and pred.max() < num_experts)),
          "pred", f"shape {pred.shape} is not [T, P] of ids below {num_experts}",
          "pass one layer's predicted experts per token")
  counts = np.bincount(pred.ravel(), minlength=num_experts)
  order = np.argsort(-counts, kind="stable")
  order = order[counts[order] > 0]
  return order, counts[order]


def int2_choice(experts, counts, int2_rate: float) -> np.ndarray:
  """The least popular of a ranked union whose cumulative count stays <= int2_rate x the total.

  `experts`, `counts` as `prefill_ranking` returns them (counts non-increasing); returns the
  chosen experts, least popular first.
  """
  require(0 <= int2_rate <= 1, "int2_rate", f"{int2_rate} is not in [0, 1]",
          "pass the largest token share to send as INT2 (0.3 Qwen/Mixtral, 0.5 DeepSeek)")
  experts, counts = np.asarray(experts)[::-1], np.asarray(counts)[::-1]
  return experts[np.cumsum(counts) <= int2_rate * counts.sum()]


@dataclasses.dataclass(frozen=True)
class ActivationPaths:
  """conditional[L-1, E, E]: P(b at l+1 | a at l); popularity[L, E]: selection counts per layer."""
  conditional: np.ndarray
  popularity: np.ndarray


def fit_activation_paths(calibration, num_experts: int) -> ActivationPaths:
  """Calibration routing [L, N, K] -> the path baseline's tables."""
  experts = selections(calibration, num_experts)
  counts = transition_counts(experts, num_experts)
  popularity = np.stack([np.bincount(layer.ravel(), minlength=num_experts) for layer in experts])
  return ActivationPaths(conditional(counts), popularity)


def predict_pair(paths: ActivationPaths, l: int, experts, k: int) -> np.ndarray:
  """Layer l's routing experts[T, K] -> pred[T, k]: layer l+1's top-k given the experts at l."""
  num_layers, num_experts = paths.popularity.shape
  require(0 <= l < num_layers - 1, "l", f"{l} is not in [0, {num_layers - 1})",
          "predict the layers 1..L-1 from the one before")
  require(1 <= k <= num_experts, "k", f"{k} is not in [1, {num_experts}]",
          "predict at least one and at most num_experts experts")
  experts = np.asarray(experts, np.int64).reshape(len(experts), -1)
  scores = np.eye(num_experts)[experts].sum(-2) @ paths.conditional[l]  # [T, E]
  by_popularity = np.argsort(-paths.popularity[l + 1], kind="stable")
  ranked = np.argsort(-scores[:, by_popularity], axis=-1, kind="stable")
  return by_popularity[ranked[:, :k]]


def predict_from_paths(paths: ActivationPaths, actual, k: int) -> np.ndarray:
  """Routing actual[L, T, K] -> pred[L-1, T, k]: `predict_pair` for every layer pair."""
  num_layers, num_experts = paths.popularity.shape
  actual = selections(actual, num_experts)
  require(actual.shape[0] == num_layers, "actual",
          f"{actual.shape[0]} layers, the paths were fitted on {num_layers}",
          "pass the routing of the same MoE layers")
  return np.stack([predict_pair(paths, l, actual[l], k) for l in range(num_layers - 1)])
