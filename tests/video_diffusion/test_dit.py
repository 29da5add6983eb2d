"""The DiT's multi-axis rotary embedding against a float64 complex-number reference."""
import numpy as np
import pytest

from moe_jax.video_diffusion.dit import ROPE_THETA, axial_rope


def _reference(x, coords):
  """Chunk a of the head dim, as complex numbers x_i + i x_{i+half}, times exp(i pos_a w_j)."""
  x = np.asarray(x, np.float64)
  out = []
  for a, ch in enumerate(np.split(x, coords.shape[1], axis=-1)):
    half = ch.shape[-1] // 2
    w = ROPE_THETA ** (-np.arange(half) / half)
    z = (ch[..., :half] + 1j * ch[..., half:]) * np.exp(1j * coords[:, a, None, None] * w)
    out.append(np.concatenate([z.real, z.imag], axis=-1))
  return np.concatenate(out, axis=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_axial_rope_matches_complex_reference(seed):
  rng = np.random.default_rng(seed)
  axes = int(rng.integers(1, 4))
  n, heads, dh = int(rng.integers(2, 9)), int(rng.integers(1, 4)), 2 * axes * int(rng.integers(1, 4))
  x = rng.normal(size=(2, 3, n, heads, dh)).astype(np.float32)
  coords = rng.integers(0, 16, (n, axes))
  np.testing.assert_allclose(axial_rope(x, coords), _reference(x, coords), atol=2e-5)


def test_attention_scores_depend_only_on_relative_position():
  rng = np.random.default_rng(3)
  q, k = rng.normal(size=(2, 1, 6, 2, 8)).astype(np.float32)
  coords = rng.integers(0, 5, (6, 2))
  scores = lambda c: np.einsum("...qkd,...nkd->...kqn", axial_rope(q, c), axial_rope(k, c))
  np.testing.assert_allclose(scores(coords), scores(coords + np.array([3, 7])), atol=1e-4)
  assert np.abs(scores(coords) - scores(coords * 2)).max() > 1e-2
