"""Batched, jitted scoring of token rows: each row's summed target log-probability and top-1 hits.

Legend: R rows, B rows per batch, S positions, V vocabulary.

  logp[r] = sum_s mask[r, s] * log softmax(f(inputs[r]))[s, targets[r, s]]
  hits[r] = sum_s mask[r, s] * [argmax_v f(inputs[r])[s, v] == targets[r, s]]

Rows go through in batches of one shape [B, S], the last one padded with copies of row 0 whose
results are dropped, so a model compiles once per (B, S) and bits per byte, the task suite and
later evaluations of the same architecture share that compilation (the module is a static
argument: equal configs hash alike). The trainer's make_eval_fn pads its batches the same way.
"""
from __future__ import annotations

import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.models.lm import check_token_ids
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import require


@functools.partial(jax.jit, static_argnums=0)
def _row_scores(module, variables, inputs, targets, mask):
  logits = module.apply(variables, inputs).astype(jnp.float32)  # [B, S, V]
  logp = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  hits = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return jnp.sum(picked * mask, -1), jnp.sum(hits * mask, -1)


def batches(num_rows: int, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
  """Row ids of each batch, padded to `batch_size` with row 0, and how many are real."""
  for start in range(0, num_rows, batch_size):
    ids = np.arange(start, min(start + batch_size, num_rows))
    yield np.concatenate([ids, np.zeros(batch_size - len(ids), ids.dtype)]), len(ids)


def score_rows(model: LoadedModel, inputs: np.ndarray, targets: np.ndarray, mask: np.ndarray,
               batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """inputs, targets [R, S] int, mask [R, S] -> (logp [R], hits [R]) in float64 (see above)."""
  require(len(inputs) > 0, "data", "there are no rows to score",
          "give documents long enough for at least one window or task item")
  check_token_ids(inputs, model.cfg.vocab_size, "tokenizer")
  check_token_ids(targets, model.cfg.vocab_size, "tokenizer")
  inputs, targets = inputs.astype(np.int32), targets.astype(np.int32)
  mask = mask.astype(np.float32)
  pending = []
  for ids, n in batches(len(inputs), batch_size):
    out = _row_scores(model.module, model.variables, inputs[ids], targets[ids], mask[ids])
    pending.append((out, n))  # dispatched asynchronously, fetched once below
  logp = np.concatenate([np.asarray(lp, np.float64)[:n] for (lp, _), n in pending])
  hits = np.concatenate([np.asarray(h, np.float64)[:n] for (_, h), n in pending])
  return logp, hits
