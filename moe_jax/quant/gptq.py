"""GPTQ (Frantar et al. 2022, arXiv 2210.17323): quantize column by column, spreading each column's
rounding error over the columns not yet quantized.

Legend: E experts (or any leading axes), O output rows, I input width (columns), G = I / g groups
of g columns, B columns per block.

For W [O, I] and H [I, I] (`moe_jax.quant.hessian`), U the upper Cholesky factor of H^-1
(H^-1 = U^T U), and columns i = 0 .. I-1 in sweep order:

  q_i = Q(w_i),   e_i = (w_i - q_i) / U_ii,   w_j <- w_j - e_i U_ij  for every j > i,

which greedily lowers tr((W - W_hat) H (W - W_hat)^T). As in the reference code (IST-DASLab's
gptq.py, MoEQuant's `fasterquant`):
- dead columns (H_ii = 0: no input ever reached them): H_ii = 1 and W[:, i] = 0;
- dampening H += damp * mean(diag H) * I, after the dead-column fix (damp = 0.01);
- lazy batch updates: inside a block of B columns (128) the update reaches the block only, the
  columns after it get E_block U[block, after] once per block; B changes speed, not the result;
- per-channel scales (group_size None) come from each whole row before the sweep; group scales
  and zeros from the *updated* weights when the sweep reaches the group's first column. (The
  reference code reads a group that starts inside a block, g < B, from weights that lack that
  block's updates so far; here the group is always read up to date, so a plain column-by-column
  loop gives the same result.)
- act_order: columns swept by descending diag H, the result put back in the original order.
  With groups, the group parameters are then *static* (MoEQuant's `static_groups`): computed from
  the dead-zeroed W before the sweep, one per original group of g consecutive columns, so the
  layout stays what compressed-tensors stores (no column index g_idx);
- `spec.mse_clip` searches each row's or group's clip ratio on the weights it is computed from.

One jitted computation: fori_loops over blocks and over the columns of a block, vmapped over the
leading (expert) axes. An expert that received no calibration token has H = 0: all its columns
are dead and it comes back all zero, as in the reference code; quantize it with RTN instead
(`moe_jax.quant.core.quantize`), e.g. `jnp.where(count[:, None, None] > 0, q_gptq, q_rtn)`.

The suite's expert kernels are input-first: wi_gate/wi_up [E, D, F] and wo [E, F, D]. GPTQ's W is
the kernel transposed, `kernel.swapaxes(-1, -2)` ([E, F, D] and [E, D, F]), with H over the
kernel's input ([E, D, D] for wi_*, [E, F, F] for wo); `gptq_kernel` does that and returns the
fake-quantized kernel in its own layout.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from moe_jax.quant import core
from moe_jax.utils.errors import require

_HIGHEST = jax.lax.Precision.HIGHEST


def _block_layout(width: int, group_size: int | None, block_size: int, dynamic: bool):
  """(B, padded I): blocks of equal width B covering I; with groups recomputed in the sweep, B is
  a multiple of g (g <= block_size) or divides g, so that no group starts mid-block outside it."""
  if dynamic and group_size > block_size:
    return max(d for d in range(1, block_size + 1) if group_size % d == 0), width
  unit = group_size if dynamic else 1
  units = width // unit
  blocks = -(-units // max(1, block_size // unit))
  block = -(-units // blocks) * unit
  return block, blocks * block


def _inverse_cholesky_upper(h: jax.Array) -> jax.Array:
  """U upper triangular with H^-1 = U^T U."""
  eye = jnp.eye(h.shape[-1], dtype=h.dtype)
  h_inv = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(h), True), eye)
  return jnp.triu(jnp.linalg.cholesky(h_inv, upper=True))


def _gptq_matrix(w, h, spec: core.QuantSpec, damp: float, block_size: int, act_order: bool):
  """One matrix: w [O, I], h [I, I] -> (q int8 [O, I], scale [O, G], zero int8 [O, G])."""
  out, width = w.shape
  dynamic = spec.group_size is not None and not act_order
  g = spec.group_size or width
  dead = jnp.diagonal(h) == 0
  h = h + jnp.diag(dead.astype(h.dtype))
  w = jnp.where(dead, 0, w)
  if not dynamic:  # per-channel, or act-order's static groups: from the weights before the sweep
    scale, zero = core.search_params(w.reshape(out, width // g, g), spec)
    scale, zero = scale[..., 0], zero[..., 0]
  order = jnp.arange(width)
  if act_order:
    order = jnp.argsort(-jnp.diagonal(h))
    w, h = w[:, order], h[order][:, order]
  h = h + damp * jnp.mean(jnp.diagonal(h)) * jnp.eye(width, dtype=h.dtype)
  # Padding columns: zero weights and an identity block of H (decoupled, swept last), dropped at
  # the end; with groups computed in the sweep they form groups of their own.
  block, padded = _block_layout(width, spec.group_size, block_size, dynamic)
  w = jnp.pad(w, ((0, 0), (0, padded - width)))
  h = jnp.pad(h, (0, padded - width)) + jnp.diag(jnp.arange(padded) >= width).astype(h.dtype)
  u = _inverse_cholesky_upper(h)
  if dynamic:
    group_of = jnp.arange(padded) // g  # sweep column -> its group
    scale = jnp.ones((out, padded // g), w.dtype)
    zero = jnp.zeros((out, padded // g), w.dtype)
  else:
    # The original column's group; padding columns (always zero) read group 0.
    group_of = jnp.pad(order // g, (0, padded - width))

  def column(i, carry, start, u1, w_start):
    w1, err1, q1, scale, zero = carry
    j = start + i
    if dynamic:
      def new_group(tables):
        src = (jax.lax.dynamic_slice_in_dim(w1, i, g, 1) if g <= block
               else jax.lax.dynamic_slice_in_dim(w_start, start, g, 1))
        new = core.search_params(src, spec)  # [O, 1] each
        return tuple(jax.lax.dynamic_update_slice_in_dim(t, v, j // g, 1)
                     for t, v in zip(tables, new))
      scale, zero = jax.lax.cond(j % g == 0, new_group, lambda tables: tables, (scale, zero))
    s = jax.lax.dynamic_index_in_dim(scale, group_of[j], 1, keepdims=False)
    z = jax.lax.dynamic_index_in_dim(zero, group_of[j], 1, keepdims=False)
    wi = jax.lax.dynamic_index_in_dim(w1, i, 1, keepdims=False)
    qi = core.quantize_values(wi, s, z, spec.bits)
    ui = jax.lax.dynamic_index_in_dim(u1, i, 0, keepdims=False)
    ei = (wi - core.dequantize_values(qi, s, z)) / ui[i]
    w1 = w1 - ei[:, None] * ui[None, :]  # ui is zero before column i
    err1 = jax.lax.dynamic_update_index_in_dim(err1, ei, i, 1)
    q1 = jax.lax.dynamic_update_index_in_dim(q1, qi, i, 1)
    return w1, err1, q1, scale, zero

  def sweep_block(b, carry):
    w, q, scale, zero = carry
    start = b * block
    w1 = jax.lax.dynamic_slice_in_dim(w, start, block, 1)
    u_rows = jax.lax.dynamic_slice_in_dim(u, start, block, 0)  # [B, padded I]
    u1 = jax.lax.dynamic_slice_in_dim(u_rows, start, block, 1)
    step = functools.partial(column, start=start, u1=u1, w_start=w)
    init = (w1, jnp.zeros_like(w1), jnp.zeros(w1.shape, jnp.int8), scale, zero)
    _, err1, q1, scale, zero = jax.lax.fori_loop(0, block, step, init)
    later = jnp.arange(padded) >= start + block
    w = w - jnp.where(later, jnp.matmul(err1, u_rows, precision=_HIGHEST), 0)
    return w, jax.lax.dynamic_update_slice_in_dim(q, q1, start, 1), scale, zero

  q = jnp.zeros((out, padded), jnp.int8)
  _, q, scale, zero = jax.lax.fori_loop(0, padded // block, sweep_block, (w, q, scale, zero))
  q = q[:, :width]
  if act_order:
    q = q[:, jnp.argsort(order)]
  groups = width // g
  return q, scale[:, :groups], zero[:, :groups].astype(jnp.int8)


@functools.partial(jax.jit, static_argnames=("spec", "damp", "block_size", "act_order"))
def gptq(w: jax.Array, h: jax.Array, spec: core.QuantSpec, damp: float = 0.01,
         block_size: int = 128, act_order: bool = False):
  """GPTQ of w [..., O, I] with Hessians h [..., I, I] (one per matrix; leading axes = experts).

  Returns (q int8 [..., O, I], scale [..., O, G], zero int8 [..., O, G]) as `core.quantize` does;
  `core.dequantize(q, scale, zero)` gives the fake-quantized weights. Computes in float32 (float64
  for float64 inputs under x64).
  """
  *lead, out, width = w.shape
  require(h.shape == (*lead, width, width), "h", f"shape {h.shape} does not match w {w.shape}",
          f"pass one [{width}, {width}] Hessian of the inputs per matrix")
  spec.num_groups(width)
  require(block_size > 0, "block_size", f"must be > 0, got {block_size}", "use e.g. 128")
  require(damp >= 0, "damp", f"must be >= 0, got {damp}", "use e.g. 0.01")
  dtype = jnp.promote_types(w.dtype, jnp.float32)
  one = functools.partial(_gptq_matrix, spec=spec, damp=damp, block_size=block_size,
                          act_order=act_order)
  q, scale, zero = jax.vmap(one)(w.reshape(-1, out, width).astype(dtype),
                                 h.reshape(-1, width, width).astype(dtype))
  unflat = lambda a: a.reshape(*lead, *a.shape[1:])
  return unflat(q), unflat(scale), unflat(zero)


def gptq_kernel(kernel: jax.Array, h: jax.Array, spec: core.QuantSpec, **options) -> jax.Array:
  """The fake-quantized input-first kernel [..., I, O] (e.g. wi_up [E, D, F] with h [E, D, D]),
  in its dtype; `options` as `gptq` takes them."""
  q, scale, zero = gptq(kernel.swapaxes(-1, -2), h, spec, **options)
  return core.dequantize(q, scale, zero).swapaxes(-1, -2).astype(kernel.dtype)


def reconstruction_error(w: jax.Array, w_hat: jax.Array, h: jax.Array) -> jax.Array:
  """tr((W - W_hat) H (W - W_hat)^T) per matrix: w, w_hat [..., O, I], h [..., I, I] -> [...]."""
  d = jnp.asarray(w) - jnp.asarray(w_hat)
  d = d.astype(jnp.promote_types(d.dtype, jnp.float32))
  return jnp.einsum("...oi,...ij,...oj->...", d, jnp.asarray(h, d.dtype), d, precision=_HIGHEST)
