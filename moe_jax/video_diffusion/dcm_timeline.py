"""When the teacher's ODE path settles a clip's layout and motion (DCM's Fig. 2 diagnosis).

DCM motivates its split by the synthesis process: the high-noise steps set layout and motion, the
low-noise steps refine detail. This measures it on the teacher's Euler path: at node s_k the
rectified-flow estimate of the clean clip is x0_hat = x_k - s_k v(x_k, s_k); its coarse content (an
average pool of `pool` x `pool` pixels) is compared with the final sample's by per-clip Pearson
correlation of the frames ("layout") and of consecutive-frame differences ("motion").
"""
from __future__ import annotations

import numpy as np

from moe_jax.utils.errors import require


def _pool(x: np.ndarray, k: int) -> np.ndarray:
  """[N, T, H, W, C] -> [N, T, H // k, W // k, C] block means."""
  n, t, h, w, c = x.shape
  return x.reshape(n, t, h // k, k, w // k, k, c).mean(axis=(3, 5))


def _clip_correlation(a: np.ndarray, b: np.ndarray) -> float:
  """Mean over clips of the Pearson correlation of two [N, ...] arrays, clip by clip."""
  a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
  b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
  den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
  return float(np.mean((a * b).sum(1) / np.maximum(den, 1e-12)))


def synthesis_timeline(path: np.ndarray, sigmas, pool: int = 4) -> dict:
  """Layout and motion agreement of each node's clean-clip estimate with the final sample.

  Args:
    path: [K + 1, N, T, H, W, C] Euler states at `sigmas` (`euler_sample(..., return_path=True)`);
      the velocity at node k is recovered exactly as (x_{k+1} - x_k) / (s_{k+1} - s_k).
    sigmas: [K + 1] the descending noise levels of the path, ending at 0.
    pool: side of the average pool that keeps the coarse content; must divide H and W.

  Returns:
    {"sigma": [K], "layout": [K], "motion": [K]} (correlations, 1 = already final).
  """
  path = np.asarray(path, np.float64)
  require(path.shape[3] % pool == 0 and path.shape[4] % pool == 0, "pool",
          f"{pool} does not divide the frame size {path.shape[3:5]}", "use a divisor of H and W")
  sigmas = np.asarray(sigmas, np.float64)
  final = _pool(path[-1], pool)
  out = {"sigma": [], "layout": [], "motion": []}
  for k in range(len(sigmas) - 1):
    v = (path[k + 1] - path[k]) / (sigmas[k + 1] - sigmas[k])
    est = _pool(path[k] - sigmas[k] * v, pool)
    out["sigma"].append(float(sigmas[k]))
    out["layout"].append(_clip_correlation(est, final))
    out["motion"].append(_clip_correlation(np.diff(est, axis=1), np.diff(final, axis=1)))
  return out
