"""Decoder-only MoE language model.

Legend: B batch, S sequence, D model width, H query heads, G key/value heads, K head width,
V vocabulary, L cache length.

  h_0 = Embed(tokens)
  h_l' = h_l + Attn(RMSNorm(h_l))                  (grouped-query causal attention, RoPE)
  h_{l+1} = h_l' + FFN_l(RMSNorm(h_l'))            (MoE on `cfg.moe_layer_ids()`, else dense)
  logits = RMSNorm(h_L) @ E^T  (tied) or @ W_out

With `decode=True` the attention keeps a key/value cache in the 'cache' collection: a call with
S tokens writes them at the cache index and attends to everything cached so far.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from moe_jax.layers.experts import MlpBlock
from moe_jax.layers.moe import MoE
from moe_jax.models.config import LMConfig


class RMSNorm(nn.Module):
  """y = x / sqrt(mean(x^2) + eps) * w (Zhang & Sennrich 2019); statistics in float32."""
  eps: float = 1e-6
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (y * w.astype(jnp.float32)).astype(x.dtype)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding (Su et al. 2021), half-split layout: x[B, S, N, K], positions[B, S]."""
  half = x.shape[-1] // 2
  freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle = positions.astype(jnp.float32)[:, :, None, None] * freq  # [B, S, 1, K/2]
  sin, cos = jnp.sin(angle), jnp.cos(angle)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class Attention(nn.Module):
  """Grouped-query causal self-attention (Ainslie et al. 2023) with RoPE and a KV cache."""
  cfg: LMConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    cfg = self.cfg
    b, s, _ = x.shape
    h, g, k = cfg.num_heads, cfg.num_kv_heads, cfg.head_width
    dense = lambda shape, name, axes=-1: nn.DenseGeneral(
        shape, axis=axes, use_bias=False, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        name=name)
    q = rope(dense((h, k), "q_proj")(x), positions, cfg.rope_theta)  # [B, S, H, K]
    key = rope(dense((g, k), "k_proj")(x), positions, cfg.rope_theta)  # [B, S, G, K]
    value = dense((g, k), "v_proj")(x)
    q_pos = positions
    if self.decode:
      key, value, k_pos = self._update_cache(key, value, positions)
    else:
      k_pos = positions
    mask = (k_pos[:, None, :] <= q_pos[:, :, None]) & (k_pos[:, None, :] >= 0)  # [B, S, L]
    q = q.reshape(b, s, g, h // g, k)
    scores = jnp.einsum("bsgrk,blgk->bgrsl", q, key).astype(jnp.float32) / jnp.sqrt(k)
    scores = jnp.where(mask[:, None, None], scores, -1e30)
    probs = jax.nn.softmax(scores, axis=-1).astype(cfg.dtype)
    out = jnp.einsum("bgrsl,blgk->bsgrk", probs, value).reshape(b, s, h, k)
    return dense(x.shape[-1], "o_proj", axes=(-2, -1))(out)

  def _update_cache(self, key, value, positions):
    """Writes [B, S, G, K] keys/values at the cache index; returns the full cache + positions."""
    cfg = self.cfg
    b, s = key.shape[:2]
    shape = (b, cfg.max_len, cfg.num_kv_heads, cfg.head_width)
    ck = self.variable("cache", "key", jnp.zeros, shape, key.dtype)
    cv = self.variable("cache", "value", jnp.zeros, shape, value.dtype)
    cp = self.variable("cache", "positions", lambda: jnp.full((b, cfg.max_len), -1, jnp.int32))
    idx = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
    i = idx.value
    ck.value = jax.lax.dynamic_update_slice_in_dim(ck.value, key, i, axis=1)
    cv.value = jax.lax.dynamic_update_slice_in_dim(cv.value, value, i, axis=1)
    cp.value = jax.lax.dynamic_update_slice_in_dim(cp.value, positions.astype(jnp.int32), i,
                                                   axis=1)
    idx.value = i + s
    return ck.value, cv.value, cp.value


class Block(nn.Module):
  """Pre-norm transformer block with an MoE or dense FFN."""
  cfg: LMConfig
  use_moe: bool
  decode: bool = False

  @nn.compact
  def __call__(self, x, positions, deterministic: bool = True):
    cfg = self.cfg
    norm = lambda name: RMSNorm(cfg.norm_eps, cfg.param_dtype, name=name)
    x = x + Attention(cfg, self.decode, name="attn")(norm("attn_norm")(x), positions)
    y = norm("ffn_norm")(x)
    if self.use_moe:
      y = MoE(**cfg.moe_kwargs(), dtype=cfg.dtype, param_dtype=cfg.param_dtype,
              name="moe")(y, deterministic=deterministic)
    else:
      y = MlpBlock(cfg.d_ff, cfg.activation, cfg.dtype, cfg.param_dtype, name="mlp")(y)
    return x + y


class MoELM(nn.Module):
  """tokens[B, S] int32 (positions[B, S] optional) -> logits[B, S, V] float32."""
  cfg: LMConfig
  decode: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    cfg = self.cfg
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                     embedding_init=nn.initializers.normal(1.0), name="embed")
    x = embed(tokens)
    moe_ids = set(cfg.moe_layer_ids())
    for i in range(cfg.num_layers):
      x = Block(cfg, i in moe_ids, self.decode, name=f"layer_{i}")(x, positions, deterministic)
    x = RMSNorm(cfg.norm_eps, cfg.param_dtype, name="final_norm")(x)
    if cfg.tie_embeddings:
      logits = embed.attend(x) / jnp.sqrt(cfg.d_model)
    else:
      logits = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
                        param_dtype=cfg.param_dtype, name="lm_head")(x)
    return logits.astype(jnp.float32)
