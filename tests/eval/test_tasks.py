"""The task suite's items: fixed by the seed, true to the held-out text, refused when impossible."""
import numpy as np
import pytest

from moe_jax.data.corpus import Document
from moe_jax.eval import tasks
from moe_jax.eval.evaluate import EvalConfig, documents
from moe_jax.utils.errors import ConfigError


@pytest.fixture(scope="module")
def heldout():
  return documents(EvalConfig())


@pytest.mark.parametrize("task", list(tasks.TASKS))
def test_items_are_fixed_by_the_seed_and_true_to_the_text(heldout, task):
  seed = int(np.random.default_rng().integers(1 << 20))
  items = tasks.build_items(task, heldout, 120, seed)
  assert items == tasks.build_items(task, heldout, 120, seed)
  assert items != tasks.build_items(task, heldout, 120, seed + 1)
  num_choices = tasks.TASKS[task].num_choices
  assert tasks.chance(task) == 1 / num_choices
  texts = [d.text for d in heldout]
  for item in items:
    assert len(item.choices) == len(set(item.choices)) == num_choices
    truth = item.context + item.choices[item.gold]  # the gold continues the context verbatim
    assert any(truth in text for text in texts), (task, truth)
    assert item.context.strip()
  golds = np.bincount([it.gold for it in items], minlength=num_choices)
  assert golds.min() > 0  # the gold's position is drawn, not fixed
  if task != "python_cloze":  # the domains take turns
    assert {it.domain for it in items} == {"english", "python"}


def test_distractors_come_from_the_same_domain_or_file(heldout):
  lines = {domain: {line for d in heldout if d.domain == domain for line in d.text.split("\n")}
           for domain in ("english", "python")}
  for it in tasks.build_items("continuation", heldout, 60, 0):
    assert all(c in lines[it.domain] for c in it.choices)
  names = {name for d in heldout if d.domain == "python"
           for _, _, name in tasks.identifiers(d.text)}
  for it in tasks.build_items("python_cloze", heldout, 60, 0):  # identifier + the same rest
    gold = it.choices[it.gold]
    assert any(all(c.endswith(gold[k:]) and c[:len(c) - len(gold) + k] in names
                   for c in it.choices) for k in range(1, len(gold) + 1)), it.choices


def test_too_many_items_or_no_python_are_refused():
  docs = [Document("a.txt", "user", "\n".join(f"line {i} of a small text" for i in range(30)))]
  assert len(tasks.build_items("line_order", docs, 20, 0)) == 20
  with pytest.raises(ConfigError, match=r"^num_items: .* only \d+ line_order items.*Fix: "):
    tasks.build_items("line_order", docs, 500, 0)
  with pytest.raises(ConfigError, match=r"^tasks: python_cloze needs Python documents.*Fix: "):
    tasks.build_items("python_cloze", docs, 5, 0)
