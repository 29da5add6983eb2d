"""Schedule: the shifted Euler grid of DCM's code, the few-step nodes and the phase routing."""
import numpy as np
import pytest

from moe_jax.utils.errors import ConfigError
from moe_jax.video_diffusion.schedule import (DETAIL, SEMANTIC, FlowSchedule,
                                              resolution_equivalent_sigma)


def _shift(u, a):
  return a * u / (1 + (a - 1) * u)


def test_grid_matches_dcm_code_values():
  # Values computed from FastVideo's EulerSolver with shift 17 and 50 steps (recorded in dcm.md).
  s = FlowSchedule(shift=17.0, euler_steps=50, boundary_index=38)
  np.testing.assert_allclose(s.sigmas[[0, 34, 35, 37, 38, 49]],
                             [0.2576, 0.9754, 0.9776, 0.9818, 0.9837, 1.0], atol=1e-4)
  assert s.sigmas_prev[0] == pytest.approx(0.0167, abs=1e-4)
  assert s.boundary_sigma == pytest.approx(0.98176, abs=1e-5)
  # The HunyuanVideo 4-step inference list of sample/inference_hy.py, then 0.
  np.testing.assert_allclose(s.student_sigmas(4), [1.0, 0.992, 0.9818, 0.9124, 0.0], atol=1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_grid_against_numpy_formula(seed):
  rng = np.random.default_rng(seed)
  shift, steps = rng.uniform(1, 20), int(rng.choice([10, 20, 50]))
  s = FlowSchedule(shift=shift, euler_steps=steps, boundary_index=steps // 2)
  u = np.arange(1, steps + 1) * (1000 // steps) / 1000.0
  np.testing.assert_allclose(s.sigmas, _shift(u, shift), rtol=1e-12)
  np.testing.assert_allclose(s.sigmas_prev[1:], s.sigmas[:-1])
  path = s.teacher_sigmas()
  assert path[0] == 1.0 and path[-1] == 0.0 and np.all(np.diff(path) < 0)


@pytest.mark.parametrize("seed", range(4))
def test_phase_split_routes_each_grid_node_to_its_expert(seed):
  rng = np.random.default_rng(seed)
  steps = int(rng.choice([10, 20, 50]))
  s = FlowSchedule(shift=rng.uniform(1, 20), euler_steps=steps,
                   boundary_index=int(rng.integers(1, steps)))
  lo_sem, hi_sem = s.index_range(SEMANTIC)
  lo_det, hi_det = s.index_range(DETAIL)
  assert (lo_det, hi_det, lo_sem, hi_sem) == (0, s.boundary_index, s.boundary_index, steps)
  for i, sigma in enumerate(s.sigmas):
    assert s.is_detail(sigma) == (i < s.boundary_index), (i, sigma)
  # The semantic phase ends exactly where the detail expert takes over.
  assert s.is_detail(s.phase_end(SEMANTIC))
  assert s.phase_end(DETAIL) == s.sigmas_prev[0]
  # Few-step schedules: the first ceil(n/2) steps start in the semantic phase, the rest in detail.
  for n in (1, 2, 4, 6):
    starts = s.student_sigmas(n)[:-1]
    routed = [s.is_detail(x) for x in starts]
    assert routed == [False] * ((n + 1) // 2) + [True] * (n - (n + 1) // 2)


@pytest.mark.parametrize("seed", range(3))
def test_resolution_equivalent_sigma_keeps_signal_to_noise_per_dimension(seed):
  rng = np.random.default_rng(seed)
  s = rng.uniform(0.01, 0.99, 16)
  dims_from, dims_to = (int(d) for d in rng.integers(100, 10 ** 7, 2))
  mapped = resolution_equivalent_sigma(s, dims_from, dims_to)
  snr = lambda x: ((1 - x) / x) ** 2
  # SNR per dimension, SNR / dims, is what SD3's shift holds fixed across data sizes.
  np.testing.assert_allclose(snr(mapped) / dims_from, snr(s) / dims_to, rtol=1e-9)
  np.testing.assert_allclose(resolution_equivalent_sigma(s, dims_to, dims_to), s, rtol=1e-12)


def test_dcm_boundary_carried_to_the_default_clip_size():
  # The HunyuanVideo boundary (shift 17, node 38) on 8x90x160x16 latents -> 8x16x16x1 clips lands
  # nearest the shift-3 grid's node 19, the default config's boundary.
  paper = FlowSchedule(shift=17.0, euler_steps=50, boundary_index=38).boundary_sigma
  mapped = resolution_equivalent_sigma(paper, 8 * 90 * 160 * 16, 8 * 16 * 16)
  assert mapped == pytest.approx(0.642, abs=1e-3)
  ours = FlowSchedule(shift=3.0, euler_steps=50, boundary_index=19)
  assert np.argmin(np.abs(ours.sigmas_prev - mapped)) == ours.boundary_index


def test_bad_fields_raise_config_errors():
  with pytest.raises(ConfigError, match="boundary_index"):
    FlowSchedule(euler_steps=50, boundary_index=50)
  with pytest.raises(ConfigError, match="euler_steps"):
    FlowSchedule(euler_steps=30)
  with pytest.raises(ConfigError, match="shift"):
    FlowSchedule(shift=0.0)
  with pytest.raises(ConfigError, match="dims_to"):
    resolution_equivalent_sigma(0.5, 100, 0)
