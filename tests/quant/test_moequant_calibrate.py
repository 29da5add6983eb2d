"""Calibration capture: each expert's inputs and gate weights against a NumPy gather of the
routing trace, block after block; the attention input groups and their Hessians."""
import numpy as np
import pytest

from moe_jax.analysis import traces
from moe_jax.quant import calibrate, hessian
from tests.eval.tiny import random_model


@pytest.fixture(scope="module")
def model():
  return random_model(seed=1)


@pytest.mark.slow
def test_expert_inputs_match_the_trace_block_after_block(model):
  tokens = np.random.default_rng(0).integers(0, 256, (6, 16))
  trace = traces.capture(model, tokens, batch_size=6)
  x = calibrate.embed(model.variables, model.cfg, tokens)
  e = model.cfg.moe.num_experts
  for l in range(model.cfg.num_layers):
    block = calibrate.block_module(model.cfg, l)
    p = calibrate.run_block(block, calibrate.layer_variables(model.variables, l), x,
                            batch_size=4, ffn=True)  # 6 windows: a padded second batch
    gate_inputs, experts, gates = trace.gate_inputs(l), trace.experts(l), trace.gates(l)
    np.testing.assert_allclose(p.ffn.y, gate_inputs, rtol=1e-5, atol=1e-5)
    slots = calibrate.routed_slots(p.ffn.token, p.ffn.expert, p.ffn.weight, e)
    np.testing.assert_array_equal(slots.count, np.bincount(experts.ravel(), minlength=e))
    y, index, weight = np.asarray(p.ffn.y), np.asarray(slots.index), np.asarray(slots.weight)
    for k in range(e):
      rows, picks = np.nonzero(experts == k)  # token order
      n = slots.count[k]
      np.testing.assert_allclose(y[index[k, :n]], gate_inputs[rows], rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(weight[k, :n], gates[rows, picks], rtol=1e-6)
      np.testing.assert_array_equal(weight[k, n:], 0.0)
    x = p.out


@pytest.mark.slow
def test_attention_groups_and_their_hessians(model):
  tokens = np.random.default_rng(1).integers(0, 256, (5, 8))
  x = calibrate.embed(model.variables, model.cfg, tokens)
  lv = calibrate.layer_variables(model.variables, 0)
  p = calibrate.run_block(calibrate.block_module(model.cfg, 0), lv, x, batch_size=2)
  qkv, o = sorted(p.hessians)
  assert calibrate.group_names(qkv) == ["attn/q_proj", "attn/k_proj", "attn/v_proj"]
  assert calibrate.group_names(o) == ["attn/o_proj"]
  assert p.ffn is None and int(p.hessians[qkv].count) == 40  # padding windows not counted
  xs = np.asarray(x, np.float64).reshape(-1, model.cfg.d_model)
  normed = xs / np.sqrt(np.mean(xs ** 2, -1, keepdims=True) + model.cfg.norm_eps)
  normed *= np.asarray(lv["params"]["attn_norm"]["scale"])
  np.testing.assert_allclose(hessian.finalize(p.hessians[qkv]), 2 * normed.T @ normed / 40,
                             rtol=1e-4, atol=1e-4)
  assert hessian.finalize(p.hessians[o]).shape == (16, 16)  # heads x head width


def test_slots_of_a_dense_ffn_and_an_unused_expert():
  slots = calibrate.routed_slots(np.array([0, 1, 2, 2]), np.array([1, 1, 0, 1]),
                                 np.array([0.5, 0.25, 1.0, 0.75], np.float32), 3, multiple=4)
  np.testing.assert_array_equal(slots.count, [1, 3, 0])
  np.testing.assert_array_equal(slots.index, [[2, 0, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(slots.weight[1], [0.5, 0.25, 0.75, 0])
  dense = calibrate.dense_slots(3)
  np.testing.assert_array_equal(dense.index, [[0, 1, 2]])
  np.testing.assert_array_equal(dense.weight, [[1, 1, 1]])
