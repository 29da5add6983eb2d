"""Grouped matrix multiplication for dropless MoE dispatch.

Legend: M rows (token-expert assignments sorted by expert), K input width, N output width,
G groups (experts).

  grouped_matmul(lhs[M, K], rhs[G, K, N], group_sizes[G]) -> out[M, N]
  out[r] = lhs[r] @ rhs[g(r)],  g(r) the group whose contiguous row range holds r.

Rows past sum(group_sizes) give zeros. Two implementations:
  "ragged_dot": `jax.lax.ragged_dot`, a native grouped matmul on TPU (and GPU); on CPU it runs
      about 10x below dense matmul speed (measured in benchmarks/moe_layer.py).
  "tiled": two loops of dense matmuls, which the CPU runs at its dense rate: one over every
      group's full `tile`-row tiles, one over the remainders in `min_tile`-row tiles (the last
      one runs past its group's end; at most min_tile - 1 wasted rows per group). A tile writes
      only the rows of its own group. Gradients come from a custom VJP running the same loops
      (d_lhs = grouped_matmul(d_out, rhs^T); d_rhs[g] = lhs_g^T @ d_out_g, foreign rows masked).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from moe_jax.utils.errors import check_choice

IMPLS = ("ragged_dot", "tiled")


def default_impl() -> str:
  """The measured-fastest implementation on the default backend (see benchmarks/moe_layer.py)."""
  return "tiled" if jax.default_backend() == "cpu" else "ragged_dot"


def grouped_matmul(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array,
                   impl: str = "auto", tile: int = 128, min_tile: int = 32) -> jax.Array:
  """Multiplies each contiguous row group of `lhs` by its own matrix in `rhs`.

  Args:
    lhs: [M, K] rows sorted by group.
    rhs: [G, K, N] one matrix per group.
    group_sizes: [G] int32 number of rows in each group, sum <= M.
    impl: "ragged_dot", "tiled" or "auto" (per backend).
    tile, min_tile: rows per matmul of the "tiled" implementation for a group's full tiles and
      for its remainder (measured on a 2-core CPU at the benchmark shapes).

  Returns:
    [M, N] in lhs.dtype.
  """
  if impl == "auto":
    impl = default_impl()
  check_choice("gmm_impl", impl, IMPLS + ("auto",))
  if impl == "ragged_dot":
    return jax.lax.ragged_dot(lhs, rhs, group_sizes.astype(jnp.int32))
  if not 1 <= min_tile <= tile:
    raise ValueError(f"tile sizes must satisfy 1 <= min_tile <= tile, got {min_tile}, {tile}")
  return _tiled_gmm(lhs, rhs, group_sizes.astype(jnp.int32), tile, min_tile)


def _tile_loops(group_sizes, m, tile, min_tile):
  """The two tile loops of the "tiled" grouped matmul, as (size, num_tiles, tiles) triples.

  Loop 1 covers each group's floor(size_g / tile) full tiles; loop 2 covers the remainder with
  `min_tile`-row tiles, the last one running past the group's end. tiles = (group, row,
  end)[max_tiles]: a tile owns rows [row, min(row + size, end)).
  """
  ends = jnp.cumsum(group_sizes)
  starts = ends - group_sizes
  full = group_sizes // tile * tile
  loops = []
  for size, first_row, length in ((tile, starts, full),
                                  (min_tile, starts + full, group_sizes - full)):
    size = min(size, m)
    tiles = -(-length // size)
    max_tiles = -(-m // size) + group_sizes.shape[0]
    i = jnp.arange(max_tiles, dtype=jnp.int32)
    group = jnp.searchsorted(jnp.cumsum(tiles), i, side="right")
    group = jnp.minimum(group, group_sizes.shape[0] - 1).astype(jnp.int32)
    row = first_row[group] + (i - (jnp.cumsum(tiles) - tiles)[group]) * size
    loops.append((size, jnp.sum(tiles), (group, row, ends[group])))
  return loops


def _window(m, size, row, end):
  """A tile's slice start s = min(row, m - size) (no slice runs past the array) and the mask
  [size] of the slice's rows that the tile owns, those in [row, end)."""
  s = jnp.minimum(row, m - size)
  j = s + jnp.arange(size)
  return s, (j >= row) & (j < end)


def _gmm_forward(lhs, rhs, group_sizes, tile, min_tile, transpose_rhs):
  """out[r] = lhs[r] @ rhs[g(r)] (or rhs[g(r)]^T), tiled; rows past the groups are zero."""
  m = lhs.shape[0]
  n_out = rhs.shape[1] if transpose_rhs else rhs.shape[2]
  out = jnp.zeros((m, n_out), lhs.dtype)
  if m == 0:
    return out
  dims = (((1,), (1,)), ((), ())) if transpose_rhs else (((1,), (0,)), ((), ()))
  for size, num_tiles, tiles in _tile_loops(group_sizes, m, tile, min_tile):

    def body(i, out, size=size, tiles=tiles):
      group, row, end = (a[i] for a in tiles)
      s, mine = _window(m, size, row, end)
      x = jax.lax.dynamic_slice_in_dim(lhs, s, size)
      w = jax.lax.dynamic_index_in_dim(rhs, group, keepdims=False)
      y = jax.lax.dot_general(x, w, dims, preferred_element_type=jnp.float32).astype(out.dtype)
      y = jnp.where(mine[:, None], y, jax.lax.dynamic_slice_in_dim(out, s, size))
      return jax.lax.dynamic_update_slice_in_dim(out, y, s, 0)

    out = jax.lax.fori_loop(0, num_tiles, body, out)
  return out


def _gmm_weight_grad(lhs, d_out, group_sizes, tile, min_tile):
  """d_rhs[g] = lhs_g^T @ d_out_g: [G, K, N], summed over each group's tiles."""
  m, k = lhs.shape
  num_groups = group_sizes.shape[0]
  grads = jnp.zeros((num_groups, k, d_out.shape[1]), jnp.float32)
  if m == 0:
    return grads
  for size, num_tiles, tiles in _tile_loops(group_sizes, m, tile, min_tile):

    def body(i, grads, size=size, tiles=tiles):
      group, row, end = (a[i] for a in tiles)
      s, mine = _window(m, size, row, end)
      x = jnp.where(mine[:, None], jax.lax.dynamic_slice_in_dim(lhs, s, size), 0)
      dy = jax.lax.dynamic_slice_in_dim(d_out, s, size)
      acc = jax.lax.dynamic_index_in_dim(grads, group, keepdims=False) + jax.lax.dot_general(
          x, dy, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
      return jax.lax.dynamic_update_index_in_dim(grads, acc, group, 0)

    grads = jax.lax.fori_loop(0, num_tiles, body, grads)
  return grads


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _tiled_gmm(lhs, rhs, group_sizes, tile, min_tile):
  return _gmm_forward(lhs, rhs, group_sizes, tile, min_tile, transpose_rhs=False)


def _tiled_gmm_fwd(lhs, rhs, group_sizes, tile, min_tile):
  return _tiled_gmm(lhs, rhs, group_sizes, tile, min_tile), (lhs, rhs, group_sizes)


def _tiled_gmm_bwd(tile, min_tile, residuals, d_out):
  lhs, rhs, group_sizes = residuals
  d_lhs = _gmm_forward(d_out, rhs, group_sizes, tile, min_tile, transpose_rhs=True)
  d_rhs = _gmm_weight_grad(lhs, d_out, group_sizes, tile, min_tile).astype(rhs.dtype)
  return d_lhs.astype(lhs.dtype), d_rhs, None


_tiled_gmm.defvjp(_tiled_gmm_fwd, _tiled_gmm_bwd)
