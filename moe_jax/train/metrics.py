"""Metric writers: a JSONL file and TensorBoard event files side by side in the workdir."""
from __future__ import annotations

import json
import os

import jax


class MetricWriter:
  """write(step, {name: float}) appends to DIR/metrics.jsonl and DIR/tb/ (TensorBoard).

  On several hosts only the first writes (the values are global: every host has them).
  """

  def __init__(self, workdir: str):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._on = jax.process_index() == 0
    if not self._on:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self._tb = SummaryWriter(os.path.join(workdir, "tb"))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self._on:
      return
    metrics = {k: float(v) for k, v in metrics.items()}
    self._jsonl.write(json.dumps({"step": int(step), **metrics}) + "\n")
    self._jsonl.flush()
    for name, value in metrics.items():
      self._tb.add_scalar(name, value, int(step))

  def close(self) -> None:
    if not self._on:
      return
    self._jsonl.close()
    self._tb.close()


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
