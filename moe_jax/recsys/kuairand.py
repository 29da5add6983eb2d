"""Loader for the public KuaiRand interaction logs (Gao et al., CIKM 2022; kuairand.com).

A KuaiRand log CSV has one impression per row: user_id, video_id, date, hourmin, time_ms, the labels
is_click, is_like, is_follow, is_comment, is_forward, is_hate, long_view, and further columns
(play_time_ms, duration_ms, tab, ...). Nothing is downloaded: point `path` at a file you have.
Categorical columns are re-indexed to 0..n-1 in order of first appearance; dense columns become
log1p(max(x, 0)) standardised to zero mean and unit variance; labels become 0/1 (x > 0).
"""
from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from moe_jax.utils.config import Section
from moe_jax.utils.errors import require


@dataclasses.dataclass(frozen=True)
class KuaiRandConfig(Section):
  """The `data` section of kind "kuairand": a log CSV, its columns, the time split.

  path: the CSV; sparse_columns (user_id first: GAUC groups impressions by user), dense_columns,
  label_columns: the columns read; label_groups: each label's task group (watch 0, interact 1);
  max_rows: read at most this many rows (0: all); test_fraction: the latest rows held out.
  """
  kind: str = "kuairand"
  path: str = ""
  sparse_columns: tuple[str, ...] = ("user_id", "video_id", "tab")
  dense_columns: tuple[str, ...] = ("duration_ms",)
  label_columns: tuple[str, ...] = ("is_click", "long_view", "is_like", "is_follow",
                                    "is_comment", "is_forward", "is_hate")
  label_groups: tuple[int, ...] = (1, 0, 1, 1, 1, 1, 1)
  max_rows: int = 0
  test_fraction: float = 0.2

  def __post_init__(self):
    require(len(self.sparse_columns) > 0 and self.sparse_columns[0] == "user_id",
            "sparse_columns", f"got {list(self.sparse_columns)}",
            "list 'user_id' first (GAUC groups impressions by user)")
    require(len(self.label_groups) == len(self.label_columns), "label_groups",
            f"{len(self.label_groups)} groups for {len(self.label_columns)} labels",
            "give one group per label")
    require(self.max_rows >= 0, "max_rows", f"got {self.max_rows}", "use 0 (all rows) or more")


def load_kuairand(config: KuaiRandConfig) -> dict:
  """Reads the KuaiRand log CSV at `config.path`.

  Returns a dict: sparse int32 [N, F], dense float32 [N, D_d], labels float32 [N, T],
  vocab_sizes [F], task_names [T], rows kept in file order (KuaiRand logs are sorted by time, so
  a tail split is a time split).
  """
  path, sparse, dense, labels = (config.path, config.sparse_columns, config.dense_columns,
                                 config.label_columns)
  require(os.path.isfile(path), "data.path", f"no file {path!r}",
          "point it at a KuaiRand log CSV (--config.data.path=...)")
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    missing = [c for c in (*labels, *sparse, *dense) if c not in header]
    require(not missing, "data.path", f"{path} lacks columns {missing} (it has {header})",
            "choose columns the file has, or check that it is a KuaiRand log")
    rows = []
    for i, row in enumerate(reader):
      if config.max_rows and i >= config.max_rows:
        break
      rows.append(row)
  require(len(rows) > 0, "data.path", f"{path} has no data rows", "use a non-empty log file")
  ids = np.zeros((len(rows), len(sparse)), np.int32)
  vocab_sizes = []
  for j, col in enumerate(sparse):
    index: dict[str, int] = {}
    for i, row in enumerate(rows):
      ids[i, j] = index.setdefault(row[col], len(index))
    vocab_sizes.append(len(index))

  def number(value: str) -> float:
    return float(value) if value not in ("", "NA", "nan") else 0.0

  x = np.array([[number(row[c]) for c in dense] for row in rows], np.float64).reshape(len(rows), -1)
  x = np.log1p(np.maximum(x, 0.0))
  x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
  y = np.array([[number(row[c]) > 0 for c in labels] for row in rows], np.float32)
  return {"sparse": ids, "dense": x.astype(np.float32), "labels": y,
          "vocab_sizes": vocab_sizes, "task_names": list(labels)}


def time_split(data: dict, test_fraction: float) -> tuple[dict, dict]:
  """The last `test_fraction` of rows (the latest impressions) become the test set."""
  require(0 < test_fraction < 1, "data.test_fraction", f"got {test_fraction}", "use e.g. 0.2")
  n = len(data["labels"])
  cut = int(round(n * (1 - test_fraction)))
  arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray)}
  return ({k: v[:cut] for k, v in arrays.items()}, {k: v[cut:] for k, v in arrays.items()})
