"""Log-likelihood scoring of multiple-choice items, as lm-evaluation-harness scores them.

Legend: N items, C choices per item, R = N*C requests, S positions per row.

  ll[n, c]  = sum_t log p(choice_t | context, choice_<t)    (the choice's tokens only)
  acc       = mean_n [argmax_c ll[n, c] == gold_n]
  acc_norm  = mean_n [argmax_c ll[n, c] / bytes(choice_c) == gold_n]
  stderr(p) = sqrt(p (1 - p) / N)

Ties go to the first choice (np.argmax), as in the harness; the harness divides acc_norm by the
choice's length in characters, we by its UTF-8 bytes (the same for ASCII text). A request is
tokenised the harness's way: the context's trailing whitespace (its final newline too) moves to
the front of the choice (and is scored with it), ids = encode(context + choice), and the choice
is what follows the first len(encode(context)) ids (a subword tokenizer may merge across the
boundary). A row keeps the last S + 1 ids (left truncation, as the harness does at its max
length) and is right-padded; one jitted call scores a batch of rows [B, S]
(moe_jax/eval/forward.py).
"""
from __future__ import annotations

import numpy as np

from moe_jax.eval.encoding import Encoder
from moe_jax.eval.forward import score_rows
from moe_jax.eval.tasks import Item
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import require


def request_ids(encoder: Encoder, context: str, choice: str) -> tuple[np.ndarray, np.ndarray]:
  """(context ids, choice ids) of one request (see the module docstring)."""
  spaces = len(context) - len(context.rstrip())
  if spaces:
    context, choice = context[:-spaces], context[-spaces:] + choice
  whole = encoder.encode(context + choice)
  n = len(encoder.encode(context))
  return whole[:n], whole[n:]


def pack(requests: list[tuple[np.ndarray, np.ndarray]],
         seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """inputs, targets [R, S] and mask [R, S] (1 on the choice's targets) of the requests."""
  inputs = np.zeros((len(requests), seq_len), np.int32)
  targets, mask = np.zeros_like(inputs), np.zeros((len(requests), seq_len), np.float32)
  for r, (context, choice) in enumerate(requests):
    require(len(context) >= 1 and len(choice) >= 1, "tasks", "a request has an empty context "
            "or choice after tokenisation", "use another tokenizer or task")
    require(len(choice) <= seq_len, "seq_len", f"a choice of {len(choice)} tokens does not fit "
            f"in seq_len={seq_len}", "raise seq_len")
    row = np.concatenate([context, choice])[-(seq_len + 1):]
    inputs[r, :len(row) - 1], targets[r, :len(row) - 1] = row[:-1], row[1:]
    mask[r, len(row) - 1 - len(choice):len(row) - 1] = 1.0
  return inputs, targets, mask


def loglikelihoods(model: LoadedModel, items: list[Item], encoder: Encoder, seq_len: int,
                   batch_size: int) -> np.ndarray:
  """ll [N, C]: each choice's summed token log-probability given its item's context."""
  require(bool(items), "tasks", "there are no items to score", "build items first")
  num_choices = len(items[0].choices)
  require(all(len(it.choices) == num_choices for it in items), "items",
          "items have different numbers of choices", "score one task at a time")
  requests = [request_ids(encoder, it.context, c) for it in items for c in it.choices]
  logp, _ = score_rows(model, *pack(requests, seq_len), batch_size)
  return logp.reshape(len(items), num_choices)


def stderr(p: float, n: int) -> float:
  return float(np.sqrt(p * (1.0 - p) / n))


def accuracy(ll: np.ndarray, items: list[Item]) -> dict:
  """{acc, acc_stderr, acc_norm, acc_norm_stderr, n} of ll [N, C] against the items' golds."""
  gold = np.array([it.gold for it in items])
  length = np.array([[len(c.encode("utf-8")) for c in it.choices] for it in items], np.float64)
  acc = float(np.mean(np.argmax(ll, axis=1) == gold))
  acc_norm = float(np.mean(np.argmax(ll / length, axis=1) == gold))
  n = len(items)
  return {"acc": acc, "acc_stderr": stderr(acc, n), "acc_norm": acc_norm,
          "acc_norm_stderr": stderr(acc_norm, n), "n": n}
