"""EAQuant (2): router logit alignment, the router's clip ratio searched against the float
routing.

Legend: T tokens, D model width, E experts, K experts per token, R clip ratios.

The router is quantized W8A8 (EAQuant's code): its kernel W [D, E] per expert column at `bits`
with the range clipped to rho * max|W[:, e]|, its input per token (moe_jax/quant/activation.py).
rho is searched over a grid (0.35 to 1, 101 values in the code, quantize/quantizer.py::
cali_kld_top_batch) to minimise, on calibration tokens,
  KL_top = mean_t sum_{e in TopK(z_fp,t)} p_e (log p_e - log q_e),
  p = softmax(z_fp), q = softmax(z_q),  z_fp = y_fp W,  z_q = Q_a(y_q) Q_rho(W),
plus mse_weight * mean (z_fp - z_q)^2 (the code's `mse_linear`), where y_fp is what the float
model's router reads and y_q what the quantized model's (its upstream errors included). rho = 1 is
min-max quantization, the baseline's router.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.quant import core

_HIGHEST = jax.lax.Precision.HIGHEST


def ratios(low: float, num: int) -> np.ndarray:
  """The grid of clip ratios [R] from 1 down to low (a tie keeps the least clipping)."""
  return np.linspace(1.0, low, num)


def fake_quant_router(w: jax.Array, bits: int, ratio) -> jax.Array:
  """W [D, E] fake-quantized per expert column, symmetric, range clipped by `ratio`."""
  wt = w.T.astype(jnp.float32)
  scale, zero = core.params(wt, bits, True, ratio=ratio)
  return core.dequantize_values(core.quantize_values(wt, scale, zero, bits), scale, zero).T


def topk_kl(z_fp: jax.Array, z_q: jax.Array, k: int) -> jax.Array:
  """KL_top (module docstring), mean over tokens."""
  logp, logq = jax.nn.log_softmax(z_fp, -1), jax.nn.log_softmax(z_q, -1)
  _, top = jax.lax.top_k(z_fp, k)
  pick = lambda a: jnp.take_along_axis(a, top, axis=-1)
  return jnp.mean(jnp.sum(jnp.exp(pick(logp)) * (pick(logp) - pick(logq)), -1))


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def search(y_fp, y_q, w, k: int, bits: int, act: core.ActSpec, grid, mse_weight=0.0):
  """(best ratio, loss [R]) over `grid` [R] (module docstring)."""
  z_fp = jnp.dot(y_fp, w, precision=_HIGHEST)
  x_q = core.fake_quant_activations(y_q.astype(jnp.float32), act)

  def loss(ratio):
    z_q = jnp.dot(x_q, fake_quant_router(w, bits, ratio), precision=_HIGHEST)
    return topk_kl(z_fp, z_q, k) + mse_weight * jnp.mean((z_fp - z_q) ** 2)

  losses = jax.lax.map(loss, grid)
  return grid[jnp.argmin(losses)], losses


def topk_agreement(z_a: jax.Array, z_b: jax.Array, k: int) -> jax.Array:
  """Fraction of tokens whose top-k expert sets of logits z_a and z_b [T, E] are equal."""
  a = jnp.sort(jax.lax.top_k(z_a, k)[1], -1)
  b = jnp.sort(jax.lax.top_k(z_b, k)[1], -1)
  return jnp.mean(jnp.all(a == b, -1))
