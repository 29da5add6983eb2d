"""Text to token ids for evaluation: UTF-8 bytes, or the Hugging Face tokenizer beside a model.

Legend: n tokens of a text.

  "bytes"  ids = the text's UTF-8 bytes (moe_jax.data.tokenizer; every model trained here)
  "model"  ids = transformers.AutoTokenizer of the model's directory, no special tokens added
  "auto"   "model" when the model's directory holds tokenizer files, else "bytes"

Bits per byte always divide by UTF-8 bytes, so they compare across tokenizers.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

from moe_jax.data import tokenizer
from moe_jax.data.corpus import SEPARATOR, DataConfig, load_documents, split
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import check_choice, require

TOKENIZERS = ("auto", "bytes", "model")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclasses.dataclass(frozen=True)
class Encoder:
  """encode(text) -> int32 ids [n]; `name` says which tokenizer ("bytes" or its directory)."""
  name: str
  fn: Callable[[str], np.ndarray]

  def encode(self, text: str) -> np.ndarray:
    return self.fn(text)


def has_tokenizer(path: str) -> bool:
  return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f))
                                     for f in TOKENIZER_FILES)


def _bytes(text: str) -> np.ndarray:
  return tokenizer.encode(text).astype(np.int32)


def make_encoder(kind: str, model: LoadedModel) -> Encoder:
  """The encoder `kind` (TOKENIZERS) for `model`."""
  check_choice("tokenizer", kind, TOKENIZERS)
  if kind == "bytes" or (kind == "auto" and not has_tokenizer(model.source)):
    return Encoder("bytes", _bytes)
  require(has_tokenizer(model.source), "tokenizer", f"'model' needs tokenizer files "
          f"({', '.join(TOKENIZER_FILES)}) in the model's directory, {model.source!r} has none",
          "load the model from its Hugging Face directory, or use tokenizer='bytes'")
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
  hf = AutoTokenizer.from_pretrained(model.source)
  encode = lambda text: np.asarray(hf.encode(text, add_special_tokens=False), np.int32)
  return Encoder(model.source, encode)


def encoded_split(data: DataConfig, encoder: Encoder,
                  field: str) -> tuple[np.ndarray, np.ndarray]:
  """The training and held-out documents of `data` (every val_every-th held out), each joined
  and encoded: (train ids [n], held-out ids [m]). `field` names data.val_every in the caller's
  config for the error when nothing is held out."""
  train, held = split(load_documents(list(data.sources), list(data.files), data.text_field),
                      data.val_every)
  require(bool(held), field, "holds out no document", "lower it")
  return (encoder.encode(SEPARATOR.join(d.text for d in train)),
          encoder.encode(SEPARATOR.join(d.text for d in held)))
