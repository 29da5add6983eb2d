"""Expert parallelism: experts sharded over a mesh axis, tokens moved by all-to-all.

Legend: N devices on the expert axis, E experts (E_l = E / N per device), T_l tokens per device,
C slots per (source device, expert), D model width.

On each device, inside `jax.shard_map`:
  1. route the local tokens (router weights replicated) -> assignments over all E experts;
  2. place each assignment in its expert's slot buffer [E, C, D] = [N, E_l, C, D]
     (first choices first; overflow beyond C is dropped and counted over the whole mesh);
  3. all_to_all over the expert axis: device n receives [N(source), E_l, C, D]   <- dispatch
  4. run its E_l experts on [E_l, N * C, D];
  5. all_to_all back to the source devices                                        <- combine
  6. weight and sum each token's expert outputs.
Exactly two all-to-alls per MoE layer. With `capacity_factor <= 0`, C = T_l and nothing can be
dropped ("dropless" on a capacity-padded all-to-all: XLA:CPU has no ragged all-to-all; on GPU/TPU
`jax.lax.ragged_all_to_all` would avoid the padding).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from moe_jax.layers import dispatch as dispatch_lib
from moe_jax.layers.experts import Experts, SharedExperts
from moe_jax.layers.losses import tokens_per_expert
from moe_jax.layers.moe import MoE
from moe_jax.utils.errors import require


def check_expert_mesh(moe: MoE, mesh: Mesh, expert_axis: str, batch: int) -> None:
  """Refuses, with the fix, a mesh whose expert axis or batch split does not fit the layer."""
  require(expert_axis in mesh.shape, "mesh", f"has no axis {expert_axis!r} (axes: "
          f"{dict(mesh.shape)})", f"add an {expert_axis!r} axis to the mesh")
  n = mesh.shape[expert_axis]
  require(moe.num_experts % n == 0, "num_experts",
          f"{moe.num_experts} experts do not divide over the {n} devices of the "
          f"{expert_axis!r} mesh axis", f"use a multiple of {n} experts or another mesh")
  require(batch % mesh.size == 0, "batch_size",
          f"batch {batch} does not split over the {mesh.size} devices of the mesh",
          f"use a batch size divisible by {mesh.size}")
  require(moe.router != "expert_choice", "router",
          "expert-choice routing needs all tokens of a group on one device",
          "use a token-choice router with expert parallelism")


def expert_parallel_apply(moe: MoE, variables: dict, x: jax.Array, mesh: Mesh,
                          expert_axis: str = "expert"):
  """Applies the MoE layer `moe` with its experts sharded over `expert_axis` of `mesh`.

  Args:
    moe: the (unbound) layer; its `capacity_factor` sets C = ceil(cf * T_l * K / E) slots per
      source device and expert (<= 0: C = T_l, no drops).
    variables: the layer's variables as `moe.init` made them ({"params": ..., "moe_bias"?}).
    x: [B, S, D], B split over all mesh axes.

  Returns:
    (y[B, S, D], {"tokens_per_expert": [E], "dropped": scalar}) summed over the mesh.
  """
  b, s, d = x.shape
  check_expert_mesh(moe, mesh, expert_axis, b)
  n = mesh.shape[expert_axis]
  e_local = moe.num_experts // n
  params = variables["params"]
  router_vars = {"params": params["router"]}
  if "moe_bias" in variables:
    router_vars["moe_bias"] = variables["moe_bias"]["router"]
  router = moe.router_module(None)
  experts = Experts(e_local, moe.d_ff, moe.activation, moe.dtype, moe.param_dtype)
  all_axes = tuple(mesh.axis_names)

  def local(x_l, router_vars, expert_params):
    bl = x_l.shape[0]
    tokens = x_l.reshape(bl * s, d)
    routing = router.apply(router_vars, tokens)
    c = dispatch_lib.expert_capacity(routing.expert.shape[0], tokens.shape[0],
                                     moe.num_experts, moe.capacity_factor)
    order, slot, keep, counts = dispatch_lib._slots(routing, moe.num_experts, c)  # pylint: disable=protected-access
    send = jnp.zeros((moe.num_experts * c + 1, d), moe.dtype).at[slot].set(
        tokens[routing.token[order]].astype(moe.dtype))
    send = send[:-1].reshape(n, e_local, c, d)
    # dispatch all-to-all: [N(dest), E_l, C, D] -> [N(source), E_l, C, D]
    recv = jax.lax.all_to_all(send, expert_axis, 0, 0)
    rows = recv.transpose(1, 0, 2, 3).reshape(e_local, n * c, d)
    out, _ = experts.apply({"params": expert_params}, rows,
                           dispatch_lib._einsum_matmul)  # pylint: disable=protected-access
    back = out.reshape(e_local, n, c, d).transpose(1, 0, 2, 3)
    # combine all-to-all: outputs return to the devices their tokens came from
    ret = jax.lax.all_to_all(back, expert_axis, 0, 0).reshape(moe.num_experts * c, d)
    ret = jnp.concatenate([ret, jnp.zeros((1, d), ret.dtype)])
    y = dispatch_lib._combine(ret[slot], order, routing, tokens.shape[0])  # pylint: disable=protected-access
    stats = {"tokens_per_expert": jax.lax.psum(counts, all_axes),
             "dropped": jax.lax.psum(jnp.sum(~keep).astype(jnp.int32), all_axes)}
    return y.reshape(bl, s, d).astype(x_l.dtype), stats

  expert_spec = jax.tree.map(lambda _: P(expert_axis), params["experts"])
  y, stats = jax.shard_map(
      local, mesh=mesh,
      in_specs=(P(all_axes), jax.tree.map(lambda _: P(), router_vars), expert_spec),
      out_specs=(P(all_axes), {"tokens_per_expert": P(), "dropped": P()}),
      check_vma=False)(x, router_vars, params["experts"])
  if moe.shared_d_ff:
    shared = SharedExperts(moe.shared_d_ff, moe.activation, moe.shared_gate, moe.dtype,
                           moe.param_dtype)
    y = y + shared.apply({"params": params["shared_experts"]}, x)
  return y, stats


def count_all_to_all(compiled_text: str) -> int:
  """Number of all-to-all ops in compiled HLO text (async pairs counted once)."""
  lines = compiled_text.splitlines()
  starts = sum(" all-to-all-start(" in l for l in lines)
  plain = sum(" all-to-all(" in l for l in lines)
  return starts + plain


def expert_param_bytes_per_device(expert_params) -> dict[str, int]:
  """Bytes of each expert weight held by one device, read from the arrays' shardings."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(expert_params):
    shard = leaf.sharding.shard_shape(leaf.shape)
    out[jax.tree_util.keystr(path)] = int(jnp.dtype(leaf.dtype).itemsize *
                                          jnp.prod(jnp.array(shard)))
  return out
