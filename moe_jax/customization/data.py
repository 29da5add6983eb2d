"""The generic data set, its class-stratified split, and the users' per-class draws.

The split gives GE's generic train and test sets and a disjoint pool of held-out samples; each
simulated user draws disjoint train and test samples per class from the pool and re-writes them in
its style (`users.py`).
"""
from __future__ import annotations

import numpy as np

from moe_jax.customization import digits, idx
from moe_jax.utils.errors import check_choice, require

SOURCES = ("digits", "emnist")


def load(source: str, *, box: int = 20, emnist_dir: str = "",
         emnist_split: str = "") -> tuple[np.ndarray, np.ndarray, str]:
  """Images [N, 28, 28] float32 in [0, 1], labels [N] int32 and a short name of the data.

  'digits' is scikit-learn's shipped digits upsampled; 'emnist' concatenates EMNIST's train and
  test IDX files of `emnist_split` (the split below re-divides them).
  """
  check_choice("data.source", source, SOURCES)
  if source == "digits":
    images, labels = digits.load_digits28(box)
    return images, labels, "scikit-learn digits (8x8 upsampled to 28x28)"
  parts = [idx.load_emnist(emnist_dir, emnist_split, s) for s in ("train", "test")]
  return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
          f"EMNIST-{emnist_split}")


def stratified_split(labels: np.ndarray, sizes: dict[str, int], seed: int,
                     rest: str = "pool") -> dict[str, np.ndarray]:
  """Splits indices per class: `sizes[name]` per class for each name in order, the rest to `rest`.

  Returns:
    name -> sorted int indices into `labels`; the sets are disjoint.
  """
  rng = np.random.default_rng(seed)
  parts = {name: [] for name in [*sizes, rest]}
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    need = sum(sizes.values())
    require(len(idx) > need, "data", f"class {c} has {len(idx)} samples, splits need {need} + 1",
            "lower the per-class split sizes")
    start = 0
    for name, n in sizes.items():
      parts[name].append(idx[start:start + n])
      start += n
    parts[rest].append(idx[start:])
  return {name: np.sort(np.concatenate(p)) for name, p in parts.items()}


def per_class_draw(pool: np.ndarray, labels: np.ndarray, counts: tuple[int, ...],
                   rng: np.random.Generator) -> list[np.ndarray]:
  """Disjoint draws of `counts[i]` indices per class from `pool`; one index array per count."""
  draws = [[] for _ in counts]
  for c in np.unique(labels[pool]):
    members = rng.permutation(pool[labels[pool] == c])
    require(len(members) >= sum(counts), "users.train_per_class",
            f"class {c} has {len(members)} pool samples, a draw needs {sum(counts)}",
            "lower users.train_per_class/test_per_class or data.*_per_class")
    start = 0
    for i, n in enumerate(counts):
      draws[i].append(members[start:start + n])
      start += n
  return [np.concatenate(d) for d in draws]
