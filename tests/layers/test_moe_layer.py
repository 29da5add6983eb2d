"""The MoE layer: sown diagnostics, sown losses, shared experts, aux-free bias, config errors."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.layers.moe import MoE, MoEConfig
from moe_jax.layers.routers import aux_free_bias_update
from moe_jax.utils.errors import ConfigError

B, S, D, F, E, K = 2, 16, 8, 12, 4, 2
T = B * S


def _random_variables(layer, x, seed):
  """Fresh N(0, 1/fan_in) values in the layer's variable structure; router weights N(0, 1)."""
  rng = np.random.default_rng(seed)
  shapes = nn.unbox(jax.eval_shape(functools.partial(layer.init, jax.random.key(0)), x))
  shapes = {k: v for k, v in shapes.items() if k in ("params", "moe_bias")}

  def fill(path, leaf):
    if path[-1].key == "e_score_correction_bias":
      return jnp.zeros(leaf.shape)
    scale = 1.0 if path[-2].key == "gate" and path[-3].key == "router" else leaf.shape[-2] ** -0.5
    return jnp.asarray(rng.standard_normal(leaf.shape) * scale, jnp.float32)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _inputs(seed):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((B, S, D)), jnp.float32)


@pytest.mark.parametrize("dispatch", ["dropless", "capacity", "dense"])
def test_sown_routing_diagnostics(dispatch):
  layer = MoE(MoEConfig(num_experts=E, top_k=K, d_ff=F, dispatch=dispatch, capacity_factor=0.0),
              "relu")
  x = _inputs(1)
  variables = _random_variables(layer, x, seed=1)
  y, state = jax.jit(functools.partial(layer.apply, mutable=["intermediates"]))(variables, x)
  inter = jax.tree_util.tree_map(np.asarray, state["intermediates"])
  probs, index = inter["router_probs"][0], inter["expert_index"][0]
  assert probs.shape == (T, E) and index.shape == (T * K,)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(np.sort(index.reshape(T, K), -1),
                                np.sort(np.argsort(-probs, -1)[:, :K], -1))
  np.testing.assert_array_equal(inter["tokens_per_expert"][0], np.bincount(index, minlength=E))
  assert int(inter["dropped"][0]) == 0
  # expert_zero_frac: mean over the rows an expert processed of the fraction of exact zeros in
  # relu(x W_up), computed here in float64.
  xt = np.asarray(x, np.float64).reshape(T, D)
  w_up = np.asarray(variables["params"]["experts"]["wi_up"], np.float64)
  token = np.repeat(np.arange(T), K)
  want = [np.mean(xt[token[index == e]] @ w_up[e] <= 0) if (index == e).any() else 0.0
          for e in range(E)]
  np.testing.assert_allclose(inter["expert_zero_frac"][0], want, atol=1e-6)
  assert 0.2 < np.mean(want) < 0.8
  assert y.shape == x.shape


def test_intermediates_are_off_unless_asked_for():
  layer = MoE(MoEConfig(num_experts=E, top_k=K, d_ff=F, load_balance_coef=0.0))
  x = _inputs(2)
  variables = _random_variables(layer, x, seed=2)
  y = jax.jit(layer.apply)(variables, x)
  assert isinstance(y, jax.Array)
  _, state = jax.jit(functools.partial(layer.apply, mutable=["aux_loss"]))(variables, x)
  assert "aux_loss" not in state or not state["aux_loss"]  # no coefficients: no loss sown


def test_sown_aux_loss_is_the_weighted_sum():
  coefs = dict(load_balance_coef=0.01, z_loss_coef=0.001, seq_balance_coef=0.1)
  layer = MoE(MoEConfig(num_experts=E, top_k=K, d_ff=F, **coefs))
  x = _inputs(3)
  variables = _random_variables(layer, x, seed=3)
  _, state = jax.jit(functools.partial(layer.apply, mutable=["aux_loss"]))(variables, x)
  got = float(state["aux_loss"]["moe_loss"][0])
  xt = np.asarray(x, np.float64).reshape(T, D)
  logits = xt @ np.asarray(variables["params"]["router"]["gate"]["kernel"], np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  chosen = np.argsort(-probs, -1)[:, :K]
  f = np.bincount(chosen.ravel(), minlength=E) / (T * K)
  balance = E * np.sum(f * probs.mean(0))
  z = np.mean(np.log(np.exp(logits).sum(-1)) ** 2)
  seq = 0.0
  for b in range(B):
    p = probs.reshape(B, S, E)[b]
    counts = np.bincount(chosen.reshape(B, S, K)[b].ravel(), minlength=E)
    seq += np.sum(counts * E / (K * S) * p.mean(0)) / B
  want = coefs["load_balance_coef"] * balance + coefs["z_loss_coef"] * z + (
      coefs["seq_balance_coef"] * seq)
  assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("gated", [False, True])
def test_shared_expert_added(gated):
  layer = MoE(MoEConfig(num_experts=E, top_k=K, d_ff=F, shared_d_ff=6, shared_gate=gated,
                        dispatch="capacity", capacity_factor=0.0))
  x = _inputs(4)
  variables = _random_variables(layer, x, seed=4)
  y = jax.jit(layer.apply)(variables, x)
  routed = jax.jit(layer.clone(config=dataclasses.replace(layer.config, shared_d_ff=0)).apply)(
      {"params": {k: v for k, v in variables["params"].items() if k != "shared_experts"}}, x)
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64),
                             variables["params"]["shared_experts"])
  xt = np.asarray(x, np.float64)
  g = xt @ p["mlp"]["wi_gate"]
  shared = (g / (1 + np.exp(-g)) * (xt @ p["mlp"]["wi_up"])) @ p["mlp"]["wo"]
  if gated:
    shared = shared / (1 + np.exp(-(xt @ p["gate"]["kernel"])))
  np.testing.assert_allclose(y - routed, shared, rtol=1e-4, atol=1e-5)


def test_aux_free_bias_balances_load():
  """Repeated DeepSeek-V3 bias steps on a skewed router even out the per-expert load."""
  layer = MoE(MoEConfig(num_experts=E, top_k=K, d_ff=F, router="sigmoid_group", n_group=2,
                        topk_group=1))
  x = _inputs(5)
  variables = _random_variables(layer, x, seed=5)
  kernel = variables["params"]["router"]["gate"]["kernel"]
  variables["params"]["router"]["gate"]["kernel"] = kernel.at[:, 0].add(0.5)

  @jax.jit
  def load(variables):
    _, state = layer.apply(variables, x, mutable=["intermediates"])
    return state["intermediates"]["tokens_per_expert"][0]

  start = np.asarray(load(variables))
  for _ in range(60):
    counts = load(variables)
    bias = variables["moe_bias"]["router"]["e_score_correction_bias"]
    variables["moe_bias"]["router"]["e_score_correction_bias"] = aux_free_bias_update(
        bias, counts, rate=0.02)
  end = np.asarray(load(variables))
  assert start.max() - start.min() > end.max() - end.min()
  bias = np.asarray(variables["moe_bias"]["router"]["e_score_correction_bias"])
  assert bias[np.argmax(start)] < 0  # the overloaded expert was pushed down


def test_bfloat16_layer_keeps_router_in_float32():
  layer = MoE(MoEConfig(num_experts=E, top_k=K, d_ff=F), dtype=jnp.bfloat16)
  x = _inputs(6).astype(jnp.bfloat16)
  variables = _random_variables(layer, x, seed=6)
  y, state = jax.jit(functools.partial(layer.apply, mutable=["intermediates"]))(variables, x)
  assert y.dtype == jnp.bfloat16
  assert state["intermediates"]["router_probs"][0].dtype == jnp.float32


@pytest.mark.parametrize("kwargs,field", [
    (dict(router="switch"), "router"),
    (dict(dispatch="megablocks"), "dispatch"),
    (dict(top_k=E + 1), "top_k"),
    (dict(gmm_impl="pallas"), "gmm_impl"),
    (dict(router="expert_choice", seq_balance_coef=0.1), "seq_balance_coef"),
])
def test_bad_config_raises_naming_the_field(kwargs, field):
  with pytest.raises(ConfigError, match=field):
    MoEConfig(**{**dict(num_experts=E, top_k=K, d_ff=F), **kwargs})


def test_bad_activation_and_input_rank_raise():
  with pytest.raises(ConfigError, match="activation"):
    layer = MoE(MoEConfig(num_experts=E, top_k=K, d_ff=F), "swish")
    jax.eval_shape(layer.init, jax.random.key(0), _inputs(0))
  layer = MoE(MoEConfig(num_experts=E, top_k=K, d_ff=F))
  with pytest.raises(ConfigError, match=r"MoE input: expected x\[batch, seq, width\]"):
    jax.eval_shape(layer.init, jax.random.key(0), _inputs(0).reshape(B * S, D))
