"""AUC and GAUC against brute-force pair counting; expert statistics."""
import numpy as np

from moe_jax.recsys import metrics


def _pairwise_auc(y, s):
  pos, neg = s[y > 0.5], s[y <= 0.5]
  diff = pos[:, None] - neg[None, :]
  return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (pos.size * neg.size)


def test_auc_matches_pair_counting_with_ties():
  rng = np.random.default_rng(0)
  y = (rng.random(300) < 0.3).astype(np.float32)
  s = np.round(rng.random(300) + 0.3 * y, 1)  # rounding makes ties
  np.testing.assert_allclose(metrics.auc(y, s), _pairwise_auc(y, s), rtol=1e-12)
  assert np.isnan(metrics.auc(np.zeros(5), np.arange(5.0)))


def test_gauc_matches_brute_force():
  rng = np.random.default_rng(1)
  users = rng.integers(0, 12, 400)
  y = (rng.random(400) < 0.25).astype(np.float32)
  s = np.round(rng.random(400) + 0.2 * y * (users % 3), 2)
  total = weight = 0.0
  for u in np.unique(users):
    m = users == u
    if 0 < y[m].sum() < m.sum():
      total += m.sum() * _pairwise_auc(y[m], s[m])
      weight += m.sum()
  np.testing.assert_allclose(metrics.gauc(y, s, users), total / weight, rtol=1e-12)


def test_expert_stats():
  out = np.zeros((4, 2, 3))
  out[:, 1] = np.arange(12).reshape(4, 3)
  st = metrics.expert_stats(out)
  np.testing.assert_allclose(st["zero_frac"], [1.0, 1 / 12])
  np.testing.assert_allclose(st["mean"], [0.0, 5.5])
  np.testing.assert_allclose(st["std"], [0.0, np.arange(12).std()])
