"""Grouped matrix multiplication for dropless MoE dispatch.

Legend: M rows (token-expert assignments sorted by expert), K input width, N output width,
G groups (experts), T rows of a token array read by `gather` or written by `scatter`.

  grouped_matmul(lhs[M, K], rhs[G, K, N], group_sizes[G]) -> out[M, N]
  out[r] = lhs[r] @ rhs[g(r)],  g(r) the group whose contiguous row range holds r.

Rows past sum(group_sizes) give zeros. Two optional index maps fold the MoE dispatch's row
movement into the matmul, so that no [M, K] or [M, N] copy of the token rows is ever built:
  gather=idx[M]:               out[r] = lhs[idx[r]] @ rhs[g(r)]           (lhs is [T, K]);
  scatter=(idx[M], w[M], T):   y[t] = sum_{r: idx[r] = t} w[r] lhs[r] @ rhs[g(r)]   (y is [T, N]).
A tuple rhs (a gated FFN's gate and up) is multiplied in one pass, its matrices side by side.
`grouped_ffn` runs a whole expert FFN (gather, input matmuls, activation, output matmul,
weighted scatter-add) in one tile loop, so not even the [M, N] hidden rows are written.
Two implementations:
  "ragged_dot": `jax.lax.ragged_dot`, a native grouped matmul on TPU (and GPU); on CPU it runs
      about 10x below dense matmul speed (measured in benchmarks/moe_layer.py). Gather and
      scatter are separate ops around it.
  "tiled": dense matmuls, which the CPU runs at its dense rate, in a loop over groups (each
      group's matrix is sliced once) and, inside, over the group's full `tile`-row tiles, then
      its remainder in `min_tile`-row tiles (the last one runs past the group's end; at most
      min_tile - 1 wasted rows per group). A tile reads its rows by slice or by `gather` index
      and writes only the rows of its own group: by slice, or weighted and added at their
      `scatter` index. On a CPU, building a [M, K] copy of the token rows takes about half the
      time of the matmul that reads it (benchmarks/README.md), hence the folding. Gradients
      come from custom VJPs running the same loops.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from moe_jax.utils.errors import check_choice

IMPLS = ("ragged_dot", "tiled")
# Rows per tile of the "tiled" loops (benchmarks/README.md, 2 CPU cores): grouped_matmul's, and
# so every gradient's, and the larger tiles of grouped_ffn's one-pass forward.
TILE, MIN_TILE, FFN_TILE = 128, 32, 256


def default_impl() -> str:
  """The measured-fastest implementation on the default backend (see benchmarks/moe_layer.py)."""
  return "tiled" if jax.default_backend() == "cpu" else "ragged_dot"


def grouped_matmul(lhs: jax.Array, rhs, group_sizes: jax.Array,
                   impl: str = "auto", tile: int = TILE, min_tile: int = MIN_TILE, *,
                   gather: jax.Array | None = None,
                   scatter: tuple[jax.Array, jax.Array, int] | None = None):
  """Multiplies each contiguous row group of `lhs` by its own matrix in `rhs`.

  Args:
    lhs: [M, K] rows sorted by group; with `gather`, [T, K] rows in any order.
    rhs: [G, K, N] one matrix per group; or a tuple of such [G, K, N_i], all multiplied by the
      same rows (a gated FFN's gate and up matrices): one pass over the rows, each group's
      matrices side by side, and a tuple of products back.
    group_sizes: [G] int32 number of rows in each group, sum <= M.
    impl: "ragged_dot", "tiled" or "auto" (per backend).
    tile, min_tile: rows per matmul of the "tiled" implementation for a group's full tiles and
      for its remainder (measured on a 2-core CPU at the benchmark shapes).
    gather: optional [M] int32: product row r reads lhs[gather[r]].
    scatter: optional (idx[M] int32, weights[M], T): instead of the product rows, returns
      y[T, N] with y[idx[r]] += weights[r] * (product row r). Not together with `gather`, nor
      with a tuple `rhs`.

  Returns:
    [M, N] in lhs.dtype ([T, N] with `scatter`); a tuple of [M, N_i] for a tuple `rhs`.
  """
  if impl == "auto":
    impl = default_impl()
  check_choice("gmm_impl", impl, IMPLS + ("auto",))
  if gather is not None and scatter is not None:
    raise ValueError("grouped_matmul takes `gather` or `scatter`, not both")
  if isinstance(rhs, tuple) and scatter is not None:
    raise ValueError("grouped_matmul takes a tuple `rhs` without `scatter`")
  group_sizes = group_sizes.astype(jnp.int32)
  if impl == "ragged_dot":
    rows = lhs if gather is None else lhs[gather]
    if isinstance(rhs, tuple):
      return tuple(jax.lax.ragged_dot(rows, r, group_sizes) for r in rhs)
    out = jax.lax.ragged_dot(rows, rhs, group_sizes)
    if scatter is None:
      return out
    idx, weights, num_rows = scatter
    out = out.astype(jnp.float32) * weights.astype(jnp.float32)[:, None]
    return jnp.zeros((num_rows, out.shape[1]), jnp.float32).at[idx].add(out).astype(lhs.dtype)
  _check_tiles(min_tile, tile)
  if scatter is not None:
    idx, weights, num_rows = scatter
    return _gmm_scatter(lhs, rhs, weights, group_sizes, idx, tile, min_tile, num_rows)
  if not isinstance(rhs, tuple):
    return _gmm(lhs, (rhs,), group_sizes, gather, tile, min_tile)
  return _split(_gmm(lhs, rhs, group_sizes, gather, tile, min_tile), rhs)


def _check_tiles(min_tile, *tiles):
  for tile in tiles:
    if not 1 <= min_tile <= tile:
      raise ValueError(f"tile sizes must satisfy 1 <= min_tile <= tile, got {min_tile}, {tile}")


def _split(a, rhs):
  """The columns of a[..., sum N_i] as a tuple of [..., N_i], N_i the widths of the tuple rhs."""
  ends = [sum(r.shape[2] for r in rhs[:i + 1]) for i in range(len(rhs))]
  return tuple(a[:, e - r.shape[2]:e] for e, r in zip(ends, rhs))


def grouped_ffn(x: jax.Array, w_in: tuple, w_out: jax.Array, group_sizes: jax.Array, hidden,
                *, token: jax.Array, weights: jax.Array, impl: str = "auto", tile: int = FFN_TILE,
                min_tile: int = MIN_TILE, grad_tile: int = TILE) -> tuple[jax.Array, jax.Array]:
  """A feed-forward network per group, over rows read from and added back into a token array.

    h_r = hidden((x[token[r]] @ W_in_i[g(r)] for each i)),  y[t] = sum_{r: token[r] = t}
    weights[r] h_r @ W_out[g(r)],  zero_frac[r] = fraction of exact zeros in h_r.

  Args:
    x: [T, K] token rows; token: [M] int32, each sorted row's token; weights: [M].
    w_in: tuple of [G, K, N_i] (a gated FFN's gate and up); w_out: [G, F, K].
    hidden: maps the tuple of products ([rows, N_i] each) to h [rows, F].
    group_sizes, impl, min_tile: as `grouped_matmul`.
    tile: rows per full tile of the one-pass forward ("tiled").
    grad_tile: rows per full tile of the unfused composition that gives the gradient.

  Returns:
    (y [T, K] in x.dtype, zero_frac [M] float32; not defined past sum(group_sizes)).

  "tiled" runs it in one pass: per tile the rows are gathered, both matmuls and `hidden` run and
  the weighted outputs are added into y, so no [M, N] array is ever written. Its gradient is
  the unfused composition's (grouped_matmul with `gather`, hidden, grouped_matmul with
  `scatter`), which keeps the products a backward pass needs; "ragged_dot" runs that
  composition.
  """
  if impl == "auto":
    impl = default_impl()
  check_choice("gmm_impl", impl, IMPLS + ("auto",))
  group_sizes = group_sizes.astype(jnp.int32)
  args = (x, tuple(w_in), w_out, weights, group_sizes, token)
  if impl == "ragged_dot":
    return _ffn_unfused(*args, hidden, impl, tile, min_tile)
  _check_tiles(min_tile, tile, grad_tile)
  return _ffn(*args, hidden, tile, min_tile, grad_tile)


def _ffn_unfused(x, w_in, w_out, weights, group_sizes, token, hidden, impl, tile, min_tile):
  gmm = functools.partial(grouped_matmul, group_sizes=group_sizes, impl=impl, tile=tile,
                          min_tile=min_tile)
  h = hidden(gmm(x, w_in, gather=token))
  y = gmm(h, w_out, scatter=(token, weights, x.shape[0]))
  return y.astype(x.dtype), jnp.mean((h == 0).astype(jnp.float32), axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def _ffn(x, w_in, w_out, weights, group_sizes, token, hidden, tile, min_tile, grad_tile):
  """grouped_ffn in one tiled pass."""
  m = token.shape[0]
  y, zero_frac = jnp.zeros(x.shape, jnp.float32), jnp.zeros((m,), jnp.float32)
  if m == 0:
    return y.astype(x.dtype), zero_frac
  for_each_tile = _tiles(group_sizes, m, tile, min_tile)

  def group(g, carry):
    w, w_o = _group_matrix(w_in, g), jax.lax.dynamic_index_in_dim(w_out, g, keepdims=False)

    def step(carry, s, size, mine):
      y, zero_frac = carry
      products = jnp.dot(_rows(x, token, s, size), w, preferred_element_type=jnp.float32)
      h = hidden(_split(products.astype(x.dtype), w_in))
      out = jnp.dot(h, w_o, preferred_element_type=jnp.float32)
      out = out * _rows(weights, None, s, size).astype(jnp.float32)[:, None]
      zeros = jnp.mean((h == 0).astype(jnp.float32), axis=-1)
      if mine is not None:
        out = jnp.where(mine[:, None], out, 0)
        zeros = jnp.where(mine, zeros, _rows(zero_frac, None, s, size))
      return (y.at[_rows(token, None, s, size)].add(out, mode="drop"),
              jax.lax.dynamic_update_slice_in_dim(zero_frac, zeros, s, 0))

    return for_each_tile(g, step, carry)

  y, zero_frac = jax.lax.fori_loop(0, group_sizes.shape[0], group, (y, zero_frac))
  return y.astype(x.dtype), zero_frac


def _ffn_fwd(x, w_in, w_out, weights, group_sizes, token, hidden, tile, min_tile, grad_tile):
  del tile
  unfused = lambda *a: _ffn_unfused(*a, group_sizes, token, hidden, "tiled", grad_tile, min_tile)
  out, vjp = jax.vjp(unfused, x, w_in, w_out, weights)
  return out, vjp


def _ffn_bwd(hidden, tile, min_tile, grad_tile, vjp, d_out):
  del hidden, tile, min_tile, grad_tile
  return (*vjp(d_out), None, None)


_ffn.defvjp(_ffn_fwd, _ffn_bwd)


def _tiles(group_sizes, m, tile, min_tile):
  """for_each(g, step, carry): runs carry = step(carry, s, size, mine) over group g's tiles.

  First the group's floor(size_g / tile) full `tile`-row tiles, then its remainder in
  `min_tile`-row tiles, the last one running past the group's end. A tile covers rows
  [s, s + size) and owns those where mine[size] is True (None: all of them); a remainder tile
  starts at min(row, m - size), so that no tile leaves the array.
  """
  ends = jnp.cumsum(group_sizes)
  starts = ends - group_sizes
  tile, rem_size = min(tile, m), min(min_tile, m)

  def for_each(g, step, carry):
    num_full = group_sizes[g] // tile
    carry = jax.lax.fori_loop(
        0, num_full, lambda i, c: step(c, starts[g] + i * tile, tile, None), carry)
    rem_start = starts[g] + num_full * tile

    def remainder(i, carry):
      row = rem_start + i * rem_size
      s = jnp.minimum(row, m - rem_size)
      j = s + jnp.arange(rem_size)
      return step(carry, s, rem_size, (j >= row) & (j < ends[g]))

    return jax.lax.fori_loop(0, -(-(ends[g] - rem_start) // rem_size), remainder, carry)

  return for_each


def _rows(a, idx, s, size):
  """Rows s..s+size of the sorted rows: a slice of `a`, or `a` at those entries of `idx`."""
  if idx is None:
    return jax.lax.dynamic_slice_in_dim(a, s, size)
  return a.at[jax.lax.dynamic_slice_in_dim(idx, s, size)].get(mode="clip")


def _group_matrix(rhs, g):
  """[K, sum N_i]: group g's matrices of the tuple `rhs`, side by side (the slice copies anyway)."""
  parts = [jax.lax.dynamic_index_in_dim(r, g, keepdims=False) for r in rhs]
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)


def _products(lhs, rhs, group_sizes, tile, min_tile, *, transpose_rhs=False, gather=None,
              scatter=None, weights=None, num_rows=0):
  """Product rows x_r @ W_g(r) (or W_g(r)^T), x_r = lhs[r] or lhs[gather[r]], tiled; W_g is
  group g's matrices of the tuple rhs ([G, K, N_i] each) side by side, [K, sum N_i].

  Returns out[M, sum N_i] (rows past the groups are zero), or with `scatter`[M] the float32
  y[num_rows, N] = sum over r of weights[r] (1 if None) * product r, added at scatter[r].
  A loop over groups (each group's matrix is sliced once), an inner loop over its tiles.
  """
  m = lhs.shape[0] if gather is None else gather.shape[0]
  n_out = rhs[0].shape[1] if transpose_rhs else sum(r.shape[2] for r in rhs)
  if scatter is None:
    out = jnp.zeros((m, n_out), lhs.dtype)
  else:
    out = jnp.zeros((num_rows, n_out), jnp.float32)
  if m == 0:
    return out
  dims = (((1,), (1,)), ((), ())) if transpose_rhs else (((1,), (0,)), ((), ()))
  for_each_tile = _tiles(group_sizes, m, tile, min_tile)

  def group(g, out):
    w = _group_matrix(rhs, g)

    def step(out, s, size, mine):
      y = jax.lax.dot_general(_rows(lhs, gather, s, size), w, dims,
                              preferred_element_type=jnp.float32)
      if scatter is None:
        y = y.astype(out.dtype)
        if mine is not None:
          y = jnp.where(mine[:, None], y, _rows(out, None, s, size))
        return jax.lax.dynamic_update_slice_in_dim(out, y, s, 0)
      if weights is not None:
        y = y * _rows(weights, None, s, size).astype(jnp.float32)[:, None]
      if mine is not None:
        y = jnp.where(mine[:, None], y, 0)
      return out.at[_rows(scatter, None, s, size)].add(y, mode="drop")

    return for_each_tile(g, step, out)

  return jax.lax.fori_loop(0, group_sizes.shape[0], group, out)


def _weight_grad(lhs, d_out, group_sizes, widths, tile, min_tile, *, gather=None,
                 d_out_idx=None, d_out_weights=None):
  """d_rhs_i[g] = sum over rows r of group g of x_r^T dy_r[columns of part i]: a tuple of
  [G, K, N_i] float32, N_i in `widths` (d_out's columns are the parts side by side).

  x_r = lhs[r] (or lhs[gather[r]]); dy_r = d_out[r] (or d_out_weights[r] * d_out[d_out_idx[r]]).
  """
  m = lhs.shape[0] if gather is None else gather.shape[0]
  grads = tuple(jnp.zeros((group_sizes.shape[0], lhs.shape[1], n), jnp.float32) for n in widths)
  if m == 0:
    return grads
  for_each_tile = _tiles(group_sizes, m, tile, min_tile)
  offsets = [sum(widths[:i]) for i in range(len(widths))]

  def step(acc, s, size, mine):
    x = _rows(lhs, gather, s, size)
    if mine is not None:
      x = jnp.where(mine[:, None], x, 0)
    dy = _rows(d_out, d_out_idx, s, size)
    if d_out_weights is not None:
      dy = dy * _rows(d_out_weights, None, s, size).astype(dy.dtype)[:, None]
    return acc + jax.lax.dot_general(x, dy, (((0,), (0,)), ((), ())),
                                     preferred_element_type=jnp.float32)

  def group(g, grads):
    acc = for_each_tile(g, step, jnp.zeros((lhs.shape[1], d_out.shape[1]), jnp.float32))
    return tuple(jax.lax.dynamic_update_index_in_dim(grad, acc[:, o:o + n], g, 0)
                 for grad, o, n in zip(grads, offsets, widths))

  return jax.lax.fori_loop(0, group_sizes.shape[0], group, grads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _gmm(lhs, rhs, group_sizes, gather, tile, min_tile):
  """out[r] = x_r @ W_g(r), x_r = lhs[r] or lhs[gather[r]], W_g the tuple rhs side by side."""
  return _products(lhs, rhs, group_sizes, tile, min_tile, gather=gather)


def _gmm_fwd(lhs, rhs, group_sizes, gather, tile, min_tile):
  return _gmm(lhs, rhs, group_sizes, gather, tile, min_tile), (lhs, rhs, group_sizes, gather)


def _gmm_bwd(tile, min_tile, residuals, d_out):
  """d_x_r = d_out_r @ W_g(r)^T, added into d_lhs at gather[r]; d_W_g = X_g^T d_out_g."""
  lhs, rhs, group_sizes, gather = residuals
  d_lhs = _products(d_out, rhs, group_sizes, tile, min_tile, transpose_rhs=True,
                    scatter=gather, num_rows=lhs.shape[0])
  d_rhs = _weight_grad(lhs, d_out, group_sizes, tuple(r.shape[2] for r in rhs), tile,
                       min_tile, gather=gather)
  return (d_lhs.astype(lhs.dtype), tuple(d.astype(r.dtype) for d, r in zip(d_rhs, rhs)), None,
          None)


_gmm.defvjp(_gmm_fwd, _gmm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _gmm_scatter(lhs, rhs, weights, group_sizes, idx, tile, min_tile, num_rows):
  """y[t] = sum_{r: idx[r] = t} weights[r] lhs[r] @ rhs[g(r)]."""
  return _products(lhs, (rhs,), group_sizes, tile, min_tile, scatter=idx, weights=weights,
                   num_rows=num_rows).astype(lhs.dtype)


def _gmm_scatter_fwd(lhs, rhs, weights, group_sizes, idx, tile, min_tile, num_rows):
  return (_gmm_scatter(lhs, rhs, weights, group_sizes, idx, tile, min_tile, num_rows),
          (lhs, rhs, weights, group_sizes, idx))


def _gmm_scatter_bwd(tile, min_tile, num_rows, residuals, d_y):
  """With u_r = d_y[idx[r]] @ rhs[g(r)]^T: d_lhs_r = w_r u_r, d_w_r = <u_r, lhs_r> (the
  product row never needs storing), d_rhs[g] = sum_r lhs_r^T w_r d_y[idx[r]]."""
  del num_rows
  lhs, rhs, weights, group_sizes, idx = residuals
  u = _products(d_y, (rhs,), group_sizes, tile, min_tile, transpose_rhs=True, gather=idx)
  u = u.astype(jnp.float32)
  d_lhs = u * weights.astype(jnp.float32)[:, None]
  d_weights = jnp.sum(u * lhs.astype(jnp.float32), axis=1)
  (d_rhs,) = _weight_grad(lhs, d_y, group_sizes, (rhs.shape[2],), tile, min_tile,
                          d_out_idx=idx, d_out_weights=weights)
  return (d_lhs.astype(lhs.dtype), d_rhs.astype(rhs.dtype), d_weights.astype(weights.dtype),
          None, None)


_gmm_scatter.defvjp(_gmm_scatter_fwd, _gmm_scatter_bwd)
