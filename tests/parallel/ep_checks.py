"""Expert-parallel MoE layer checks on 8 simulated CPU devices; run by tests/test_expert_parallel.py.

Run alone: python tests/ep_checks.py [seed]
Prints one JSON object of measured values; the test module asserts on them.
"""
import json
import sys

from check_utils import config_error  # first: it sets up the 8 devices before JAX starts
import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.layers.moe import MoE, MoEConfig
from moe_jax.parallel import partitioning
from moe_jax.parallel.expert_parallel import (all_to_all_bytes, count_all_to_all,
                                              expert_param_bytes_per_device)
from moe_jax.parallel.mesh import make_mesh

RULES = (("batch", ("data", "expert")), ("expert", "expert"))  # other logical axes: replicated


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))


def sown(layer, params, x):
  y, inter = layer.apply({"params": params}, x, mutable=["intermediates"])
  inter = inter["intermediates"]
  return y, {k: inter[k][0] for k in ("tokens_per_expert", "dropped", "expert_zero_frac")}


def main(seed: int):
  out = {"devices": jax.device_count()}
  moe = MoE(MoEConfig(num_experts=8, top_k=2, d_ff=32, shared_d_ff=16, shared_gate=True),
            "relu")
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(16, 6, 24)), jnp.float32)
  params = nn.unbox(moe.init(jax.random.key(seed), x))["params"]

  def loss(params, x):
    return jnp.sum(jnp.sin(moe.apply({"params": params}, x)))

  y_ref, stats_ref = sown(moe, params, x)
  g_ref = jax.grad(loss, argnums=(0, 1))(params, x)
  for axes in ({"expert": 8}, {"expert": 4, "data": 2}, {"data": 2, "expert": 4}):
    mesh = make_mesh(axes)
    name = "x".join(f"{k}{v}" for k, v in axes.items())
    with partitioning.use(mesh, RULES):
      y, stats = jax.jit(lambda p, x: sown(moe, p, x))(params, x)
      g = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
      compiled = jax.jit(lambda p, x: moe.apply({"params": p}, x)).lower(params, x).compile()
    out[name] = {
        "y_err": rel_err(y, y_ref),
        "grad_err": max(rel_err(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref))),
        "dropped": int(stats["dropped"]),
        "tokens_per_expert_equal": bool(np.array_equal(stats["tokens_per_expert"],
                                                       stats_ref["tokens_per_expert"])),
        "zero_frac_err": float(np.max(np.abs(np.asarray(stats["expert_zero_frac"]) -
                                             np.asarray(stats_ref["expert_zero_frac"])))),
        "all_to_all_forward": count_all_to_all(compiled.as_text()),
        "all_to_all_bytes": all_to_all_bytes(compiled.as_text()),
    }
    if name == "expert4xdata2":
      sharded = jax.device_put(params["experts"], partitioning.shardings(
          jax.eval_shape(moe.init, jax.random.key(0), x)["params"]["experts"], mesh, RULES))
      out["expert_bytes"] = {
          "per_device": expert_param_bytes_per_device(sharded),
          "total": {k: int(v.nbytes) for k, v in zip(
              expert_param_bytes_per_device(sharded), jax.tree.leaves(sharded))},
          "expert_shards": mesh.shape["expert"]}

  # Capacity: a tight per-device capacity drops assignments; the count is summed over the mesh.
  tight = MoE(MoEConfig(num_experts=8, top_k=2, d_ff=32, dispatch="capacity",
                        capacity_factor=0.5))
  tp = nn.unbox(tight.init(jax.random.key(1), x))["params"]
  mesh = make_mesh({"expert": 8})
  with partitioning.use(mesh, RULES):
    _, stats = jax.jit(lambda p, x: sown(tight, p, x))(tp, x)
  inter = tight.apply({"params": tp}, x, mutable=["intermediates"])[1]["intermediates"]
  chosen = np.asarray(inter["expert_index"][0]).reshape(8, 2 * 6 * 2)  # per device: 2 seqs
  cap = int(np.ceil(0.5 * 2 * 6 * 2 / 8))
  brute = sum(int(np.sum(np.maximum(np.bincount(c, minlength=8) - cap, 0))) for c in chosen)
  out["capacity"] = {"dropped": int(stats["dropped"]), "brute_force": brute, "slots": cap}
  with partitioning.use(mesh, RULES):
    text = jax.jit(lambda p, x: tight.apply({"params": p}, x)).lower(tp, x).compile().as_text()
  out["capacity"]["all_to_all_bytes"] = all_to_all_bytes(text)

  errors = {}
  for label, axes, layer in (("mesh_too_big", {"expert": 16}, moe),
                             ("experts_not_divisible", {"expert": 8},
                              MoE(MoEConfig(num_experts=12, top_k=2, d_ff=8)))):
    def apply(axes=axes, layer=layer):
      variables = nn.unbox(layer.init(jax.random.key(0), x))
      with partitioning.use(make_mesh(axes), RULES):
        layer.apply(variables, x)
    errors[label] = config_error(apply)
  out["errors"] = errors
  print(json.dumps(out))


if __name__ == "__main__":
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
