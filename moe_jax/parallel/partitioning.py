"""Logical axis names of parameters and activations, and the rules that place them on a mesh.

Every parameter of the LM and its MoE layers is created with flax linen logical axis names
(`nn.with_logical_partitioning`); key activations are constrained with
`nn.with_logical_constraint`. A config's `parallel.rules` maps each logical name to mesh axes.

Logical names:
  parameters   vocab, embed (model width D), heads, kv_heads, head_dim, mlp (FFN width F, dense
               and expert), expert (the stacked expert axis E), latent (MLA low-rank widths),
               router (the router's expert outputs: never sharded, routing needs all of them),
               norm (norm scales and biases: replicated)
  activations  batch, length, act_embed, act_vocab
Mesh axes: data (batch), fsdp (batch + parameters' embed dim), expert (experts, and batch),
tensor (heads / FFN width). An axis of size 1 costs nothing, so configs name all four.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from moe_jax.utils.errors import require

MESH_AXES = ("data", "fsdp", "expert", "tensor")

# (logical name, mesh axes); the first rule naming a free mesh axis wins (flax semantics).
DEFAULT_RULES = (
    ("batch", ("data", "fsdp", "expert")),
    ("length", None),
    ("act_embed", None),
    ("act_vocab", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("expert", "expert"),
    ("latent", None),
    ("router", None),
    ("norm", None),
)

Rules = tuple[tuple[str, Any], ...]


def as_rules(rules: Sequence[Sequence[Any]]) -> Rules:
  """Config rules (lists from a ConfigDict) as a tuple of (name, None | axis | tuple of axes)."""
  out = []
  for rule in rules:
    require(len(rule) == 2, "parallel.rules", f"each rule is (logical name, mesh axes), got "
            f"{rule!r}", "write rules as [name, axis], [name, [axis, ...]] or [name, None]")
    name, axes = rule
    out.append((str(name), tuple(axes) if isinstance(axes, (list, tuple)) else axes))
  return tuple(out)


def check_rules(rules: Rules, mesh: Mesh) -> None:
  """Refuses rules that name a mesh axis the mesh does not have."""
  for name, axes in rules:
    for axis in (axes if isinstance(axes, tuple) else (axes,)):
      require(axis is None or axis in mesh.shape, "parallel.rules",
              f"rule {name!r} -> {axis!r} names an axis the mesh {dict(mesh.shape)} lacks",
              f"add {axis!r} to parallel.mesh (size 1 is fine) or change the rule")


def mesh_axes(logical: str, rules: Rules | None = None) -> tuple[str, ...]:
  """The mesh axes (of size > 1 in the current mesh) that the logical axis `logical` maps to.

  Reads the rules of the enclosing `nn.logical_axis_rules` context (or `rules`) and the mesh of
  the enclosing `jax.set_mesh`; outside them, () — everything runs on one device.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return ()
  return tuple(a for a in _axes_of(logical, rules) if mesh.shape.get(a, 1) > 1)


def _axes_of(logical: str, rules: Rules | None) -> tuple[str, ...]:
  spec = nn.logical_to_mesh_axes((logical,), rules)
  axes = spec[0] if spec is not None else None
  axes = axes if isinstance(axes, tuple) else (axes,)
  return tuple(a for a in axes if a is not None)


def shardings(abstract_boxed: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for a tree of logically partitioned (boxed) abstract values.

  Leaves without logical names (step counters, optimizer scalars) are replicated.
  """
  return nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract_boxed), mesh, rules)


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """Sharding of a [batch, ...] input: its leading axis over the mesh axes of `batch`."""
  return NamedSharding(mesh, P(_axes_of("batch", rules)))


def batch_shards(mesh: Mesh, rules: Rules) -> int:
  """How many pieces the batch is split into on `mesh` under `rules`."""
  return math.prod(mesh.shape[a] for a in _axes_of("batch", rules))


@contextlib.contextmanager
def use(mesh: Mesh, rules: Rules):
  """Makes `mesh` and `rules` current: logical constraints and expert-parallel MoE layers
  traced inside see them."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield
