"""Router logit alignment: the W8 router quantizer and the top-k KL against float64 NumPy; the
KL-searched clip is never worse in KL than min-max and keeps top-k agreement at least as high."""
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.quant import core
from moe_jax.quant import eaquant_router as router


def _reference_quant(w, bits, ratio):
  """Per column; the column max sits at the tie -(qmax + 0.5): rounded as core does, in float32
  with the reciprocal (moe_jax/quant/core.py)."""
  qmax = 2 ** (bits - 1) - 1
  scale = (np.float32(ratio) * np.abs(w).max(0, keepdims=True) *
           np.float32(1 / (qmax + 0.5))).astype(np.float32)
  q = np.clip(np.round(w * (np.float32(1) / scale)), -qmax - 1, qmax)
  return q.astype(np.float64) * scale


def _reference_kl(z_fp, z_q, k):
  lp = z_fp - np.log(np.exp(z_fp).sum(-1, keepdims=True))
  lq = z_q - np.log(np.exp(z_q).sum(-1, keepdims=True))
  total = 0.0
  for t in range(len(z_fp)):
    top = np.argsort(-z_fp[t])[:k]
    total += np.sum(np.exp(lp[t, top]) * (lp[t, top] - lq[t, top]))
  return total / len(z_fp)


def test_quantizer_and_kl_match_numpy():
  rng = np.random.default_rng(0)
  w = rng.standard_normal((24, 6)).astype(np.float32)
  for bits, ratio in ((8, 1.0), (4, 0.6)):
    np.testing.assert_allclose(router.fake_quant_router(jnp.asarray(w), bits, ratio),
                               _reference_quant(w, bits, ratio), rtol=1e-5, atol=1e-6)
  z_fp, z_q = rng.standard_normal((2, 50, 6))
  np.testing.assert_allclose(router.topk_kl(jnp.asarray(z_fp, jnp.float32),
                                            jnp.asarray(z_q, jnp.float32), 2),
                             _reference_kl(z_fp, z_q, 2), rtol=1e-4, atol=1e-6)
  grid = router.ratios(0.35, 101)
  assert grid[0] == 1.0 and np.isclose(grid[-1], 0.35) and len(grid) == 101


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_searched_clip_beats_min_max(seed):
  """A router at 4 bits whose every column holds one outlier weight (10 sigma), the quantized
  path reading a noisy copy of the float input, as a quantized model's router does."""
  rng = np.random.default_rng(seed)
  d, e, k = 32, 8, 2
  w = 0.3 * rng.standard_normal((d, e))
  w[rng.integers(0, d, e), np.arange(e)] = 3.0 * rng.choice([-1, 1], e)
  w = jnp.asarray(w, jnp.float32)
  y_fp = rng.standard_normal((512, d)).astype(np.float32)
  y_q = y_fp + 0.05 * rng.standard_normal(y_fp.shape).astype(np.float32)
  act = core.ActSpec(bits=8)
  grid = jnp.asarray(router.ratios(0.35, 101), jnp.float32)
  best, losses = router.search(jnp.asarray(y_fp), jnp.asarray(y_q), w, k, 4, act, grid)
  assert float(jnp.min(losses)) <= float(losses[0])  # min-max (ratio 1) is on the grid
  assert float(losses[jnp.argmax(grid == best)]) == float(jnp.min(losses))
  z_fp = y_fp @ np.asarray(w)
  x_q = core.fake_quant_activations(jnp.asarray(y_q), act)
  agree = lambda r: float(router.topk_agreement(z_fp, x_q @ router.fake_quant_router(w, 4, r),
                                                k))
  assert agree(best) >= agree(1.0)
