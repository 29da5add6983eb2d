"""The experiment output contract shared by every entry point in `experiments/`.

`python -m experiments.<name> --config=configs/<name>.py[:preset] --workdir=DIR` writes
  DIR/results.json   machine-readable results (what tests and other tools read),
  DIR/results.md     the markdown table a person reads (also printed to stdout),
  DIR/*.png          matplotlib plots.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Iterable, Sequence

import numpy as np


def _fmt(value: Any, floatfmt: str) -> str:
  if isinstance(value, (float, np.floating)):
    return "nan" if math.isnan(value) else format(float(value), floatfmt)
  return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                   floatfmt: str = ".4f") -> str:
  """Renders `rows` under `headers` as a GitHub markdown table."""
  lines = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
  for row in rows:
    if len(row) != len(headers):
      raise ValueError(f"row {row!r} has {len(row)} cells for {len(headers)} headers")
    lines.append("| " + " | ".join(_fmt(v, floatfmt) for v in row) + " |")
  return "\n".join(lines)


def jsonable(obj: Any) -> Any:
  """`obj` with arrays as lists and numpy scalars as Python numbers (json.dump-able)."""
  if isinstance(obj, dict):
    return {str(k): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [jsonable(v) for v in obj]
  if isinstance(obj, (np.generic,)):
    return obj.item()
  if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
    return np.asarray(obj).tolist()
  return obj


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically: a reader sees the old file or the new one, never half."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_results(workdir: str, results: dict, markdown: str, *,
                  echo: bool = True) -> None:
  """Writes `results.json` and `results.md` into `workdir` (created if needed), atomically.

  Args:
    workdir: output directory.
    results: nested dict of plain numbers/strings/arrays; arrays become lists.
    markdown: the result table(s) with a short header naming data and setup.
    echo: also print the markdown to stdout, as the quickstart promises.
  """
  os.makedirs(workdir, exist_ok=True)
  write_text(os.path.join(workdir, "results.json"),
             json.dumps(jsonable(results), indent=2, sort_keys=True))
  write_text(os.path.join(workdir, "results.md"), markdown.rstrip() + "\n")
  if echo:
    print(markdown, flush=True)


def save_figure(fig, workdir: str, name: str) -> str:
  """Saves a matplotlib figure as DIR/<name>.png and closes it; returns the path."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, name if name.endswith(".png") else name + ".png")
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return path


def progress(iterable: Iterable | None = None, *, total: int | None = None,
             desc: str = "", **kwargs):
  """A tqdm progress bar on stderr for long loops (quiet when stderr is not a tty)."""
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  kwargs.setdefault("mininterval", 2.0 if sys.stderr.isatty() else 15.0)
  kwargs.setdefault("dynamic_ncols", True)
  return tqdm(iterable, total=total, desc=desc, file=sys.stderr, **kwargs)
