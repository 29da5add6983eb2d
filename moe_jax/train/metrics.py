"""Metric writers: a JSONL file and TensorBoard event files side by side in the workdir."""
from __future__ import annotations

import json
import os

import jax

from moe_jax.utils.reporting import write_text


class MetricWriter:
  """write(step, {name: float}) appends to DIR/metrics.jsonl and DIR/tb/ (TensorBoard).

  A run resumed at `start_step` first drops what an earlier attempt logged after that step (it
  belongs to steps the checkpoint does not hold and that run again): from metrics.jsonl
  (rewritten atomically; a line cut by a crash goes too) and, by TensorBoard's purge_step,
  from the event files. On several hosts only the first writes (the values are global).
  """

  def __init__(self, workdir: str, start_step: int = 0):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._on = jax.process_index() == 0
    if not self._on:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
      with open(path) as f:
        text = f.read()
      records = _records(text)
      kept = [r for r in records if r.get("step", 0) <= start_step]
      if len(kept) < len(records) or (text and not text.endswith("\n")):
        write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    self._jsonl = open(path, "a")
    self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=start_step + 1)

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


def _records(text: str) -> list[dict]:
  records = []
  for line in text.splitlines():
    try:
      record = json.loads(line)
    except ValueError:  # a line a crash cut short
      continue
    if isinstance(record, dict):
      records.append(record)
  return records


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSONL file; a line a crash cut short (not valid JSON) is skipped."""
  with open(path) as f:
    return _records(f.read())
