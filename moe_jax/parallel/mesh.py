"""Device meshes from config: named axes such as data, fsdp, expert, tensor."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from moe_jax.utils.errors import require


def make_mesh(axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a Mesh with `axes` (name -> size, in order); -1 takes the devices left over.

  Raises a ConfigError naming `mesh` when the sizes do not multiply to the device count.
  """
  devices = list(devices if devices is not None else jax.devices())
  sizes = dict(axes)
  free = [k for k, v in sizes.items() if v == -1]
  require(len(free) <= 1, "mesh", f"at most one axis may be -1, got {free}",
          "give explicit sizes to all but one axis")
  known = math.prod(v for v in sizes.values() if v != -1)
  if free:
    require(known > 0 and len(devices) % known == 0, "mesh",
            f"axes {dict(axes)} do not divide the {len(devices)} devices",
            "choose axis sizes whose product divides the device count")
    sizes[free[0]] = len(devices) // known
  total = math.prod(sizes.values())
  require(total == len(devices), "mesh",
          f"axes {sizes} need {total} devices but {len(devices)} are present",
          f"make the axis sizes multiply to {len(devices)} (or use -1 for one axis)")
  grid = np.asarray(devices).reshape(tuple(sizes.values()))
  return Mesh(grid, tuple(sizes))
