"""Cross-layer gate prediction against set-based loops and a NumPy cosine."""
import numpy as np
import pytest

from moe_jax.analysis import cross_layer
from moe_jax.utils.errors import ConfigError


def _loop_cosine(x):
  out = []
  for l in range(len(x) - 1):
    cos = [0.0 if not (a.any() and b.any()) else a @ b / np.linalg.norm(a) / np.linalg.norm(b)
           for a, b in zip(x[l], x[l + 1])]
    out.append(np.mean(cos))
  return np.array(out)


def test_adjacent_cosine_matches_numpy_loop():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((4, 30, 16))
  x[2] = 0.7 * x[1] + 0.3 * x[2]  # one similar pair
  x[3, 5] = 0.0  # a zero vector scores 0
  got = cross_layer.adjacent_cosine(x)
  np.testing.assert_allclose(got, _loop_cosine(x), rtol=1e-12)
  assert got[1] > got[0] + 0.5


def test_route_topk_is_the_topk_of_softmax():
  rng = np.random.default_rng(1)
  x, w = rng.standard_normal((2, 20, 8)), rng.standard_normal((2, 8, 10))
  got = cross_layer.route_topk(x, w, 3)
  logits = np.einsum("ltd,lde->lte", x, w)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  want = np.argsort(-probs, axis=-1)[..., :3]
  np.testing.assert_array_equal(np.sort(got, -1), np.sort(want, -1))


@pytest.mark.parametrize("prefetch", [2, 5])
def test_identity_cross_layer_map_gives_recall_and_coverage_one(prefetch):
  # Every layer sees the same gate input, so x_l through W^(l+1) is exactly layer l+1's routing,
  # whatever the (random, per layer) router weights.
  rng = np.random.default_rng(2)
  x = np.repeat(rng.standard_normal((1, 25, 12)), 5, axis=0)
  w = rng.standard_normal((5, 12, 9))
  actual = cross_layer.route_topk(x, w, 2)
  recall = cross_layer.decode_recall(cross_layer.predict_next(x, w, prefetch), actual, 9)
  np.testing.assert_array_equal(recall, 1.0)
  cover = cross_layer.prefill_coverage(cross_layer.predict_next(x, w, 2), actual, 9)
  np.testing.assert_array_equal(cover["coverage"], 1.0)
  np.testing.assert_array_equal(cover["precision"], 1.0)


def test_recall_and_coverage_match_set_loops():
  rng = np.random.default_rng(3)
  e = 8
  actual = rng.integers(0, e, size=(4, 15, 2))
  pred = rng.integers(0, e, size=(3, 15, 3))
  recall = cross_layer.decode_recall(pred, actual, e)
  cover = cross_layer.prefill_coverage(pred, actual, e)
  for l in range(3):
    per_token = [len(set(p) & set(a)) / len(set(a)) for p, a in zip(pred[l], actual[l + 1])]
    assert recall[l] == pytest.approx(np.mean(per_token))
    up, ua = set(pred[l].ravel()), set(actual[l + 1].ravel())
    assert cover["coverage"][l] == pytest.approx(len(up & ua) / len(ua))
    assert cover["precision"][l] == pytest.approx(len(up & ua) / len(up))
    assert (cover["predicted"][l], cover["actual"][l]) == (len(up), len(ua))


def test_independent_inputs_predict_worse_than_identical_ones():
  rng = np.random.default_rng(4)
  x, w = rng.standard_normal((3, 200, 12)), rng.standard_normal((3, 12, 16))
  recall = cross_layer.decode_recall(cross_layer.predict_next(x, w, 2),
                                     cross_layer.route_topk(x, w, 2), 16)
  assert recall.max() < 0.5


def test_prediction_shape_mismatch_is_named():
  with pytest.raises(ConfigError, match="pred"):
    cross_layer.decode_recall(np.zeros((2, 5, 2), int), np.zeros((2, 5, 2), int), 4)
