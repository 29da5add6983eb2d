"""Grouped matrix multiplication for dropless MoE dispatch.

Legend: M rows (token-expert assignments sorted by expert), K input width, N output width,
G groups (experts).

  grouped_matmul(lhs[M, K], rhs[G, K, N], group_sizes[G]) -> out[M, N]
  out[r] = lhs[r] @ rhs[g(r)],  g(r) the group whose contiguous row range holds r.

Rows past sum(group_sizes) give zeros. Two implementations:
  "ragged_dot": `jax.lax.ragged_dot`, a native grouped matmul on TPU (and GPU); on CPU it runs
      about 10x below dense matmul speed (measured in benchmarks/moe_layer.py).
  "tiled": each group's rows are cut into tiles of `tile` rows and a halving cascade of smaller
      tiles for the remainder (waste at most `min_tile` rows per group); every tile is a dense
      matmul, so the CPU runs at its dense-matmul rate. Gradients come from a custom VJP that runs
      the same tiling (d_lhs = grouped_matmul(d_out, rhs^T); d_rhs[g] = lhs_g^T @ d_out_g).
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
                   impl: str = "auto", tile: int = 256, min_tile: int = 16) -> jax.Array:
  """Multiplies each contiguous row group of `lhs` by its own matrix in `rhs`.

  Args:
    lhs: [M, K] rows sorted by group.
    rhs: [G, K, N] one matrix per group.
    group_sizes: [G] int32 number of rows in each group, sum <= M.
    impl: "ragged_dot", "tiled" or "auto" (per backend).
    tile, min_tile: powers of two; tile sizes of the "tiled" implementation.

  Returns:
    [M, N] in lhs.dtype.
  """
  if impl == "auto":
    impl = default_impl()
  check_choice("gmm_impl", impl, IMPLS + ("auto",))
  if impl == "ragged_dot":
    return jax.lax.ragged_dot(lhs, rhs, group_sizes.astype(jnp.int32))
  return _tiled_gmm(lhs, rhs, group_sizes.astype(jnp.int32), tile, min_tile)


def _tile_sizes(tile: int, min_tile: int) -> list[int]:
  if tile & (tile - 1) or min_tile & (min_tile - 1) or min_tile > tile:
    raise ValueError(f"tile={tile} and min_tile={min_tile} must be powers of two, "
                     "min_tile <= tile")
  sizes, s = [], tile // 2
  while s >= min_tile:
    sizes.append(s)
    s //= 2
  return sizes


def _for_group_tiles(start, size, tile, min_tile, body, carry):
  """Calls body(carry, row, n, valid) over tiles covering rows [start, start + size).

  `n` is a static tile height; `valid` <= n is how many of its rows belong to the group.
  Full `tile`-row tiles come first, then one tile of each halving size that fits, then a last
  `min_tile` tile holding what is left (masked by `valid`).
  """
  def full(state):
    row, left, c = state
    return row + tile, left - tile, body(c, row, tile, tile)

  row, left, carry = jax.lax.while_loop(lambda s: s[1] >= tile, full, (start, size, carry))
  for n in _tile_sizes(tile, min_tile):
    carry = jax.lax.cond(left >= n, lambda c, r=row, n=n: body(c, r, n, n), lambda c: c, carry)
    step = jnp.where(left >= n, n, 0)
    row, left = row + step, left - step
  return jax.lax.cond(left > 0, lambda c: body(c, row, min_tile, left), lambda c: c, carry)


def _group_starts(group_sizes):
  return jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(group_sizes)[:-1]])


def _gmm_forward(lhs, rhs, group_sizes, tile, min_tile, transpose_rhs):
  """out[r] = lhs[r] @ rhs[g(r)] (or rhs[g(r)]^T), tiled; rows past the groups are zero."""
  m = lhs.shape[0]
  n_out = rhs.shape[1] if transpose_rhs else rhs.shape[2]
  pad = tile  # no dynamic slice ever needs clamping
  lhs_p = jnp.pad(lhs, ((0, pad), (0, 0)))
  out = jnp.zeros((m + pad, n_out), lhs.dtype)
  dims = (((1,), (1,)), ((), ())) if transpose_rhs else (((1,), (0,)), ((), ()))
  starts = _group_starts(group_sizes)

  def per_group(g, out):
    w = jax.lax.dynamic_index_in_dim(rhs, g, keepdims=False)

    def body(o, row, n, valid):
      x = jax.lax.dynamic_slice_in_dim(lhs_p, row, n)
      del valid  # rows written past the group belong to the next group, which overwrites them
      y = jax.lax.dot_general(x, w, dims, preferred_element_type=jnp.float32).astype(o.dtype)
      return jax.lax.dynamic_update_slice_in_dim(o, y, row, 0)

    return _for_group_tiles(starts[g], group_sizes[g], tile, min_tile, body, out)

  # Groups run in order, so a group's last tile may spill into the next group's rows only
  # before that group writes them; what spills past the last group is zeroed here.
  out = jax.lax.fori_loop(0, rhs.shape[0], per_group, out)[:m]
  return jnp.where((jnp.arange(m) < starts[-1] + group_sizes[-1])[:, None], out, 0)


def _gmm_weight_grad(lhs, d_out, group_sizes, tile, min_tile):
  """d_rhs[g] = lhs_g^T @ d_out_g: [G, K, N], summed over each group's tiles."""
  k, n_out = lhs.shape[1], d_out.shape[1]
  pad = tile
  lhs_p = jnp.pad(lhs, ((0, pad), (0, 0)))
  dout_p = jnp.pad(d_out, ((0, pad), (0, 0)))
  starts = _group_starts(group_sizes)
  num_groups = group_sizes.shape[0]

  def per_group(g, grads):
    def body(acc, row, n, valid):
      x = jax.lax.dynamic_slice_in_dim(lhs_p, row, n)
      dy = jax.lax.dynamic_slice_in_dim(dout_p, row, n)
      if not isinstance(valid, int):
        x = jnp.where((jnp.arange(n) < valid)[:, None], x, 0)
      return acc + jax.lax.dot_general(x, dy, (((0,), (0,)), ((), ())),
                                       preferred_element_type=jnp.float32)

    acc = _for_group_tiles(starts[g], group_sizes[g], tile, min_tile, body,
                           jnp.zeros((k, n_out), jnp.float32))
    return jax.lax.dynamic_update_index_in_dim(grads, acc, g, 0)

  grads = jax.lax.fori_loop(0, num_groups, per_group,
                            jnp.zeros((num_groups, k, n_out), jnp.float32))
  return grads


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _tiled_gmm(lhs, rhs, group_sizes, tile, min_tile):
  return _gmm_forward(lhs, rhs, group_sizes, tile, min_tile, transpose_rhs=False)


def _tiled_gmm_fwd(lhs, rhs, group_sizes, tile, min_tile):
  out = _gmm_forward(lhs, rhs, group_sizes, tile, min_tile, transpose_rhs=False)
  return out, (lhs, rhs, group_sizes)


def _tiled_gmm_bwd(tile, min_tile, residuals, d_out):
  lhs, rhs, group_sizes = residuals
  d_lhs = _gmm_forward(d_out, rhs, group_sizes, tile, min_tile, transpose_rhs=True)
  d_rhs = _gmm_weight_grad(lhs, d_out, group_sizes, tile, min_tile).astype(rhs.dtype)
  return d_lhs.astype(lhs.dtype), d_rhs, None


_tiled_gmm.defvjp(_tiled_gmm_fwd, _tiled_gmm_bwd)
