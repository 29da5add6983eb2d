"""A deterministic, resumable batch iterator over a token stream.

Batch i holds `batch_size` windows of `seq_len + 1` tokens starting at offsets drawn from a
NumPy generator seeded by (seed, i). The iterator's whole state is the index of the next batch,
saved with every checkpoint, so a resumed run sees exactly the batches an uninterrupted run sees.
"""
from __future__ import annotations

import numpy as np

from moe_jax.parallel import hosts
from moe_jax.utils.errors import require


class WindowIterator:
  """Yields int32 batches [batch_size, seq_len + 1] of random windows of `tokens`.

  On several hosts each gets its own rows [batch_size / hosts, seq_len + 1] of the global batch.
  """

  def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int,
               start: int = 0):
    require(len(tokens) > seq_len + 1, "train.seq_len",
            f"the token stream ({len(tokens)} tokens) is shorter than seq_len + 1",
            "lower seq_len or add data")
    self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed
    self.index = start

  def batch(self, index: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, index])
    starts = hosts.local_rows(
        rng.integers(0, len(self.tokens) - self.seq_len - 1, size=self.batch_size))
    rows = starts[:, None] + np.arange(self.seq_len + 1)
    return self.tokens[rows].astype(np.int32)

  def __iter__(self):
    return self

  def __next__(self) -> np.ndarray:
    out = self.batch(self.index)
    self.index += 1
    return out

  def state(self) -> dict:
    return {"index": self.index}

  def restore(self, state: dict) -> None:
    self.index = int(state["index"])


def eval_windows(tokens: np.ndarray, seq_len: int, max_windows: int | None = None) -> np.ndarray:
  """Non-overlapping windows [n, seq_len + 1] over the stream (evaluation).

  Every token after the first is predicted once. With `max_windows`, that many windows are
  taken evenly spaced over the stream.
  """
  n = (len(tokens) - 1) // seq_len
  ids = np.arange(n)
  if max_windows and max_windows < n:
    ids = np.linspace(0, n - 1, max_windows).astype(np.int64)
  rows = ids[:, None] * seq_len + np.arange(seq_len + 1)
  return tokens[rows].astype(np.int32)
