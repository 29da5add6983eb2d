"""LoSparse: exact initial factors, the cubic schedule, row masks against an element-level rule."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.compress.mcsmoe import losparse
from moe_jax.utils.errors import ConfigError


def test_initial_factors_reproduce_w_and_hold_its_best_rank_r_part():
  rng = np.random.default_rng(0)
  w = rng.standard_normal((3, 12, 20)).astype(np.float32)  # [E, D, F]
  left, right, sparse = jax.jit(losparse.decompose, static_argnums=1)(jnp.asarray(w), 4)
  assert left.shape == (3, 12, 4) and right.shape == (3, 4, 20) and sparse.shape == w.shape
  np.testing.assert_allclose(losparse.compose(left, right, sparse), w, atol=1e-5)
  u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
  best = np.einsum("emr,er,ern->emn", u[..., :4], s[..., :4], vt[..., :4, :])
  np.testing.assert_allclose(left @ right, best, atol=1e-4)
  # L = U sqrt(Sigma), R = sqrt(Sigma) V^T: both factors carry the same singular values.
  np.testing.assert_allclose(np.linalg.norm(left, axis=-2), np.sqrt(s[..., :4]), rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(right, axis=-1), np.sqrt(s[..., :4]), rtol=1e-5)
  with pytest.raises(ConfigError, match="rank"):
    losparse.decompose(jnp.asarray(w), 13)


def test_cubic_schedule_endpoints_and_shape():
  total, warm = 40, 3
  p = jax.jit(lambda t: losparse.kept_fraction(t, total, final=0.1, warmup_steps=warm))
  steps = np.arange(total + 1)
  values = np.array([float(p(t)) for t in steps])
  assert values[0] == 1.0 and values[warm] == 1.0 and values[warm + 1] < 1.0
  assert values[total - 4 * warm] == pytest.approx(0.1) and values[total] == pytest.approx(0.1)
  assert np.all(np.diff(values) <= 1e-7)
  middle = warm + (total - 5 * warm) / 2
  assert float(p(middle)) == pytest.approx(0.1 + 0.9 * 0.5 ** 3)
  with pytest.raises(ConfigError, match="total_steps"):
    losparse.kept_fraction(0, 10, warmup_steps=2)


def _reference_masks(emas, keep):
  """The repo's rule on elements: keep scores >= the k-th smallest, k = int(N (1 - keep))."""
  scores = [e.mean(-2) for e in emas]
  elements = np.concatenate([np.broadcast_to(s[..., None, :], e.shape).ravel()
                             for s, e in zip(scores, emas)])
  k = int(elements.size * (1 - keep))
  threshold = np.sort(elements)[k - 1] if k > 0 else -np.inf
  return [s >= threshold for s in scores]


@pytest.mark.parametrize("keep", [1.0, 0.63, 0.27, 0.05])
def test_row_masks_match_the_element_level_rule_over_several_matrices(keep):
  rng = np.random.default_rng(1)
  emas = {"wi_up": rng.uniform(size=(3, 6, 9)).astype(np.float32),
          "wo": rng.uniform(size=(3, 9, 6)).astype(np.float32)}
  masks = jax.jit(losparse.row_masks)(emas, keep)
  want = _reference_masks([emas["wi_up"], emas["wo"]], keep)
  np.testing.assert_array_equal(masks["wi_up"], want[0])
  np.testing.assert_array_equal(masks["wo"], want[1])


def test_pruned_s_is_zero_in_whole_rows_and_its_kept_fraction_follows_the_schedule():
  rng = np.random.default_rng(2)
  w = {"wi_up": jnp.asarray(rng.standard_normal((2, 8, 16)), jnp.float32),
       "wo": jnp.asarray(rng.standard_normal((2, 16, 8)), jnp.float32)}
  sparse = {k: losparse.decompose(v, 2)[2] for k, v in w.items()}
  ema = jax.tree.map(jnp.zeros_like, sparse)
  total, warm, final = 24, 2, 0.25

  @jax.jit
  def step(sparse, ema, grads, t):
    keep = losparse.kept_fraction(t, total, final=final, warmup_steps=warm)
    return *losparse.prune_step(sparse, grads, ema, keep), keep

  n_all = sum(v.size for v in sparse.values())
  slack = (max(v.shape[-2] for v in sparse.values()) + 1) / n_all  # at most one row over
  for t in range(1, total + 1):
    grads = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), jnp.float32), sparse)
    sparse, ema, masks, keep = step(sparse, ema, grads, t)
    kept = sum(float(jnp.sum(masks[k])) * sparse[k].shape[-2] for k in sparse) / n_all
    assert float(keep) <= kept < float(keep) + slack
    for s, m in zip(sparse.values(), masks.values()):
      zero = np.asarray(s) == 0
      assert np.all(zero.all(-2) | ~zero.any(-2))  # zero only in whole rows (our columns)
      assert np.all(zero.all(-2)[~np.asarray(m)])
  assert float(keep) == pytest.approx(final)


def test_importance_is_an_exponential_average_of_weight_times_gradient():
  rng = np.random.default_rng(3)
  s, g1, g2 = (rng.standard_normal((4, 5)).astype(np.float32) for _ in range(3))
  ema = losparse.update_importance(jnp.zeros((4, 5)), jnp.asarray(s), jnp.asarray(g1))
  ema = losparse.update_importance(ema, jnp.asarray(s), jnp.asarray(g2))
  want = 0.85 * 0.15 * np.abs(s * g1) + 0.15 * np.abs(s * g2)
  np.testing.assert_allclose(ema, want, rtol=1e-6)
