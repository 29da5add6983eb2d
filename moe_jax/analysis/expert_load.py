"""How evenly a layer's experts are used, and what each one puts out, from a routing trace.

Legend: T tokens, K experts per token, E experts.

Over one layer's choices expert[T, K]:
  counts c_e = #{(t, k) : expert[t, k] = e},  shares f_e = c_e / (T K)  (MC-SMoE's usage
    frequency, moe_jax.analysis.similarity.usage_frequency)
  load_cv = std_e(c) / mean_e(c)                      (0: perfectly balanced)
  load_entropy = -sum_e f_e ln f_e / ln E             (1: uniform, 0: one expert takes all)
  frequency_std = std_e(f)                            (MoEQuant's expert-balance measure: "the
    standard deviation on frequency of expert", its repo's Table R1, e.g. 0.0427 for
    DeepSeek-MoE-16B calibrated on WikiText2, 0.0052 on EBSS samples; population std of the
    shares, which sum to 1, so it shrinks as 1/E and compares only between equal E)
Per expert, over the assignments routed to it (HoME's diagnostics of expert collapse):
  zero_frac_e: mean share of exact zeros in its hidden activations;
  output_norm_e: mean |FFN_e(x_t)|, its output scale before the gate weight;
both None for an expert that no token chose.
"""
from __future__ import annotations

import numpy as np

from moe_jax.analysis.similarity import usage_frequency


def per_expert_mean(values, experts, num_experts: int) -> list:
  """values[T, K] per assignment -> [E] mean over each expert's assignments (None if unused)."""
  experts = np.asarray(experts).ravel()
  counts = np.bincount(experts, minlength=num_experts)
  sums = np.bincount(experts, weights=np.asarray(values, np.float64).ravel(),
                     minlength=num_experts)
  return [float(s / c) if c else None for s, c in zip(sums, counts)]


def load_stats(experts, num_experts: int) -> dict:
  """One layer's choices expert[T, K] -> tokens_per_expert [E], frequency [E] and the scalars
  load_cv, load_entropy, frequency_std (module docstring)."""
  experts = np.asarray(experts)
  shares = usage_frequency(experts.ravel(), num_experts)
  counts = shares * experts.size
  nonzero = shares[shares > 0]
  entropy = -np.sum(nonzero * np.log(nonzero)) / np.log(num_experts) if num_experts > 1 else 1.0
  return {"tokens_per_expert": np.rint(counts).astype(np.int64).tolist(),
          "frequency": shares.tolist(), "load_cv": float(counts.std() / counts.mean()),
          "load_entropy": float(entropy), "frequency_std": float(shares.std())}
