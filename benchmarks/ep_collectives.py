r"""Collective bytes per token of one expert-parallel MoE layer, read from compiled HLO.

  python -m benchmarks.ep_collectives [--devices=8]

Compiles (does not run: weights are abstract, so the Mixtral-sized layer needs no memory) one MoE
layer forward with its experts sharded over an `expert` mesh axis of `--devices` simulated CPU
devices, and reads the all-to-all operands of the compiled program: bytes each device sends per
local token, for the dropless dispatch (C = T_l slots per source device and expert) and the
capacity dispatch (C = 1.25 T_l K / E). It prints a table and, for comparison, XLA's cost
analysis of the same program ("bytes accessed": every operand of every op, not collectives only;
XLA:CPU reports no per-collective bytes). XLA:CPU runs bfloat16 all-to-alls in float32 (the
element-type column shows it), so on TPU/GPU a bfloat16 layer sends half the bytes shown. Shapes: the tiny LM of configs/lm_tiny.py and a
Mixtral-8x7B layer (configs/mixtral_8x7b.py), bfloat16 activations for the latter.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

_DEVICES = flags.DEFINE_integer("devices", 8, "Simulated CPU devices on the expert axis.")

SHAPES = {
    # name: (d_model, expert d_ff, experts, top-k, tokens per device, dtype)
    "tiny (configs/lm_tiny.py)": (192, 256, 16, 2, 16 * 256 // 8, "float32"),
    "Mixtral-8x7B layer": (4096, 14336, 8, 2, 4096, "bfloat16"),
}


def measure(d, f, e, k, tokens_per_device, dtype, dispatch, devices):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from moe_jax.layers.moe import MoE, MoEConfig
  from moe_jax.parallel import partitioning
  from moe_jax.parallel.expert_parallel import (all_to_all_bytes, all_to_all_shapes,
                                                count_all_to_all)
  from moe_jax.parallel.mesh import make_mesh

  layer = MoE(MoEConfig(num_experts=e, top_k=k, d_ff=f, dispatch=dispatch, capacity_factor=1.25),
              dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype))
  x = jax.ShapeDtypeStruct((devices, tokens_per_device, d), jnp.dtype(dtype))
  params = nn.unbox(jax.eval_shape(layer.init, jax.random.key(0), x))["params"]
  mesh = make_mesh({"expert": devices})
  with partitioning.use(mesh, (("batch", "expert"), ("expert", "expert"))):
    compiled = jax.jit(lambda p, x: layer.apply({"params": p}, x)).lower(params, x).compile()
  text = compiled.as_text()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  a2a_types = sorted({dtype for dtype, _ in all_to_all_shapes(text)})
  return {"all_to_alls": count_all_to_all(text), "a2a_dtypes": "/".join(a2a_types),
          "bytes_per_token": all_to_all_bytes(text) / tokens_per_device,
          "cost_bytes_accessed_per_token": float(cost.get("bytes accessed", float("nan"))) /
                                           tokens_per_device}


def main(argv):
  del argv
  devices = _DEVICES.value
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={devices}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from moe_jax.utils.reporting import markdown_table  # pylint: disable=g-import-not-at-top
  rows = []
  for name, (d, f, e, k, t, dtype) in SHAPES.items():
    for dispatch in ("dropless", "capacity"):
      m = measure(d, f, e, k, t, dtype, dispatch, devices)
      rows.append([name, f"D={d} F={f} E={e} K={k}", dtype, t, dispatch, m["all_to_alls"],
                   m["a2a_dtypes"], round(m["bytes_per_token"]),
                   round(m["cost_bytes_accessed_per_token"])])
      print(f"{name} {dispatch}: {m}", file=sys.stderr)
  print(markdown_table(["layer", "shape", "dtype", "tokens/device", "dispatch", "all-to-alls",
                        "all-to-all element type", "all-to-all bytes sent per token",
                        "cost analysis bytes accessed/token"], rows))


if __name__ == "__main__":
  app.run(main)
