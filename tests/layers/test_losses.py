"""Auxiliary losses on hand-computed cases and against float64 NumPy loops."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.layers import losses


def test_tokens_per_expert_is_a_bincount():
  expert = np.random.default_rng(0).integers(0, 6, size=(50, 2))
  np.testing.assert_array_equal(losses.tokens_per_expert(jnp.asarray(expert), 6),
                                np.bincount(expert.ravel(), minlength=6))


def test_switch_balance_is_one_under_uniform_routing():
  # 4 tokens, 2 experts, top-1: probabilities 1/2 everywhere, each expert gets 2 tokens.
  probs = jnp.full((4, 2), 0.5)
  expert = jnp.asarray([[0], [1], [0], [1]])
  assert float(losses.load_balancing_loss(probs, expert)) == pytest.approx(1.0)
  # Top-2 of 4 experts, uniform probabilities, every expert chosen by half of the tokens.
  probs = jnp.full((4, 4), 0.25)
  expert = jnp.asarray([[0, 1], [2, 3], [1, 0], [3, 2]])
  assert float(losses.load_balancing_loss(probs, expert)) == pytest.approx(1.0)


def test_switch_balance_skewed_by_hand():
  probs = jnp.asarray([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
  expert = jnp.asarray([[0], [0], [0], [1]])
  # f = (3/4, 1/4); P = (2.6/4, 1.4/4) = (0.65, 0.35);
  # loss = 2 * (0.75 * 0.65 + 0.25 * 0.35) = 2 * 0.575 = 1.15.
  assert float(losses.load_balancing_loss(probs, expert)) == pytest.approx(1.15, rel=1e-6)


def test_switch_balance_random_against_numpy():
  rng = np.random.default_rng(1)
  t, e, k = 37, 5, 2
  logits = rng.standard_normal((t, e))
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  expert = np.argsort(-probs, -1)[:, :k]
  f = np.array([(expert == i).sum() for i in range(e)]) / (t * k)
  ref = e * np.sum(f * probs.mean(0))
  got = losses.load_balancing_loss(jnp.asarray(probs, jnp.float32), jnp.asarray(expert))
  assert float(got) == pytest.approx(ref, rel=1e-5)


def test_router_z_loss_by_hand():
  # logsumexp(0, 0) = ln 2; logsumexp(ln 3, 0) = ln 4 = 2 ln 2  ->  mean of squares = 2.5 ln(2)^2.
  logits = jnp.asarray([[0.0, 0.0], [math.log(3.0), 0.0]])
  assert float(losses.router_z_loss(logits)) == pytest.approx(2.5 * math.log(2) ** 2, rel=1e-6)


def test_router_z_loss_random_against_numpy():
  logits = np.random.default_rng(2).standard_normal((3, 7, 6)) * 3
  m = logits.max(-1, keepdims=True)
  lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
  got = losses.router_z_loss(jnp.asarray(logits, jnp.float32))
  assert float(got) == pytest.approx(np.mean(lse ** 2), rel=1e-5)


def test_sequence_balance_by_hand():
  # Two sequences of S=2 tokens, E=2 experts, K=1, same scores s = [[0.2, 0.6], [0.5, 0.5]]:
  # s' = [[0.25, 0.75], [0.5, 0.5]], P = (0.375, 0.625).
  # Sequence 1 picks experts (1, 0): f = E/(K S) * (1, 1) = (1, 1), loss 0.375 + 0.625 = 1.0.
  # Sequence 2 picks experts (1, 1): f = (0, 2), loss 2 * 0.625 = 1.25.  Mean: 1.125.
  scores = jnp.asarray([[[0.2, 0.6], [0.5, 0.5]]] * 2)
  expert = jnp.asarray([[[1], [0]], [[1], [1]]])
  assert float(losses.sequence_balance_loss(scores, expert)) == pytest.approx(1.125, rel=1e-6)


def test_sequence_balance_random_against_numpy():
  rng = np.random.default_rng(3)
  b, s, e, k = 3, 11, 6, 2
  scores = 1 / (1 + np.exp(-rng.standard_normal((b, s, e))))
  expert = np.argsort(-scores, -1)[..., :k]
  total = 0.0
  for i in range(b):
    norm = scores[i] / scores[i].sum(-1, keepdims=True)
    for j in range(e):
      f = e / (k * s) * np.sum(expert[i] == j)
      total += f * norm[:, j].mean()
  got = losses.sequence_balance_loss(jnp.asarray(scores, jnp.float32), jnp.asarray(expert))
  assert float(got) == pytest.approx(total / b, rel=1e-5)
