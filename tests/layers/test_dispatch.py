"""The three dispatches against plain loops over experts (float64 NumPy outputs, JAX gradients)."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.layers import dispatch as dispatch_lib
from moe_jax.layers.moe import MoE, MoEConfig
from moe_jax.layers.routers import make_router
from moe_jax.utils.errors import ConfigError

B, S, D, F, E, K = 2, 12, 8, 16, 4, 2
T = B * S
DISPATCHES = [("dropless", "tiled"), ("dropless", "ragged_dot"), ("capacity", "auto"),
              ("dense", "auto")]
ROUTER_KW = {"sigmoid_group": dict(n_group=2, topk_group=1, routed_scaling_factor=1.7)}

_np_silu = lambda z: z / (1 + np.exp(-z))
_np_gelu = lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))
NP_ACT = {"swiglu": (_np_silu, True), "geglu": (_np_gelu, True), "gelu": (_np_gelu, False),
          "relu": (lambda z: np.maximum(z, 0), False), "silu": (_np_silu, False)}
_jax_gelu = lambda z: 0.5 * z * (1 + jnp.tanh(jnp.sqrt(2 / jnp.pi) * (z + 0.044715 * z ** 3)))


def _jax_act(name, z):
  if name in ("swiglu", "silu"):
    return z * jax.nn.sigmoid(z)
  if name == "relu":
    return jnp.maximum(z, 0)
  return _jax_gelu(z)


def make_layer(router="topk", activation="swiglu", dispatch="dropless", gmm_impl="auto",
               capacity_factor=0.0, seed=0, top_k=K):
  """An MoE layer, its variables (with a random aux-free bias) and inputs x[B, S, D]."""
  layer = MoE(MoEConfig(num_experts=E, top_k=top_k, d_ff=F, router=router, dispatch=dispatch,
                        gmm_impl=gmm_impl, capacity_factor=capacity_factor,
                        **ROUTER_KW.get(router, {})), activation)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((B, S, D)), jnp.float32)
  # Fresh random values in the layer's own variable structure (no init run needed); router
  # weights large enough that the top-k choices are well separated, a random aux-free bias.
  shapes = jax.eval_shape(functools.partial(layer.init, jax.random.key(0)), x)
  shapes = nn.unbox({k: v for k, v in shapes.items() if k in ("params", "moe_bias")})

  def fill(path, leaf):
    name = path[-1].key
    scale = {"kernel": 1.0, "e_score_correction_bias": 0.2}.get(name) or leaf.shape[-2] ** -0.5
    return jnp.asarray(rng.standard_normal(leaf.shape) * scale, jnp.float32)

  return layer, jax.tree_util.tree_map_with_path(fill, shapes), x


def routing_of(layer, variables, x):
  """The layer's own router applied to x: the Routing the dispatch receives."""
  c = layer.config
  router = make_router(c.router, E, c.top_k, capacity_factor=c.capacity_factor,
                       **ROUTER_KW.get(c.router, {}))
  router_vars = {"params": variables["params"]["router"]}
  if "moe_bias" in variables:
    router_vars["moe_bias"] = variables["moe_bias"]["router"]
  return router.apply(router_vars, x.reshape(T, D))


def numpy_moe(x, experts, token, expert, weight, activation):
  """float64 y[T, D] = sum over assignments (t, e, w) of w * FFN_e(x_t), one expert at a time."""
  fn, gated = NP_ACT[activation]
  x = np.asarray(x, np.float64).reshape(T, D)
  w = {k: np.asarray(v, np.float64) for k, v in experts.items()}
  y = np.zeros((T, D))
  for e in range(E):
    sel = np.asarray(expert) == e
    tok, wt = np.asarray(token)[sel], np.asarray(weight, np.float64)[sel]
    xe = x[tok]
    h = fn(xe @ w["wi_gate"][e]) * (xe @ w["wi_up"][e]) if gated else fn(xe @ w["wi_up"][e])
    np.add.at(y, tok, wt[:, None] * (h @ w["wo"][e]))
  return y


def jax_loop_moe(layer, variables, x):
  """The same layer as a plain JAX loop over experts, each expert applied to every token."""
  routing = routing_of(layer, variables, x)
  gate = jnp.zeros((T, E)).at[routing.token, routing.expert].add(routing.weight)
  w = variables["params"]["experts"]
  xt = x.reshape(T, D)
  y = jnp.zeros((T, D))
  for e in range(E):
    if "wi_gate" in w:
      h = _jax_act(layer.activation, xt @ w["wi_gate"][e]) * (xt @ w["wi_up"][e])
    else:
      h = _jax_act(layer.activation, xt @ w["wi_up"][e])
    y = y + gate[:, e:e + 1] * (h @ w["wo"][e])
  return y.reshape(B, S, D)


def _output_and_grads(apply_fn, variables, x, cotangent):
  """y and the gradients of sum(y * cotangent) w.r.t. (params, x)."""
  y, vjp = jax.vjp(lambda p, x: apply_fn({**variables, "params": p}, x), variables["params"], x)
  return y, vjp(cotangent)


def _check_dispatches(router, activation, dispatches, top_k=K):
  """No drops (capacity_factor=0): each dispatch equals the loops in outputs and gradients."""
  seed = len(router) * 7 + len(activation) + top_k
  ref_layer, variables, x = make_layer(router, activation, seed=seed, top_k=top_k)
  routing = routing_of(ref_layer, variables, x)
  want_y = numpy_moe(x, variables["params"]["experts"], routing.token, routing.expert,
                     routing.weight, activation).reshape(B, S, D)
  cotangent = jnp.asarray(np.random.default_rng(seed).standard_normal((B, S, D)), jnp.float32)
  _, want_grads = jax.jit(functools.partial(_output_and_grads, lambda v, x: jax_loop_moe(
      ref_layer, v, x)))(variables, x, cotangent)
  layers = [ref_layer.clone(config=dataclasses.replace(ref_layer.config, dispatch=d, gmm_impl=g))
            for d, g in dispatches]
  run_all = jax.jit(lambda *args: [_output_and_grads(layer.apply, *args) for layer in layers])
  for (name, impl), (y, grads) in zip(dispatches, run_all(variables, x, cotangent)):
    msg = f"{router}/{activation}/{name}/{impl}"
    np.testing.assert_allclose(y, want_y, rtol=1e-4, atol=1e-5, err_msg=msg)
    jax.tree_util.tree_map_with_path(
        lambda path, got, want: np.testing.assert_allclose(
            got, want, rtol=1e-4, atol=1e-5, err_msg=f"{msg} {jax.tree_util.keystr(path)}"),
        grads, want_grads)


ACTIVATIONS = list(NP_ACT)
ROUTERS = ["topk", "noisy_topk", "expert_choice", "sigmoid_group", "sparsemixer"]


@pytest.mark.parametrize("router", ["topk", "expert_choice"])
def test_every_dispatch_matches_plain_loops(router):
  """Token-choice and expert-choice routings take different combine paths: check both."""
  _check_dispatches(router, "swiglu", DISPATCHES)


def test_every_dispatch_matches_plain_loops_top1():
  """One assignment per token (A == T): as many hidden rows as token rows."""
  _check_dispatches("topk", "swiglu", DISPATCHES, top_k=1)


@pytest.mark.parametrize("router,activation",
                         [("topk", a) for a in ACTIVATIONS if a != "swiglu"] +
                         [(r, "swiglu") for r in ROUTERS if r not in ("topk", "expert_choice")])
def test_every_activation_and_router_default_dispatch(router, activation):
  """Every activation and router through the default dispatch (dropless, tiled on CPU)."""
  _check_dispatches(router, activation, [("dropless", "auto")])


@pytest.mark.slow
@pytest.mark.parametrize("router", ROUTERS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_full_product_matches_plain_loops(router, activation):
  _check_dispatches(router, activation, DISPATCHES)


def _brute_force_keep(expert_tk, capacity):
  """[T, K] bool: kept assignments when each expert takes `capacity` in priority order
  (all first choices in token order, then all second choices, ...)."""
  keep = np.zeros(expert_tk.shape, bool)
  filled = np.zeros(E, int)
  for j in range(expert_tk.shape[1]):
    for t in range(expert_tk.shape[0]):
      e = expert_tk[t, j]
      if filled[e] < capacity:
        keep[t, j] = True
        filled[e] += 1
  return keep


@pytest.mark.parametrize("dispatch", ["capacity", "dense"])
def test_small_capacity_drops_by_priority(dispatch):
  capacity_factor = 0.5
  layer, variables, x = make_layer("topk", "swiglu", dispatch, capacity_factor=capacity_factor,
                                   seed=11)
  # Skew the router towards expert 0 so that it overflows.
  kernel = variables["params"]["router"]["gate"]["kernel"]
  variables["params"]["router"] = {"gate": {"kernel": kernel.at[:, 0].add(1.0)}}
  routing = routing_of(layer, variables, x)
  c = dispatch_lib.expert_capacity(T * K, T, E, capacity_factor)
  assert c == 6  # ceil(0.5 * 48 / 4)
  expert_tk = np.asarray(routing.expert).reshape(T, K)
  keep = _brute_force_keep(expert_tk, c)
  # Token-major order (token 0's choices, then token 1's, ...) would keep a different set:
  # the test tells the two rules apart.
  token_major = _brute_force_keep(expert_tk.reshape(T * K, 1), c).reshape(T, K)
  assert (keep != token_major).any()

  y, state = jax.jit(functools.partial(layer.apply, mutable=["intermediates"]))(variables, x)
  inter = state["intermediates"]
  assert int(inter["dropped"][0]) == int((~keep).sum()) > 0
  np.testing.assert_array_equal(inter["tokens_per_expert"][0],
                                np.bincount(expert_tk.reshape(-1), minlength=E))
  kept = keep.reshape(-1)
  want = numpy_moe(x, variables["params"]["experts"], np.asarray(routing.token)[kept],
                   expert_tk.reshape(-1)[kept], np.asarray(routing.weight)[kept], "swiglu")
  np.testing.assert_allclose(y, want.reshape(B, S, D), rtol=1e-4, atol=1e-5)


def test_capacity_formula():
  assert dispatch_lib.expert_capacity(8192, 4096, 8, 1.25) == 1280
  assert dispatch_lib.expert_capacity(30, 10, 4, 1.0) == 8  # ceil(7.5)
  assert dispatch_lib.expert_capacity(30, 10, 4, 0.0) == 10  # no drops
  assert dispatch_lib.expert_capacity(30, 10, 1, 4.0) == 10  # at most T


def test_unknown_dispatch_raises():
  with pytest.raises(ConfigError, match="dispatch"):
    MoEConfig(num_experts=E, top_k=K, d_ff=F, dispatch="sorted")
  layer, variables, x = make_layer()
  routing = routing_of(layer, variables, x)
  with pytest.raises(ConfigError, match="dispatch"):
    dispatch_lib.dispatch("gshard", x.reshape(T, D), routing, None, E)
