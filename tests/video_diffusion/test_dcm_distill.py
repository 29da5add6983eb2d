"""Phased consistency-distillation pairs against a float64 NumPy re-derivation."""
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.video_diffusion import dcm_distill
from moe_jax.video_diffusion.schedule import DETAIL, SEMANTIC, FlowSchedule

SCHED = FlowSchedule(shift=3.0, euler_steps=20, boundary_index=15)


def _fields(seed):
  rng = np.random.default_rng(seed)
  w_t, w_s = rng.normal(size=(2, 3, 3)) * 0.5
  teacher = lambda p, x, s: jnp.tanh(x @ p) * s[:, None, None, None, None] + x
  student = lambda tr, fr, x, s: jnp.tanh(x @ tr) * s[:, None, None, None, None] + x
  return teacher, student, w_t.astype(np.float32), w_s.astype(np.float32)


def _numpy_pair(w_t, w_s, x0, eps, idx, s_end):
  f = lambda w, x, s: np.tanh(x @ w) * s[:, None, None, None, None] + x
  bc = lambda a: a[:, None, None, None, None]
  s, sp = SCHED.sigmas[idx], SCHED.sigmas_prev[idx]
  x = bc(s) * eps + (1 - bc(s)) * x0
  pred = x + bc(s_end - s) * f(w_s, x, s)
  x_prev = x + bc(sp - s) * f(w_t, x, s)
  return pred, x_prev + bc(s_end - sp) * f(w_s, x_prev, sp)


@pytest.mark.parametrize("phase", [SEMANTIC, DETAIL])
def test_cd_pair_matches_numpy(phase):
  teacher, student, w_t, w_s = _fields(0)
  rng = np.random.default_rng(1)
  x0, eps = rng.normal(size=(2, 4, 6, 2, 3, 3)).astype(np.float32)
  lo, hi = SCHED.index_range(phase)
  idx = rng.integers(lo, hi, 4)
  s_end = SCHED.phase_end(phase)
  pred, target = dcm_distill.cd_pair(student, w_s, {}, teacher, w_t, SCHED, s_end, x0, eps,
                                 jnp.asarray(idx))
  ref_pred, ref_target = _numpy_pair(w_t.astype(np.float64), w_s.astype(np.float64),
                                     x0.astype(np.float64), eps.astype(np.float64), idx, s_end)
  np.testing.assert_allclose(np.asarray(pred), ref_pred, atol=1e-5)
  np.testing.assert_allclose(np.asarray(target), ref_target, atol=1e-5)


def test_teacher_as_student_has_zero_loss_only_at_each_phase_start():
  teacher, student, w_t, _ = _fields(2)
  rng = np.random.default_rng(3)
  x0, eps = rng.normal(size=(2, 3, 6, 2, 3, 3)).astype(np.float32)
  for phase in (SEMANTIC, DETAIL):
    lo, hi = SCHED.index_range(phase)
    s_end = SCHED.phase_end(phase)
    for i in (lo, hi - 1):
      pred, target = dcm_distill.cd_pair(student, w_t, {}, teacher, w_t, SCHED, s_end, x0, eps,
                                     jnp.full((3,), i))
      gap = float(jnp.abs(pred - target).max())
      # At a phase's first grid node the phase end is one teacher step away: pred == target.
      assert (gap < 1e-6) == (i == lo), (phase, i, gap)
