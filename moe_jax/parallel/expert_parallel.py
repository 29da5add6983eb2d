"""Expert parallelism: experts sharded over a mesh axis, tokens moved by all-to-all.

Legend: N devices on the expert axis, E experts (E_l = E / N per device), T_l tokens per device,
K experts per token, C slots per (source device, expert), D model width.

The MoE layer (moe_jax/layers/moe.py) switches to this path by itself when the logical axis
`expert` maps to a mesh axis of size > 1 (config `parallel.rules`, under `jax.set_mesh`). The
router runs as usual (SPMD over the batch); then, on each device, inside `jax.shard_map`:
  1. place each local assignment in its expert's slot buffer [E, C, D] = [N, E_l, C, D]
     (first choices first; overflow beyond C is dropped and counted over the whole mesh);
  2. all_to_all over the expert axis: device n receives [N(source), E_l, C, D]   <- dispatch
  3. run its E_l experts on [E_l, N * C, D];
  4. all_to_all back to the source devices                                        <- combine
  5. weight and sum each token's expert outputs.
Exactly two all-to-alls per MoE layer. C is per device: the "capacity"/"dense" dispatches use
C = ceil(capacity_factor * T_l * K / E); "dropless" uses C = T_l, so nothing can be dropped
(a capacity-padded all-to-all: XLA:CPU has no ragged all-to-all; on GPU/TPU
`jax.lax.ragged_all_to_all` would avoid the padding).
"""
from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from moe_jax.layers import dispatch as dispatch_lib
from moe_jax.layers.routers import Routing
from moe_jax.parallel.partitioning import mesh_axes
from moe_jax.utils.errors import require


def active_axes() -> tuple[str, tuple[str, ...]] | None:
  """(expert mesh axis, batch mesh axes) when the current mesh and rules ask for expert
  parallelism, else None."""
  expert = mesh_axes("expert")
  if not expert:
    return None
  require(len(expert) == 1, "parallel.rules", f"the logical axis 'expert' maps to several mesh "
          f"axes {expert}", "map 'expert' to one mesh axis")
  return expert[0], mesh_axes("batch")


def check(num_experts: int, router: str, batch: int, mesh_shape: dict, expert_axis: str,
          batch_axes: tuple[str, ...]) -> None:
  """Refuses, with the fix, a layer or batch that does not fit the expert-parallel mesh."""
  n = mesh_shape[expert_axis]
  require(num_experts % n == 0, "num_experts",
          f"{num_experts} experts do not divide over the {n} devices of the {expert_axis!r} "
          "mesh axis", f"use a multiple of {n} experts or another parallel.mesh")
  require(expert_axis in batch_axes, "parallel.rules",
          f"the batch is not split over the expert axis {expert_axis!r} (batch -> "
          f"{batch_axes})", f"add {expert_axis!r} to the mesh axes of the 'batch' rule")
  shards = 1
  for a in batch_axes:
    shards *= mesh_shape[a]
  require(batch % shards == 0, "batch_size",
          f"batch {batch} does not split over the {shards} batch shards of the mesh "
          f"{mesh_shape}", f"use a batch size divisible by {shards}")
  require(router != "expert_choice", "router",
          "expert-choice routing needs all tokens of a group on one device",
          "use a token-choice router with expert parallelism")


def dispatch(x: jax.Array, routing: Routing, expert_params, experts, num_experts: int,
             capacity_factor: float | None, expert_axis: str, batch_axes: tuple[str, ...]):
  """The MoE FFN of x[B, S, D] with experts sharded over `expert_axis`.

  Args:
    x: [B, S, D], B split over `batch_axes` (which include `expert_axis`).
    routing: the token-choice routing of the B * S tokens (token-major, K per token).
    expert_params: the stacked expert weights [E, ...], split over `expert_axis` inside.
    experts: the layer's `Experts` module (a copy with E / N experts runs on each shard).
    capacity_factor: None for C = T_l (dropless), else C = ceil(factor * T_l * K / E).

  Returns:
    (y[B, S, D], DispatchStats) with counts and drops summed over the mesh.
  """
  b, s, d = x.shape
  k = routing.top_k
  mesh = jax.sharding.get_abstract_mesh()
  check(num_experts, "token_choice" if k else "expert_choice", b, dict(mesh.shape),
        expert_axis, batch_axes)
  n = mesh.shape[expert_axis]
  e_local = num_experts // n
  other_axes = tuple(a for a in batch_axes if a != expert_axis)
  experts = experts.clone(parent=None, num_experts=e_local)

  def local(x_l, expert_l, weight_l, params_l):
    t_l = x_l.shape[0] * s
    tokens = x_l.reshape(t_l, d)
    r = Routing(token=jnp.repeat(jnp.arange(t_l, dtype=jnp.int32), k),
                expert=expert_l.reshape(-1), weight=weight_l.reshape(-1), logits=None,
                probs=None, top_k=k)
    c = (t_l if capacity_factor is None else
         dispatch_lib.expert_capacity(t_l * k, t_l, num_experts, capacity_factor))
    order, slot, keep, counts = dispatch_lib.capacity_slots(r, num_experts, c)
    # Each row carries a trailing 1 so the receiver knows its filled slots (zero_frac).
    rows = jnp.concatenate([tokens[r.token[order]].astype(experts.dtype),
                            jnp.ones((order.shape[0], 1), experts.dtype)], axis=1)
    send = jnp.zeros((num_experts * c + 1, d + 1), experts.dtype).at[slot].set(rows)
    send = send[:-1].reshape(n, e_local, c, d + 1)
    # dispatch all-to-all: [N(dest), E_l, C, D + 1] -> [N(source), E_l, C, D + 1]
    recv = jax.lax.all_to_all(send, expert_axis, 0, 0)
    recv = recv.transpose(1, 0, 2, 3).reshape(e_local, n * c, d + 1)
    out, zero_frac = experts.apply({"params": params_l}, recv[..., :d],
                                   dispatch_lib.einsum_matmul)
    back = out.reshape(e_local, n, c, d).transpose(1, 0, 2, 3)
    # combine all-to-all: outputs return to the devices their tokens came from
    ret = jax.lax.all_to_all(back, expert_axis, 0, 0).reshape(num_experts * c, d)
    ret = jnp.concatenate([ret, jnp.zeros((1, d), ret.dtype)])
    y = dispatch_lib.combine(ret[slot], order, r, t_l)
    filled = recv[..., d].astype(jnp.float32)
    zf_sum, used = jnp.sum(zero_frac * filled, axis=1), jnp.sum(filled, axis=1)  # [E_l]
    if other_axes:
      zf_sum, used = jax.lax.psum((zf_sum, used), other_axes)
    stats = dispatch_lib.DispatchStats(
        tokens_per_expert=jax.lax.psum(counts, batch_axes),
        dropped=jax.lax.psum(jnp.sum(~keep).astype(jnp.int32), batch_axes),
        zero_frac=zf_sum / jnp.maximum(used, 1.0))
    return y.reshape(x_l.shape).astype(x_l.dtype), stats

  tokens_spec = P(batch_axes)
  stats_spec = dispatch_lib.DispatchStats(tokens_per_expert=P(), dropped=P(),
                                          zero_frac=P(expert_axis))
  return jax.shard_map(
      local, in_specs=(tokens_spec, tokens_spec, tokens_spec,
                       jax.tree.map(lambda _: P(expert_axis), expert_params)),
      out_specs=(tokens_spec, stats_spec), check_vma=False)(
          x, routing.expert.reshape(b, s * k), routing.weight.reshape(b, s * k), expert_params)


def count_collective(compiled_text: str, op: str) -> int:
  """Number of `op` instructions ("all-to-all", "all-gather", ...) in compiled HLO text (async
  start/done pairs counted once)."""
  return sum(f" {op}(" in l or f" {op}-start(" in l for l in compiled_text.splitlines())


def count_all_to_all(compiled_text: str) -> int:
  """Number of all-to-all ops in compiled HLO text (async pairs counted once)."""
  return count_collective(compiled_text, "all-to-all")


_DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1}


def collective_shapes(compiled_text: str, op: str) -> list[tuple[str, tuple[int, ...]]]:
  """(element type, dims) of the result of every `op` in compiled HLO text.

  Read from the instructions' result shapes (an async start's result is an (operands, results)
  tuple: its second half). An all-to-all's result has its operand's size; an all-gather's is
  the operand times the devices of the group.
  """
  out = []
  for line in compiled_text.splitlines():
    if f" {op}(" not in line and f" {op}-start(" not in line:
      continue
    shapes = re.findall(r"(\w+)\[([\d,]*)\]", line.split("=", 1)[1].split(f" {op}", 1)[0])
    if f" {op}-start(" in line:
      shapes = shapes[len(shapes) // 2:]
    out += [(dtype, tuple(int(d) for d in dims.split(",") if d)) for dtype, dims in shapes]
  return out


def all_to_all_shapes(compiled_text: str) -> list[tuple[str, tuple[int, ...]]]:
  """(element type, dims) of every array the all-to-alls in compiled HLO text send."""
  return collective_shapes(compiled_text, "all-to-all")


def collective_bytes(compiled_text: str, op: str) -> int:
  """Bytes of the results of every `op` in compiled HLO text, per device: for an all-to-all
  what each device sends (its own block included), for an all-gather what each ends with.

  XLA's cost analysis has no per-collective byte count on every backend, hence the HLO reading.
  """
  return sum(_DTYPE_BYTES[dtype] * math.prod(dims)
             for dtype, dims in collective_shapes(compiled_text, op))


def all_to_all_bytes(compiled_text: str) -> int:
  """Bytes each device sends through all-to-alls in compiled HLO text."""
  return collective_bytes(compiled_text, "all-to-all")


def expert_param_bytes_per_device(expert_params) -> dict[str, int]:
  """Bytes of each expert weight held by one device, read from the arrays' shardings."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(expert_params):
    shard = leaf.sharding.shard_shape(leaf.shape)
    out[jax.tree_util.keystr(path)] = int(jnp.dtype(leaf.dtype).itemsize *
                                          jnp.prod(jnp.array(shard)))
  return out
