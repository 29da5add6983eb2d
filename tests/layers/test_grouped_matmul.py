"""Grouped matmul ("tiled" and "ragged_dot"), forward and both gradients, against NumPy."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.layers.grouped_matmul import grouped_ffn, grouped_matmul
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
  for tiles in (dict(tile=tile), dict(grad_tile=tile)):
    with pytest.raises(ValueError, match="min_tile"):
      grouped_ffn(jnp.zeros((3, K)), (jnp.zeros((2, K, N)),), jnp.zeros((2, N, K)),
                  jnp.asarray([2, 2]), jax.nn.relu, token=jnp.zeros((4,), jnp.int32),
                  weights=jnp.ones((4,)), impl="tiled", min_tile=min_tile, **tiles)


def _group_of_rows(group_sizes, m):
  """[M] group of each row, -1 past sum(group_sizes)."""
  groups = np.repeat(np.arange(len(group_sizes)), group_sizes)
  return np.concatenate([groups, -np.ones(m - len(groups), int)])


def _gather_reference(x, idx, rhs, group_sizes, d_out):
  """float64 out[r] = x[idx[r]] @ rhs[g(r)], and the gradients w.r.t. x and rhs, row by row."""
  x, rhs, d_out = (a.astype(np.float64) for a in (x, rhs, d_out))
  out = np.zeros((len(idx), rhs.shape[2]))
  d_x, d_rhs = np.zeros_like(x), np.zeros_like(rhs)
  for r, g in enumerate(_group_of_rows(group_sizes, len(idx))):
    if g >= 0:
      out[r] = x[idx[r]] @ rhs[g]
      d_x[idx[r]] += d_out[r] @ rhs[g].T
      d_rhs[g] += np.outer(x[idx[r]], d_out[r])
  return out, d_x, d_rhs


def _scatter_reference(lhs, rhs, idx, weights, num_rows, group_sizes, d_y):
  """float64 y[idx[r]] += weights[r] lhs[r] @ rhs[g(r)], and the gradients w.r.t. lhs, rhs and
  weights, row by row."""
  lhs, rhs, weights, d_y = (a.astype(np.float64) for a in (lhs, rhs, weights, d_y))
  y = np.zeros((num_rows, rhs.shape[2]))
  d_lhs, d_rhs, d_w = np.zeros_like(lhs), np.zeros_like(rhs), np.zeros_like(weights)
  for r, g in enumerate(_group_of_rows(group_sizes, len(idx))):
    if g >= 0:
      product = lhs[r] @ rhs[g]
      y[idx[r]] += weights[r] * product
      d_lhs[r] = weights[r] * d_y[idx[r]] @ rhs[g].T
      d_rhs[g] += weights[r] * np.outer(lhs[r], d_y[idx[r]])
      d_w[r] = d_y[idx[r]] @ product
  return y, d_lhs, d_rhs, d_w


@pytest.mark.parametrize("impl,tile,min_tile", [("tiled", 16, 4), ("tiled", 128, 32),
                                                ("ragged_dot", 128, 32)])
def test_gather_and_scatter_forms_forward_and_grads(impl, tile, min_tile):
  """The dispatch's fused forms: rows read by index (gather), products weighted and summed
  into rows by index (scatter), T = 30 rows with repeated and unused indices."""
  rng = np.random.default_rng(tile + 1)
  num_rows = 30
  gmm = functools.partial(grouped_matmul, impl=impl, tile=tile, min_tile=min_tile)

  @jax.jit
  def gathered(x, rhs, group_sizes, idx, d_out):
    out, vjp = jax.vjp(lambda x, rhs: gmm(x, rhs, group_sizes, gather=idx), x, rhs)
    return (out,) + vjp(d_out)

  @jax.jit
  def scattered(lhs, rhs, weights, group_sizes, idx, d_y):
    y, vjp = jax.vjp(lambda l, r, w: gmm(l, r, group_sizes, scatter=(idx, w, num_rows)),
                     lhs, rhs, weights)
    return (y,) + vjp(d_y)

  for sizes in CASES:
    idx = rng.integers(0, num_rows, M).astype(np.int32)
    rhs = rng.standard_normal((len(sizes), K, N)).astype(np.float32)
    x = rng.standard_normal((num_rows, K)).astype(np.float32)
    d_out = rng.standard_normal((M, N)).astype(np.float32)
    group_sizes = jnp.asarray(sizes, jnp.int32)
    for got, want in zip(gathered(x, rhs, group_sizes, idx, d_out),
                         _gather_reference(x, idx, rhs, sizes, d_out)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"gather {sizes}")
    lhs = rng.standard_normal((M, K)).astype(np.float32)
    weights = rng.uniform(0.1, 1.0, M).astype(np.float32)
    d_y = rng.standard_normal((num_rows, N)).astype(np.float32)
    for got, want in zip(scattered(lhs, rhs, weights, group_sizes, idx, d_y),
                         _scatter_reference(lhs, rhs, idx, weights, num_rows, sizes, d_y)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"scatter {sizes}")


def test_gather_and_scatter_together_raise():
  idx = jnp.zeros((4,), jnp.int32)
  with pytest.raises(ValueError, match="gather"):
    grouped_matmul(jnp.zeros((4, K)), jnp.zeros((2, K, N)), jnp.asarray([2, 2]), gather=idx,
                   scatter=(idx, jnp.ones((4,)), 4))


@pytest.mark.parametrize("impl,tile,min_tile", [("tiled", 16, 4), ("tiled", 128, 32),
                                                ("ragged_dot", 128, 32)])
def test_tuple_rhs_forward_and_grads(impl, tile, min_tile):
  """A tuple rhs (a gated FFN's gate and up, of different widths here) read with `gather`: each
  product and gradient equals its own single-matrix reference."""
  rng = np.random.default_rng(tile + 2)
  num_rows, widths = 30, (N, 7)

  @jax.jit
  def run(x, rhs, group_sizes, idx, d_outs):
    outs, vjp = jax.vjp(lambda x, rhs: grouped_matmul(x, rhs, group_sizes, impl=impl, tile=tile,
                                                      min_tile=min_tile, gather=idx), x, rhs)
    return outs, vjp(d_outs)

  for sizes in CASES:
    idx = rng.integers(0, num_rows, M).astype(np.int32)
    x = rng.standard_normal((num_rows, K)).astype(np.float32)
    rhs = tuple(rng.standard_normal((len(sizes), K, n)).astype(np.float32) for n in widths)
    d_outs = tuple(rng.standard_normal((M, n)).astype(np.float32) for n in widths)
    outs, (d_x, d_rhs) = run(x, rhs, jnp.asarray(sizes, jnp.int32), idx, d_outs)
    want_dx = 0
    for i in range(len(widths)):
      want_out, want_dxi, want_drhs = _gather_reference(x, idx, rhs[i], sizes, d_outs[i])
      np.testing.assert_allclose(outs[i], want_out, rtol=1e-5, atol=1e-5, err_msg=f"{sizes}")
      np.testing.assert_allclose(d_rhs[i], want_drhs, rtol=1e-5, atol=1e-5, err_msg=f"{sizes}")
      want_dx = want_dx + want_dxi
    np.testing.assert_allclose(d_x, want_dx, rtol=1e-5, atol=1e-5, err_msg=f"{sizes}")


def test_tuple_rhs_with_scatter_raises():
  idx = jnp.zeros((4,), jnp.int32)
  with pytest.raises(ValueError, match="tuple"):
    grouped_matmul(jnp.zeros((4, K)), (jnp.zeros((2, K, N)),) * 2, jnp.asarray([2, 2]),
                   scatter=(idx, jnp.ones((4,)), 4))


@pytest.mark.parametrize("impl,tile,grad_tile,min_tile,gated", [("tiled", 16, 16, 4, True),
                                                                ("tiled", 128, 128, 32, False),
                                                                ("tiled", 8, 32, 2, True),
                                                                ("ragged_dot", 128, 128, 32, True)])
def test_grouped_ffn_forward_and_grads(impl, tile, grad_tile, min_tile, gated):
  """The one-pass FFN against a float64 row-by-row loop: y, zero_frac and the gradients w.r.t.
  x, every weight and the routing weights (ReLU, so that h has exact zeros); the forward is
  checked both alone (the one-pass loop, `tile`) and under vjp (the unfused composition,
  `grad_tile`)."""
  rng = np.random.default_rng(tile + 3)
  num_rows, f = 30, 9

  def hidden(p):
    return jax.nn.relu(p[0]) * p[1] if gated else jax.nn.relu(p[0])

  @jax.jit
  def run(x, w_in, w_out, weights, group_sizes, idx, d_y):
    fn = lambda x, w_in, w_out, weights: grouped_ffn(
        x, w_in, w_out, group_sizes, hidden, token=idx, weights=weights, impl=impl, tile=tile,
        min_tile=min_tile, grad_tile=grad_tile)
    (y, zero_frac), vjp = jax.vjp(fn, x, w_in, w_out, weights)
    alone = fn(x, w_in, w_out, weights)
    return alone[0], alone[1], vjp((d_y, jnp.zeros_like(zero_frac))), y, zero_frac

  for sizes in CASES:
    idx = rng.integers(0, num_rows, M).astype(np.int32)
    x = rng.standard_normal((num_rows, K)).astype(np.float32)
    w_in = tuple(rng.standard_normal((len(sizes), K, f)).astype(np.float32)
                 for _ in range(2 if gated else 1))
    w_out = rng.standard_normal((len(sizes), f, K)).astype(np.float32)
    weights = rng.uniform(0.1, 1.0, M).astype(np.float32)
    d_y = rng.standard_normal((num_rows, K)).astype(np.float32)
    y, zero_frac, (d_x, d_in, d_out, d_w), y_vjp, zero_frac_vjp = run(
        x, w_in, w_out, weights, jnp.asarray(sizes, jnp.int32), idx, d_y)
    x64, w_in64, w_out64, dy64 = (np.asarray(a, np.float64) for a in (x, np.stack(w_in), w_out,
                                                                       d_y))
    want = dict(y=np.zeros_like(x64), zf=np.zeros(M), dx=np.zeros_like(x64),
                din=np.zeros_like(w_in64), dout=np.zeros_like(w_out64), dw=np.zeros(M))
    for r, g in enumerate(_group_of_rows(sizes, M)):
      if g < 0:
        continue
      xr = x64[idx[r]]
      a = [xr @ w_in64[i, g] for i in range(len(w_in))]
      act = np.maximum(a[0], 0)
      h = act * a[1] if gated else act
      o = h @ w_out64[g]
      want["y"][idx[r]] += weights[r] * o
      want["zf"][r] = np.mean(h == 0)
      want["dw"][r] = dy64[idx[r]] @ o
      want["dout"][g] += np.outer(h, weights[r] * dy64[idx[r]])
      dh = weights[r] * w_out64[g] @ dy64[idx[r]]
      d_a = [dh * (a[0] > 0) * (a[1] if gated else 1)] + ([dh * act] if gated else [])
      for i, da in enumerate(d_a):
        want["din"][i, g] += np.outer(xr, da)
        want["dx"][idx[r]] += w_in64[i, g] @ da
    routed = _group_of_rows(sizes, M) >= 0  # zero_frac past sum(group_sizes) is not defined
    for got, key in ((y, "y"), (zero_frac[routed], "zf"), (y_vjp, "y"),
                     (zero_frac_vjp[routed], "zf"), (d_x, "dx"), (np.stack(d_in), "din"),
                     (d_out, "dout"), (d_w, "dw")):
      want_key = want[key][routed] if key == "zf" else want[key]
      np.testing.assert_allclose(got, want_key, rtol=1e-4, atol=1e-4, err_msg=f"{key} {sizes}")


def test_grouped_ffn_gradient_does_not_depend_on_the_forward_tile():
  """`tile` only sets the one-pass forward's tiles: value and gradients under vjp come from the
  unfused composition at `grad_tile`, bit for bit whatever `tile` is (training numbers stay)."""
  rng = np.random.default_rng()
  sizes, num_rows, f = [150, 0, 97, 3], 120, 9
  m = sum(sizes) + 10
  idx = jnp.asarray(rng.integers(0, num_rows, m), jnp.int32)
  x = rng.standard_normal((num_rows, K)).astype(np.float32)
  w_in = (rng.standard_normal((len(sizes), K, f)).astype(np.float32),) * 2
  w_out = rng.standard_normal((len(sizes), f, K)).astype(np.float32)
  weights = rng.uniform(0.1, 1.0, m).astype(np.float32)

  def loss(x, w_in, w_out, weights, tile):
    y, _ = grouped_ffn(x, w_in, w_out, jnp.asarray(sizes, jnp.int32),
                       lambda p: jax.nn.silu(p[0]) * p[1], token=idx, weights=weights,
                       impl="tiled", tile=tile, min_tile=4, grad_tile=32)
    return jnp.sum(jnp.sin(y))

  grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)), static_argnums=4)
  small, large = grad(x, w_in, w_out, weights, 16), grad(x, w_in, w_out, weights, 128)
  for a, b in zip(jax.tree.leaves(small), jax.tree.leaves(large)):
    np.testing.assert_array_equal(a, b)
