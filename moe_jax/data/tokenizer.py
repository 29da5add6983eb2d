"""Byte-level tokenizer: UTF-8 bytes are the tokens (vocabulary 256)."""
from __future__ import annotations

import numpy as np

VOCAB_SIZE = 256


def encode(text: str) -> np.ndarray:
  """str -> uint8 token ids [n]."""
  return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode(tokens) -> str:
  """Token ids -> str; invalid UTF-8 (a byte sequence cut mid-character) is replaced."""
  return bytes(np.asarray(tokens, dtype=np.uint8).tolist()).decode("utf-8", errors="replace")
