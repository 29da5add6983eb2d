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
from moe_jax.utils.errors import ConfigError, check_choice, require

SEPARATOR = "\n\n"


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


def user_files(paths: list[str], text_field: str = "text") -> list[Document]:
  """Reads .txt files (one document each) and .jsonl files (one document per line's field)."""
  docs = []
  for pattern in paths:
    matches = sorted(glob.glob(pattern))
    require(bool(matches), "data.files", f"no file matches {pattern!r}",
            "give existing .txt/.jsonl paths or glob patterns")
    for path in matches:
      if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
          for n, line in enumerate(f):
            if not line.strip():
              continue
            record = json.loads(line)
            if text_field not in record:
              raise ConfigError(f"data.text_field: line {n + 1} of {path} has no field "
                                f"{text_field!r} (fields: {sorted(record)}). Fix: set "
                                "data.text_field to the field holding the text")
            docs.append(Document(f"{path}:{n + 1}", "user", record[text_field]))
      else:
        with open(path, encoding="utf-8", errors="replace") as f:
          docs.append(Document(path, "user", f.read()))
  return docs


SOURCES = {"english": english_help, "python": stdlib_source}


def load_documents(sources: list[str], files: list[str] | None = None,
                   text_field: str = "text") -> list[Document]:
  docs = []
  for name in sources:
    check_choice("data.sources", name, list(SOURCES) + ["files"])
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
