"""The decoder LM: norm, RoPE and attention against float64 NumPy; cache, generation, errors."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.layers.moe import MoEConfig
from moe_jax.models.config import LMConfig
from moe_jax.models.generate import generate
from moe_jax.models.lm import MoELM, RMSNorm, rope
from moe_jax.utils.errors import ConfigError

TINY = LMConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                d_ff=64, max_len=32, moe_layers=(1,),
                moe=MoEConfig(num_experts=4, top_k=2, d_ff=16, capacity_factor=0.0))


def _np_rope(x, pos, theta):
  half = x.shape[-1] // 2
  freq = theta ** (-np.arange(half) / half)
  ang = pos[:, :, None, None] * freq
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang),
                         x2 * np.cos(ang) + x1 * np.sin(ang)], -1)


def test_rmsnorm_matches_numpy():
  x = np.random.default_rng(1).normal(size=(3, 5, 16))
  norm = RMSNorm(eps=1e-6)
  params = nn.unbox(norm.init(jax.random.key(0), jnp.asarray(x, jnp.float32)))
  w = np.random.default_rng(2).normal(size=16)
  params = {"params": {"scale": jnp.asarray(w, jnp.float32)}}
  got = norm.apply(params, jnp.asarray(x, jnp.float32))
  want = x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + 1e-6) * w
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_rope_matches_numpy_and_is_relative():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 7, 3, 8))
  pos = rng.integers(0, 50, size=(2, 7))
  got = rope(jnp.asarray(x, jnp.float32), jnp.asarray(pos), 10000.0)
  np.testing.assert_allclose(got, _np_rope(x, pos, 10000.0), rtol=1e-5, atol=1e-5)
  # <rope(q, m), rope(k, n)> depends on m - n only.
  q, k = rng.normal(size=(1, 1, 1, 8)), rng.normal(size=(1, 1, 1, 8))
  dots = [float(np.sum(_np_rope(q, np.array([[m]]), 100.0) * _np_rope(k, np.array([[m - 3]]),
                                                                         100.0)))
          for m in (3, 10, 40)]
  np.testing.assert_allclose(dots, dots[0], rtol=1e-9)


def _np_attention(x, p, cfg):
  """Float64 grouped-query causal attention with RoPE from the module's params."""
  b, s, _ = x.shape
  h, g, k = cfg.num_heads, cfg.num_kv_heads, cfg.head_width
  pos = np.broadcast_to(np.arange(s), (b, s))
  q = _np_rope(np.einsum("bsd,dhk->bshk", x, p["q_proj"]["kernel"]), pos, cfg.rope_theta)
  kk = _np_rope(np.einsum("bsd,dgk->bsgk", x, p["k_proj"]["kernel"]), pos, cfg.rope_theta)
  v = np.einsum("bsd,dgk->bsgk", x, p["v_proj"]["kernel"])
  kk, v = np.repeat(kk, h // g, axis=2), np.repeat(v, h // g, axis=2)
  scores = np.einsum("bshk,blhk->bhsl", q, kk) / np.sqrt(k)
  scores = np.where(np.tril(np.ones((s, s), bool)), scores, -np.inf)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  out = np.einsum("bhsl,blhk->bshk", probs, v)
  return np.einsum("bshk,hkd->bsd", out, p["o_proj"]["kernel"])


@pytest.mark.parametrize("blocks", [1, 3])
def test_attention_matches_numpy(blocks):
  from moe_jax.models.lm import Attention
  cfg = TINY
  x = np.random.default_rng(4 + blocks).normal(size=(2, 9, cfg.d_model))
  attn = Attention(cfg)
  pos = jnp.broadcast_to(jnp.arange(9), (2, 9))
  params = nn.unbox(attn.init(jax.random.key(5), jnp.asarray(x, jnp.float32), pos))["params"]
  got = attn.apply({"params": params}, jnp.asarray(x, jnp.float32), pos, blocks)
  want = _np_attention(x, jax.tree.map(lambda a: np.asarray(a, np.float64), params), cfg)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attention,window", [("gqa", 0), ("gqa", 5), ("mla", 0)])
def test_causal_blocks_change_nothing_but_speed(attention, window):
  """Skipping the masked key blocks gives the same logits and gradients as one block."""
  cfg = dataclasses.replace(TINY, attention=attention, sliding_window=window, kv_lora_rank=8,
                            qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8)
  tokens = jax.random.randint(jax.random.key(11), (2, 12), 0, cfg.vocab_size)
  params = nn.unbox(MoELM(cfg).init(jax.random.key(12), tokens))["params"]

  def loss_and_grads(blocks):
    model = MoELM(dataclasses.replace(cfg, causal_blocks=blocks))
    f = lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, tokens)))
    return jax.jit(jax.value_and_grad(f))(params)

  (want, want_g), (got, got_g) = loss_and_grads(1), loss_and_grads(4)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got_g,
               want_g)


@pytest.fixture(scope="module")
def tiny_model():
  model = MoELM(TINY)
  tokens = jax.random.randint(jax.random.key(6), (2, 12), 0, TINY.vocab_size)
  variables = nn.unbox(model.init(jax.random.key(7), tokens))
  return model, variables, tokens


def test_causal_future_tokens_do_not_change_past_logits(tiny_model):
  model, variables, tokens = tiny_model
  changed = tokens.at[:, 8:].set((tokens[:, 8:] + 1) % TINY.vocab_size)
  a, b = model.apply(variables, tokens), model.apply(variables, changed)
  np.testing.assert_allclose(a[:, :8], b[:, :8], atol=1e-6)
  assert not np.allclose(a[:, 8:], b[:, 8:])


def test_cached_decoding_equals_full_forward(tiny_model):
  model, variables, tokens = tiny_model
  full = model.apply(variables, tokens)
  decoder = MoELM(TINY, decode=True)
  cache = decoder.init(jax.random.key(0), tokens[:, :1])["cache"]
  cache = jax.tree.map_with_path(
      lambda p, x: jnp.full_like(x, -1) if p[-1].key == "positions" else jnp.zeros_like(x), cache)
  pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
  logits, mut = decoder.apply({**variables, "cache": cache}, tokens[:, :5], pos[:, :5],
                              mutable=["cache"])
  steps = [logits]
  cache = mut["cache"]
  for i in range(5, 12):
    out, mut = decoder.apply({**variables, "cache": cache}, tokens[:, i:i + 1],
                             pos[:, i:i + 1], mutable=["cache"])
    cache = mut["cache"]
    steps.append(out)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # ~40 s of op-by-op forwards; test_cached_decoding_equals_full_forward stays
def test_greedy_generation_equals_argmax_loop_without_cache(tiny_model):
  model, variables, tokens = tiny_model
  prompt = tokens[:, :4]
  got = generate(TINY, {"params": variables["params"]}, prompt, max_new_tokens=8)
  seq = prompt
  for _ in range(8):
    nxt = jnp.argmax(model.apply(variables, seq)[:, -1], -1)
    seq = jnp.concatenate([seq, nxt[:, None].astype(seq.dtype)], 1)
  np.testing.assert_array_equal(got, seq)
  sampled = generate(TINY, {"params": variables["params"]}, prompt, 8, temperature=1.0,
                     top_k=5, rng=jax.random.key(3))
  assert sampled.shape == (2, 12)
  np.testing.assert_array_equal(sampled[:, :4], prompt)


@pytest.mark.parametrize("change, field", [
    (dict(d_model=30, num_heads=4), "num_heads"),
    (dict(num_kv_heads=3), "num_kv_heads"),
    (dict(moe=dict(top_k=5)), "moe.top_k"),
    (dict(moe=dict(router="top2")), "moe.router"),
    (dict(moe=dict(dispatch="sparse")), "moe.dispatch"),
    (dict(activation="tanh"), "activation"),
    (dict(moe_layers=(7,)), "moe_layers"),
    (dict(dtype="float8"), "dtype"),
    (dict(causal_blocks=0), "causal_blocks"),
])
def test_bad_config_names_the_field(change, field):
  data = TINY.to_dict()
  for key, value in change.items():
    data[key] = {**data[key], **value} if isinstance(value, dict) else value
  with pytest.raises(ConfigError, match=f"^model.{field}:"):
    LMConfig.from_dict(data)


def test_unknown_config_key_is_refused():
  with pytest.raises(ConfigError, match="d_modle"):
    LMConfig.from_dict({"d_modle": 3})


def test_generation_beyond_cache_is_refused(tiny_model):
  _, variables, tokens = tiny_model
  with pytest.raises(ConfigError, match="max_new_tokens"):
    generate(TINY, {"params": variables["params"]}, tokens[:, :4], max_new_tokens=40)
