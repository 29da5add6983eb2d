"""Rectified-flow schedule, the shifted Euler grid DCM distils along, and its phase split.

Noise level s in [0, 1]: x_s = s * eps + (1 - s) * x0; the net predicts v = eps - x0 at t = 1000 s
and an Euler step is x_{s'} = x_s + (s' - s) v (FlowMatchEulerDiscreteScheduler as used by DCM's
code).

Grid (DCM `EulerSolver`, 50 steps): sigmas[i] = shift((i + 1) * r / 1000), r = 1000 // euler_steps,
and sigmas_prev[i] = sigmas[i - 1] with sigmas_prev[0] = shift(1 / 1000) (not 0). The semantic
expert owns grid indices [boundary_index, euler_steps) and distils to the phase end
sigmas_prev[boundary_index]; the detail expert owns [0, boundary_index) and distils to
sigmas_prev[0]. Code default: shift 17, index 38.

`resolution_equivalent_sigma` carries a noise level between data sizes (SD3, Esser et al. 2024,
eq. 23: the same time shift, with factor sqrt(dims_to / dims_from), keeps the signal-to-noise ratio
per dimension), which is how a boundary chosen for large latents maps onto small clips.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_positive, require

SEMANTIC = "semantic"
DETAIL = "detail"


def time_shift(s, alpha: float):
  """s -> alpha s / (1 + (alpha - 1) s), which divides the signal-to-noise ratio ((1 - s) / s)^2
  by alpha^2."""
  return alpha * s / (1.0 + (alpha - 1.0) * s)


def resolution_equivalent_sigma(s, dims_from: int, dims_to: int):
  """The noise level on data of `dims_to` dimensions that leaves as much signal per dimension as
  level `s` does on `dims_from` dimensions (SD3 eq. 23, alpha = sqrt(dims_to / dims_from))."""
  check_positive("dims_from", dims_from)
  check_positive("dims_to", dims_to)
  return time_shift(s, float(np.sqrt(dims_to / dims_from)))


@dataclasses.dataclass(frozen=True)
class FlowSchedule(Section):
  """The teacher's Euler grid and the semantic/detail phase boundary on it (a config section; the
  defaults are DCM's code)."""
  shift: float = 17.0
  euler_steps: int = 50
  boundary_index: int = 38
  num_train_timesteps: int = 1000

  def __post_init__(self):
    check_positive("shift", self.shift)
    check_positive("euler_steps", self.euler_steps)
    require(self.num_train_timesteps % self.euler_steps == 0, "euler_steps",
            f"{self.euler_steps} does not divide num_train_timesteps={self.num_train_timesteps}",
            "use a divisor of 1000 such as 10, 20 or 50")
    require(0 < self.boundary_index < self.euler_steps, "boundary_index",
            f"must lie in (0, euler_steps={self.euler_steps}), got {self.boundary_index}",
            "pick a grid index that leaves both experts at least one step (paper: 38 of 50)")

  def shift_sigma(self, u):
    """Timestep shift s = a u / (1 + (a - 1) u) (SD3 / HunyuanVideo flow shift)."""
    return time_shift(u, self.shift)

  @property
  def sigmas(self) -> np.ndarray:
    """[euler_steps] ascending grid noise levels, the last one 1.0."""
    ratio = self.num_train_timesteps // self.euler_steps
    u = np.arange(1, self.euler_steps + 1) * ratio / self.num_train_timesteps
    return self.shift_sigma(u)

  @property
  def sigmas_prev(self) -> np.ndarray:
    """[euler_steps] the node one teacher Euler step below each grid node."""
    s_min = self.shift_sigma(1.0 / self.num_train_timesteps)
    return np.concatenate([[s_min], self.sigmas[:-1]])

  @property
  def boundary_sigma(self) -> float:
    """Semantic phase end; noise levels at or below it belong to the detail expert."""
    return float(self.sigmas_prev[self.boundary_index])

  def index_range(self, phase: str) -> tuple[int, int]:
    """Half-open range of grid indices an expert trains on."""
    if phase == SEMANTIC:
      return self.boundary_index, self.euler_steps
    require(phase == DETAIL, "phase", f"unknown phase {phase!r}", "use 'semantic' or 'detail'")
    return 0, self.boundary_index

  def phase_end(self, phase: str) -> float:
    """Noise level an expert's consistency function maps to (one phase per expert, PCM style)."""
    return self.boundary_sigma if phase == SEMANTIC else float(self.sigmas_prev[0])

  def is_detail(self, s: float) -> bool:
    """DCM routing (`hy_forward`: t <= 981 -> detail expert): True below the phase boundary."""
    return float(s) <= self.boundary_sigma + 1e-6

  def teacher_sigmas(self) -> np.ndarray:
    """The teacher's full Euler path: every grid node from 1.0 down, then sigmas_prev[0], then 0."""
    return np.concatenate([self.sigmas[::-1], [self.sigmas_prev[0], 0.0]])

  def student_sigmas(self, steps: int) -> np.ndarray:
    """Few-step inference nodes (descending, ending at 0): ceil(steps/2) semantic + the rest detail.

    Within each phase the start nodes are spread evenly over its grid indices, which reproduces the
    code's HunyuanVideo 4-step list [1.0, 0.992, 0.9818, 0.9124] for shift 17, index 38.
    """
    check_positive("steps", steps)
    n_sem = (steps + 1) // 2
    starts = []
    for phase, n in ((SEMANTIC, n_sem), (DETAIL, steps - n_sem)):
      lo, hi = self.index_range(phase)
      starts += [hi - 1 - (j * (hi - lo)) // n for j in range(n)]
    return np.concatenate([self.sigmas[starts], [0.0]])
