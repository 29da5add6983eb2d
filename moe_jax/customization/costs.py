"""Inference cost of a network per example: parameters, FLOPs and a simple energy proxy.

Counted from the network itself: every `nn.Conv` / `nn.Dense` call is intercepted while one forward
pass on a single example is traced for shapes only (`jax.eval_shape`: nothing is computed).
  params  = kernel + bias entries;
  MACs    = output positions x kernel entries (conv), inputs x outputs (dense);
  FLOPs   = 2 x MACs (one multiply and one add each; the bias add is the last add);
  reads   = params + input activations (each weight and each input element fetched once);
  energy  = FLOPs + read_weight x reads (a unit-cost proxy; read_weight > 1 models costlier memory).
Pooling, activations and the gate's comparison are not counted (a few hundred ops against ~10^5).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import numpy as np

from moe_jax.utils.errors import require
from moe_jax.utils.trees import param_count

PAPER_OVERHEAD = 0.025  # Abstract: LE + GN cost "around 2.5%" of GE in energy and network size.


@dataclasses.dataclass(frozen=True)
class LayerCost:
  name: str
  params: int
  macs: int
  reads: int


def layer_costs(module: nn.Module, params, example) -> list[LayerCost]:
  """Per-layer costs of `module.apply({'params': params}, example[:1])`, in call order.

  `params` and `example` may be arrays or `jax.ShapeDtypeStruct`s (only shapes are read).
  """
  layers = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    m = context.module
    if context.method_name == "__call__" and isinstance(m, (nn.Conv, nn.Dense)):
      kernel_size = int(np.prod(m.variables["params"]["kernel"].shape))
      n_params = param_count(m.variables["params"])
      if isinstance(m, nn.Conv):
        require(m.feature_group_count == 1, "module", "grouped convolutions are not counted",
                "use feature_group_count=1")
        macs = int(np.prod(out.shape[1:-1])) * kernel_size
      else:
        macs = kernel_size
      reads = n_params + int(np.prod(args[0].shape[1:]))
      layers.append(LayerCost(m.name, n_params, macs, reads))
    return out

  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda p, x: module.apply({"params": p}, x), params, example[:1])
  return layers


def total_cost(layers: list[LayerCost], read_weight: float = 1.0) -> dict[str, float]:
  """Sums layers into {'params', 'flops', 'reads', 'energy'} per example."""
  params = sum(l.params for l in layers)
  flops = 2 * sum(l.macs for l in layers)
  reads = sum(l.reads for l in layers)
  return {"params": params, "flops": flops, "reads": reads,
          "energy": flops + read_weight * reads}


def overhead(extra: list[dict[str, float]], base: dict[str, float]) -> dict[str, float]:
  """Summed cost of `extra` networks (LE, GN) as a fraction of `base` (GE), per metric."""
  return {k: sum(e[k] for e in extra) / base[k] for k in base}
