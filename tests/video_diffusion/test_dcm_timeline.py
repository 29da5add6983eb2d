"""Synthesis timeline against a straight-line path and a per-clip np.corrcoef reference."""
import numpy as np
import pytest

from moe_jax.utils.errors import ConfigError
from moe_jax.video_diffusion.dcm_timeline import synthesis_timeline


def _path(x0, eps, sigmas):
  return np.stack([s * eps + (1 - s) * x0 for s in sigmas])


def test_exact_flow_path_is_final_at_every_node():
  # On the straight rectified-flow line from eps to x0 the velocity is eps - x0 everywhere, so every
  # node's clean-clip estimate already is x0.
  rng = np.random.default_rng(0)
  x0, eps = rng.normal(size=(2, 3, 5, 8, 8, 1))
  sigmas = np.array([1.0, 0.7, 0.3, 0.1, 0.0])
  out = synthesis_timeline(_path(x0, eps, sigmas), sigmas, pool=2)
  np.testing.assert_allclose(out["sigma"], sigmas[:-1])
  np.testing.assert_allclose(out["layout"], 1.0, atol=1e-12)
  np.testing.assert_allclose(out["motion"], 1.0, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_matches_corrcoef_reference(seed):
  rng = np.random.default_rng(seed)
  sigmas = np.sort(rng.uniform(0.05, 1.0, 4))[::-1].tolist() + [0.0]
  path = rng.normal(size=(len(sigmas), 3, 4, 8, 8, 1))
  out = synthesis_timeline(path, sigmas, pool=4)
  final = path[-1].reshape(3, 4, 2, 4, 2, 4).mean(axis=(3, 5))
  for k in range(len(sigmas) - 1):
    v = (path[k + 1] - path[k]) / (sigmas[k + 1] - sigmas[k])
    est = (path[k] - sigmas[k] * v).reshape(3, 4, 2, 4, 2, 4).mean(axis=(3, 5))
    layout = np.mean([np.corrcoef(e.ravel(), f.ravel())[0, 1] for e, f in zip(est, final)])
    motion = np.mean([np.corrcoef(np.diff(e, axis=0).ravel(), np.diff(f, axis=0).ravel())[0, 1]
                      for e, f in zip(est, final)])
    assert out["layout"][k] == pytest.approx(layout, rel=1e-9)
    assert out["motion"][k] == pytest.approx(motion, rel=1e-9)


def test_pool_must_divide_the_frame():
  with pytest.raises(ConfigError, match="pool"):
    synthesis_timeline(np.zeros((3, 1, 2, 6, 6, 1)), [1.0, 0.5, 0.0], pool=4)
