"""A tiny spatio-temporal DiT denoiser with LoRA-ready attention (the student and teacher network).

Legend: B batch, T frames, H/W canvas, C channels, p patch size, P = (H/p)(W/p) patches per frame,
D width, K heads, R LoRA rank. Blocks factorise attention into spatial (over P within a frame) and
temporal (over T at one patch position), with adaLN-zero conditioning on t = 1000 s
(HunyuanVideo/Wan are DiTs of the same family). Queries and keys carry rotary position embeddings
over the attended axes (HunyuanVideo's 3D RoPE, theta 256, split by block type: (row, column) in
spatial, frame in temporal attention) beside learned absolute embeddings at unit scale, which let
the net find the canvas borders (their effect on the teacher: docs/dcm.md). The names
`to_q/to_k/to_v/to_out` (LoRA targets in DCM's detail expert), `time_embed` and `final` (the
embedder, norm_out and proj_out the detail expert copies) follow the code; `lora_adaln` also puts
adapters on each block's adaLN modulation layer `adaln`.
"""
from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from moe_jax.models.lm import rope

ROPE_THETA = 256.0


class LoRADense(nn.Module):
  """y = x W + b + (alpha / R) x A B (Hu et al. 2021); A, B exist when rank > 0, B starts at 0."""
  features: int
  rank: int = 0
  alpha: float = 0.0
  kernel_init: Callable = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, x):
    y = nn.Dense(self.features, kernel_init=self.kernel_init, name="base")(x)
    if self.rank:
      d_in = x.shape[-1]
      a = self.param("lora_a", nn.initializers.normal(1.0 / math.sqrt(d_in)), (d_in, self.rank))
      b = self.param("lora_b", nn.initializers.zeros, (self.rank, self.features))
      y = y + (self.alpha / self.rank) * (x @ a) @ b
    return y


def axial_rope(x, coords):
  """Multi-axis rotary embedding: x [..., N, K, dh], coords [N, A] integer positions. The head dim
  is cut into A equal chunks and chunk a is rotated by coordinate a (theta ROPE_THETA)."""
  flat = x.reshape(-1, *x.shape[-3:])
  chunks = jnp.split(flat, coords.shape[1], axis=-1)
  out = [rope(ch, coords[None, :, a], ROPE_THETA) for a, ch in enumerate(chunks)]
  return jnp.concatenate(out, axis=-1).reshape(x.shape)


class Attention(nn.Module):
  """Multi-head self-attention over the second-to-last axis of x [..., N, D], with rotary
  positions coords [N, A]."""
  heads: int
  rank: int = 0
  alpha: float = 0.0

  @nn.compact
  def __call__(self, x, coords):
    d = x.shape[-1]
    split = lambda y: y.reshape(*y.shape[:-1], self.heads, d // self.heads)
    proj = lambda name: LoRADense(d, self.rank, self.alpha, name=name)
    q, k, v = (split(proj(n)(x)) for n in ("to_q", "to_k", "to_v"))
    q, k = axial_rope(q, coords), axial_rope(k, coords)
    logits = jnp.einsum("...qkd,...nkd->...kqn", q, k) / math.sqrt(d // self.heads)
    out = jnp.einsum("...kqn,...nkd->...qkd", jax.nn.softmax(logits, axis=-1), v)
    return proj("to_out")(out.reshape(x.shape))


def _modulate(x, shift, scale):
  x = nn.LayerNorm(use_bias=False, use_scale=False)(x)
  return x * (1.0 + scale) + shift


class Block(nn.Module):
  """Spatial attention, temporal attention and MLP, each with adaLN-zero gates. h: [B, T, P, D].

  `rank` puts LoRA on the attention projections, `adaln_rank` on the adaLN modulation layer.
  """
  heads: int
  mlp_ratio: int = 2
  rank: int = 0
  alpha: float = 0.0
  adaln_rank: int = 0

  @nn.compact
  def __call__(self, h, c):
    d = h.shape[-1]
    mod = LoRADense(9 * d, self.adaln_rank, self.alpha, kernel_init=nn.initializers.zeros,
                    name="adaln")(nn.silu(c))
    mod = jnp.split(mod[:, None, None, :], 9, axis=-1)
    attn = lambda name: Attention(self.heads, self.rank, self.alpha, name=name)
    grid = math.isqrt(h.shape[2])
    rows, cols = jnp.divmod(jnp.arange(grid * grid), grid)
    h = h + mod[2] * attn("space_attn")(_modulate(h, mod[0], mod[1]), jnp.stack([rows, cols], -1))
    ht = jnp.swapaxes(_modulate(h, mod[3], mod[4]), 1, 2)          # [B, P, T, D]
    h = h + mod[5] * jnp.swapaxes(attn("time_attn")(ht, jnp.arange(h.shape[1])[:, None]), 1, 2)
    y = nn.Dense(self.mlp_ratio * d, name="mlp_in")(_modulate(h, mod[6], mod[7]))
    return h + mod[8] * nn.Dense(d, name="mlp_out")(nn.gelu(y))


class TimestepEmbed(nn.Module):
  """Sinusoidal features of t = 1000 s followed by a two-layer MLP: [B] -> [B, D]."""
  width: int

  @nn.compact
  def __call__(self, t):
    half = self.width // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half) / half)
    args = t[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    return nn.Dense(self.width)(nn.silu(nn.Dense(self.width)(emb)))


class FinalLayer(nn.Module):
  """norm_out (adaLN) + proj_out: [B, T, P, D] -> [B, T, P, p*p*C], zero-initialised output."""
  out: int

  @nn.compact
  def __call__(self, h, c):
    mod = nn.Dense(2 * h.shape[-1], kernel_init=nn.initializers.zeros)(nn.silu(c))
    shift, scale = jnp.split(mod[:, None, None], 2, axis=-1)
    return nn.Dense(self.out, kernel_init=nn.initializers.zeros, name="proj_out")(
        _modulate(h, shift, scale))


class VideoDiT(nn.Module):
  """v_theta(x_s, s): [B, T, H, W, C], [B] -> [B, T, H, W, C] (flow velocity eps - x0)."""
  frames: int
  size: int
  channels: int = 1
  patch: int = 2
  width: int = 48
  depth: int = 4
  heads: int = 4
  mlp_ratio: int = 2
  lora_rank: int = 0
  lora_alpha: float = 0.0
  lora_adaln: bool = False
  feature_stride: int = 2
  num_train_timesteps: int = 1000

  def setup(self):
    n_patch = (self.size // self.patch) ** 2
    self.patch_embed = nn.Dense(self.width)
    # Unit scale, like the patch embeddings of noise (at 0.02 the teacher barely used them).
    self.pos_space = self.param("pos_space", nn.initializers.normal(1.0), (n_patch, self.width))
    self.pos_time = self.param("pos_time", nn.initializers.normal(1.0), (self.frames, self.width))
    self.time_embed = TimestepEmbed(self.width)
    self.blocks = [Block(self.heads, self.mlp_ratio, self.lora_rank, self.lora_alpha,
                         self.lora_rank if self.lora_adaln else 0) for _ in range(self.depth)]
    self.final = FinalLayer(self.patch * self.patch * self.channels)

  def _patchify(self, x):
    b, t, hh, ww, c = x.shape
    g, p = hh // self.patch, self.patch
    x = x.reshape(b, t, g, p, ww // p, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, g * (ww // p), p * p * c)

  def _unpatchify(self, y):
    b, t = y.shape[:2]
    g, p = self.size // self.patch, self.patch
    y = y.reshape(b, t, g, g, p, p, self.channels).transpose(0, 1, 2, 4, 3, 5, 6)
    return y.reshape(b, t, self.size, self.size, self.channels)

  def _cond(self, s):
    return self.time_embed(self.num_train_timesteps * s)

  def __call__(self, x, s, return_features: bool = False):
    """Returns v, or (v, taps): the [B, T, P, D] states after every `feature_stride`-th block."""
    c = self._cond(s)
    h = self.patch_embed(self._patchify(x))
    h = h + self.pos_space[None, None] + self.pos_time[None, :, None]
    taps = []
    for i, block in enumerate(self.blocks):
      h = block(h, c)
      if i % self.feature_stride == self.feature_stride - 1:
        taps.append(h)
    v = self._unpatchify(self.final(h, c))
    return (v, taps) if return_features else v

  def decode(self, h, s):
    """A [B, T, P, D] hidden state through norm_out + proj_out to video shape (DCM's FM loss)."""
    return self._unpatchify(self.final(h, self._cond(s)))
