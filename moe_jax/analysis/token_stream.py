"""The token windows a routing trace runs over: corpus text, the user's files, or saved ids.

Legend: N windows, S tokens per window, V the model's vocabulary.

Text (the shipped corpus or the user's .txt/.jsonl files, read by moe_jax/data/corpus.py) is
split into documents, optionally to its held-out part (every val_every-th document of each
domain, as training holds it out); each domain's documents, joined as in training, are encoded
by `tokenizer` (moe_jax.eval.encoding: "bytes", "model" = the Hugging Face tokenizer in the
model's directory, "auto" = that one where the directory has one), and the stream is cut into
non-overlapping windows of S, and up to max_tokens // S windows are taken, an equal share from
each domain (a domain with fewer windows gives them all and the others fill its share), evenly
spaced over the domain's windows and ordered by domain in turn (window 0 of each domain, then
window 1, ...), so a prefix of the windows (a smaller budget) still covers every domain.

Byte tokens need V >= 256. Ids saved beforehand can be traced instead of text: `tokens_path`,
a .npy of int ids, either one stream [n] (cut into windows) or windows [n, >= S] (their first S
tokens).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from moe_jax.data import corpus
from moe_jax.data.tokenizer import VOCAB_SIZE
from moe_jax.eval import encoding
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive, require

SPLITS = ("held_out", "all")


@dataclasses.dataclass(frozen=True)
class StreamConfig(Section):
  """sources / files / text_field: corpus.DataConfig's; split: "held_out" (the documents training
  holds out, every val_every-th of each domain) or "all"; tokenizer: "auto" | "bytes" | "model";
  tokens_path: a .npy of token ids used instead of text; seq_len: S; max_tokens: at most this
  many tokens (whole windows)."""
  sources: tuple[str, ...] = ("english", "python")
  files: tuple[str, ...] = ()
  text_field: str = "text"
  split: str = "held_out"
  tokenizer: str = "auto"
  val_every: int = 10
  tokens_path: str = ""
  seq_len: int = 256
  max_tokens: int = 65536

  def __post_init__(self):
    for name in self.sources:
      check_choice("sources", name, list(corpus.SOURCES) + ["files"])
    check_choice("split", self.split, SPLITS)
    check_choice("tokenizer", self.tokenizer, encoding.TOKENIZERS)
    require(self.val_every >= 2, "val_every", f"must be >= 2, got {self.val_every}",
            "hold out every n-th document with n >= 2")
    check_positive("seq_len", self.seq_len)
    require(self.max_tokens >= self.seq_len, "max_tokens", f"{self.max_tokens} is less than one "
            f"window of seq_len={self.seq_len}", "raise max_tokens or lower seq_len")


def _evenly(count: int, take: int) -> np.ndarray:
  """`take` <= count distinct indices evenly spaced over range(count)."""
  return np.unique(np.linspace(0, count - 1, take).astype(np.int64)) if take else np.zeros(0, int)


def _quotas(available: list[int], count: int) -> list[int]:
  """Windows to take from each domain: equal shares of `count`, a domain's unused share going
  to the others (water-filling from the smallest domain up)."""
  quotas, left = [0] * len(available), count
  for rank, d in enumerate(sorted(range(len(available)), key=available.__getitem__)):
    quotas[d] = min(available[d], left // (len(available) - rank))
    left -= quotas[d]
  return quotas


def _text_windows(cfg: StreamConfig, encoder: encoding.Encoder, count: int) -> np.ndarray:
  docs = corpus.load_documents(list(cfg.sources), list(cfg.files), cfg.text_field)
  if cfg.split == "held_out":
    docs = corpus.split(docs, cfg.val_every)[1]
    require(bool(docs), "data.val_every", f"no document is held out (every {cfg.val_every}th)",
            "lower val_every, give more documents, or set data.split=all")
  streams = []
  for domain in sorted({d.domain for d in docs}):
    stream = encoder.encode(corpus.SEPARATOR.join(d.text for d in docs if d.domain == domain))
    streams.append(stream[:len(stream) // cfg.seq_len * cfg.seq_len].reshape(-1, cfg.seq_len))
  require(any(len(w) for w in streams), "data.seq_len", f"the text is shorter than one window "
          f"of {cfg.seq_len} tokens", "lower seq_len or give more text")
  ranked = []  # (rank within its domain, domain, window)
  for d, (windows, take) in enumerate(zip(streams, _quotas([len(w) for w in streams], count))):
    ranked += [(rank, d, windows[i]) for rank, i in enumerate(_evenly(len(windows), take))]
  return np.stack([w for _, _, w in sorted(ranked, key=lambda r: r[:2])])


def _saved_windows(cfg: StreamConfig, count: int) -> np.ndarray:
  require(os.path.isfile(cfg.tokens_path), "data.tokens_path", f"{cfg.tokens_path} is not a "
          "file", "give a .npy of token ids [n] or [n, >= seq_len]")
  ids = np.load(cfg.tokens_path)
  require(np.issubdtype(ids.dtype, np.integer) and ids.ndim in (1, 2), "data.tokens_path",
          f"{cfg.tokens_path} holds {ids.dtype} {ids.shape}, not integer ids [n] or [n, S]",
          "save the token ids with np.save")
  if ids.ndim == 1:
    ids = ids[:len(ids) // cfg.seq_len * cfg.seq_len].reshape(-1, cfg.seq_len)
  require(ids.shape[0] > 0 and ids.shape[1] >= cfg.seq_len, "data.tokens_path",
          f"{cfg.tokens_path} holds no window of {cfg.seq_len} tokens ({ids.shape})",
          "save more ids or lower seq_len")
  return ids[:count, :cfg.seq_len]


def windows(cfg: StreamConfig, model) -> np.ndarray:
  """Up to cfg.max_tokens // S token windows int32 [N, S] for a LoadedModel (module docstring)."""
  count = cfg.max_tokens // cfg.seq_len
  if cfg.tokens_path:
    return _saved_windows(cfg, count).astype(np.int32)
  encoder = encoding.make_encoder(cfg.tokenizer, model)
  vocab = model.cfg.vocab_size
  require(encoder.name != "bytes" or vocab >= VOCAB_SIZE, "data.tokens_path", f"the model's "
          f"vocabulary ({vocab}) cannot hold byte tokens ({VOCAB_SIZE}) and its directory has no "
          "tokenizer", "save ids from the model's own tokenizer as a .npy and pass "
          "--config.data.tokens_path=FILE")
  return _text_windows(cfg, encoder, count).astype(np.int32)
