"""The host store of offloaded experts: INT4 / INT2 against a float64 NumPy min-max quantizer,
their sizes, and INT2's larger error on the same experts."""
import numpy as np
import pytest

from moe_jax.inference.fate.store import (FULL, INT2, INT4, HostStore, bytes_per_weight,
                                          host_memory, materialize, quant_specs)
from moe_jax.utils.errors import ConfigError

E, D, F = 3, 64, 32


def _kernels(seed):
  rng = np.random.default_rng(seed)
  return [{"wi_gate": rng.normal(size=(E, D, F)).astype(np.float32),
           "wi_up": rng.normal(size=(E, D, F)).astype(np.float32) * 0.1,
           "wo": rng.normal(size=(E, F, D)).astype(np.float32)} for _ in range(2)]


def _reference(kernel, bits, group):
  """Asymmetric min-max RTN of kernel [I, O] per output row and group of inputs, float64:
  (w_hat [I, O], the step s of each weight [I, O])."""
  w = kernel.astype(np.float64).T  # [O, I]
  g = w.reshape(w.shape[0], -1, group)
  lo, hi = np.minimum(g.min(-1, keepdims=True), 0), np.maximum(g.max(-1, keepdims=True), 0)
  s = (hi - lo) / (2**bits - 1)
  qmin, qmax = -(2**(bits - 1)), 2**(bits - 1) - 1
  z = np.clip(np.round(qmin - lo / s), qmin, qmax)
  q = np.clip(np.round(g / s) + z, qmin, qmax)
  return (s * (q - z)).reshape(w.shape).T, np.broadcast_to(s, g.shape).reshape(w.shape).T


@pytest.mark.parametrize("seed", range(2))
def test_quantized_experts_match_a_float64_minmax_quantizer(seed):
  kernels = _kernels(seed)
  specs = quant_specs(int4_group=32, int2_group=16)
  store = HostStore(kernels, specs)
  errors = {}
  for fmt, spec in specs.items():
    err = ref = 0.0
    for l, layer in enumerate(kernels):
      for e in range(E):
        ours = materialize(fmt, store.to_device(l, e, fmt), "float32")
        for name, w in layer.items():
          w_hat, step = _reference(w[e], spec.bits, spec.group_size)
          got = np.asarray(ours[name], np.float64)
          # float32 vs float64 rounding may flip a value within ulps of a tie: one step at most.
          off = np.abs(got - w_hat) > 1e-5 * np.abs(w).max()
          assert off.mean() < 1e-3 and np.all(np.abs(got - w_hat)[off] <= step[off] * 1.001)
          assert np.all(np.abs(got - w[e]) <= step / 2 * (1 + 1e-4) + 1e-7)  # half a step
          err += np.sum((got - w[e]) ** 2)
          ref += np.sum(w[e].astype(np.float64) ** 2)
    errors[fmt] = np.sqrt(err / ref)
  assert errors[INT2] > 2 * errors[INT4] > 0


def test_full_precision_is_the_weights_and_sizes_follow_the_formula():
  kernels = _kernels(2)
  specs = quant_specs(int4_group=32, int2_group=16)
  store = HostStore(kernels, specs)
  pinned = host_memory(store.device)  # CPU: numpy arrays are host memory
  assert (pinned is None) == (store.device.platform == "cpu")
  full = materialize(FULL, store.to_device(1, 2, FULL), "float32")
  for name, w in kernels[1].items():
    np.testing.assert_array_equal(np.asarray(full[name]), w[2])
  weights = 3 * D * F
  assert store.nbytes(FULL) == weights * 4
  for fmt in (INT4, INT2):  # packed words + float32 scale + int8 zero per group
    assert store.nbytes(fmt) == pytest.approx(weights * bytes_per_weight(fmt, specs, 4.0))
  assert store.nbytes(INT2) < store.nbytes(INT4) < store.nbytes(FULL)
  assert bytes_per_weight(INT4, quant_specs(), 2.0) == pytest.approx(0.5 + 5 / 64)


def test_a_format_the_store_does_not_hold_is_named():
  store = HostStore(_kernels(3))
  with pytest.raises(ConfigError, match="format"):
    store.expert(0, 0, INT4)
