"""Activation fake quantization in the linen modules: an FFN and stacked experts compute
Q(act(Q(x) W_g) * (Q(x) W_u)) W_d with Q per-token quantization, as a float64 NumPy reference;
bits 0 is the float model; the captured router inputs are the FFN inputs calibration sees."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.layers.dispatch import einsum_matmul
from moe_jax.layers.experts import Experts, MlpBlock
from moe_jax.quant import activation, eaquant
from tests.eval.tiny import random_model

ACT = activation.ActQuantConfig(bits=4, clip_ratio=0.9)


def _q(x, bits=4, ratio=0.9):
  x = np.asarray(x, np.float64)
  qmax = 2 ** (bits - 1) - 1
  s = ratio * np.abs(x).max(-1, keepdims=True) / (qmax + 0.5)
  return np.clip(np.round(x / s), -qmax - 1, qmax) * s


def _silu(x):
  return x / (1 + np.exp(-x))


def _run(module, x, *functions):
  params = jax.jit(lambda key: module.init(key, x, *functions))(jax.random.key(0))
  with nn.intercept_methods(activation.interceptor(ACT)):
    out = jax.jit(lambda p: module.apply(p, x, *functions))(params)
  return nn.unbox(params)["params"], out


def test_ffn_and_experts_match_numpy():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((6, 16)).astype(np.float32)
  p, out = _run(MlpBlock(24), jnp.asarray(x))
  h = _silu(_q(x) @ p["wi_gate"]) * (_q(x) @ p["wi_up"])
  np.testing.assert_allclose(out, _q(h) @ p["wo"], rtol=2e-4, atol=2e-4)
  xe = rng.standard_normal((3, 5, 16)).astype(np.float32)
  p, (out, _) = _run(Experts(3, 8), jnp.asarray(xe), einsum_matmul)
  ref = []
  for e in range(3):
    h = _silu(_q(xe[e]) @ p["wi_gate"][e]) * (_q(xe[e]) @ p["wi_up"][e])
    ref.append(_q(h) @ p["wo"][e])
  np.testing.assert_allclose(out, np.stack(ref), rtol=2e-4, atol=2e-4)


def test_float_setting_and_router_inputs():
  model = random_model(seed=1)
  tokens = np.random.default_rng(2).integers(0, 256, (3, 8)).astype(np.int32)
  logits = lambda m: jax.jit(m.module.apply)(m.variables, tokens)
  ref = logits(model)
  plain = activation.with_activations(model, activation.ActQuantConfig(bits=0, router_bits=0))
  np.testing.assert_allclose(logits(plain), ref, atol=1e-6)
  assert np.abs(logits(activation.with_activations(model, ACT)) - ref).max() > 1e-3
  inputs = activation.router_inputs(model, tokens, batch_size=2)
  for name, f in eaquant.capture(model, tokens, 2).items():
    np.testing.assert_allclose(inputs[name], f.y, atol=1e-5)
