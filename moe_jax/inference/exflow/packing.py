"""Arrays of mixed dtypes side by side in one byte buffer, so that one collective moves them all.

Legend: R rows (the leading axis every packed array shares), W bytes of one packed row.

  pack([a_1[R, ...], a_2[R, ...], ...]) -> bytes[R, W],  W = sum_i itemsize_i * prod(shape_i[1:])

Each array is bitcast, not converted: an int32 sequence id rides next to float activations
without rounding, and a float32 routing weight next to bfloat16 activations keeps its bits. The
context-coherent decoder (coherent.py) packs each token's row (activation, weight, sequence) for
its one all-to-all per layer, and the step's new keys/values and tokens for its one all-gather.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

Layout = tuple[tuple[tuple[int, ...], jnp.dtype], ...]


def _as_bytes(a: jax.Array) -> jax.Array:
  """a[R, ...] -> uint8[R, itemsize * prod(...)] (a bitcast)."""
  rows = a.reshape(a.shape[0], -1)
  return jax.lax.bitcast_convert_type(rows, jnp.uint8).reshape(a.shape[0], -1)


def pack(arrays: Sequence[jax.Array]) -> tuple[jax.Array, Layout]:
  """arrays a_i[R, ...] -> (bytes[R, W], layout): the rows' bytes side by side."""
  layout = tuple((tuple(a.shape[1:]), a.dtype) for a in arrays)
  return jnp.concatenate([_as_bytes(a) for a in arrays], axis=1), layout


def unpack(buffer: jax.Array, layout: Layout) -> list[jax.Array]:
  """bytes[..., W] -> the arrays [..., *shape_i] that `pack` put there (any leading axes)."""
  lead, out, offset = buffer.shape[:-1], [], 0
  for shape, dtype in layout:
    size, itemsize = math.prod(shape), jnp.dtype(dtype).itemsize
    chunk = buffer[..., offset:offset + size * itemsize]
    offset += size * itemsize
    if itemsize > 1:
      chunk = chunk.reshape(lead + (size, itemsize))
    out.append(jax.lax.bitcast_convert_type(chunk, dtype).reshape(lead + shape))
  return out
