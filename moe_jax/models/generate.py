"""Autoregressive generation with a key/value cache: greedy or sampled.

prompt[B, P] -> tokens[B, P + N]. One prefill call writes the prompt into the cache, then a
`lax.scan` decodes one token per step; the whole thing is one jitted program per shape. Works
for every attention of `MoELM` (grouped-query caches keys/values, latent attention caches the
compressed latent and the shared RoPE key).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.models.config import LMConfig
from moe_jax.models.lm import MoELM, check_token_ids
from moe_jax.utils.errors import check_nonnegative, require


def sample_logits(logits: jax.Array, rng: jax.Array, temperature: float,
                  top_k: int = 0) -> jax.Array:
  """logits[B, V] -> token[B]: argmax at temperature 0, else softmax(logits / T) over top_k."""
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def empty_cache(model: MoELM, batch: int) -> dict:
  """The 'cache' collection of a decode-mode `model` for `batch` sequences with nothing written:
  keys/values 0, positions -1 (masked), index 0."""
  cache = model.init(jax.random.key(0), jnp.zeros((batch, 1), jnp.int32))["cache"]
  return jax.tree.map_with_path(
      lambda path, x: jnp.full_like(x, -1) if path[-1].key == "positions" else jnp.zeros_like(x),
      cache)


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "temperature", "top_k"))
def _generate(cfg, variables, prompt, rng, max_new_tokens, temperature, top_k):
  b, p = prompt.shape
  # The cache holds exactly the P + N positions this call needs, not cfg.max_len.
  model = MoELM(dataclasses.replace(cfg, max_len=p + max_new_tokens), decode=True)
  cache = empty_cache(model, b)
  positions = jnp.broadcast_to(jnp.arange(p), (b, p))
  logits, mutated = model.apply({**variables, "cache": cache}, prompt, positions,
                                mutable=["cache"])
  rngs = jax.random.split(rng, max_new_tokens)
  first = sample_logits(logits[:, -1], rngs[0], temperature, top_k)

  def step(carry, xs):
    cache, token = carry
    i, key = xs
    pos = jnp.full((b, 1), p + i, jnp.int32)
    out, mut = model.apply({**variables, "cache": cache}, token[:, None], pos,
                           mutable=["cache"])
    nxt = sample_logits(out[:, -1], key, temperature, top_k)
    return (mut["cache"], nxt), token

  (_, last), tokens = jax.lax.scan(step, (mutated["cache"], first),
                                   (jnp.arange(max_new_tokens - 1), rngs[1:]))
  new = jnp.concatenate([tokens.T, last[:, None]], axis=1) if max_new_tokens > 1 else first[:,
                                                                                            None]
  return jnp.concatenate([prompt, new], axis=1)


def generate(cfg: LMConfig, variables: dict, prompt: jax.Array, max_new_tokens: int,
             temperature: float = 0.0, top_k: int = 0,
             rng: jax.Array | None = None) -> jax.Array:
  """Continues prompt[B, P] by `max_new_tokens` tokens; returns [B, P + max_new_tokens].

  Args:
    cfg: the model config; variables: {"params": ..., plus e.g. "moe_bias"}.
    temperature: 0 for greedy decoding; top_k: sample among the k likeliest (0: all).
  """
  ids = prompt if isinstance(prompt, jax.Array) else np.asarray(prompt)
  require(ids.ndim == 2 and ids.shape[1] >= 1, "prompt", f"expected token ids [batch, length "
          f">= 1], got shape {list(ids.shape)}", "pass prompt[None] for a single sequence")
  check_token_ids(ids, cfg.vocab_size, "prompt")
  prompt = jnp.asarray(ids, jnp.int32)
  integer = lambda x: isinstance(x, (int, np.integer)) and not isinstance(x, bool)
  require(integer(max_new_tokens) and max_new_tokens >= 1, "max_new_tokens",
          f"must be an integer >= 1, got {max_new_tokens!r}", "ask for at least one token")
  check_nonnegative("temperature", temperature)
  require(integer(top_k) and 0 <= top_k <= cfg.vocab_size, "top_k", f"must be an integer in "
          f"[0, {cfg.vocab_size}], got {top_k!r}", "use 0 to sample among all tokens")
  require(prompt.shape[1] + max_new_tokens <= cfg.max_len, "max_new_tokens",
          f"prompt ({prompt.shape[1]}) + new tokens ({max_new_tokens}) exceed the cache "
          f"(max_len={cfg.max_len})", "shorten the prompt, ask for fewer tokens or raise max_len")
  rng = jax.random.key(0) if rng is None else rng
  return _generate(cfg, variables, prompt, rng, int(max_new_tokens), float(temperature),
                   int(top_k))
