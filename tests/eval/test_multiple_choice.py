"""Harness-style multiple-choice scoring against a brute-force float64 loop, an oracle model, and
accuracy / acc_norm / standard error against plain Python."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.eval import multiple_choice
from moe_jax.eval.encoding import make_encoder
from moe_jax.eval.tasks import Item
from moe_jax.models.loading import LoadedModel
from moe_jax.utils.errors import ConfigError
from tests.eval.tiny import random_model, tiny_config

LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz .,:()=_\n"))


def _text(rng, low, high):
  return "".join(rng.choice(LETTERS, size=rng.integers(low, high)))


def _random_items(rng, n, num_choices):
  """Long contexts (left-truncated rows) and short ones ending in a space (which the harness
  moves into the choice); choices of a few lengths, some ending in a 2-byte character."""
  items = []
  for i in range(n):
    context = "x" + _text(rng, 40, 41) + "\n" if i % 2 else "x" + _text(rng, 8, 9) + " "
    choices = tuple(_text(rng, 3, 4) * int(rng.integers(1, 3)) + "é" * int(rng.integers(2))
                    for _ in range(num_choices))
    items.append(Item("test", context, choices, int(rng.integers(num_choices))))
  return items


def _log_softmax64(logits):
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _brute_force(model, items, seq_len):
  """Per item, per choice, per token: the harness's rule written out, float64 log-softmax."""
  out = np.zeros((len(items), len(items[0].choices)))
  apply = jax.jit(model.module.apply)  # one compilation per row length: a handful
  for n, item in enumerate(items):
    for c, choice in enumerate(item.choices):
      context = item.context.rstrip()
      continuation = item.context[len(context):] + choice
      ids = list((context + continuation).encode("utf-8"))
      num = len(continuation.encode("utf-8"))
      ids = ids[-(seq_len + 1):]
      logits = apply(model.variables, np.array([ids[:-1]], np.int32))[0]
      logp = _log_softmax64(logits)
      for t in range(len(ids) - num, len(ids)):  # each continuation token, one at a time
        out[n, c] += logp[t - 1, ids[t]]
  return out


def test_loglikelihoods_match_a_brute_force_loop():
  rng = np.random.default_rng()
  model = random_model(seed=int(rng.integers(1 << 30)))
  items = _random_items(rng, 7, 3)
  seq_len = 32
  ll = multiple_choice.loglikelihoods(model, items, make_encoder("bytes", model), seq_len,
                                      batch_size=4)  # 21 rows: the last batch is padded
  np.testing.assert_allclose(ll, _brute_force(model, items, seq_len), rtol=1e-5, atol=1e-4)


def test_accuracy_matches_python_counting():
  rng = np.random.default_rng()
  items = _random_items(rng, 50, 4)
  ll = rng.normal(size=(50, 4)) * 3
  ll[:5] = 0.0  # ties: the first choice wins, as np.argmax in the harness
  got = multiple_choice.accuracy(ll, items)
  hits = hits_norm = 0
  for n, item in enumerate(items):
    scores = list(ll[n])
    normed = [s / len(c.encode("utf-8")) for s, c in zip(scores, item.choices)]
    hits += scores.index(max(scores)) == item.gold
    hits_norm += normed.index(max(normed)) == item.gold
  acc, acc_norm = hits / 50, hits_norm / 50
  assert got["acc"] == pytest.approx(acc) and got["acc_norm"] == pytest.approx(acc_norm)
  assert got["acc_stderr"] == pytest.approx((acc * (1 - acc) / 50) ** 0.5)
  assert got["acc_norm_stderr"] == pytest.approx((acc_norm * (1 - acc_norm) / 50) ** 0.5)
  assert got["n"] == 50


class Copier(nn.Module):
  """Knows every answer of a text of period `period`: all its mass on the token that repeats."""
  cfg: object
  period: int

  @nn.compact
  def __call__(self, tokens):
    shifted = jnp.pad(tokens, ((0, 0), (self.period - 1, 0)))[:, :tokens.shape[1]]
    return 50.0 * jax.nn.one_hot(shifted, self.cfg.vocab_size)


def test_a_model_that_always_knows_the_answer_scores_one():
  rng = np.random.default_rng()
  period, items = 12, []
  for _ in range(20):
    unit = "".join(rng.choice(LETTERS[:26], size=period))
    gold = int(rng.integers(4))
    choices = [_text(rng, 3, 9).strip() or "q" for _ in range(4)]
    choices[gold] = (unit * 2)[:len(choices[gold])]
    items.append(Item("test", unit, tuple(choices), gold))  # the choice repeats the context
  model = LoadedModel(Copier(tiny_config(), period), {}, "copier")
  ll = multiple_choice.loglikelihoods(model, items, make_encoder("bytes", model), 64, 8)
  got = multiple_choice.accuracy(ll, items)
  assert got["acc"] == 1.0 and got["acc_norm"] == 1.0 and got["acc_stderr"] == 0.0


def test_a_choice_longer_than_seq_len_is_refused():
  model = random_model()
  items = [Item("test", "context\n", ("a" * 40, "b"), 0)]
  with pytest.raises(ConfigError, match=r"^seq_len: .*Fix: raise seq_len$"):
    multiple_choice.loglikelihoods(model, items, make_encoder("bytes", model), 32, 4)
