"""The Euler sampler: NumPy parity, convergence to the exact flow of Gaussian data, and the few-step
sampler with the teacher as its own student reproducing the teacher's ODE path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.video_diffusion import dcm_experts
from moe_jax.video_diffusion.dit import VideoDiT
from moe_jax.video_diffusion.sampler import euler_sample
from moe_jax.video_diffusion.schedule import FlowSchedule

ARCH = dict(frames=4, size=8, patch=4, width=8, depth=2, heads=2)


def _gaussian_flow(m, sd):
  """Exact rectified-flow velocity and flow map when x0 ~ N(m, sd^2) per dimension.

  The marginal at s is N((1 - s) m, r(s)^2), r(s)^2 = s^2 + (1 - s)^2 sd^2, and the probability-flow
  ODE maps noise x1 to x_s = (1 - s) m + r(s) x1, so v = -m + r'(s) / r(s) (x - (1 - s) m).
  """
  r = lambda s: np.sqrt(s ** 2 + (1 - s) ** 2 * sd ** 2)
  dr = lambda s: (s - (1 - s) * sd ** 2) / r(s)
  velocity = lambda x, s: -m + dr(s) / r(s) * (x - (1 - s) * m)
  flow = lambda x1, s: (1 - s) * m + r(s) * x1
  return velocity, flow


@pytest.mark.parametrize("seed", range(3))
def test_teacher_path_converges_to_exact_flow_of_gaussian_data(seed):
  rng = np.random.default_rng(seed)
  m, sd = rng.normal(size=(1, 6)), rng.uniform(0.2, 1.0, (1, 6))
  velocity, flow = _gaussian_flow(m, sd)
  x1 = rng.normal(size=(5, 6))
  sched = FlowSchedule(shift=3.0, euler_steps=50, boundary_index=38)
  sigmas = sched.teacher_sigmas()
  x0, path = euler_sample(velocity, x1, sigmas, return_path=True)
  exact = np.stack([flow(x1, s) for s in sigmas])
  # First-order solver on a 51-step grid: errors of a few percent of the data scale.
  assert np.max(np.abs(np.asarray(path) - exact)) < 0.1
  np.testing.assert_allclose(np.asarray(x0), flow(x1, 0.0), atol=0.1)
  # Halving the step size roughly halves the error (Euler is first order).
  fine = FlowSchedule(shift=3.0, euler_steps=100, boundary_index=76).teacher_sigmas()
  err = lambda s: np.max(np.abs(np.asarray(euler_sample(velocity, x1, s)) - flow(x1, 0.0)))
  assert err(fine) < 0.75 * err(sigmas)


def test_teacher_as_its_own_student_reproduces_teacher_ode_path():
  model = VideoDiT(**ARCH)
  rng = np.random.default_rng(0)
  x1 = rng.normal(size=(2, 4, 8, 8, 1)).astype(np.float32)
  params = model.init(jax.random.PRNGKey(0), x1, np.ones(2, np.float32))["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [p + 0.2 * jax.random.normal(k, p.shape)
                                     for p, k in zip(leaves, keys)])
  teacher = jax.jit(lambda x, s: model.apply({"params": params}, x, s))
  sched = FlowSchedule(shift=3.0, euler_steps=10, boundary_index=7)
  sigmas = sched.teacher_sigmas()
  # Student sampler: the routed dual expert with the teacher as both experts, on the teacher's grid.
  student = dcm_experts.dual_velocity(sched, teacher, teacher)
  _, path = euler_sample(student, jnp.asarray(x1), sigmas, return_path=True)
  # Reference: the teacher's ODE integrated in float64 NumPy node by node.
  x, ref = x1.astype(np.float64), [x1.astype(np.float64)]
  for s, s_next in zip(sigmas[:-1], sigmas[1:]):
    v = np.asarray(teacher(x.astype(np.float32), np.full(2, s, np.float32)), np.float64)
    x = x + (s_next - s) * v
    ref.append(x)
  assert np.abs(np.asarray(ref[-1]) - x1).max() > 0.1            # the teacher moves the sample
  np.testing.assert_allclose(np.asarray(path), np.stack(ref), atol=2e-4)


def test_euler_sample_matches_numpy_on_linear_field():
  rng = np.random.default_rng(3)
  a = rng.normal(size=(4, 4)) * 0.5
  velocity = lambda x, s: x @ a.T + s
  x = rng.normal(size=(3, 4))
  sigmas = [1.0, 0.7, 0.3, 0.0]
  ref = x.copy()
  for s, t in zip(sigmas[:-1], sigmas[1:]):
    ref = ref + (t - s) * (ref @ a.T + s)
  np.testing.assert_allclose(np.asarray(euler_sample(velocity, x, sigmas)), ref, rtol=1e-10)
