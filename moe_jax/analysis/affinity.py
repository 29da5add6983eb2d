"""Inter-layer expert affinity of a routing trace (ExFlow, Yao et al. 2024, arXiv 2401.08383).

Legend: L layers, E experts per layer, N tokens, K experts per token (top-1: K = 1).

A trace is `experts[L, N, K]` (or `[L, N]` for top-1): the experts token t chose at layer l.
Transition counts between layers l and l+1, over tokens t, selections a in S_l(t), b in S_{l+1}(t):

  n_l(a, b) = sum_t sum_{a in S_l(t)} sum_{b in S_{l+1}(t)} 1 / K.

Each of a token's K selections at l spreads one unit evenly over its K selections at l+1, so
sum_b n_l(a, b) = c_l(a), the number of tokens that chose a at l, and sum_{a,b} n_l(a, b) = N K;
for top-1 n_l(a, b) is the plain count #{t : R[t, l] = a, R[t, l+1] = b} of the paper. Affinity is
the conditional A_l(a -> b) = P(b at l+1 | a at l) = n_l(a, b) / c_l(a); an expert no token chose
at l has no evidence, so its row is uniform (1/E), carries weight 0 in the weighted scores and is
left out of the unweighted mean. Scalars per layer pair:

  max_conditional (weighted) = sum_a c_l(a) max_b A_l(a -> b) / sum_a c_l(a)
  max_conditional (unweighted) = mean over chosen a of max_b A_l(a -> b)
  mutual_information = sum_{a,b} p(a, b) log2(p(a, b) / (p(a) p(b))), p = n_l / sum n_l  [bits]

Uniform routing gives 1/E and 0 bits in the limit of many tokens; a finite trace has a positive
bias, which `shuffle_tokens` measures: the same trace with each layer's tokens permuted
independently (same loads, no affinity).
"""
from __future__ import annotations

import numpy as np

from moe_jax.utils.errors import require


def selections(experts: np.ndarray, num_experts: int) -> np.ndarray:
  """Validates a trace [L, N] or [L, N, K] of expert ids and returns it as int64 [L, N, K]."""
  experts = np.asarray(experts)
  require(experts.ndim in (2, 3), "experts", f"shape {experts.shape} is not [L, N] or [L, N, K]",
          "pass the expert ids as [layers, tokens] or [layers, tokens, k]")
  require(np.issubdtype(experts.dtype, np.integer), "experts", f"dtype {experts.dtype} is not int",
          "pass integer expert ids")
  experts = experts.astype(np.int64).reshape(experts.shape[:2] + (-1,))
  require(experts.shape[0] >= 2, "experts", f"{experts.shape[0]} layer(s)",
          "pass a trace of at least 2 layers")
  require(experts.size > 0, "experts", "the trace is empty", "pass at least one token")
  require(experts.min() >= 0 and experts.max() < num_experts, "experts",
          f"ids span [{experts.min()}, {experts.max()}] outside [0, {num_experts})",
          "pass ids below num_experts, or raise num_experts")
  return experts


def transition_counts(experts: np.ndarray, num_experts: int) -> np.ndarray:
  """Trace [L, N(, K)] -> n[L-1, E, E] float64, n[l, a, b] = n_l(a, b) (module docstring)."""
  experts = selections(experts, num_experts)
  num_layers, _, k = experts.shape
  e = num_experts
  counts = np.empty((num_layers - 1, e, e))
  for l in range(num_layers - 1):
    pairs = experts[l, :, :, None] * e + experts[l + 1, :, None, :]  # [N, K, K]
    counts[l] = np.bincount(pairs.ravel(), minlength=e * e).reshape(e, e) / k
  return counts


def conditional(counts: np.ndarray) -> np.ndarray:
  """n[L-1, E, E] -> A[L-1, E, E], A[l, a, b] = P(b at l+1 | a at l); rows of unchosen a uniform."""
  rows = counts.sum(-1, keepdims=True)
  uniform = np.full_like(counts, 1.0 / counts.shape[-1])
  return np.divide(counts, rows, out=uniform, where=rows > 0)


def max_conditional(counts: np.ndarray, weighted: bool = True) -> np.ndarray:
  """n[L-1, E, E] -> [L-1]: mean over a of max_b P(b | a), weighted by c_l(a) or over chosen a."""
  rows = counts.sum(-1)
  top = conditional(counts).max(-1)
  weight = rows if weighted else (rows > 0).astype(np.float64)
  return (weight * top).sum(-1) / weight.sum(-1)


def mutual_information(counts: np.ndarray) -> np.ndarray:
  """n[L-1, E, E] -> [L-1] mutual information in bits between the experts at l and at l+1."""
  joint = counts / counts.sum((-2, -1), keepdims=True)
  independent = joint.sum(-1, keepdims=True) * joint.sum(-2, keepdims=True)
  ratio = np.divide(joint, independent, out=np.ones_like(joint), where=joint > 0)
  return (joint * np.log2(ratio)).sum((-2, -1))


def shuffle_tokens(experts: np.ndarray, seed: int = 0) -> np.ndarray:
  """Trace [L, N(, K)], each layer's tokens permuted independently: loads kept, affinity gone."""
  experts = np.asarray(experts)
  rng = np.random.default_rng(seed)
  order = np.argsort(rng.random(experts.shape[:2]), axis=1)
  order = order.reshape(order.shape + (1,) * (experts.ndim - 2))
  return np.take_along_axis(experts, order, axis=1)


def summary(experts: np.ndarray, num_experts: int, seed: int = 0) -> dict:
  """Per layer pair [L-1] scores of a trace and of its token-shuffled twin, plus the uniform limits.

  Returns a dict of lists: max_conditional, max_conditional_unweighted, mutual_information_bits,
  the same three with a `shuffled_` prefix (`shuffle_tokens(experts, seed)`, the finite-trace
  reference), and floats uniform_max_conditional = 1/E, uniform_mutual_information_bits = 0.
  """
  out = {"uniform_max_conditional": 1.0 / num_experts, "uniform_mutual_information_bits": 0.0}
  for prefix, trace in (("", experts), ("shuffled_", shuffle_tokens(experts, seed))):
    counts = transition_counts(trace, num_experts)
    out[prefix + "max_conditional"] = max_conditional(counts).tolist()
    out[prefix + "max_conditional_unweighted"] = max_conditional(counts, weighted=False).tolist()
    out[prefix + "mutual_information_bits"] = mutual_information(counts).tolist()
  return out
