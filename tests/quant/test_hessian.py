"""Weighted GPTQ Hessians against NumPy sums over tokens; streaming equals one batch."""
import jax.numpy as jnp
import numpy as np

from moe_jax.quant import hessian


def _np_hessian(x, c):
  """(2 / #{c > 0}) sum_t c_t x_t x_t^T by a loop over tokens."""
  h = np.zeros((x.shape[1], x.shape[1]))
  for t in range(len(x)):
    h += c[t] * np.outer(x[t], x[t])
  return 2 * h / max((c > 0).sum(), 1)


def test_weighted_against_numpy_and_all_ones_is_unweighted():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((40, 12)).astype(np.float32)
  c = rng.uniform(0, 1, 40).astype(np.float32)
  np.testing.assert_allclose(hessian.hessian(jnp.asarray(x), jnp.asarray(c)),
                             _np_hessian(x.astype(np.float64), c), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(hessian.hessian(jnp.asarray(x), jnp.ones(40)),
                                hessian.hessian(jnp.asarray(x)))
  np.testing.assert_allclose(hessian.hessian(jnp.asarray(x)), 2 * x.T.astype(np.float64) @ x / 40,
                             rtol=1e-5, atol=1e-6)


def test_zero_weight_tokens_do_not_touch_h():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((30, 8)).astype(np.float32)
  c = rng.uniform(0.1, 1, 30).astype(np.float32)
  extra = 100 * rng.standard_normal((25, 8)).astype(np.float32)
  h = hessian.hessian(jnp.asarray(x), jnp.asarray(c))
  h_more = hessian.hessian(jnp.asarray(np.concatenate([x, extra])),
                           jnp.asarray(np.concatenate([c, np.zeros(25, np.float32)])))
  np.testing.assert_allclose(h_more, h, rtol=1e-6, atol=1e-6)


def test_streaming_batches_and_one_hessian_per_expert():
  # One MoE layer: tokens x [N, D] shared by E experts, gate weights [E, N] (0 = not routed).
  rng = np.random.default_rng(2)
  n, d, e = 48, 6, 3
  x = rng.standard_normal((n, d)).astype(np.float32)
  gates = rng.uniform(0, 1, (e, n)).astype(np.float32) * (rng.uniform(size=(e, n)) < 0.5)
  gates[2] = 0.0  # an expert that received nothing: H = 0, every column dead
  state = hessian.init(d, (e,))
  for lo in range(0, n, 16):
    state = hessian.accumulate(state, jnp.asarray(x[lo:lo + 16]), jnp.asarray(gates[:, lo:lo + 16]))
  np.testing.assert_array_equal(state.count, (gates > 0).sum(1))
  h = hessian.finalize(state)
  assert h.shape == (e, d, d)
  for k in range(e):
    routed = gates[k] > 0  # the same expert's Hessian from its routed tokens only
    np.testing.assert_allclose(h[k], _np_hessian(x[routed].astype(np.float64), gates[k][routed]),
                               rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h, hessian.hessian(jnp.asarray(x), jnp.asarray(gates)), rtol=1e-6,
                             atol=1e-6)
  np.testing.assert_array_equal(h[2], 0.0)
