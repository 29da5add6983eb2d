"""Routers against float64 NumPy re-implementations (and transformers' PhiMoE sparsemixer)."""
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.layers import routers
from moe_jax.utils.errors import ConfigError

T, D, E = 48, 16, 8


def _setup(router, seed, x_scale=1.0, extra_init=None):
  """Random x[T, D] and a freshly initialised router; returns (x, variables, logits64)."""
  rng = np.random.default_rng(seed)
  x = (x_scale * rng.standard_normal((T, D))).astype(np.float32)
  variables = nn.unbox(router.init(jax.random.key(seed), jnp.asarray(x)))
  variables = dict(variables)
  # Larger random router weights than the init's, so that the choices are well separated.
  kernel = rng.standard_normal((D, E)).astype(np.float32) * 0.5
  variables["params"] = {**variables["params"], "gate": {"kernel": jnp.asarray(kernel)}}
  if extra_init:
    extra_init(variables, rng)
  logits = x.astype(np.float64) @ kernel.astype(np.float64)
  return x, variables, logits


def _softmax(z):
  z = z - z.max(-1, keepdims=True)
  p = np.exp(z)
  return p / p.sum(-1, keepdims=True)


def _as_sets(routing, k):
  """{(token, expert): weight} of a token-choice Routing."""
  tok = np.asarray(routing.token).reshape(-1, k)
  exp = np.asarray(routing.expert).reshape(-1, k)
  w = np.asarray(routing.weight).reshape(-1, k)
  assert (tok == np.arange(tok.shape[0])[:, None]).all()
  return exp, w


def _check_choices(exp, w, ref_exp, ref_w, atol=1e-5):
  """Same expert set per token (in any order) and the same weight for each chosen expert."""
  for t in range(exp.shape[0]):
    got = dict(zip(exp[t].tolist(), w[t].tolist()))
    ref = dict(zip(ref_exp[t].tolist(), ref_w[t].tolist()))
    assert got.keys() == ref.keys(), (t, got, ref)
    for e in ref:
      np.testing.assert_allclose(got[e], ref[e], atol=atol, rtol=1e-4)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_topk(normalize, k):
  router = routers.TopKRouter(num_experts=E, top_k=k, normalize=normalize)
  x, variables, logits = _setup(router, seed=10 + k)
  r = router.apply(variables, jnp.asarray(x))
  probs = _softmax(logits)
  ref_exp = np.argsort(-probs, axis=-1)[:, :k]
  ref_w = np.take_along_axis(probs, ref_exp, axis=-1)
  if normalize:
    ref_w = ref_w / ref_w.sum(-1, keepdims=True)
  exp, w = _as_sets(r, k)
  _check_choices(exp, w, ref_exp, ref_w)
  np.testing.assert_allclose(np.asarray(r.logits), logits, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(r.probs), probs, rtol=1e-4, atol=1e-6)
  assert r.top_k == k


def _noisy_reference(logits, noisy_logits, k):
  ref_exp = np.argsort(-noisy_logits, axis=-1)[:, :k]
  ref_w = _softmax(np.take_along_axis(noisy_logits, ref_exp, axis=-1))
  return ref_exp, ref_w


def test_noisy_topk_deterministic():
  k = 2
  router = routers.NoisyTopKRouter(num_experts=E, top_k=k)
  x, variables, logits = _setup(router, seed=3)
  r = router.apply(variables, jnp.asarray(x), deterministic=True)
  _check_choices(*_as_sets(r, k), *_noisy_reference(logits, logits, k))


def test_noisy_topk_fixed_noise_draw(monkeypatch):
  """H = xW_g + eps * softplus(xW_noise), top-k, softmax over the kept (Shazeer 2017 eqs. 3-5)."""
  k = 2
  router = routers.NoisyTopKRouter(num_experts=E, top_k=k)
  rng = np.random.default_rng(4)
  x = rng.standard_normal((T, D)).astype(np.float32)
  variables = router.init({"params": jax.random.key(0), "noise": jax.random.key(1)},
                          jnp.asarray(x), deterministic=False)
  w_g = rng.standard_normal((D, E)).astype(np.float32) * 0.5
  w_n = rng.standard_normal((D, E)).astype(np.float32) * 0.5
  variables = {"params": {"gate": {"kernel": jnp.asarray(w_g)},
                          "noise": {"kernel": jnp.asarray(w_n)}}}
  eps = rng.standard_normal((T, E)).astype(np.float32) * 2.0
  # The router draws its noise with jax.random.normal; pin that draw to `eps`.
  monkeypatch.setattr(jax.random, "normal", lambda key, shape, dtype=None: jnp.asarray(eps))
  r = router.apply(variables, jnp.asarray(x), deterministic=False,
                   rngs={"noise": jax.random.key(5)})
  monkeypatch.undo()
  x64 = x.astype(np.float64)
  clean = x64 @ w_g
  noisy = clean + eps * np.log1p(np.exp(x64 @ w_n))
  ref_exp, ref_w = _noisy_reference(clean, noisy, k)
  _check_choices(*_as_sets(r, k), ref_exp, ref_w)
  # The noise changes the choices for some tokens (else this test would not test the noise).
  assert (np.sort(ref_exp, -1) != np.sort(np.argsort(-clean, -1)[:, :k], -1)).any()


def test_noisy_topk_noise_follows_rng():
  router = routers.NoisyTopKRouter(num_experts=E, top_k=2)
  x = jnp.asarray(np.random.default_rng(6).standard_normal((T, D)), jnp.float32)
  variables = router.init({"params": jax.random.key(0), "noise": jax.random.key(1)}, x,
                          deterministic=False)
  run = lambda seed: router.apply(variables, x, deterministic=False,
                                  rngs={"noise": jax.random.key(seed)}).logits
  np.testing.assert_array_equal(run(7), run(7))
  assert not np.allclose(run(7), run(8))


@pytest.mark.parametrize("capacity_factor", [1.0, 2.0, 0.5])
def test_expert_choice(capacity_factor):
  router = routers.ExpertChoiceRouter(num_experts=E, capacity_factor=capacity_factor)
  x, variables, logits = _setup(router, seed=int(capacity_factor * 10))
  r = router.apply(variables, jnp.asarray(x))
  probs = _softmax(logits)
  c = int(round(T * capacity_factor / E))
  token = np.asarray(r.token).reshape(E, c)
  weight = np.asarray(r.weight).reshape(E, c)
  np.testing.assert_array_equal(np.asarray(r.expert).reshape(E, c),
                                np.repeat(np.arange(E)[:, None], c, axis=1))
  for e in range(E):
    ref_tokens = np.argsort(-probs[:, e])[:c]
    assert set(token[e].tolist()) == set(ref_tokens.tolist())
    np.testing.assert_allclose(weight[e], probs[token[e], e], rtol=1e-5, atol=1e-7)
  assert r.top_k == 0


def _deepseek_v3_reference(scores, bias, k, n_group, topk_group, normalize, scale):
  """Brute force: try every set of `topk_group` groups and every K experts inside it."""
  t, e = scores.shape
  size = e // n_group
  biased = scores + bias
  experts, weights = [], []
  for i in range(t):
    group_score = [np.sort(biased[i, g * size:(g + 1) * size])[-2:].sum()
                   for g in range(n_group)]
    best_groups = max(itertools.combinations(range(n_group), topk_group),
                      key=lambda gs: sum(group_score[g] for g in gs))
    allowed = [j for g in best_groups for j in range(g * size, (g + 1) * size)]
    best = max(itertools.combinations(allowed, k), key=lambda js: sum(biased[i, j] for j in js))
    w = scores[i, list(best)]
    if normalize:
      w = w / w.sum()
    experts.append(best)
    weights.append(w * scale)
  return np.array(experts), np.array(weights)


@pytest.mark.parametrize("n_group,topk_group,k,normalize,scale", [
    (4, 2, 3, True, 2.5),
    (4, 1, 2, False, 1.0),
    (1, 1, 2, True, 1.0),
    (2, 2, 4, False, 1.5),
])
def test_sigmoid_group(n_group, topk_group, k, normalize, scale):
  router = routers.SigmoidGroupRouter(num_experts=E, top_k=k, n_group=n_group,
                                      topk_group=topk_group, normalize=normalize,
                                      routed_scaling_factor=scale)
  bias_holder = {}

  def set_bias(variables, rng):
    bias = (rng.standard_normal(E) * 0.3).astype(np.float32)
    bias_holder["bias"] = bias
    variables["moe_bias"] = {"e_score_correction_bias": jnp.asarray(bias)}

  x, variables, logits = _setup(router, seed=20 + k, extra_init=set_bias)
  r = router.apply(variables, jnp.asarray(x))
  scores = 1.0 / (1.0 + np.exp(-logits))
  ref_exp, ref_w = _deepseek_v3_reference(scores, bias_holder["bias"].astype(np.float64), k,
                                          n_group, topk_group, normalize, scale)
  _check_choices(*_as_sets(r, k), ref_exp, ref_w)
  np.testing.assert_allclose(np.asarray(r.probs), scores / scores.sum(-1, keepdims=True),
                             rtol=1e-5)
  # The bias moves the selection away from the unbiased top-k for some tokens.
  plain = np.sort(np.argsort(-scores, -1)[:, :k], -1)
  assert (np.sort(ref_exp, -1) != plain).any()


def test_sigmoid_group_bias_is_not_a_param():
  router = routers.SigmoidGroupRouter(num_experts=E, top_k=2, n_group=4, topk_group=2)
  variables = nn.unbox(router.init(jax.random.key(0), jnp.zeros((4, D))))
  assert set(variables) == {"params", "moe_bias"}
  np.testing.assert_array_equal(variables["moe_bias"]["e_score_correction_bias"], np.zeros(E))


@pytest.mark.parametrize("jitter_eps,x_scale", [(0.01, 1.0), (0.3, 1.0), (0.5, 0.2)])
def test_sparsemixer_matches_transformers(jitter_eps, x_scale):
  torch = pytest.importorskip("torch")
  phimoe = pytest.importorskip("transformers.models.phimoe.modeling_phimoe")
  router = routers.SparseMixerRouter(num_experts=E, jitter_eps=jitter_eps)
  x, variables, _ = _setup(router, seed=int(jitter_eps * 100), x_scale=x_scale)
  r = router.apply(variables, jnp.asarray(x))
  logits = np.asarray(r.logits)
  multiplier, selected = phimoe.sparsemixer(torch.tensor(logits), jitter_eps=jitter_eps,
                                            training=False)
  exp, w = _as_sets(r, 2)
  np.testing.assert_array_equal(exp, selected.numpy())
  np.testing.assert_allclose(w, multiplier.numpy(), rtol=1e-5, atol=1e-6)
  # Non-trivial masks: some first-choice weights are below 1 (another expert was in range).
  assert (w[:, 0] < 0.999).any()


def test_aux_free_bias_update_sign():
  bias = jnp.asarray([0.1, 0.0, -0.2, 0.05])
  load = jnp.asarray([10, 2, 4, 4])  # mean 5: expert 0 overloaded, 1-3 underloaded
  new = np.asarray(routers.aux_free_bias_update(bias, load, rate=0.01))
  np.testing.assert_allclose(new - np.asarray(bias), [-0.01, 0.01, 0.01, 0.01], atol=1e-7)
  even = routers.aux_free_bias_update(bias, jnp.asarray([5, 5, 5, 5]), rate=0.01)
  np.testing.assert_allclose(even, bias)


@pytest.mark.parametrize("name", list(routers.ROUTERS))
def test_router_math_is_float32(name):
  router = routers.make_router(name, num_experts=E, top_k=2, param_dtype=jnp.bfloat16)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((T, D)), jnp.bfloat16)
  r, _ = router.init_with_output(jax.random.key(0), x)
  assert r.logits.dtype == r.probs.dtype == r.weight.dtype == jnp.float32


def test_unknown_router_raises():
  with pytest.raises(ConfigError, match="router"):
    routers.make_router("top2", num_experts=E, top_k=2)


@pytest.mark.parametrize("top_k", [0, E + 1])
def test_bad_top_k_raises(top_k):
  with pytest.raises(ConfigError, match="top_k"):
    routers.make_router("topk", num_experts=E, top_k=top_k)


def test_bad_groups_raise():
  with pytest.raises(ConfigError, match="n_group"):
    routers.make_router("sigmoid_group", num_experts=E, top_k=2, n_group=3)
  with pytest.raises(ConfigError, match="topk_group"):
    routers.make_router("sigmoid_group", num_experts=E, top_k=2, n_group=4, topk_group=5)
  with pytest.raises(ConfigError, match="sparsemixer routes exactly 2"):
    routers.make_router("sparsemixer", num_experts=E, top_k=3)
