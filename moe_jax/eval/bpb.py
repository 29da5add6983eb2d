"""Held-out bits per byte and next-token top-1 accuracy, per domain and over all of them.

Legend: n windows, S predicted positions per window, d a domain ("english", "python", "user").

  bpb_d  = sum_{windows of d, s} -log p(x_{s+1} | x_{<=s}) / (ln 2 * bytes_d)
  top1_d = mean_{windows of d, s} [argmax_v p(v | x_{<=s}) == x_{s+1}]
  bytes_d = (tokens scored) * (UTF-8 bytes / tokens of d's text): exact for the byte tokenizer,
            the text's mean bytes per token for a subword one
  "all": every domain's log-probabilities over every domain's bytes (and hits over tokens).

A domain's documents are joined as in training (moe_jax/data/corpus.py) and cut into at most
`max_windows` non-overlapping windows [n, S + 1] (moe_jax/data/iterator.eval_windows), so a byte
model scored at its training seq_len sees the windows, and gets the number, its trainer reports.
"""
from __future__ import annotations

import math

import numpy as np

from moe_jax.data.corpus import SEPARATOR, Document
from moe_jax.data.iterator import eval_windows
from moe_jax.eval.encoding import Encoder
from moe_jax.eval.forward import score_rows
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import require

LN2 = math.log(2.0)


def domain_windows(docs: list[Document], encoder: Encoder, seq_len: int,
                   max_windows: int) -> dict[str, tuple[np.ndarray, float]]:
  """domain -> (windows [n, seq_len + 1] of its joined documents, its bytes per token)."""
  out = {}
  for domain in sorted({d.domain for d in docs}):
    text = SEPARATOR.join(d.text for d in docs if d.domain == domain)
    tokens = encoder.encode(text)
    require(len(tokens) > seq_len, "data", f"the {domain} text ({len(tokens)} tokens) is "
            f"shorter than seq_len + 1 = {seq_len + 1}", "lower seq_len or add documents")
    out[domain] = (eval_windows(tokens, seq_len, max_windows),
                   len(text.encode("utf-8")) / len(tokens))
  return out


def bits_per_byte(model: LoadedModel, windows: dict[str, tuple[np.ndarray, float]],
                  batch_size: int) -> dict:
  """{"bpb": {domain: ..., "all": ...}, "top1": {...}, "tokens": {...}} of `model`."""
  bpb, top1, tokens = {}, {}, {}
  nats_all = bytes_all = hits_all = 0.0
  for domain, (w, bytes_per_token) in windows.items():
    logp, hits = score_rows(model, w[:, :-1], w[:, 1:], np.ones(w[:, 1:].shape), batch_size)
    count = w.shape[0] * (w.shape[1] - 1)
    nats, num_bytes, num_hits = float(-logp.sum()), count * bytes_per_token, float(hits.sum())
    bpb[domain], top1[domain], tokens[domain] = nats / num_bytes / LN2, num_hits / count, count
    nats_all, bytes_all, hits_all = nats_all + nats, bytes_all + num_bytes, hits_all + num_hits
  count_all = sum(tokens.values())
  bpb["all"], top1["all"] = nats_all / bytes_all / LN2, hits_all / count_all
  tokens["all"] = count_all
  return {"bpb": bpb, "top1": top1, "tokens": tokens}
