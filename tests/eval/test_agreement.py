"""Agreement with a reference: zero KL and full agreement against itself, NumPy KL and top-1,
Python set comparison of the routing, and pairs it does not apply to refused in one line."""
import functools

import jax
import numpy as np
import pytest

from moe_jax.eval.agreement import agreement
from moe_jax.utils.errors import ConfigError
from tests.eval.tiny import perturbed, random_model


@pytest.fixture(scope="module")
def pair():
  model = random_model(seed=int(np.random.default_rng().integers(1 << 30)))
  return model, perturbed(model, 0.15, seed=int(np.random.default_rng().integers(1 << 30)))


def _tokens(rows=5, seq_len=16):
  return np.random.default_rng().integers(0, 256, (rows, seq_len)).astype(np.int32)


def _log_softmax64(logits):
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_a_model_agrees_with_itself(pair):
  model, _ = pair
  got = agreement(model, model, _tokens(), batch_size=2)
  assert got["kl"] == pytest.approx(0.0, abs=1e-7)
  assert got["top1"] == 1.0 and got["tokens"] == 5 * 16
  assert got["routing"] == {"layer_0": 1.0, "layer_1": 1.0} and got["routing_mean"] == 1.0


def test_kl_top1_and_routing_match_numpy_and_python_sets(pair):
  model, reference = pair
  tokens = _tokens()
  got = agreement(model, reference, tokens, batch_size=2)  # 5 rows: the last batch is padded
  outs = {}
  apply = jax.jit(functools.partial(model.module.apply, mutable=["intermediates"]))
  for name, m in (("model", model), ("reference", reference)):
    logits, state = apply(m.variables, tokens)
    experts = {layer: np.asarray(state["intermediates"][layer]["moe"]["expert_index"][0])
               for layer in ("layer_0", "layer_1")}
    outs[name] = (_log_softmax64(logits), experts)
  logp, ref_logp = outs["model"][0], outs["reference"][0]
  kl = np.sum(np.exp(ref_logp) * (ref_logp - logp), -1).mean()
  assert got["kl"] == pytest.approx(kl, rel=1e-4) and kl > 1e-3
  top1 = np.mean(logp.argmax(-1) == ref_logp.argmax(-1))
  assert got["top1"] == pytest.approx(top1) and 0 < top1 < 1
  for layer in ("layer_0", "layer_1"):
    ours = outs["model"][1][layer].reshape(-1, 2).tolist()  # [T, K], token-major
    theirs = outs["reference"][1][layer].reshape(-1, 2).tolist()
    same = np.mean([set(a) == set(b) for a, b in zip(ours, theirs)])
    assert got["routing"][layer] == pytest.approx(same)
  assert 0 < got["routing_mean"] < 1
  swapped = sum(a != b and set(a) == set(b) for layer in ("layer_0", "layer_1") for a, b in zip(
      outs["model"][1][layer].reshape(-1, 2).tolist(),
      outs["reference"][1][layer].reshape(-1, 2).tolist()))
  assert swapped > 0  # some tokens keep their experts in another order: counted as agreeing


def test_pairs_it_does_not_apply_to_are_refused(pair):
  model, _ = pair
  cases = [(random_model(moe_layers="none"), r"^reference: random has no MoE layers"),
           (random_model(moe=dict(top_k=1)), r"^reference: top_k=1 differs from the model's "
                                             r"top_k=2"),
           (random_model(moe_layers=(1,)), r"^reference: MoE layers \[1\] differ from the "
                                          r"model's \[0, 1\]"),
           (random_model(vocab_size=128), r"^reference: vocab_size 128 differs")]
  for reference, message in cases:
    with pytest.raises(ConfigError, match=message) as error:
      agreement(model, reference, _tokens(), 2)
    assert "\n" not in str(error.value) and "Fix: " in str(error.value)
  with pytest.raises(ConfigError, match=r"^model: random has no MoE layers"):
    agreement(random_model(moe_layers="none"), model, _tokens(), 2)
  dense = random_model(moe_layers="none")
  assert agreement(dense, dense, _tokens(), 2, routing=False)["top1"] == 1.0  # logits only
