"""GPTQ against a float64 NumPy column loop written here, and its invariants, on random layers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.quant import core, gptq, hessian


def _np_fake_quant(x, s, z, bits):
  q = np.clip(np.round(x * (1 / s)) + z, -2 ** (bits - 1), 2 ** (bits - 1) - 1)
  return q, s * (q - z)


def _np_params(x, spec):
  """Per row of x [O, k]: (scale, zero) with the spec's MSE clip search, by loops (float64; the
  divisions as multiplications by reciprocals, as moe_jax.quant.core computes them)."""
  qmin, qmax = -2 ** (spec.bits - 1), 2 ** (spec.bits - 1) - 1
  ratios = [1 - k / spec.clip_grid for k in range(int(spec.clip_max_shrink * spec.clip_grid))]
  best = None
  for p in ratios if spec.mse_clip else [1.0]:
    if spec.symmetric:
      s = np.abs(x).max(1) * p * (1 / (qmax + 0.5))
      z = np.zeros_like(s)
    else:
      lo, hi = np.minimum(x.min(1), 0) * p, np.maximum(x.max(1), 0) * p
      s = (hi - lo) * (1 / (qmax - qmin))
      z = np.clip(np.round(qmin - lo * (1 / s)), qmin, qmax)
    err = (np.abs(_np_fake_quant(x, s[:, None], z[:, None], spec.bits)[1] - x) ** spec.clip_norm)
    err = err.sum(1)
    if best is None:
      best = [err, s, z]
    else:
      better = err < best[0]
      for b, v in zip(best, (err, s, z)):
        b[better] = v[better]
  return best[1], best[2]


def _np_gptq(w, h, spec, damp=0.01, act_order=False):
  """The GPTQ sweep one column at a time (no blocks), in float64. Returns q [O, I] and the
  dequantized weights in the original column order. Groups: from the updated weights at their
  first column; with act_order, from the weights before the sweep, per original group."""
  w, h = w.astype(np.float64).copy(), h.astype(np.float64).copy()
  n = w.shape[1]
  g = spec.group_size or n
  for i in range(n):
    if h[i, i] == 0:
      h[i, i], w[:, i] = 1.0, 0.0
  static = [_np_params(w[:, k:k + g], spec) for k in range(0, n, g)]
  perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(n)
  w, h = w[:, perm], h[np.ix_(perm, perm)]
  h += damp * np.mean(np.diag(h)) * np.eye(n)
  u = np.linalg.cholesky(np.linalg.inv(h)).T  # H^-1 = U^T U, U upper
  q, w_hat = np.zeros(w.shape), np.zeros(w.shape)
  for i in range(n):
    if spec.group_size is None or act_order:
      s, z = static[perm[i] // g]
    elif i % g == 0:
      s, z = _np_params(w[:, i:i + g], spec)
    q[:, i], w_hat[:, i] = _np_fake_quant(w[:, i], s, z, spec.bits)
    err = (w[:, i] - w_hat[:, i]) / u[i, i]
    w[:, i:] -= np.outer(err, u[i, i:])
  inverse = np.argsort(perm)
  return q[:, inverse], w_hat[:, inverse]


def _layer(seed, out=12, width=48, tokens=160, dead=()):
  """A random W [O, I] and the Hessian of correlated inputs x = z A (columns in `dead` unused)."""
  rng = np.random.default_rng(seed)
  w = rng.standard_normal((out, width))
  mix = np.eye(width) + 0.5 * rng.standard_normal((width, width))
  x = rng.standard_normal((tokens, width)) @ mix
  x[:, list(dead)] = 0.0
  return w, 2 * x.T @ x / tokens


# (spec, act_order, diagonally dominant H): every path of the sweep; dead columns 5 and 30.
CASES = [
    (core.QuantSpec(bits=4, group_size=8, mse_clip=True, clip_grid=10), False, False),
    (core.QuantSpec(bits=3, group_size=16, symmetric=False), False, False),
    (core.QuantSpec(bits=4, group_size=16), True, True),  # a clear, non-trivial column order
    (core.QuantSpec(bits=2, symmetric=False, mse_clip=True, clip_grid=10), True, False),
]


@pytest.mark.parametrize("spec,act_order,dominant", CASES)
def test_matches_numpy_column_loop_in_float64(spec, act_order, dominant):
  w, h = _layer(seed=spec.bits + 10 * act_order + (spec.group_size or 0), dead=(5, 30))
  if dominant:
    h += np.diag(np.random.default_rng(60).uniform(20, 200, h.shape[0]) * (np.diag(h) > 0))
  expect = _np_gptq(w, h, spec, act_order=act_order)[0]
  with jax.enable_x64(True):
    q, scale, zero = gptq.gptq(jnp.asarray(w), jnp.asarray(h), spec, block_size=16,
                               act_order=act_order)
    assert scale.dtype == jnp.float64
    np.testing.assert_array_equal(q, expect)
    w_hat = np.asarray(core.dequantize(q, scale, zero))
  np.testing.assert_array_equal(w_hat[:, [5, 30]], 0.0)  # dead columns


def test_scaling_h_changes_nothing():
  w, h = _layer(seed=7)
  spec = CASES[1][0]
  with jax.enable_x64(True):
    a = gptq.gptq(jnp.asarray(w), jnp.asarray(h), spec, block_size=16)
    b = gptq.gptq(jnp.asarray(w), jnp.asarray(37.3 * h), spec, block_size=16)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12)


def _correlated_layers(seeds, out=16, width=64):
  layers = [_layer(seed, out=out, width=width, tokens=256) for seed in seeds]
  return np.stack([w for w, _ in layers]), np.stack([h for _, h in layers])


@pytest.mark.parametrize("spec", [core.QuantSpec(bits=4), core.QuantSpec(bits=3, group_size=16)])
def test_float32_error_below_rtn_and_close_to_the_reference(spec):
  w, h = _correlated_layers(seeds=(20, 21, 22))
  q, scale, zero = gptq.gptq(jnp.asarray(w, jnp.float32), jnp.asarray(h, jnp.float32), spec)
  ours = gptq.reconstruction_error(w, core.dequantize(q, scale, zero), h)
  rtn = gptq.reconstruction_error(w, core.fake_quant(jnp.asarray(w, jnp.float32), spec), h)
  assert np.all(ours < 0.9 * rtn), (ours, rtn)
  for e in range(3):
    # A rounding tie (w = -absmax sits on one) may fall the other way in float32 and change the
    # rest of its row; most rows stay identical and the error stays the reference's.
    q_ref, w_ref = _np_gptq(w[e], h[e], spec)
    assert np.mean(np.all(np.asarray(q[e]) == q_ref, axis=1)) >= 0.8
    np.testing.assert_allclose(ours[e], gptq.reconstruction_error(w[e], w_ref, h[e]), rtol=0.05)


@pytest.mark.parametrize("spec", [core.QuantSpec(bits=4), core.QuantSpec(bits=3, group_size=16)])
def test_identity_hessian_is_rtn(spec):
  w = jnp.asarray(_correlated_layers(seeds=(4, 5, 6))[0], jnp.float32)
  h = jnp.broadcast_to(jnp.eye(64), (3, 64, 64))
  for got, want in zip(gptq.gptq(w, h, spec), core.quantize(w, spec)):
    np.testing.assert_array_equal(got, want)


def test_act_order_restores_the_column_order():
  # A diagonal H with distinct entries: no error crosses columns, so any sweep order gives RTN,
  # and it must come back in the original order (static groups are RTN's groups).
  rng = np.random.default_rng(5)
  w = jnp.asarray(rng.standard_normal((10, 32)), jnp.float32)
  h = jnp.diag(jnp.asarray(rng.permutation(32) + 1.0, jnp.float32))
  spec = core.QuantSpec(bits=4, group_size=8, symmetric=False)
  for got, want in zip(gptq.gptq(w, h, spec, act_order=True), core.quantize(w, spec)):
    np.testing.assert_array_equal(got, want)


def test_experts_in_one_call_block_size_and_kernel_layout():
  # Three experts, each with its own (AGQ-weighted) Hessian; the third received no token.
  rng = np.random.default_rng(8)
  kernels = jnp.asarray(rng.standard_normal((3, 24, 16)), jnp.float32)  # [E, D, F] like wi_up
  x = jnp.asarray(rng.standard_normal((64, 24)), jnp.float32)
  gates = rng.uniform(0, 1, (3, 64)) * (rng.uniform(size=(3, 64)) < 0.6)
  gates[2] = 0.0
  h = hessian.hessian(x, jnp.asarray(gates, jnp.float32))
  spec = core.QuantSpec(bits=4, group_size=8)
  w = kernels.swapaxes(-1, -2)  # [E, F, D] = [E, O, I]
  q, scale, zero = gptq.gptq(w, h, spec, block_size=16)
  assert q.shape == (3, 16, 24) and scale.shape == (3, 16, 3)
  for e in range(2):  # one expert alone, other blocks: float32 sums in another order
    q_e, scale_e, zero_e = gptq.gptq(w[e], h[e], spec, block_size=5)
    np.testing.assert_array_equal(q[e], q_e)
    np.testing.assert_allclose(scale[e], scale_e, rtol=1e-6)
    np.testing.assert_array_equal(zero[e], zero_e)
  np.testing.assert_array_equal(core.dequantize(q, scale, zero)[2], 0.0)  # no token: all dead
  np.testing.assert_array_equal(gptq.gptq_kernel(kernels, h, spec, block_size=16),
                                core.dequantize(q, scale, zero).swapaxes(-1, -2))
