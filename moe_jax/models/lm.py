"""Decoder-only MoE language model.

Legend: B batch, S sequence, D model width, H query heads, G key/value heads, K head width,
V vocabulary, L cache length, R latent (compressed key/value) width of MLA.

  h_0 = Embed(tokens)
  h_l' = h_l + Attn(Norm(h_l))                     (causal attention with RoPE: GQA or MLA)
  h_{l+1} = h_l' + FFN_l(Norm(h_l'))               (MoE on `cfg.moe_layer_ids()`, else dense)
  logits = Norm(h_L) @ E^T  (tied) or @ W_out (+ b_out)

Norm is RMSNorm or LayerNorm (cfg.norm). The published MoE LMs differ only in config fields
(`LMConfig`): biases, q/k norms, sliding window, RoPE layout and scaling, latent attention.
With `decode=True` the attention keeps a cache in the 'cache' collection: a call with S tokens
writes them at the cache index and attends to everything cached so far.

Token ids must lie in [0, V): inside jit an id >= V reads a NaN embedding row and a negative one
wraps around. `check_token_ids` refuses them once per call on concrete (host) arrays: MoELM does
so when it is applied outside jit, and the entry points (generate, train_lm) before they jit;
traced calls are not checked, so the jitted hot path pays nothing.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.layers.experts import MlpBlock
from moe_jax.layers.moe import MoE
from moe_jax.models.config import LMConfig
from moe_jax.utils.errors import require


def check_token_ids(tokens, vocab_size: int, field: str = "tokens") -> None:
  """Refuses non-integer token ids or ids outside [0, vocab_size), naming `field`; tracers
  (inside jit) pass unchecked."""
  if isinstance(tokens, jax.core.Tracer):
    return
  ids = np.asarray(tokens)
  require(np.issubdtype(ids.dtype, np.integer), field, f"token ids must be integers, got "
          f"dtype {ids.dtype}", "pass integer token ids")
  if ids.size:
    low, high = int(ids.min()), int(ids.max())
    require(low >= 0 and high < vocab_size, field, f"token ids must be in [0, {vocab_size}) "
            f"(the model's vocab_size), got ids from {low} to {high}",
            "encode with the model's tokenizer, or use a model whose vocab_size covers them")


class RMSNorm(nn.Module):
  """y = x / sqrt(mean(x^2) + eps) * w (Zhang & Sennrich 2019); statistics in float32."""
  eps: float = 1e-6
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                   (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (y * w.astype(jnp.float32)).astype(x.dtype)


def make_norm(cfg: LMConfig, name: str) -> nn.Module:
  """The model's norm: RMSNorm, or LayerNorm with scale and bias (Ba et al. 2016; PhiMoE)."""
  if cfg.norm == "layernorm":
    return nn.LayerNorm(cfg.norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
                        name=name)
  return RMSNorm(cfg.norm_eps, cfg.param_dtype, name=name)


def rope_frequencies(cfg: LMConfig, dim: int) -> tuple[np.ndarray, float]:
  """Inverse frequencies [dim/2] of RoPE and the factor on the rotated features.

  "default": theta^(-2i/dim). "yarn" (Peng et al. 2023, eqs. 17-23): frequencies below the
  beta_slow..beta_fast rotation band are divided by `factor`, those above kept, a linear ramp
  in between; the factor is mscale(factor, mscale) / mscale(factor, mscale_all_dim).
  "longrope" (Ding et al. 2024), as PhiMoE runs it: frequencies divided by the per-frequency
  `short_factor`, features scaled by `short_mscale` (PhiMoE never switches to `long_factor`;
  moe_jax.convert refuses a long_mscale that differs from short_mscale).
  """
  base = cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
  if cfg.rope_type == "default":
    return (1.0 / base).astype(np.float32), 1.0
  p = dict(cfg.rope_scaling)
  if cfg.rope_type == "longrope":
    factor = cfg.max_len / p["original_max_position_embeddings"]
    scale = p.get("short_mscale") or (
        math.sqrt(1 + math.log(factor) / math.log(p["original_max_position_embeddings"]))
        if factor > 1 else 1.0)
    return (1.0 / (np.asarray(p["short_factor"]) * base)).astype(np.float32), float(scale)
  factor, original = float(p["factor"]), float(p["original_max_position_embeddings"])
  fast, slow = float(p.get("beta_fast") or 32), float(p.get("beta_slow") or 1)

  def correction_dim(rotations):
    return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(cfg.rope_theta))

  low = max(math.floor(correction_dim(fast)), 0)
  high = min(math.ceil(correction_dim(slow)), dim - 1)
  ramp = np.clip((np.arange(dim // 2) - low) / max(high - low, 1e-3), 0, 1)
  inv_freq = (1.0 / (factor * base)) * ramp + (1.0 / base) * (1 - ramp)
  scale = p.get("attention_factor")
  if scale is None and p.get("mscale") and p.get("mscale_all_dim"):
    scale = yarn_mscale(factor, p["mscale"]) / yarn_mscale(factor, p["mscale_all_dim"])
  elif scale is None:
    scale = yarn_mscale(factor)
  return inv_freq.astype(np.float32), float(scale)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
  """YaRN's attention temperature 0.1 * mscale * ln(factor) + 1 (1 for factor <= 1)."""
  return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope(x: jax.Array, positions: jax.Array, theta: float, *, interleave: bool = False,
         inv_freq: np.ndarray | None = None, scale: float = 1.0) -> jax.Array:
  """Rotary embedding (Su et al. 2021): x[B, S, N, K], positions[B, S].

  Half-split layout rotates (x_i, x_{i+K/2}); `interleave` rotates (x_{2i}, x_{2i+1}) and
  returns the rotated pairs in half-split order (queries and keys alike, so q.k is unchanged).
  """
  half = x.shape[-1] // 2
  if inv_freq is None:
    inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle = positions.astype(jnp.float32)[:, :, None, None] * inv_freq  # [B, S, 1, K/2]
  sin, cos = jnp.sin(angle) * scale, jnp.cos(angle) * scale
  x32 = x.astype(jnp.float32)
  if interleave:
    x1, x2 = x32[..., 0::2], x32[..., 1::2]
  else:
    x1, x2 = jnp.split(x32, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, q_pos: jax.Array, k_pos: jax.Array,
           scale: float, window: int, dtype, blocks: int = 1) -> jax.Array:
  """Causal softmax attention: q[B, S, H, K], k[B, L, G, K], v[B, L, G, Kv] -> [B, S, H, Kv].

  Query head h reads key/value head h // (H / G) (grouped-query attention, Ainslie et al.
  2023). Key l is visible to query s when 0 <= pos_l <= pos_s (and pos_s - pos_l < window).
  `blocks` > 1 (only for keys that are the queries themselves, positions increasing) splits the
  queries into that many blocks; block i reads keys up to its own end, skipping the scores that
  the mask would drop, (blocks - 1) / (2 blocks) of them.
  """
  if blocks > 1:
    n = q.shape[1] // blocks
    return jnp.concatenate([
        attend(q[:, i * n:(i + 1) * n], k[:, :(i + 1) * n], v[:, :(i + 1) * n],
               q_pos[:, i * n:(i + 1) * n], k_pos[:, :(i + 1) * n], scale, window, dtype)
        for i in range(blocks)], axis=1)
  b, s, h, kw = q.shape
  g = k.shape[2]
  mask = (k_pos[:, None, :] <= q_pos[:, :, None]) & (k_pos[:, None, :] >= 0)  # [B, S, L]
  if window:
    mask &= k_pos[:, None, :] > q_pos[:, :, None] - window
  q = q.reshape(b, s, g, h // g, kw)
  scores = jnp.einsum("bsgrk,blgk->bgrsl", q, k).astype(jnp.float32) * scale
  scores = jnp.where(mask[:, None, None], scores, -1e30)
  probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
  return jnp.einsum("bgrsl,blgk->bsgrk", probs, v).reshape(b, s, h, v.shape[-1])


def update_cache(module: nn.Module, max_len: int, positions: jax.Array, **entries):
  """Writes each entry [B, S, ...] at the cache index; returns the full caches + positions[B, L].

  The caches live in `module`'s 'cache' collection; unwritten positions are -1 (masked).
  """
  b, s = positions.shape
  idx = module.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
  i = idx.value
  out = []
  for name, x in entries.items():
    c = module.variable("cache", name, jnp.zeros, (b, max_len) + x.shape[2:], x.dtype)
    c.value = jax.lax.dynamic_update_slice_in_dim(c.value, x, i, axis=1)
    out.append(c.value)
  cp = module.variable("cache", "positions", lambda: jnp.full((b, max_len), -1, jnp.int32))
  cp.value = jax.lax.dynamic_update_slice_in_dim(cp.value, positions.astype(jnp.int32), i, axis=1)
  idx.value = i + s
  return (*out, cp.value)


Q_AXES = ("embed", "heads", "head_dim")
KV_AXES = ("embed", "kv_heads", "head_dim")
BSD = ("batch", "length", "act_embed")  # logical axes of the residual stream [B, S, D]


class Projection(nn.Module):
  """y = x W (+ b): contracts the last `num_in` axes of x with W[*in, *features].

  `axes` names W's axes (inputs, then outputs) for the partitioning rules; the bias [*features]
  takes the output names. (flax's DenseGeneral initialises a flattened kernel, which cannot
  carry logical names per axis.) Initialisation: LeCun normal over the fan-in.
  """
  features: tuple[int, ...]
  axes: tuple[str, ...]
  num_in: int = 1
  use_bias: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n_in, n_out = self.num_in, len(self.features)
    init = nn.initializers.lecun_normal(in_axis=tuple(range(n_in)),
                                        out_axis=tuple(range(n_in, n_in + n_out)))
    w = self.param("kernel", nn.with_logical_partitioning(init, self.axes),
                   x.shape[x.ndim - n_in:] + self.features, self.param_dtype)
    y = jnp.tensordot(x.astype(self.dtype), w.astype(self.dtype), axes=n_in)
    if self.use_bias:
      b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                          self.axes[n_in:]),
                     self.features, self.param_dtype)
      y = y + b.astype(self.dtype)
    return y


def _dense(cfg: LMConfig, features, name: str, bias: bool, axes: tuple[str, ...],
           num_in: int = 1) -> Projection:
  features = features if isinstance(features, tuple) else (features,)
  return Projection(features, axes, num_in, bias, cfg.dtype, cfg.param_dtype, name=name)


class Attention(nn.Module):
  """Grouped-query causal self-attention (Ainslie et al. 2023) with RoPE and a KV cache.

  Options by config: q/k/v and output biases (Qwen2-MoE, PhiMoE), q/k RMSNorm per head
  (Qwen3-MoE) or over the full width (OLMoE), q/k/v clipping (OLMoE), a sliding window.
  """
  cfg: LMConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, blocks: int = 1) -> jax.Array:
    cfg = self.cfg
    b, s, _ = x.shape
    h, g, k = cfg.num_heads, cfg.num_kv_heads, cfg.head_width
    q = _dense(cfg, (h, k), "q_proj", cfg.qkv_bias, Q_AXES)(x)  # [B, S, H, K]
    key = _dense(cfg, (g, k), "k_proj", cfg.qkv_bias, KV_AXES)(x)  # [B, S, G, K]
    value = _dense(cfg, (g, k), "v_proj", cfg.qkv_bias, KV_AXES)(x)
    if cfg.qk_norm == "head":
      q = RMSNorm(cfg.norm_eps, cfg.param_dtype, name="q_norm")(q)
      key = RMSNorm(cfg.norm_eps, cfg.param_dtype, name="k_norm")(key)
    elif cfg.qk_norm == "full":
      q = RMSNorm(cfg.norm_eps, cfg.param_dtype, name="q_norm")(
          q.reshape(b, s, h * k)).reshape(q.shape)
      key = RMSNorm(cfg.norm_eps, cfg.param_dtype, name="k_norm")(
          key.reshape(b, s, g * k)).reshape(key.shape)
    if cfg.clip_qkv:
      q, key, value = (jnp.clip(t, -cfg.clip_qkv, cfg.clip_qkv) for t in (q, key, value))
    inv_freq, rscale = rope_frequencies(cfg, k)
    rot = lambda t: rope(t, positions, cfg.rope_theta, interleave=cfg.rope_interleave,
                         inv_freq=inv_freq, scale=rscale)
    q, key = rot(q), rot(key)
    k_pos = positions
    if self.decode:
      key, value, k_pos = update_cache(self, cfg.max_len, positions, key=key, value=value)
    out = attend(q, key, value, positions, k_pos, 1 / math.sqrt(k), cfg.sliding_window,
                 cfg.dtype, blocks)
    return _dense(cfg, x.shape[-1], "o_proj", cfg.o_bias, ("heads", "head_dim", "embed"),
                  num_in=2)(out)


class LatentAttention(nn.Module):
  """Multi-head latent attention (DeepSeek-V2, Sec. 2.1; DeepSeek-V3 eqs. 1-11).

    c_kv = RMSNorm(x W_dkv) [B, S, R]          k_r = RoPE(x W_kr) [B, S, r], shared by heads
    [k_c, v] = c_kv W_ukv [B, S, H, n + Kv]     k = [k_c, k_r]
    q = [q_c, RoPE(q_r)] with [q_c, q_r] = RMSNorm(x W_dq) W_uq (or x W_q without q_lora_rank)
  with n = qk_nope_head_dim, r = qk_rope_head_dim. The cache holds only c_kv and k_r: R + r
  numbers per token instead of 2 H K.
  """
  cfg: LMConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, blocks: int = 1) -> jax.Array:
    cfg = self.cfg
    h, n, r, kv = cfg.num_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    if cfg.q_lora_rank:
      cq = _dense(cfg, cfg.q_lora_rank, "q_a_proj", cfg.qkv_bias, ("embed", "latent"))(x)
      cq = RMSNorm(1e-6, cfg.param_dtype, name="q_a_norm")(cq)
      q = _dense(cfg, (h, n + r), "q_b_proj", False, ("latent", "heads", "head_dim"))(cq)
    else:
      q = _dense(cfg, (h, n + r), "q_proj", False, Q_AXES)(x)  # [B, S, H, n + r]
    ckv = _dense(cfg, cfg.kv_lora_rank + r, "kv_a_proj", cfg.qkv_bias, ("embed", "latent"))(x)
    latent = RMSNorm(1e-6, cfg.param_dtype, name="kv_a_norm")(ckv[..., :cfg.kv_lora_rank])
    inv_freq, rscale = rope_frequencies(cfg, r)
    rot = lambda t: rope(t, positions, cfg.rope_theta, interleave=cfg.rope_interleave,
                         inv_freq=inv_freq, scale=rscale)
    k_rope = rot(ckv[..., None, cfg.kv_lora_rank:])[:, :, 0]  # [B, S, r]
    q = jnp.concatenate([q[..., :n], rot(q[..., n:])], axis=-1)
    k_pos = positions
    if self.decode:
      latent, k_rope, k_pos = update_cache(self, cfg.max_len, positions, latent=latent,
                                           key_rope=k_rope)
    kvh = _dense(cfg, (h, n + kv), "kv_b_proj", False,
                 ("latent", "heads", "head_dim"))(latent)  # [B, L, H, n + Kv]
    key = jnp.concatenate(
        [kvh[..., :n], jnp.broadcast_to(k_rope[:, :, None], kvh.shape[:3] + (r,))], axis=-1)
    scale = 1 / math.sqrt(n + r)
    if cfg.rope_type == "yarn" and dict(cfg.rope_scaling).get("mscale_all_dim"):
      p = dict(cfg.rope_scaling)
      scale *= yarn_mscale(float(p["factor"]), float(p["mscale_all_dim"])) ** 2
    out = attend(q, key, kvh[..., n:], positions, k_pos, scale, cfg.sliding_window, cfg.dtype,
                 blocks)
    return _dense(cfg, x.shape[-1], "o_proj", cfg.o_bias, ("heads", "head_dim", "embed"),
                  num_in=2)(out)


def make_embed(cfg: LMConfig) -> nn.Embed:
  """The token embedding [V, D] (named "embed"; the tied output head reads it too)."""
  return nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                  embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                              ("vocab", "embed")),
                  name="embed")


class Block(nn.Module):
  """Pre-norm transformer block with an MoE or dense FFN.

  `attention_only`: stop before the FFN and return (h', Norm(h')), the residual stream after
  attention and the FFN's input (offloaded inference runs the FFN apart).
  """
  cfg: LMConfig
  use_moe: bool
  decode: bool = False
  attention_only: bool = False

  @nn.compact
  def __call__(self, x, positions, deterministic: bool = True, attn_blocks: int = 1):
    cfg = self.cfg
    attn = LatentAttention if cfg.attention == "mla" else Attention
    x = x + attn(cfg, self.decode, name="attn")(make_norm(cfg, "attn_norm")(x), positions,
                                                attn_blocks)
    y = make_norm(cfg, "ffn_norm")(x)
    if self.attention_only:
      return x, y
    if self.use_moe:
      y = MoE(cfg.moe, cfg.activation, cfg.dtype, cfg.param_dtype,
              name="moe")(y, deterministic=deterministic)
    else:
      y = MlpBlock(cfg.d_ff, cfg.activation, cfg.dtype, cfg.param_dtype, name="mlp")(y)
    return nn.with_logical_constraint(x + y, BSD)


class MoELM(nn.Module):
  """tokens[B, S] int32 (positions[B, S] optional) -> logits[B, S, V] float32."""
  cfg: LMConfig
  decode: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
               deterministic: bool = True, hidden: jax.Array | None = None) -> jax.Array:
    """`hidden` [B, S, D], the last block's output: only the final norm and head run on it
    (tokens unread; offloaded inference runs the blocks apart)."""
    cfg = self.cfg
    if hidden is not None:
      return self._logits(make_embed(cfg), hidden)
    check_token_ids(tokens, cfg.vocab_size)
    blocks = 1
    if positions is None:  # keys = queries in order: causal attention may skip masked blocks
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
      if not self.decode and tokens.shape[1] % cfg.causal_blocks == 0:
        blocks = cfg.causal_blocks
    embed = make_embed(cfg)
    x = nn.with_logical_constraint(embed(tokens), BSD)
    moe_ids = set(cfg.moe_layer_ids())
    for i in range(cfg.num_layers):
      x = Block(cfg, i in moe_ids, self.decode, name=f"layer_{i}")(x, positions, deterministic,
                                                                   blocks)
    return self._logits(embed, x)

  def _logits(self, embed: nn.Embed, x: jax.Array) -> jax.Array:
    """The final norm and the output head of the last block's output x[B, S, D]."""
    cfg = self.cfg
    x = make_norm(cfg, "final_norm")(x)
    if cfg.tie_embeddings:
      logits = embed.attend(x)
      if cfg.scale_tied_logits:
        logits = logits / jnp.sqrt(cfg.d_model)
      if cfg.lm_head_bias:
        logits = logits + self.param(
            "lm_head_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
            (cfg.vocab_size,), cfg.param_dtype)
    else:
      logits = _dense(cfg, cfg.vocab_size, "lm_head", cfg.lm_head_bias, ("embed", "vocab"))(x)
    return nn.with_logical_constraint(logits.astype(jnp.float32),
                                      ("batch", "length", "act_vocab"))
