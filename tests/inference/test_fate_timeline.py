"""The two-stream timeline: no stall when predictions are right and copies fit; stalls by hand."""
import numpy as np
import pytest

from moe_jax.inference.fate.cache import make_caches
from moe_jax.inference.fate.link import Link
from moe_jax.inference.fate.timeline import decode_steps, prefill_step, replay, simulate, summarize
from moe_jax.utils.errors import ConfigError

# Hand-computable units: attention 1 s, experts 1 s per layer, one INT4 copy 1 s latency + 1 s.
LINK, INT4, INT2 = Link(bandwidth=1.0, latency=1.0), 1.0, 0.5


def _decode(needed, pred):
  """One decode step of two layers: layer 1 needs `needed`, `pred` predicted (None: none)."""
  actual = np.array([[[0], [needed]]])
  return decode_steps(actual, None if pred is None else np.array([[pred]]), 1.0, 1.0, 4)


@pytest.mark.parametrize("pred, time, stall, wasted", [
    (None, 6.0, 2.0, 0),      # load on demand: the miss is copied from t=3 to 5
    ([2], 4.0, 0.0, 0),       # right: copied from t=1 (after attention 0) to 3, just in time
    ([1], 6.0, 2.0, 1),       # wrong: the stream is free again at 3, the miss lands at 5
    ([1, 3], 8.0, 4.0, 2),    # two wrong ones: the miss queues behind them, lands at 7
])
def test_hand_computed_decode_stalls(pred, time, stall, wasted):
  caches = make_caches([4, 0])  # layer 0 resident, layer 1 offloaded
  (stats,) = replay(_decode(2, pred), caches, LINK, INT4, INT2)
  assert (stats.time, stats.stall, stats.wasted) == (time, stall, wasted)
  assert stats.needed == 2 and stats.resident == 1


def test_a_cached_miss_hits_on_the_next_token():
  caches = make_caches([4, 1])  # layer 1 warm with expert 0
  stats = replay(_decode(2, None) + _decode(2, None), caches, LINK, INT4, INT2)
  assert [s.stall for s in stats] == [2.0, 0.0]
  assert [s.resident for s in stats] == [1, 2] and caches[1].contains(2)


@pytest.mark.parametrize("rate, time, stall", [(0.0, 6.0, 2.0), (0.34, 5.5, 1.5)])
def test_hand_computed_prefill_with_int2(rate, time, stall):
  # Three tokens, layer 1 routes them to 1, 1, 2 and the prediction is right. Expert 1 (2 tokens)
  # goes first as INT4 (t=1 to 3); expert 2 (1 token <= 0.34 x 3) as INT2 takes 1.5 s, else 2 s.
  actual = np.array([[[0], [0], [0]], [[1], [1], [2]]])
  step = prefill_step(actual, actual[1:], 1.0, 1.0, 4, int2_rate=rate)
  assert step[1].prefetch.tolist() == [1, 2] and step[1].int2 == (frozenset({2}) if rate else set())
  (stats,) = replay([step], make_caches([4, 0]), LINK, INT4, INT2)
  assert (stats.time, stats.stall, stats.prefetched, stats.copies) == (time, stall, 2, 2)


@pytest.mark.parametrize("seed", range(3))
def test_no_stall_when_recall_is_one_and_copies_fit(seed):
  # Every prediction right (plus one extra expert in decode), every offloaded layer at capacity
  # 0 or 2, and a layer's copies (<= 3 in decode, <= E in prefill) within the window from its
  # predecessor's attention to its own experts (moe + attn). Load on demand stalls on this trace.
  rng = np.random.default_rng(seed)
  layers, e, k, steps, tokens = 5, 8, 2, 6, 7
  attn, moe = rng.uniform(1e-3, 2e-3, layers), rng.uniform(1e-3, 2e-3, layers)
  window = (moe[:-1] + attn[1:]).min()
  link = Link(bandwidth=25e9, latency=1e-5)
  int4 = (window / (e + 1) - link.latency) * link.bandwidth  # E copies fit in a window
  slots = [e] + rng.choice([0, 2], layers - 1).tolist()

  actual = np.stack([rng.permutation(e)[:k] for _ in range(steps * layers)]).reshape(
      steps, layers, k)
  extra = rng.integers(0, e, size=(steps, layers - 1, 1))
  pred = np.concatenate([actual[:, 1:], extra], -1)
  prompt = np.stack([[rng.permutation(e)[:k] for _ in range(tokens)] for _ in range(layers)])
  for p_prefill, p_decode, stalls in ((prompt[1:], pred, False), (None, None, True)):
    out = simulate(prefill_step(prompt, p_prefill, attn, moe, e, int2_rate=0.3),
                   decode_steps(actual, p_decode, attn, moe, e), make_caches(slots), link, int4,
                   int4 / 2)
    for phase, n in (("prefill", 1), ("decode", steps)):
      assert (out[phase]["stall"] > 0) == stalls
      if not stalls:
        assert out[phase]["hit_rate"] == 1.0
        assert out[phase]["time"] == pytest.approx(n * (attn.sum() + moe.sum()))


def test_summarize_rates():
  stats = replay(_decode(2, [2]) + _decode(3, None), make_caches([4, 1]), LINK, INT4, INT2)
  out = summarize(stats)
  # Step 1: 0 resident at layer 0, 2 prefetched at layer 1 (then admitted, evicting the warm 0).
  # Step 2: 0 resident at layer 0, 3 missed at layer 1.
  assert (out["needed"], out["resident"], out["prefetched"], out["copies"]) == (4, 2, 1, 2)
  assert out["hit_rate"] == 0.75 and out["cache_hit_rate"] == 0.5 and out["steps"] == 2


def test_one_cache_per_layer_is_required():
  with pytest.raises(ConfigError, match="caches"):
    replay(_decode(2, None), make_caches([4]), LINK, INT4, INT2)
