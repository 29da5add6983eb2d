"""A zero-shot multiple-choice task suite made from held-out documents.

This is our stand-in for the 7-task zero-shot averages (ARC, HellaSwag, PIQA, WinoGrande, ...)
that the MoE compression papers report: none of those data sets can be downloaded here, and a
byte-level LM of a few million parameters would sit at chance on them. Three tasks are cut from
the held-out split of the shipped corpus (or of a user's documents) and scored by log-likelihood
as lm-evaluation-harness scores multiple choice (moe_jax/eval/multiple_choice.py):

  continuation  the line that follows a held-out line, among itself and 3 other held-out lines
                of the same domain (chance 1/4)
  python_cloze  a masked identifier of held-out Python source: each of 4 identifiers of the
                same file followed by the rest of the line (chance 1/4)
  line_order    two consecutive held-out lines, in their order or swapped (chance 1/2)

An item is (context, choices, gold). The context is the document's whole lines before the item
(at most CONTEXT_CHARS characters, at least one line, not blank) and, for the cloze, its line up
to the identifier. A line qualifies with at most MAX_CHARS characters, MIN_CHARS of them not
blank. Distractors are drawn as often as they occur (lines of the domain, identifiers of the
file), as the gold is (a random occurrence), so a scorer blind to the context gains little by
preferring short or frequent choices. Items are drawn by a NumPy generator seeded by (seed, task
name), the gold's position among the choices included (a model that ties every choice scores
chance, not 1): one seed and one corpus (one Python version) give the same items. Domains take
turns, so the small English help text is not drowned by the standard library.
"""
from __future__ import annotations

import dataclasses
import io
import keyword
import tokenize
from typing import Callable, NamedTuple, Optional

import numpy as np

from moe_jax.data.corpus import Document
from moe_jax.utils.errors import check_choice, require

MIN_CHARS, MAX_CHARS, CONTEXT_CHARS = 16, 100, 240


@dataclasses.dataclass(frozen=True)
class Item:
  """One question: `choices[gold]` is the true continuation of `context`."""
  domain: str
  context: str
  choices: tuple[str, ...]
  gold: int


# A task's candidate positions per domain, and make(position, rng) -> Item or None (unusable).
Pools = dict[str, list[tuple]]
Maker = Callable[[tuple, np.random.Generator], Optional[Item]]


def _qualifies(line: str) -> bool:
  return len(line) <= MAX_CHARS and len(line.strip()) >= MIN_CHARS


def _context(lines: list[str], i: int) -> str:
  """The whole lines before line i (i >= 1), at most CONTEXT_CHARS characters, at least one."""
  start, size = i - 1, len(lines[i - 1]) + 1
  while start > 0 and size + len(lines[start - 1]) + 1 <= CONTEXT_CHARS:
    start, size = start - 1, size + len(lines[start - 1]) + 1
  return "\n".join(lines[start:i]) + "\n"


def _others(pool: list[str], truth: str, k: int, rng: np.random.Generator) -> list[str] | None:
  """k distinct entries of `pool` other than `truth`, drawn as often as they occur in it (None:
  not found in 8k draws)."""
  out: list[str] = []
  for j in rng.integers(len(pool), size=8 * k):
    if pool[j] != truth and pool[j] not in out:
      out.append(pool[j])
      if len(out) == k:
        return out
  return None


def _item(domain: str, context: str, truth: str, others: list[str],
          rng: np.random.Generator) -> Item | None:
  if not context.strip():
    return None
  gold = int(rng.integers(len(others) + 1))
  return Item(domain, context, tuple(others[:gold] + [truth] + others[gold:]), gold)


def continuation(docs: list[Document]) -> tuple[Pools, Maker]:
  lines = [d.text.split("\n") for d in docs]
  pools: Pools = {}
  texts: dict[str, list[str]] = {}
  for k, (doc, doc_lines) in enumerate(zip(docs, lines)):
    for i, line in enumerate(doc_lines):
      if _qualifies(line):
        texts.setdefault(doc.domain, []).append(line)
        if i >= 1:
          pools.setdefault(doc.domain, []).append((k, i))

  def make(position, rng):
    k, i = position
    domain, truth = docs[k].domain, lines[k][i]
    others = _others(texts[domain], truth, 3, rng)
    return None if others is None else _item(domain, _context(lines[k], i), truth, others, rng)

  return pools, make


def identifiers(source: str) -> list[tuple[int, int, str]]:
  """(line index, column, name) of every identifier of `source` (no keywords, >= 3 chars);
  none when the source does not tokenize."""
  out = []
  try:
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
      name = tok.string
      if (tok.type == tokenize.NAME and len(name) >= 3 and not keyword.iskeyword(name)
          and not keyword.issoftkeyword(name)):
        out.append((tok.start[0] - 1, tok.start[1], name))
  except (tokenize.TokenError, SyntaxError):
    return []
  return out


def python_cloze(docs: list[Document]) -> tuple[Pools, Maker]:
  require(any(d.domain == "python" for d in docs), "tasks", "python_cloze needs Python "
          "documents and the data has none", "add 'python' to data.sources or drop python_cloze")
  lines, names, positions = {}, {}, []
  for k, doc in enumerate(docs):
    if doc.domain != "python":
      continue
    lines[k] = doc.text.split("\n")
    found = identifiers(doc.text)
    names[k] = [name for _, _, name in found]
    positions += [(k, i, col, name) for i, col, name in found
                  if _qualifies(lines[k][i]) and lines[k][i][col:col + len(name)] == name]

  def make(position, rng):
    k, i, col, name = position
    line = lines[k][i]
    others = _others(names[k], name, 3, rng)
    if others is None:
      return None
    context = (_context(lines[k], i) if i else "") + line[:col]
    rest = line[col + len(name):]
    return _item("python", context, name + rest, [o + rest for o in others], rng)

  return {"python": positions}, make


def line_order(docs: list[Document]) -> tuple[Pools, Maker]:
  lines = [d.text.split("\n") for d in docs]
  pools: Pools = {}
  for k, (doc, doc_lines) in enumerate(zip(docs, lines)):
    for i in range(1, len(doc_lines) - 1):
      a, b = doc_lines[i], doc_lines[i + 1]
      if a != b and _qualifies(a) and _qualifies(b):
        pools.setdefault(doc.domain, []).append((k, i))

  def make(position, rng):
    k, i = position
    a, b = lines[k][i], lines[k][i + 1]
    return _item(docs[k].domain, _context(lines[k], i), f"{a}\n{b}", [f"{b}\n{a}"], rng)

  return pools, make


class Task(NamedTuple):
  """prepare(docs) -> (positions per domain, make); every item has num_choices choices."""
  prepare: Callable[[list[Document]], tuple[Pools, Maker]]
  num_choices: int


TASKS = {"continuation": Task(continuation, 4), "python_cloze": Task(python_cloze, 4),
         "line_order": Task(line_order, 2)}


def chance(task: str) -> float:
  return 1.0 / TASKS[task].num_choices


def _draw(pools: Pools, num_items: int, rng: np.random.Generator, make: Maker) -> list[Item]:
  """Domains in turn, each through its positions in a random order, until num_items items."""
  order = {d: rng.permutation(len(p)) for d, p in sorted(pools.items())}
  cursor = dict.fromkeys(order, 0)
  items: list[Item] = []
  while len(items) < num_items and any(cursor[d] < len(order[d]) for d in order):
    for d in order:
      if cursor[d] < len(order[d]) and len(items) < num_items:
        item = make(pools[d][order[d][cursor[d]]], rng)
        cursor[d] += 1
        if item is not None:
          items.append(item)
  return items


def build_items(task: str, docs: list[Document], num_items: int, seed: int) -> list[Item]:
  """`num_items` items of `task` from `docs`, fixed by `seed` (see the module docstring)."""
  check_choice("tasks", task, TASKS)
  pools, make = TASKS[task].prepare(docs)
  items = _draw(pools, num_items, np.random.default_rng([seed, *task.encode()]), make)
  require(len(items) == num_items, "num_items", f"the documents give only {len(items)} "
          f"{task} items, {num_items} asked", "lower num_items or add documents")
  return items
