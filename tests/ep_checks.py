"""Expert-parallel checks on 8 simulated CPU devices; run by tests/test_expert_parallel.py.

Run alone: XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/ep_checks.py
Prints one JSON object of measured values; the test module asserts on them.
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from moe_jax.layers.moe import MoE
from moe_jax.parallel.expert_parallel import (count_all_to_all, expert_parallel_apply,
                                              expert_param_bytes_per_device)
from moe_jax.parallel.mesh import make_mesh
from moe_jax.utils.errors import ConfigError


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))


def main(seed: int):
  out = {"devices": jax.device_count()}
  moe = MoE(num_experts=8, top_k=2, d_ff=32, capacity_factor=0.0, shared_d_ff=16,
            shared_gate=True)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(16, 6, 24)), jnp.float32)
  variables = moe.init(jax.random.key(seed), x)

  def single_loss(params, x):
    return jnp.sum(jnp.sin(moe.apply({"params": params}, x)))

  y_ref = moe.apply(variables, x)
  g_ref = jax.grad(single_loss, argnums=(0, 1))(variables["params"], x)
  for axes in ({"expert": 8}, {"expert": 4, "data": 2}, {"data": 2, "expert": 4}):
    mesh = make_mesh(axes)
    name = "x".join(f"{k}{v}" for k, v in axes.items())

    def ep_loss(params, x, mesh=mesh):
      return jnp.sum(jnp.sin(expert_parallel_apply(moe, {"params": params}, x, mesh)[0]))

    y, stats = jax.jit(lambda p, x, mesh=mesh: expert_parallel_apply(moe, {"params": p}, x,
                                                                      mesh))(
                                                                          variables["params"], x)
    g = jax.jit(jax.grad(ep_loss, argnums=(0, 1)))(variables["params"], x)
    out[name] = {
        "y_err": rel_err(y, y_ref),
        "grad_err": max(rel_err(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref))),
        "dropped": int(stats["dropped"]),
        "tokens": float(jnp.sum(stats["tokens_per_expert"])),
    }
    if name == "expert4xdata2":
      lowered = jax.jit(lambda p, x: expert_parallel_apply(moe, {"params": p}, x, mesh)[0])
      out["all_to_all_forward"] = count_all_to_all(
          lowered.lower(variables["params"], x).compile().as_text())
      sharded = jax.device_put(variables["params"]["experts"],
                               NamedSharding(mesh, P("expert")))
      out["expert_bytes"] = {
          "per_device": expert_param_bytes_per_device(sharded),
          "total": {k: int(v.nbytes) for k, v in zip(
              expert_param_bytes_per_device(sharded), jax.tree.leaves(sharded))},
          "expert_shards": mesh.shape["expert"]}

  # Capacity: a tight per-device capacity drops assignments; the count is summed over the mesh.
  tight = MoE(num_experts=8, top_k=2, d_ff=32, capacity_factor=0.5)
  tv = tight.init(jax.random.key(1), x)
  mesh = make_mesh({"expert": 8})
  _, stats = jax.jit(lambda v, x: expert_parallel_apply(tight, v, x, mesh))(tv, x)
  inter = tight.apply(tv, x, mutable=["intermediates"])[1]["intermediates"]
  chosen = np.asarray(inter["expert_index"][0]).reshape(8, 2 * 6 * 2)  # per device: 2 seqs
  cap = int(np.ceil(0.5 * 2 * 6 * 2 / 8))
  brute = 0
  for dev in range(8):
    counts = np.bincount(chosen[dev], minlength=8)
    brute += int(np.sum(np.maximum(counts - cap, 0)))
  out["capacity"] = {"dropped": int(stats["dropped"]), "brute_force": brute}

  errors = {}
  for label, axes, layer in (("mesh_too_big", {"expert": 16}, moe),
                             ("experts_not_divisible", {"expert": 8},
                              MoE(num_experts=12, top_k=2, d_ff=8))):
    try:
      mesh = make_mesh(axes)
      expert_parallel_apply(layer, layer.init(jax.random.key(0), x), x, mesh)
      errors[label] = "no error"
    except ConfigError as e:
      errors[label] = str(e)
  out["errors"] = errors
  print(json.dumps(out))


if __name__ == "__main__":
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
