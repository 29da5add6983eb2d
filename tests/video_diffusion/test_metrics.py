"""Metrics against closed forms and independent NumPy computations."""
import numpy as np
import pytest

from moe_jax.video_diffusion import data as vdata
from moe_jax.video_diffusion import metrics


def _fd_reference(a, b):
  """Frechet distance with the matrix square root through a symmetric eigendecomposition."""
  ma, mb = a.mean(0), b.mean(0)
  ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  w, u = np.linalg.eigh(ca)
  root_a = (u * np.sqrt(np.clip(w, 0, None))) @ u.T
  inner = np.linalg.eigvalsh(root_a @ cb @ root_a)
  return np.sum((ma - mb) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.sum(np.sqrt(np.clip(inner, 0,
                                                                                           None)))


@pytest.mark.parametrize("seed", range(3))
def test_frechet_distance_matches_eigen_reference(seed):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
  b = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + rng.normal(size=5)
  assert metrics.frechet_distance(a, b) == pytest.approx(_fd_reference(a, b), rel=1e-6)
  assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
  shift = rng.normal(size=5)
  assert metrics.frechet_distance(a, a + shift) == pytest.approx(np.sum(shift ** 2), rel=1e-6)


def test_temporal_and_detail_errors():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 6, 8, 8, 1))
  assert metrics.temporal_error(x, x) == 0.0
  assert metrics.temporal_error(x + 0.3, x) == pytest.approx(0.0, abs=1e-12)
  d = lambda v: v[:, 1:] - v[:, :-1]
  y = rng.normal(size=x.shape)
  assert metrics.temporal_error(y, x) == pytest.approx(np.mean((d(y) - d(x)) ** 2))
  assert metrics.detail_error(x, x) == 0.0
  flat = np.ones((2, 3, 8, 8, 1))
  checker = np.indices((8, 8)).sum(0) % 2 * 2.0 - 1.0
  board = np.broadcast_to(checker[None, None, :, :, None], flat.shape)
  np.testing.assert_allclose(metrics.high_frequency_energy(flat), 0.0, atol=1e-12)
  # A +-1 checkerboard puts all its energy at the Nyquist frequency: sum |F|^2 / (H W) = H W.
  np.testing.assert_allclose(metrics.high_frequency_energy(board), 64.0)
  assert metrics.detail_error(0.5 * board, board) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", range(3))
def test_frame_coherence_matches_corrcoef_reference(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(3, 4, 8, 8, 1))
  x[:, 1] = np.roll(x[:, 0], (1, -2), axis=(1, 2))          # an exact move inside the window
  ref = np.mean([[max(np.corrcoef(np.roll(x[b, t, ..., 0], (dy, dx), (0, 1)).ravel(),
                                  x[b, t + 1, ..., 0].ravel())[0, 1]
                      for dy in range(-2, 3) for dx in range(-2, 3))
                  for t in range(3)] for b in range(3)])
  np.testing.assert_allclose(metrics.frame_coherence(x), ref, rtol=1e-10)


def test_frame_coherence_is_one_on_moving_digits_and_low_across_clips():
  clips, _, _ = vdata.moving_digits(64, frames=6, size=16, seed=4)
  assert metrics.frame_coherence(clips) > 0.999
  mixed = np.stack([clips[(np.arange(64) + t) % 64, t] for t in range(6)], axis=1)
  assert metrics.frame_coherence(mixed) < 0.6          # frame t taken from clip i + t
