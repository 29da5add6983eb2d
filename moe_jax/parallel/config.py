"""The `parallel` section of a config: device mesh, logical-axis rules, multi-host start-up."""
from __future__ import annotations

import dataclasses

from jax.sharding import Mesh

from moe_jax.parallel import partitioning
from moe_jax.parallel.mesh import make_mesh
from moe_jax.utils.config import Section, build
from moe_jax.utils.errors import ConfigError, require


def parse_mesh(text: str) -> dict[str, int]:
  """"data:2,expert:4" -> {"data": 2, "expert": 4} (order kept: the last axis varies fastest)."""
  axes = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, _, size = part.partition(":")
    try:
      axes[name.strip()] = int(size)
    except ValueError:
      raise ConfigError(f"parallel.mesh: {part!r} is not name:size. Fix: write the mesh as "
                        "'data:-1,fsdp:1,expert:1,tensor:1'") from None
  require(bool(axes), "parallel.mesh", "is empty", "write e.g. 'data:-1'")
  return axes


@dataclasses.dataclass(frozen=True)
class ParallelConfig(Section):
  """How a run is laid out on devices.

  mesh: "name:size,..." in device order, -1 for the one axis that takes the devices left over;
    axes of partitioning.MESH_AXES (data, fsdp, expert, tensor) left out get size 1.
  rules: (logical axis, mesh axes) pairs, moe_jax/parallel/partitioning.py.
  distributed: join the multi-host runtime (jax.distributed.initialize) at start-up;
    coordinator_address, num_processes, process_id: its arguments where the cluster does not
    supply them (TPU pods, SLURM and Open MPI do; "" / 0 / -1: let JAX find them).
  """
  mesh: str = "data:-1,fsdp:1,expert:1,tensor:1"
  rules: tuple = partitioning.DEFAULT_RULES
  distributed: bool = False
  coordinator_address: str = ""
  num_processes: int = 0
  process_id: int = -1

  def __post_init__(self):
    object.__setattr__(self, "rules", partitioning.as_rules(self.rules))
    parse_mesh(self.mesh)

  @classmethod
  def from_dict(cls, d, path: str = "parallel") -> "ParallelConfig":
    return build(cls, d, path)

  def build(self, devices=None) -> tuple[Mesh, partitioning.Rules]:
    """The mesh over `devices` (default: all) and the checked rules."""
    axes = parse_mesh(self.mesh)
    axes.update({a: 1 for a in partitioning.MESH_AXES if a not in axes})
    mesh = make_mesh(axes, devices)
    partitioning.check_rules(self.rules, mesh)
    return mesh, self.rules
