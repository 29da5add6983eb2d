"""Quantizing a whole model: the fake-quantized model is the model of the stored integers, with
the routers, gates and embedding in float; each block is calibrated on the quantized blocks
before it; RTN of every linear, the RTN fallback of an expert without tokens, the group size."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.quant import apply, calibrate, core, gptq, hessian
from tests.eval.tiny import random_model

TOKENS = np.random.default_rng(0).integers(0, 256, (6, 16))
# No clip search: fewer programs to compile, the same paths through the pipeline.
OPTIONS = apply.QuantOptions(mse_clip=False, batch_size=4)
GPTQ = apply.QuantRecipe(options=OPTIONS)
AGQ = apply.QuantRecipe(agq=True, options=OPTIONS)
# Layer 0 dense, layer 1 an MoE layer with a gated shared expert (Qwen2-MoE's shape).
SHARED = dict(moe=dict(shared_d_ff=8, shared_gate=True), moe_layers=(1,))


def _layer_params(qm, i):
  return calibrate.layer_variables(qm.model.variables, i)


def _names(model):
  out = set()
  for i in range(model.cfg.num_layers):
    lv = calibrate.layer_variables(model.variables, i)
    out |= {f"layer_{i}/{p}" for p, _, _ in apply.block_linears(
        calibrate.block_module(model.cfg, i), lv, model.cfg.d_model)}
  return out


def _get(tree, path):
  for part in path.split("/"):
    tree = tree[part]
  return tree


@pytest.fixture(scope="module")
def shared_model():
  return random_model(seed=2, **SHARED)


@pytest.fixture(scope="module")
def quantized(shared_model):
  return apply.quantize_model(shared_model, AGQ, TOKENS)


@pytest.mark.slow
def test_forward_equals_the_dequantized_integers(shared_model, quantized):
  names = _names(shared_model)
  assert set(quantized.linears) == names and len(names) == 4 + 3 + 4 + 3 + 3
  params = jax.tree.map(np.array, shared_model.variables["params"])
  for name, lin in quantized.linears.items():
    assert lin.q.dtype == np.int8 and lin.q.shape[:-1] == lin.scale.shape[:-1]
    w_hat = core.dequantize(jnp.asarray(lin.q), jnp.asarray(lin.scale), jnp.asarray(lin.zero))
    node = params
    *parents, leaf = name.split("/")
    for part in parents:
      node = node[part]
    node[leaf] = np.asarray(apply.kernel_of(w_hat, lin.shape, lin.num_in, lin.stacked))
  rebuilt = shared_model.module.apply({"params": params}, TOKENS[:2])
  ours = quantized.model.module.apply(quantized.model.variables, TOKENS[:2])
  np.testing.assert_array_equal(ours, rebuilt)
  qparams = quantized.model.variables["params"]
  for kept in ("embed/embedding", "layer_1/moe/router/gate/kernel",
               "layer_1/moe/shared_experts/gate/kernel", "layer_0/attn_norm/scale"):
    np.testing.assert_array_equal(_get(qparams, kept), _get(shared_model.variables["params"],
                                                            kept))
  assert set(quantized.report["tokens_per_expert"]) == {"layer_1"}
  assert sum(quantized.report["tokens_per_expert"]["layer_1"]) == TOKENS.size * 2


@pytest.mark.slow
def test_each_block_is_calibrated_on_the_quantized_blocks_before_it():
  model = random_model(seed=6)
  qm = apply.quantize_model(model, GPTQ, TOKENS)
  x0 = calibrate.embed(model.variables, model.cfg, TOKENS)
  block = calibrate.block_module(model.cfg, 0)
  x1 = {"quantized": calibrate.run_block(block, _layer_params(qm, 0), x0, 4).out,
        "float": calibrate.run_block(block, calibrate.layer_variables(model.variables, 0), x0,
                                     4).out}
  float_l1 = calibrate.layer_variables(model.variables, 1)
  attn = float_l1["params"]["attn"]
  stored = qm.linears["layer_1/attn/q_proj/kernel"].q
  for source, x in x1.items():
    p = calibrate.run_block(block, float_l1, x, 4)
    key = sorted(p.hessians)[0]  # q/k/v
    w = jnp.concatenate([apply.matrix(attn[n]["kernel"], 1, False)
                         for n in ("q_proj", "k_proj", "v_proj")])
    q = np.asarray(gptq.gptq(w, hessian.finalize(p.hessians[key]), GPTQ.spec())[0])
    assert np.array_equal(q[:stored.shape[0]], stored) == (source == "quantized")
  # Within the block, o_proj's Hessian comes through the quantized q/k/v.
  with_qkv = {**float_l1, "params": {**float_l1["params"], "attn": {
      **attn, **{n: _layer_params(qm, 1)["params"]["attn"][n] for n in ("q_proj", "k_proj",
                                                                       "v_proj")}}}}
  p = calibrate.run_block(block, with_qkv, x1["quantized"], 4)
  h_o = hessian.finalize(p.hessians[sorted(p.hessians)[1]])
  q_o = gptq.gptq(apply.matrix(attn["o_proj"]["kernel"], 2, False), h_o, GPTQ.spec())[0]
  np.testing.assert_array_equal(q_o, qm.linears["layer_1/attn/o_proj/kernel"].q)


@pytest.mark.slow
def test_an_expert_without_tokens_falls_back_to_rtn():
  # One token repeated: every position of a window is the same vector, so each layer routes
  # all of them to the same two experts and the other two get nothing.
  model = random_model(seed=7)
  qm = apply.quantize_model(model, GPTQ, np.full((3, 8), 65))
  unused = {l: [e for e, n in enumerate(qm.report["tokens_per_expert"][f"layer_{l}"]) if n == 0]
            for l in range(2)}
  assert len(unused[0]) == 2 and len(unused[1]) == 2
  assert qm.report["rtn_fallback"] == 4
  assert qm.report["rtn_fallback_experts"] == [[f"layer_{l}", e] for l in range(2)
                                               for e in unused[l]]
  lin = qm.linears["layer_0/moe/experts/wo"]
  assert lin.rtn_experts == tuple(unused[0])
  w = apply.matrix(model.variables["params"]["layer_0"]["moe"]["experts"]["wo"], 1, True)
  for e in unused[0]:
    np.testing.assert_array_equal(lin.q[e], core.quantize(w[e], GPTQ.spec())[0])


@pytest.mark.slow
def test_rtn_of_every_linear_and_the_largest_group(shared_model):
  recipe = apply.QuantRecipe(method="rtn", bits=3, group_size=8, options=OPTIONS)
  qm = apply.quantize_model(shared_model, recipe)
  assert set(qm.linears) == _names(shared_model)
  for name, lin in qm.linears.items():
    kernel = _get(shared_model.variables["params"], name)
    want = core.quantize(apply.matrix(kernel, lin.num_in, lin.stacked), recipe.spec())
    for got, ref in zip((lin.q, lin.scale, lin.zero), want):
      np.testing.assert_array_equal(got, ref)
  assert apply.input_widths(shared_model) == [8, 16, 32]  # shared F, D = H K = F, dense d_ff
  assert apply.largest_group(shared_model, 128) == 8
  assert apply.largest_group(random_model(seed=0), 128) == 16
  assert apply.largest_group(random_model(seed=0), 12) == 8
