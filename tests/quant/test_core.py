"""Integer quantizers against NumPy formulas written out here, on fresh random inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.quant import core
from moe_jax.utils.errors import ConfigError


def _np_params(x, bits, symmetric, ratio=1.0):
  """Per row of x [R, g]: (scale [R], zero [R]), compressed-tensors' formulas with divisions as
  multiplications by reciprocals, in x's dtype (so ties fall as on XLA:CPU)."""
  qmin, qmax = -2 ** (bits - 1), 2 ** (bits - 1) - 1
  ratio, one = x.dtype.type(ratio), x.dtype.type(1)
  if symmetric:
    scale = np.abs(x).max(1) * ratio * x.dtype.type(1 / (qmax + 0.5))
  else:
    lo, hi = np.minimum(x.min(1), 0) * ratio, np.maximum(x.max(1), 0) * ratio
    scale = (hi - lo) * x.dtype.type(1 / (qmax - qmin))
  scale = np.where(scale == 0, np.finfo(x.dtype).eps, scale)
  if symmetric:
    return scale, np.zeros_like(scale)
  return scale, np.clip(np.round(qmin - lo * (one / scale)), qmin, qmax)


def _np_fake_quant_rows(x, bits, symmetric, ratio=1.0):
  """(q, scale, zero, dequantized, tie): tie marks values within float error of a rounding tie,
  such as w = -absmax (at -(qmax + 0.5) by construction), which another backend may round the
  other way (the GPU's reciprocal is not NumPy's to the last bit)."""
  scale, zero = _np_params(x, bits, symmetric, ratio)
  t = x * (x.dtype.type(1) / scale[:, None])
  q = np.clip(np.round(t) + zero[:, None], -2 ** (bits - 1), 2 ** (bits - 1) - 1)
  tie = np.abs(np.abs(t - np.floor(t)) - 0.5) < 1e-5
  return q, scale, zero, scale[:, None] * (q - zero[:, None]), tie


def _assert_same_but_ties(ours, ref, tie, step):
  """Equal (to float tolerance) everywhere except at ties, where one step apart at most."""
  ours, ref = np.asarray(ours, np.float64).reshape(ref.shape), np.asarray(ref, np.float64)
  np.testing.assert_allclose(ours[~tie], ref[~tie], rtol=1e-6, atol=1e-7)
  assert np.all(np.abs(ours - ref)[tie] <= (step * (1 + 1e-5) + 1e-7)[tie])


def test_spec_errors_name_the_field():
  for kwargs, field in [(dict(bits=1), "bits"), (dict(bits=9), "bits"), (dict(bits=4.0), "bits"),
                        (dict(group_size=0), "group_size"), (dict(clip_grid=0), "clip_grid"),
                        (dict(clip_max_shrink=1.0), "clip_max_shrink"),
                        (dict(clip_norm=0), "clip_norm")]:
    with pytest.raises(ConfigError, match=f"^{field}: "):
      core.QuantSpec(**kwargs)
  with pytest.raises(ConfigError, match="^group_size: 48 does not divide the input width 64"):
    core.quantize(jnp.ones((4, 64)), core.QuantSpec(group_size=48))
  with pytest.raises(ConfigError, match="^granularity: "):
    core.ActSpec(granularity="channel")
  with pytest.raises(ConfigError, match="^clip_ratio: "):
    core.ActSpec(clip_ratio=1.5)


def test_symmetric_4bit_is_compressed_tensors_convention():
  # absmax 3.0 -> scale 3 / 7.5 = 0.4: 3.0 -> 7.5, clipped to 7; -2.9 -> -7.25 -> -7; 0.3 -> 0.75
  # -> 1; -0.7 -> -1.75 -> -2; 1.1 -> 2.75 -> 3; 2.0 -> 5; -1.3 -> -3.25 -> -3.
  w = jnp.asarray([[3.0, -2.9, 0.3, -0.7, 1.1, 0.0, 2.0, -1.3]])
  q, scale, zero = core.quantize(w, core.QuantSpec(bits=4))
  np.testing.assert_allclose(scale, [[0.4]], rtol=1e-7)
  np.testing.assert_array_equal(q, [[7, -7, 1, -2, 3, 0, 5, -3]])
  np.testing.assert_array_equal(zero, [[0]])
  assert q.dtype == jnp.int8 and zero.dtype == jnp.int8
  # -absmax sits on the tie -7.5: -8 or -7 (float rounding decides), half a step either way.
  q, scale, _ = core.quantize(-w, core.QuantSpec(bits=4))
  assert int(q[0, 0]) in (-8, -7)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [None, 16])
def test_quantize_matches_numpy_and_error_at_most_half_a_step(bits, symmetric, group_size):
  rng = np.random.default_rng(100 * bits + 10 * symmetric + (group_size or 0))
  w = (rng.standard_normal((2, 6, 64)) * rng.uniform(0.1, 3, (2, 6, 1))).astype(np.float32)
  w[0, 0, :16] = 0.0  # an all-zero group / part of a row
  spec = core.QuantSpec(bits=bits, group_size=group_size, symmetric=symmetric)
  q, scale, zero = core.quantize(jnp.asarray(w), spec)
  g = group_size or 64
  rows = w.reshape(-1, g)
  q_np, s_np, z_np, w_np, tie = _np_fake_quant_rows(rows, bits, symmetric)
  _assert_same_but_ties(q, q_np, tie, np.ones_like(q_np))
  np.testing.assert_allclose(np.asarray(scale).reshape(-1), s_np, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(zero).reshape(-1), z_np)
  assert scale.shape == (2, 6, 64 // g)
  w_hat = core.dequantize(q, scale, zero)
  step = np.repeat(np.asarray(scale), g, axis=-1)
  _assert_same_but_ties(w_hat, w_np, tie, step.reshape(-1, g))
  assert np.all(np.abs(np.asarray(w_hat) - w) <= 0.5 * step * (1 + 1e-5) + 1e-7)
  qmin, qmax = -2 ** (bits - 1), 2 ** (bits - 1) - 1
  assert q.min() >= qmin and q.max() <= qmax
  np.testing.assert_array_equal(core.fake_quant(jnp.asarray(w), spec), w_hat)


def test_asymmetric_by_hand():
  # lo = -1, hi = 2, 4 bits: scale = 3 / 15 = 0.2, zero = round(-8 + 5) = -3.
  w = jnp.asarray([[-1.0, 2.0, 0.0, 0.65]])
  q, scale, zero = core.quantize(w, core.QuantSpec(bits=4, symmetric=False))
  np.testing.assert_allclose(scale, [[0.2]], rtol=1e-6)
  np.testing.assert_array_equal(zero, [[-3]])
  np.testing.assert_array_equal(q, [[-8, 7, -3, 0]])  # 0.65 / 0.2 = 3.25 -> 3, + zero
  np.testing.assert_allclose(core.dequantize(q, scale, zero), [[-1.0, 2.0, 0.0, 0.6]], rtol=1e-6)


@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_clip_picks_the_best_ratio_per_group(symmetric):
  rng = np.random.default_rng(7 + symmetric)
  w = rng.standard_t(3, (8, 32)).astype(np.float32)  # heavy tails: clipping pays
  spec = core.QuantSpec(bits=3, group_size=16, symmetric=symmetric, mse_clip=True, clip_grid=20,
                        clip_max_shrink=0.5, clip_norm=2.0)
  w_hat = np.asarray(core.fake_quant(jnp.asarray(w), spec)).reshape(-1, 16)
  rows = w.reshape(-1, 16)
  best_err = np.full(len(rows), np.inf)
  best = np.zeros_like(rows)
  for k in range(10):  # ratios 1, 0.95, ..., 0.55
    cand = _np_fake_quant_rows(rows, 3, symmetric, ratio=1 - k / 20)[3]
    err = (np.abs(cand - rows) ** 2.0).sum(1)
    better = err < best_err
    best_err[better], best[better] = err[better], cand[better]
  np.testing.assert_allclose(w_hat, best, rtol=1e-5, atol=1e-6)
  plain = _np_fake_quant_rows(rows, 3, symmetric)[3]
  assert ((w_hat - rows) ** 2).sum() < ((plain - rows) ** 2).sum()


def test_vmap_and_jit_over_experts():
  w = jnp.asarray(np.random.default_rng(3).standard_normal((4, 8, 32)), jnp.float32)
  spec = core.QuantSpec(bits=4, group_size=8, mse_clip=True, clip_grid=10)
  batched = jax.jit(core.quantize, static_argnums=1)(w, spec)
  mapped = jax.vmap(lambda m: core.quantize(m, spec))(w)
  for e in range(4):
    for a, b, c in zip(batched, mapped, core.quantize(w[e], spec)):
      np.testing.assert_array_equal(a[e], c)
      np.testing.assert_array_equal(b[e], c)


@pytest.mark.parametrize("symmetric", [True, False])
def test_activations_per_token_and_per_tensor(symmetric):
  rng = np.random.default_rng(11 + symmetric)
  x = (rng.standard_normal((3, 5, 16)) * rng.uniform(0.1, 5, (3, 5, 1))).astype(np.float32)
  rows = x.reshape(-1, 16)
  for spec, ref_rows in [(core.ActSpec(8, "token", symmetric), rows),
                        (core.ActSpec(4, "token", symmetric, 0.8), rows),
                        (core.ActSpec(4, "tensor", symmetric), x.reshape(1, -1))]:
    _, scale, _, ref, tie = _np_fake_quant_rows(ref_rows, spec.bits, symmetric, spec.clip_ratio)
    ours = core.fake_quant_activations(jnp.asarray(x), spec)
    _assert_same_but_ties(ours, ref, tie, np.broadcast_to(scale[:, None], ref.shape))
  bf16 = core.fake_quant_activations(jnp.asarray(x, jnp.bfloat16), core.ActSpec(8))
  assert bf16.dtype == jnp.bfloat16
