"""Calibration for MC-SMoE: the routing statistics that decide which experts merge.

Legend: L MoE layers, N windows, S tokens per window, T = N S calibration tokens, E experts.

One routing trace (moe_jax/analysis/traces.py) of the original model over windows of the
training text gives, per MoE layer,
  freqs[L, E]:       usage frequency, the share of the T*K top-k selections that chose e;
  similarity[L, E, E]: router-logit similarity (cos(Z[:, i], Z[:, j]) + 1) / 2 over the
                     calibration tokens' logits Z[T, E] (moe_jax/analysis/similarity.py).
The repo computes the similarity from one calibration batch (Switch: 256 task samples; Mixtral:
a MiniPile subset); here it is every calibration token. Windows come from the training split
(never the held-out documents that evaluation scores).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from moe_jax.analysis import similarity, traces
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import require


@dataclasses.dataclass(frozen=True)
class Calibration:
  """freqs [L, E] usage frequencies; similarity [L, E, E] router-logit similarity; tokens T."""
  freqs: np.ndarray
  similarity: np.ndarray
  tokens: int


def windows(tokens: np.ndarray, seq_len: int, count: int) -> np.ndarray:
  """`count` non-overlapping windows [count, seq_len] evenly spaced over a token stream."""
  n = len(tokens) // seq_len
  require(n >= 1, "calibration", f"the stream ({len(tokens)} tokens) is shorter than one window "
          f"of {seq_len}", "lower the calibration seq_len or give more text")
  starts = np.unique(np.linspace(0, n - 1, min(count, n)).astype(np.int64)) * seq_len
  return np.stack([tokens[s:s + seq_len] for s in starts]).astype(np.int32)


def calibrate(model: LoadedModel, calibration_windows: np.ndarray,
              batch_size: int = 16) -> Calibration:
  """Usage frequencies and router-logit similarity of every MoE layer of `model`."""
  trace = traces.capture(model, calibration_windows, batch_size)
  choices = trace.stack("expert")  # [L, T, K]
  freqs = similarity.usage_frequency(choices.reshape(len(choices), -1), trace.num_experts)
  return Calibration(freqs, similarity.router_logit_similarity(trace.stack("router_logits")),
                     trace.num_tokens)
