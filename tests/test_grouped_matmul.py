"""Grouped matmul ("tiled" and "ragged_dot"), forward and both gradients, against NumPy."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.layers.grouped_matmul import grouped_matmul
from moe_jax.utils.errors import ConfigError

K, N = 12, 10


def _reference(lhs, rhs, group_sizes, d_out):
  """float64 out[M, N], d_lhs[M, K], d_rhs[G, K, N] by a plain loop over groups."""
  lhs, rhs, d_out = (a.astype(np.float64) for a in (lhs, rhs, d_out))
  out = np.zeros((lhs.shape[0], rhs.shape[2]))
  d_lhs = np.zeros_like(lhs)
  d_rhs = np.zeros_like(rhs)
  start = 0
  for g, size in enumerate(group_sizes):
    rows = slice(start, start + size)
    out[rows] = lhs[rows] @ rhs[g]
    d_lhs[rows] = d_out[rows] @ rhs[g].T
    d_rhs[g] = lhs[rows].T @ d_out[rows]
    start += size
  return out, d_lhs, d_rhs


# Group sizes (G = 7, M = 80 rows) covering: empty groups (first, middle, last), groups smaller
# than a tile, exactly a tile, several tiles plus a remainder, rows past sum(group_sizes), and
# (with tile=128 > M) tiles as large as the whole array.
M = 80
CASES = [
    [0, 3, 0, 37, 1, 16, 0],   # 57 rows in groups, 23 rows past the end
    [70, 0, 2, 5, 0, 0, 3],    # every row in a group
    [0, 0, 0, 0, 0, 0, 0],     # nothing routed at all
    [1, 1, 1, 1, 32, 16, 4],
]


@pytest.mark.parametrize("impl,tile,min_tile", [("tiled", 1, 1), ("tiled", 16, 4),
                                                ("tiled", 8, 8), ("tiled", 128, 32),
                                                ("ragged_dot", 128, 32)])
def test_grouped_matmul_forward_and_grads(impl, tile, min_tile):
  rng = np.random.default_rng(tile + min_tile)

  @jax.jit
  def run(lhs, rhs, group_sizes, d_out):
    fn = functools.partial(grouped_matmul, group_sizes=group_sizes, impl=impl, tile=tile,
                           min_tile=min_tile)
    out, vjp = jax.vjp(fn, lhs, rhs)
    return (out,) + vjp(d_out)

  for sizes in CASES:
    lhs = rng.standard_normal((M, K)).astype(np.float32)
    rhs = rng.standard_normal((len(sizes), K, N)).astype(np.float32)
    d_out = rng.standard_normal((M, N)).astype(np.float32)
    ref_out, ref_dlhs, ref_drhs = _reference(lhs, rhs, sizes, d_out)
    out, d_lhs, d_rhs = run(lhs, rhs, jnp.asarray(sizes, jnp.int32), d_out)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5, err_msg=str(sizes))
    np.testing.assert_allclose(d_lhs, ref_dlhs, rtol=1e-5, atol=1e-5, err_msg=str(sizes))
    np.testing.assert_allclose(d_rhs, ref_drhs, rtol=1e-5, atol=1e-5, err_msg=str(sizes))


def test_tiled_matches_ragged_dot_on_random_sizes():
  """One jitted function, many random group_sizes (traced, as in the dispatch)."""
  rng = np.random.default_rng(7)
  g, m = 6, 90
  fn = jax.jit(lambda l, r, s, impl: grouped_matmul(l, r, s, impl=impl, tile=8, min_tile=2),
               static_argnums=3)
  for _ in range(5):
    sizes = rng.multinomial(int(rng.integers(0, m + 1)), np.ones(g) / g)
    lhs = rng.standard_normal((m, K)).astype(np.float32)
    rhs = rng.standard_normal((g, K, N)).astype(np.float32)
    ref = _reference(lhs, rhs, sizes, np.zeros((m, N), np.float32))[0]
    np.testing.assert_allclose(fn(lhs, rhs, jnp.asarray(sizes, jnp.int32), "tiled"), ref,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fn(lhs, rhs, jnp.asarray(sizes, jnp.int32), "ragged_dot"), ref,
                               rtol=1e-5, atol=1e-5)


def test_unknown_impl_raises():
  with pytest.raises(ConfigError, match="gmm_impl"):
    grouped_matmul(jnp.zeros((4, K)), jnp.zeros((2, K, N)), jnp.asarray([2, 2]), impl="megablox")


@pytest.mark.parametrize("tile,min_tile", [(0, 0), (8, 16)])
def test_bad_tiles_raise(tile, min_tile):
  with pytest.raises(ValueError, match="min_tile"):
    grouped_matmul(jnp.zeros((4, K)), jnp.zeros((2, K, N)), jnp.asarray([2, 2]), impl="tiled",
                   tile=tile, min_tile=min_tile)
