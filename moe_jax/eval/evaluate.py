"""One call evaluates a language model: held-out bits per byte, the task suite, agreement.

  float_model = load_model("tiny_moe")
  base = evaluate(float_model, EvalConfig())
  int4 = evaluate(quantized, EvalConfig(), reference=float_model)   # + agreement
  print(markdown_table({"float": base, "int4": int4}))

results = {
  "model", "reference", "tokenizer", "seq_len", "seconds",
  "bpb": {domain: ..., "all": ...}, "top1": {...}, "tokens": {...}       (bpb.py)
  "tasks": {task: {acc, acc_stderr, acc_norm, acc_norm_stderr, n, chance}}  (tasks.py)
  "task_mean": {acc, acc_norm}     the tasks' unweighted mean: our stand-in for the papers'
                                   7-task zero-shot averages
  "agreement": {kl, top1, tokens, routing: {layer_i: ...}, routing_mean}  (agreement.py; only
                                   with a reference)
}
Every compression experiment scores its float model and its compressed one with the same
EvalConfig and reports both through one table.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Mapping, Optional

import numpy as np

from moe_jax.data.corpus import DataConfig, Document, load_documents, split
from moe_jax.eval import multiple_choice, tasks
from moe_jax.eval.agreement import agreement
from moe_jax.eval.bpb import bits_per_byte, domain_windows
from moe_jax.eval.encoding import TOKENIZERS, make_encoder
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_nonnegative, check_positive, require
from moe_jax.utils.reporting import markdown_table as render_table

SPLITS = ("validation", "all")
STAND_IN = ("tasks: our stand-in for the papers' 7-task zero-shot averages (items from held-out "
            "documents, moe_jax/eval/tasks.py)")


@dataclasses.dataclass(frozen=True)
class EvalConfig(Section):
  """What `evaluate` measures.

  data: the documents (the shipped corpus, or sources=("files",) with the user's .txt/.jsonl);
    its val_every picks the held-out split and max_eval_windows caps the windows per domain.
  split: "validation" (the held-out documents) or "all" (every document: a user's own file).
  seq_len, batch_size: rows [batch_size, seq_len] per jitted call; a task's longest choice must
    fit in seq_len (line_order: up to 2 * tasks.MAX_CHARS + 2 = 202 tokens of ASCII bytes).
  tokenizer: "auto" | "bytes" | "model" (moe_jax/eval/encoding.py).
  tasks, num_items, seed: the task suite (moe_jax/eval/tasks.py); tasks=() skips it.
  agreement, routing_agreement: with a reference model, KL and top-1 agreement, and per MoE
    layer the routing agreement.
  """
  data: DataConfig = DataConfig()
  split: str = "validation"
  seq_len: int = 256
  batch_size: int = 16
  tokenizer: str = "auto"
  tasks: tuple[str, ...] = tuple(tasks.TASKS)
  num_items: int = 300
  seed: int = 0
  agreement: bool = True
  routing_agreement: bool = True

  def __post_init__(self):
    check_choice("split", self.split, SPLITS)
    check_positive("seq_len", self.seq_len)
    check_positive("batch_size", self.batch_size)
    check_choice("tokenizer", self.tokenizer, TOKENIZERS)
    for task in self.tasks:
      check_choice("tasks", task, tasks.TASKS)
    require(len(set(self.tasks)) == len(self.tasks), "tasks", f"{self.tasks} repeats a task",
            "name each task once")
    check_positive("num_items", self.num_items)
    check_nonnegative("seed", self.seed)


def documents(config: EvalConfig) -> list[Document]:
  """The documents `config` evaluates on (the held-out split unless split="all")."""
  data = config.data
  docs = load_documents(list(data.sources), list(data.files), data.text_field)
  if config.split == "validation":
    docs = split(docs, data.val_every)[1]
  require(bool(docs), "split", f"the {config.split} split has no documents", "add documents, "
          "lower data.val_every, or set split='all' to evaluate on every document")
  return docs


def evaluate(model: LoadedModel, config: EvalConfig = EvalConfig(),
             reference: Optional[LoadedModel] = None) -> dict:
  """Scores `model` as `config` says (see the module docstring); `reference` adds agreement."""
  start = time.perf_counter()
  encoder = make_encoder(config.tokenizer, model)
  docs = documents(config)
  windows = domain_windows(docs, encoder, config.seq_len, config.data.max_eval_windows)
  out = {"model": model.source, "reference": reference and reference.source,
         "tokenizer": encoder.name, "seq_len": config.seq_len,
         **bits_per_byte(model, windows, config.batch_size)}
  if config.tasks:
    out["tasks"] = {}
    for task in config.tasks:
      items = tasks.build_items(task, docs, config.num_items, config.seed)
      ll = multiple_choice.loglikelihoods(model, items, encoder, config.seq_len, config.batch_size)
      out["tasks"][task] = {**multiple_choice.accuracy(ll, items), "chance": tasks.chance(task)}
    out["task_mean"] = {m: float(np.mean([r[m] for r in out["tasks"].values()]))
                        for m in ("acc", "acc_norm")}
  if reference is not None and config.agreement:
    inputs = np.concatenate([w[:, :-1] for w, _ in windows.values()])
    out["agreement"] = agreement(model, reference, inputs, config.batch_size,
                                 config.routing_agreement)
  out["seconds"] = time.perf_counter() - start
  return out


def cost_row(result: dict, reference: dict) -> dict:
  """What a change of the model cost, from `evaluate` of the changed model (with the float one
  as its reference) and of the float model: the quality numbers a compression table reports."""
  agree = result.get("agreement", {})
  bpb = result["bpb"]["all"]
  return {"bpb": bpb, "bpb_loss": bpb - reference["bpb"]["all"],
          "task_mean": result.get("task_mean", {}).get("acc"), "kl": agree.get("kl"),
          "top1_agreement": agree.get("top1"), "routing_agreement": agree.get("routing_mean")}


def markdown_table(results: Mapping[str, dict]) -> str:
  """One row per evaluated model (name -> evaluate's dict): bpb, top-1, tasks, agreement."""
  require(bool(results), "results", "is empty", "pass {name: evaluate(...)} for each model")
  first = next(iter(results.values()))
  domains = list(first["bpb"])
  names = list(first.get("tasks", {}))
  headers = ["model"] + [f"bpb {d}" for d in domains] + ["top-1 all"]
  headers += [f"{t} acc" for t in names] + (["task mean acc"] if names else [])
  agree = any("agreement" in r for r in results.values())
  if agree:
    headers += ["KL(ref||model)", "top-1 agreement", "routing agreement"]
  rows = []
  for name, r in results.items():
    row = [name] + [r["bpb"].get(d, float("nan")) for d in domains] + [r["top1"]["all"]]
    row += [f"{r['tasks'][t]['acc']:.3f} ± {r['tasks'][t]['acc_stderr']:.3f}"
            for t in names]
    row += [r["task_mean"]["acc"]] if names else []
    if agree:
      a = r.get("agreement", {})
      row += [a.get("kl", float("nan")), a.get("top1", float("nan")),
              a.get("routing_mean", float("nan"))]
    rows.append(row)
  table = render_table(headers, rows)
  if names:
    chance = ", ".join(f"{t} {tasks.chance(t):.2f}" for t in names)
    table += f"\n\n{STAND_IN}; chance: {chance}; ± is the standard error."
  return table
