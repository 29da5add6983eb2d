"""Where a device memory budget goes: expert slots and their precision per MoE layer.

Legend: L MoE layers, E experts per layer, B the budget in bytes for routed experts, s_full and
s_int4 the bytes of one expert at full precision and in INT4 (with its scales and zero points),
C = floor(B / s_int4) the INT4 expert slots the budget holds, S = 4 the shallow layers.

Fate's shallow-favouring allocation (`utils/memory_cost.py`, `memory_cost_qwen`), in order:
  1. L E s_full <= B: every expert resident at full precision.
  2. L E s_int4 <= B: every expert resident in INT4, and the first
     f = floor((B - L E s_int4) / (E (s_full - s_int4))) layers at full precision instead.
  3. otherwise every layer INT4 with c_l slots (the rest offloaded to host memory):
     C >= S E: c_l = E for the first S layers and floor((C - S E) / (L - S)) for each deeper one;
     C <  S E: the shallow layers fill first, c_l = min(E, max(0, C - l E)).
The uniform baseline: 1. as above, else every layer INT4 with min(E, floor(C / L)) slots.

Where this is more precise than Fate's code: B here is what is left for routed experts (Fate first
subtracts the rest of the model, a 1024-token KV cache, 0.3 MB of metadata per expert tensor, and a
hand-tuned +500 MB (Mixtral) / +1400 MB (DeepSeek); the caller owns that budget); "fits" is <=
(Fate's > would send an exact fit down a branch, and at L <= S it would divide by L - S = 0); the
(C - S E) mod (L - S) slots the deep layers cannot share evenly stay unused, as in Fate. INT2 is
not an allocation format: Fate keeps cached experts in INT4 and sends INT2 copies only in prefill.
Fate's code also keeps layer 0 at full precision and fully resident whatever the map says (its
`Qwen2MoeMLP` sets quan_bit = 0 for layer 0) without charging the budget; here layer 0 is charged
like any other.
"""
from __future__ import annotations

import dataclasses

from moe_jax.utils.errors import require

FULL, INT4 = "full", "int4"
SHALLOW_LAYERS = 4


@dataclasses.dataclass(frozen=True)
class Allocation:
  """slots[l]: experts of MoE layer l resident on the device (its cache capacity c_l);
  precision[l]: their format, FULL or INT4; bytes: what they take."""
  slots: tuple
  precision: tuple
  bytes: float


def _check(budget: float, num_layers: int, num_experts: int, full_bytes: float,
           int4_bytes: float) -> None:
  require(budget >= 0, "budget", f"{budget} < 0", "pass the bytes left for routed experts")
  require(num_layers >= 1 and num_experts >= 1, "num_layers, num_experts",
          f"{num_layers}, {num_experts}", "pass at least one MoE layer of at least one expert")
  require(0 < int4_bytes < full_bytes, "int4_bytes",
          f"{int4_bytes} is not in (0, full_bytes = {full_bytes})",
          "pass the byte sizes of one expert in INT4 (with scales) and at full precision")


def _allocation(slots, precision, full_bytes: float, int4_bytes: float) -> Allocation:
  size = {FULL: full_bytes, INT4: int4_bytes}
  return Allocation(tuple(slots), tuple(precision),
                    float(sum(c * size[p] for c, p in zip(slots, precision))))


def shallow_favouring(budget: float, num_layers: int, num_experts: int, full_bytes: float,
                      int4_bytes: float) -> Allocation:
  """Fate's allocation of `budget` bytes (module docstring, branches 1-3)."""
  _check(budget, num_layers, num_experts, full_bytes, int4_bytes)
  l, e = num_layers, num_experts
  if l * e * full_bytes <= budget:
    return _allocation([e] * l, [FULL] * l, full_bytes, int4_bytes)
  if l * e * int4_bytes <= budget:
    f = int((budget - l * e * int4_bytes) // (e * (full_bytes - int4_bytes)))
    return _allocation([e] * l, [FULL] * f + [INT4] * (l - f), full_bytes, int4_bytes)
  c = int(budget // int4_bytes)
  if c >= SHALLOW_LAYERS * e:  # then l > SHALLOW_LAYERS, since c < l e here
    deep = (c - SHALLOW_LAYERS * e) // (l - SHALLOW_LAYERS)
    slots = [e] * SHALLOW_LAYERS + [deep] * (l - SHALLOW_LAYERS)
  else:
    slots = [min(e, max(0, c - i * e)) for i in range(l)]
  return _allocation(slots, [INT4] * l, full_bytes, int4_bytes)


def uniform(budget: float, num_layers: int, num_experts: int, full_bytes: float,
            int4_bytes: float) -> Allocation:
  """The baseline: all at full precision if they fit, else min(E, floor(C / L)) INT4 slots each."""
  _check(budget, num_layers, num_experts, full_bytes, int4_bytes)
  l, e = num_layers, num_experts
  if l * e * full_bytes <= budget:
    return _allocation([e] * l, [FULL] * l, full_bytes, int4_bytes)
  each = min(e, int(budget // int4_bytes) // l)
  return _allocation([each] * l, [INT4] * l, full_bytes, int4_bytes)
