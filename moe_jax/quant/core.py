"""Integer quantizers for weights and activations: round to nearest on a uniform grid.

Legend: O output channels (rows of W), I input width (columns), G = I / g groups of g columns,
E experts (any leading axes), b bits.

A b-bit value is a signed integer q in [qmin, qmax] = [-2^(b-1), 2^(b-1) - 1] with a scale s and
an integer zero point z per output row (per channel) or per row and group of g columns:

  q = clip(round(w / s) + z, qmin, qmax),   w_hat = s * (q - z).

Symmetric (z = 0): s = absmax / (2^(b-1) - 0.5), e.g. absmax / 7.5 at 4 bits, so that
[-absmax, absmax] spans the 2^b buckets. Asymmetric: with lo = min(w, 0), hi = max(w, 0),
s = (hi - lo) / (2^b - 1) and z = round(qmin - lo / s). Both are compressed-tensors' conventions
(the "pack-quantized" checkpoints that llm-compressor writes and transformers and vLLM read); a
scale of 0 (an all-zero row or group) becomes the dtype's eps. Rounding is half to even. Every
division is written as a product with a reciprocal (1 / 7.5 in s, 1 / s in q), so q is the same
bits in any context (XLA turns a division by a broadcast scale into that product anyway); it can
differ from a quantizer that divides only where w / s is within float rounding of a tie, as
w = -absmax (at -(qmax + 0.5)) is by construction: -8 or -7 at 4 bits, half a step either way.

MSE clip search (GPTQ's and MoEQuant's `--w_clip`): the range is shrunk by ratios
p = 1 - k / grid, k = 0 .. max_shrink * grid - 1, and each row or group keeps the p whose
sum |w_hat - w|^norm is lowest (grid 100, max shrink 0.8, norm 2.4 by default, as there).

Weights are [..., O, I] (PyTorch's layout; the suite's kernels [E, D, F] / [E, F, D] are
[..., I, O]: pass `kernel.swapaxes(-1, -2)`); every function here is jittable and works on any
leading axes (or under vmap). Activations [..., I] are quantized per token (one scale per row)
or per tensor, for WxAy settings.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.utils.errors import check_choice, require

GRANULARITIES = ("token", "tensor")


@dataclasses.dataclass(frozen=True)
class QuantSpec:
  """How to quantize a weight matrix [..., O, I].

  bits: 2 to 8. group_size: g columns per scale, or None for one scale per output row.
  symmetric: z = 0 (the default; what transformers loads for MoE experts) or a zero point.
  mse_clip: search the clip ratio per row/group; clip_grid, clip_max_shrink, clip_norm as above.
  """
  bits: int = 4
  group_size: int | None = None
  symmetric: bool = True
  mse_clip: bool = False
  clip_grid: int = 100
  clip_max_shrink: float = 0.8
  clip_norm: float = 2.4

  def __post_init__(self):
    require(isinstance(self.bits, int) and 2 <= self.bits <= 8, "bits",
            f"must be an int from 2 to 8, got {self.bits!r}", "use e.g. bits=4")
    require(self.group_size is None or (isinstance(self.group_size, int) and self.group_size > 0),
            "group_size", f"must be a positive int or None, got {self.group_size!r}",
            "use e.g. 128, or None for one scale per output channel")
    require(isinstance(self.clip_grid, int) and self.clip_grid > 0, "clip_grid",
            f"must be a positive int, got {self.clip_grid!r}", "use e.g. 100")
    require(0 < self.clip_max_shrink < 1 and int(self.clip_max_shrink * self.clip_grid) >= 1,
            "clip_max_shrink", f"must be in (0, 1) and leave one ratio on a grid of "
            f"{self.clip_grid}, got {self.clip_max_shrink!r}", "use e.g. 0.8")
    require(self.clip_norm > 0, "clip_norm", f"must be > 0, got {self.clip_norm!r}",
            "use e.g. 2.4 (GPTQ) or 2.0 (squared error)")

  def num_groups(self, width: int) -> int:
    """G for an input width I; refuses a group size that does not divide I."""
    if self.group_size is None:
      return 1
    require(width % self.group_size == 0, "group_size",
            f"{self.group_size} does not divide the input width {width}",
            f"use a divisor of {width}, or None for per-channel scales")
    return width // self.group_size


@dataclasses.dataclass(frozen=True)
class ActSpec:
  """How to fake-quantize activations [..., I]: `granularity` "token" (one scale per row) or
  "tensor"; the range (absmax, or min/max) is multiplied by `clip_ratio` in (0, 1]."""
  bits: int = 8
  granularity: str = "token"
  symmetric: bool = True
  clip_ratio: float = 1.0

  def __post_init__(self):
    require(isinstance(self.bits, int) and 2 <= self.bits <= 8, "bits",
            f"must be an int from 2 to 8, got {self.bits!r}", "use e.g. bits=8")
    check_choice("granularity", self.granularity, GRANULARITIES)
    require(0 < self.clip_ratio <= 1, "clip_ratio", f"must be in (0, 1], got {self.clip_ratio!r}",
            "use 1.0 for no clipping, e.g. 0.9 to clip")


def qrange(bits: int) -> tuple[int, int]:
  """(qmin, qmax) of a signed b-bit integer."""
  return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def params(x: jax.Array, bits: int, symmetric: bool, axis=-1, ratio=1.0):
  """(scale, zero) over `axis` (kept as size 1) of x, the range multiplied by `ratio`.

  zero is float (an integer value) here; `quantize` returns it as int8. The scale leaves through
  an optimization barrier, so that XLA cannot fold its formula into what divides by it.
  """
  qmin, qmax = qrange(bits)
  if symmetric:
    scale = jnp.max(jnp.abs(x), axis=axis, keepdims=True) * ratio * (1 / (qmax + 0.5))
  else:
    lo = jnp.minimum(jnp.min(x, axis=axis, keepdims=True), 0) * ratio
    hi = jnp.maximum(jnp.max(x, axis=axis, keepdims=True), 0) * ratio
    scale = (hi - lo) * (1 / (qmax - qmin))
  scale = jax.lax.optimization_barrier(jnp.where(scale == 0, jnp.finfo(x.dtype).eps, scale))
  if symmetric:
    return scale, jnp.zeros_like(scale)
  return scale, jnp.clip(jnp.round(qmin - lo * (1 / scale)), qmin, qmax)


def quantize_values(x: jax.Array, scale, zero, bits: int) -> jax.Array:
  """Elementwise q = clip(round(x * (1 / s)) + z, qmin, qmax) as int8 (scale, zero broadcast).

  x times the reciprocal, as XLA computes a division by a broadcast scale anyway: written out, q
  is the same bits whatever the shapes and the surrounding computation.
  """
  qmin, qmax = qrange(bits)
  return jnp.clip(jnp.round(x * (1 / scale)) + zero, qmin, qmax).astype(jnp.int8)


def dequantize_values(q: jax.Array, scale, zero) -> jax.Array:
  """Elementwise s * (q - z), in the scale's dtype."""
  return scale * (q.astype(scale.dtype) - zero)


def search_params(x: jax.Array, spec: QuantSpec):
  """(scale, zero) over the last axis of x [..., g]: absmax / min-max, or the MSE clip search."""
  scale, zero = params(x, spec.bits, spec.symmetric)
  if not spec.mse_clip:
    return scale, zero

  def error(s, z):
    x_hat = dequantize_values(quantize_values(x, s, z, spec.bits), s, z)
    return jnp.sum(jnp.abs(x_hat - x) ** spec.clip_norm, axis=-1, keepdims=True)

  steps = int(spec.clip_max_shrink * spec.clip_grid)
  ratios = jnp.asarray(1 - np.arange(steps) / spec.clip_grid, x.dtype)

  def step(k, best):
    err, s, z = best
    s_k, z_k = params(x, spec.bits, spec.symmetric, ratio=ratios[k])
    err_k = error(s_k, z_k)
    better = err_k < err
    return jnp.where(better, err_k, err), jnp.where(better, s_k, s), jnp.where(better, z_k, z)

  _, scale, zero = jax.lax.fori_loop(1, steps, step, (error(scale, zero), scale, zero))
  return scale, zero


def _grouped(w: jax.Array, spec: QuantSpec) -> jax.Array:
  """[..., O, I] -> [..., O, G, g]."""
  groups = spec.num_groups(w.shape[-1])
  return w.reshape(*w.shape[:-1], groups, w.shape[-1] // groups)


def quantize(w: jax.Array, spec: QuantSpec):
  """RTN of w [..., O, I] -> (q int8 [..., O, I], scale [..., O, G] float, zero int8 [..., O, G]).

  The scale is float32 (float64 under x64 for float64 w); cast it to the model dtype for export.
  """
  wg = _grouped(w.astype(jnp.promote_types(w.dtype, jnp.float32)), spec)
  scale, zero = search_params(wg, spec)
  q = quantize_values(wg, scale, zero, spec.bits).reshape(w.shape)
  return q, scale[..., 0], zero[..., 0].astype(jnp.int8)


def dequantize(q: jax.Array, scale: jax.Array, zero: jax.Array) -> jax.Array:
  """w_hat [..., O, I] from q [..., O, I] and scale, zero [..., O, G] (G divides I)."""
  groups = scale.shape[-1]
  qg = q.reshape(*q.shape[:-1], groups, q.shape[-1] // groups)
  zero = zero[..., None].astype(scale.dtype)
  return dequantize_values(qg, scale[..., None], zero).reshape(q.shape)


def fake_quant(w: jax.Array, spec: QuantSpec) -> jax.Array:
  """dequantize(quantize(w)) in w's dtype: the RTN-quantized weights a float model runs with."""
  return dequantize(*quantize(w, spec)).astype(w.dtype)


def fake_quant_activations(x: jax.Array, spec: ActSpec) -> jax.Array:
  """x [..., I] quantized and dequantized per token (each row over I) or per tensor, x's dtype."""
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  axis = -1 if spec.granularity == "token" else None
  scale, zero = params(xf, spec.bits, spec.symmetric, axis=axis, ratio=spec.clip_ratio)
  return dequantize_values(quantize_values(xf, scale, zero, spec.bits), scale, zero).astype(x.dtype)
