"""AGQ (MoEQuant Eq. 19): with every gate weight 1 it is per-expert GPTQ; tokens routed elsewhere
leave an expert's Hessian alone; a shared expert's Hessian is weighted by its sigmoid gate."""
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.quant import apply, calibrate, gptq, hessian
from tests.eval.tiny import random_model

TOKENS = np.random.default_rng(0).integers(0, 256, (6, 16))
# No clip search: fewer programs to compile, the same paths through the pipeline.
OPTIONS = apply.QuantOptions(mse_clip=False, batch_size=4)
GPTQ = apply.QuantRecipe(options=OPTIONS)
AGQ = apply.QuantRecipe(agq=True, options=OPTIONS)


def _layer(qm, i):
  return calibrate.layer_variables(qm.model.variables, i)


def _wi(ffn):
  """wi_gate and wi_up [(E,) D, F] as one GPTQ matrix [(E,) 2F, D]."""
  return jnp.concatenate([ffn["wi_gate"], ffn["wi_up"]], axis=-1).swapaxes(-1, -2)


def _agree(ours: np.ndarray, rows) -> bool:
  """Equal but for rare rounding ties (float32 sums of the Hessian in another order)."""
  return np.mean(ours == np.asarray(rows)) > 0.99


@pytest.mark.slow
def test_agq_with_unit_gates_is_per_expert_gptq():
  # Top-1 with renormalised weights: every gate weight is 1, so AGQ changes nothing.
  model = random_model(seed=4, moe=dict(top_k=1))
  plain = apply.quantize_model(model, GPTQ, TOKENS)
  agq = apply.quantize_model(model, AGQ, TOKENS)
  for name, lin in plain.linears.items():
    np.testing.assert_array_equal(lin.q, agq.linears[name].q, err_msg=name)
  # The batched call is GPTQ of each expert on the inputs routed to it, one at a time.
  p = calibrate.run_block(calibrate.block_module(model.cfg, 0), _layer(plain, 0),
                          calibrate.embed(model.variables, model.cfg, TOKENS), 4, ffn=True)
  w = _wi(model.variables["params"]["layer_0"]["moe"]["experts"])
  f = w.shape[1] // 2
  for e in range(model.cfg.moe.num_experts):
    x = np.asarray(p.ffn.y)[p.ffn.token[p.ffn.expert == e]]
    q = gptq.gptq(w[e], hessian.hessian(jnp.asarray(x)), GPTQ.spec())[0]
    assert _agree(plain.linears["layer_0/moe/experts/wi_gate"].q[e], q[:f])
    assert _agree(plain.linears["layer_0/moe/experts/wi_up"].q[e], q[f:])


def test_tokens_not_routed_to_an_expert_do_not_touch_its_hessian():
  rng = np.random.default_rng(3)
  y = rng.standard_normal((40, 6)).astype(np.float32)
  token = np.repeat(np.arange(40), 2)
  expert = rng.integers(0, 3, 80)
  weight = rng.uniform(0.1, 1, 80).astype(np.float32)
  slots = calibrate.routed_slots(token, expert, weight, 3, multiple=8)
  h = np.asarray(apply._slot_hessian(jnp.asarray(y), slots.index, slots.weight, 3))  # pylint: disable=protected-access
  elsewhere = np.setdiff1d(np.arange(40), token[expert == 0])
  y2 = y.copy()
  y2[elsewhere] = 1e3 * rng.standard_normal((len(elsewhere), 6))
  h2 = np.asarray(apply._slot_hessian(jnp.asarray(y2), slots.index, slots.weight, 3))  # pylint: disable=protected-access
  np.testing.assert_array_equal(h2[0], h[0])
  for e in range(3):  # H_e = (2 / N_e) sum_{t -> e} c_te x_t x_t^T
    rows, c = token[expert == e], weight[expert == e].astype(np.float64)
    x = y[rows].astype(np.float64)
    np.testing.assert_allclose(h[e], 2 * (x * c[:, None]).T @ x / len(rows), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.slow
def test_shared_expert_hessian_is_weighted_by_its_sigmoid_gate():
  model = random_model(seed=2, moe=dict(shared_d_ff=8, shared_gate=True), moe_layers=(1,))
  qm = apply.quantize_model(model, AGQ, TOKENS)
  x = calibrate.embed(model.variables, model.cfg, TOKENS)
  x = calibrate.run_block(calibrate.block_module(model.cfg, 0), _layer(qm, 0), x, 4).out
  p = calibrate.run_block(calibrate.block_module(model.cfg, 1), _layer(qm, 1), x, 4, ffn=True)
  shared = model.variables["params"]["layer_1"]["moe"]["shared_experts"]
  y = np.asarray(p.ffn.y, np.float64)
  gate = 1 / (1 + np.exp(-(y @ np.asarray(shared["gate"]["kernel"], np.float64))))[:, 0]
  np.testing.assert_allclose(p.ffn.shared_gate, gate, rtol=1e-5)
  w = _wi(shared["mlp"])
  f = w.shape[0] // 2
  stored = qm.linears["layer_1/moe/shared_experts/mlp/wi_up"].q
  weighted = gptq.gptq(w, hessian.hessian(p.ffn.y, p.ffn.shared_gate), AGQ.spec())[0]
  unweighted = gptq.gptq(w, hessian.hessian(p.ffn.y), AGQ.spec())[0]
  assert _agree(stored, weighted[f:]) and not np.array_equal(stored, unweighted[f:])


@pytest.mark.slow
def test_all_experts_policy_gives_every_expert_every_token():
  # llm-compressor's default policy (the benchmark's): H_e from all tokens, whatever the routing.
  model = random_model(seed=4)
  recipe = apply.QuantRecipe(options=apply.QuantOptions(mse_clip=False, batch_size=4,
                                                        all_experts=True))
  qm = apply.quantize_model(model, recipe, TOKENS)
  p = calibrate.run_block(calibrate.block_module(model.cfg, 0), _layer(qm, 0),
                          calibrate.embed(model.variables, model.cfg, TOKENS), 4, ffn=True)
  w = _wi(model.variables["params"]["layer_0"]["moe"]["experts"])
  q = gptq.gptq(w, jnp.broadcast_to(hessian.hessian(p.ffn.y), (w.shape[0],) + (w.shape[2],) * 2),
                recipe.spec())[0]
  f = w.shape[1] // 2
  for e in range(model.cfg.moe.num_experts):
    assert _agree(qm.linears["layer_0/moe/experts/wi_up"].q[e], q[e, f:])
  assert qm.report["rtn_fallback"] == 0
  assert sum(qm.report["tokens_per_expert"]["layer_0"]) == TOKENS.size * 2  # routed, reported
