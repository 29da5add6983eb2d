"""Text corpora: the default one that ships with every Python, and the user's own files.

Default corpus, two domains, both split deterministically into train/validation:
  "english": the interactive help texts in `pydoc_data.topics` (about 0.46 MB on CPython 3.11);
  "python":  the top-level `*.py` modules of the standard library (about 4.7 MB on 3.11).
Documents are sorted by name; every `val_every`-th document goes to validation. The bytes differ
between Python versions, so results name the version they ran on.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import sysconfig

import numpy as np

from moe_jax.data import tokenizer
from moe_jax.data.iterator import eval_windows
from moe_jax.utils.config import Section
from moe_jax.utils.errors import ConfigError, check_choice, check_positive, require

SEPARATOR = "\n\n"


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
  """The `data` section of an LM config: which text, and how it is split.

  sources: "english", "python" (the shipped corpus) and/or "files" (the user's `files`:
    .txt files, or .jsonl files whose `text_field` holds each document; globs allowed).
  val_every: every val_every-th document of each domain is held out.
  max_eval_windows: held-out windows per domain that evaluation scores.
  """
  sources: tuple[str, ...] = ("english", "python")
  files: tuple[str, ...] = ()
  text_field: str = "text"
  val_every: int = 10
  max_eval_windows: int = 256

  def __post_init__(self):
    require(bool(self.sources), "sources", "is empty", "name at least one of "
            f"{', '.join(list(SOURCES) + ['files'])}")
    for name in self.sources:
      check_choice("sources", name, list(SOURCES) + ["files"])
    require(self.val_every >= 2, "val_every", f"must be >= 2, got {self.val_every}",
            "hold out every n-th document with n >= 2")
    check_positive("max_eval_windows", self.max_eval_windows)


@dataclasses.dataclass(frozen=True)
class Document:
  name: str
  domain: str
  text: str


def english_help() -> list[Document]:
  import pydoc_data.topics  # pylint: disable=g-import-not-at-top
  topics = pydoc_data.topics.topics
  return [Document(k, "english", topics[k]) for k in sorted(topics)]


def stdlib_source() -> list[Document]:
  root = sysconfig.get_paths()["stdlib"]
  docs = []
  for path in sorted(glob.glob(os.path.join(root, "*.py"))):
    with open(path, encoding="utf-8", errors="replace") as f:
      docs.append(Document(os.path.basename(path), "python", f.read()))
  return docs


def read_text(path: str) -> str:
  """The text of a user's file: UTF-8 (a byte-order mark is dropped); a folder, a binary file
  (one with a NUL byte) or invalid UTF-8 is refused naming the file and where."""
  require(os.path.isfile(path), "data.files", f"{path} is not a file",
          "give .txt/.jsonl files or glob patterns that match only files")
  with open(path, "rb") as f:
    raw = f.read()
  nul = raw.find(b"\0")
  require(nul < 0, "data.files", f"{path} is a binary file (a NUL byte at offset {nul})",
          "give UTF-8 text: .txt files, or .jsonl files with one JSON object per line")
  try:
    return raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    raise ConfigError(f"data.files: {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at "
                      f"offset {e.start}, line {line}). Fix: convert it to UTF-8, e.g. iconv "
                      "-f latin1 -t utf-8") from None


def jsonl_documents(path: str, text_field: str) -> list[Document]:
  """One document per non-empty line of a .jsonl file: the line's `text_field` string."""
  docs = []
  for n, line in enumerate(read_text(path).splitlines(), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError as e:
      raise ConfigError(f"data.files: line {n} of {path} is not valid JSON ({e}). Fix: write "
                        "one JSON object per line") from None
    require(isinstance(record, dict), "data.files", f"line {n} of {path} is a JSON "
            f"{type(record).__name__}, not an object", "write one JSON object per line, e.g. "
            '{"text": "..."}')
    if text_field not in record:
      raise ConfigError(f"data.text_field: line {n} of {path} has no field "
                        f"{text_field!r} (fields: {sorted(record)}). Fix: set "
                        "data.text_field to the field holding the text")
    text = record[text_field]
    require(isinstance(text, str), "data.text_field", f"line {n} of {path}: field "
            f"{text_field!r} holds a {type(text).__name__} ({str(text)[:40]!r}), not text",
            "point data.text_field at a string field")
    docs.append(Document(f"{path}:{n}", "user", text))
  return docs


def user_files(paths: list[str], text_field: str = "text") -> list[Document]:
  """Reads .txt files (one document each) and .jsonl files (one document per line's field)."""
  docs = []
  for pattern in paths:
    matches = sorted(glob.glob(pattern))
    require(bool(matches), "data.files", f"no file matches {pattern!r}",
            "give existing .txt/.jsonl paths or glob patterns")
    for path in matches:
      if path.endswith(".jsonl"):
        docs += jsonl_documents(path, text_field)
      else:
        docs.append(Document(path, "user", read_text(path)))
  return docs


SOURCES = {"english": english_help, "python": stdlib_source}


def load_documents(sources: list[str], files: list[str] | None = None,
                   text_field: str = "text") -> list[Document]:
  docs = []
  for name in sources:
    check_choice("data.sources", name, list(SOURCES) + ["files"])
    require(name != "files" or bool(files), "data.files", "is empty while data.sources names "
            "'files'", "give .txt/.jsonl paths or globs, comma-separated")
    docs += user_files(files or [], text_field) if name == "files" else SOURCES[name]()
  require(bool(docs), "data.sources", "no documents were loaded", "name at least one source")
  return docs


def split(docs: list[Document], val_every: int) -> tuple[list[Document], list[Document]]:
  """Every `val_every`-th document of each domain (in name order) is held out."""
  train, val = [], []
  by_domain: dict[str, list[Document]] = {}
  for d in docs:
    by_domain.setdefault(d.domain, []).append(d)
  for domain_docs in by_domain.values():
    for i, d in enumerate(domain_docs):
      (val if i % val_every == val_every - 1 else train).append(d)
  return train, val


def to_tokens(docs: list[Document]) -> np.ndarray:
  """Concatenates documents, separated by a blank line, into one uint8 token stream."""
  return tokenizer.encode(SEPARATOR.join(d.text for d in docs))


def lm_data(cfg: DataConfig, seq_len: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """The training token stream and held-out windows [n, seq_len + 1] per domain.

  A split that leaves a domain no held-out window, or leaves too little training text for one
  window, is refused here, before anything trains.
  """
  docs = load_documents(list(cfg.sources), list(cfg.files), cfg.text_field)
  train_docs, val_docs = split(docs, cfg.val_every)
  eval_sets = {}
  for domain in sorted({d.domain for d in docs}):
    held_out = [d for d in val_docs if d.domain == domain]
    count = sum(d.domain == domain for d in docs)
    require(bool(held_out), "data.val_every", f"the {domain!r} text has {count} document(s) "
            f"and every {cfg.val_every}th is held out, so none is", "give more documents (e.g. "
            "a .jsonl file with one per line)" + (
                f" or lower data.val_every to at most {count}" if count >= 2 else ""))
    tokens = to_tokens(held_out)
    require(len(tokens) > seq_len, "data.val_every", f"the held-out {domain!r} text "
            f"({len(tokens)} bytes) is shorter than one window of train.seq_len + 1 = "
            f"{seq_len + 1} bytes", "hold out more text (lower data.val_every) or lower "
            "train.seq_len")
    eval_sets[domain] = eval_windows(tokens, seq_len, cfg.max_eval_windows)
  train_tokens = to_tokens(train_docs)
  require(len(train_tokens) > seq_len + 1, "data.files", f"the training text ({len(train_tokens)}"
          f" bytes) is shorter than one window of train.seq_len + 1 = {seq_len + 1} bytes",
          "add text or lower train.seq_len")
  return train_tokens, eval_sets
