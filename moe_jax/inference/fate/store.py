"""Host memory of offloaded experts: every routed expert at full precision, in INT4 and in INT2.

Legend: L MoE layers, E experts per layer, I / O a matrix's input / output width (an expert's
matrices are wi_gate, wi_up [D, F] and wo [F, D], kernels [I, O]), g inputs per group,
G = I / g groups, b bits, P = 32 / b values per int32 word.

Formats of one expert:
  "full"  its matrices as the model holds them;
  "int4", "int2"  each matrix's transpose W[O, I] quantized round-to-nearest, asymmetric min-max,
      per output row and group of g inputs (moe_jax.quant.core, QuantSpec(b, g, symmetric=False)):
        q = clip(round(w / s) + z, -2^(b-1), 2^(b-1) - 1),  s = (hi - lo) / (2^b - 1),
        z = round(-2^(b-1) - lo / s),  lo = min(w, 0), hi = max(w, 0) over the group,
      held as packed int32 words [O, I / P] (moe_jax.quant.pack), scale float32 [O, G] and zero
      int8 [O, G]: b / 8 + 5 / g bytes per weight (INT4, g = 64: 0.578; INT2, g = 32: 0.406).
Fate (`quantizer.py`, HQQ-style, g = 64 for INT4 and 32 for INT2) differs in three details: its
groups are strided over the flattened matrix (`W.reshape([g, -1])`, reduced over axis 0), its
range is the group's own min and max (here widened to hold 0, which expert groups always span),
and its zero point is a float (-min s), not rounded; its scale and zero travel as float32.

Host memory: numpy arrays on a CPU backend. Where the device has a "pinned_host" memory (GPU,
TPU), each array is put there at construction, so that `to_device` is an asynchronous DMA that
runs beside the computation enqueued before it (JAX dispatches asynchronously); on CPU it is a
copy within one address space. `materialize` (jitted, on the device) turns an expert's arrays
of any format into kernels [I, O] of the model's dtype.
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from moe_jax.quant.core import QuantSpec, dequantize, quantize
from moe_jax.quant.pack import pack, unpack
from moe_jax.utils.errors import check_choice, require

FULL, INT4, INT2 = "full", "int4", "int2"
BITS = {INT4: 4, INT2: 2}


def quant_specs(int4_group: int = 64, int2_group: int = 32) -> dict[str, QuantSpec]:
  """Fate's two formats: asymmetric min-max INT4 and INT2 with their group sizes."""
  return {INT4: QuantSpec(4, int4_group, symmetric=False),
          INT2: QuantSpec(2, int2_group, symmetric=False)}


def bytes_per_weight(fmt: str, specs: Mapping[str, QuantSpec], full: float) -> float:
  """Bytes a stored weight takes: `full` at full precision, b / 8 + 5 / g quantized (an int8
  zero and a float32 scale per group of g)."""
  if fmt == FULL:
    return float(full)
  return specs[fmt].bits / 8 + 5 / specs[fmt].group_size


def _quantized(kernel: np.ndarray, spec: QuantSpec) -> tuple:
  """kernels [E, I, O] -> (packed [E, O, I / P] int32, scale [E, O, G], zero [E, O, G] int8)."""
  q, scale, zero = quantize(jnp.asarray(kernel, jnp.float32).swapaxes(-1, -2), spec)
  return np.asarray(pack(q, spec.bits)), np.asarray(scale), np.asarray(zero)


def host_memory(device: jax.Device):
  """The sharding of `device`'s pinned host memory, or None where numpy is host memory (CPU)."""
  kinds = {m.kind for m in device.addressable_memories()}
  if device.platform == "cpu" or "pinned_host" not in kinds:
    return None
  return jax.sharding.SingleDeviceSharding(device, memory_kind="pinned_host")


class HostStore:
  """Experts of every MoE layer in host memory, in `formats` (FULL always).

  kernels[l]: {name: [E, I, O]} of MoE layer l; specs: {INT4: spec, INT2: spec} for the
  quantized formats to hold (moe_jax.quant.core.QuantSpec; none: full precision only).
  """

  def __init__(self, kernels: Sequence[Mapping[str, np.ndarray]],
               specs: Mapping[str, QuantSpec] | None = None, device: jax.Device | None = None):
    specs = dict(specs or {})
    for fmt in specs:
      check_choice("format", fmt, tuple(BITS))
    self.device = device or jax.devices()[0]
    self.specs = specs
    self.formats = (FULL,) + tuple(specs)
    pinned = host_memory(self.device)
    place = (lambda x: x) if pinned is None else (lambda x: jax.device_put(x, pinned))
    self._target = self.device if pinned is None else jax.sharding.SingleDeviceSharding(
        self.device, memory_kind="device")
    self._experts = {fmt: [] for fmt in self.formats}  # fmt -> [l][e] -> {name: arrays}
    for layer in kernels:
      full = {name: np.asarray(w) for name, w in layer.items()}
      num_experts = len(next(iter(full.values())))
      per_format = {FULL: {name: (w,) for name, w in full.items()}}
      for fmt, spec in specs.items():
        per_format[fmt] = {name: _quantized(w, spec) for name, w in full.items()}
      for fmt, arrays in per_format.items():
        self._experts[fmt].append([
            {name: tuple(place(np.ascontiguousarray(a[e])) for a in parts)
             for name, parts in arrays.items()} for e in range(num_experts)])

  @property
  def num_layers(self) -> int:
    return len(self._experts[FULL])

  def expert(self, l: int, e: int, fmt: str) -> dict:
    """The host arrays of expert e of MoE layer l in `fmt`: {name: (arrays...)}."""
    require(fmt in self.formats, "format", f"{fmt!r} is not held (held: {self.formats})",
            "build the store with quant specs for the quantized formats")
    return self._experts[fmt][l][e]

  def nbytes(self, fmt: str, l: int = 0) -> int:
    """Bytes one expert of MoE layer l takes in `fmt` (what one copy moves)."""
    return sum(a.nbytes for parts in self.expert(l, 0, fmt).values() for a in parts)

  def to_device(self, l: int, e: int, fmt: str) -> dict:
    """Starts the copy of an expert to the device; returns its device arrays (asynchronous)."""
    return jax.device_put(self.expert(l, e, fmt), self._target)


@functools.partial(jax.jit, static_argnums=(0, 2))
def materialize(fmt: str, arrays: dict, dtype: str) -> dict:
  """An expert's arrays in `fmt` -> {name: kernel [I, O]} in `dtype` (dequantized if INT4/INT2)."""
  if fmt == FULL:
    return {name: parts[0].astype(dtype) for name, parts in arrays.items()}
  return {name: dequantize(unpack(packed, BITS[fmt]), scale, zero).T.astype(dtype)
          for name, (packed, scale, zero) in arrays.items()}
