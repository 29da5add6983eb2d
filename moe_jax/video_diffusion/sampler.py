"""Euler sampling of the flow ODE dx/ds = v(x, s) along a descending list of noise levels.

Both the teacher's 50-step path and the students' few-step schedules (DCM `InferencePCMFMScheduler`:
plain Euler on the given sigmas, last step to 0) use this one function.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp


def euler_sample(velocity: Callable, x, sigmas: Sequence[float], return_path: bool = False):
  """x_{i+1} = x_i + (s_{i+1} - s_i) v(x_i, s_i), with `velocity(x, s)` taking a Python float s.

  Args:
    velocity: the routed student or the teacher, v(x [B, T, H, W, C], s) -> [B, T, H, W, C].
    x: [B, T, H, W, C] noise at sigmas[0] (normally 1.0).
    sigmas: descending noise levels; the sample is the state at sigmas[-1].
    return_path: also return the states at every node, [len(sigmas), B, T, H, W, C].
  """
  path = [x]
  for s, s_next in zip(sigmas[:-1], sigmas[1:]):
    x = x + (float(s_next) - float(s)) * velocity(x, float(s))
    path.append(x)
  return (x, jnp.stack(path)) if return_path else x
