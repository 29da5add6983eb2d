"""b-bit integers packed into int32 words, as compressed-tensors' "pack-quantized" format stores
them.

Legend: O output rows, I input width, P = 32 / b values per word, I / P words per row.

  weight_packed[..., o, j] = sum_k (q[..., o, j*P + k] + 2^(b-1)) << (b*k),   k = 0 .. P-1,

i.e. the values of a row in order, the first in the least significant bits, each stored as the
unsigned q + 2^(b-1) (q + 8 at 4 bits: -8 -> 0x0, 0 -> 0x8, 7 -> 0xF); the word is read as a
signed int32. At 4 bits that is `weight_packed` int32 [O, I/8] beside `weight_scale` [O, G] and
`weight_shape` [2]. Widths that divide 32 (2, 4, 8 bits) only: compressed-tensors writes other
widths across word boundaries, which is not done here. Jittable, any leading axes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from moe_jax.utils.errors import require

PACK_BITS = (2, 4, 8)


def _per_word(bits: int, width: int) -> int:
  require(bits in PACK_BITS, "bits", f"{bits}-bit values do not fill an int32 word evenly",
          f"pack {', '.join(map(str, PACK_BITS))}-bit values")
  per_word = 32 // bits
  require(width % per_word == 0, "q", f"the last axis ({width}) is not a multiple of "
          f"{per_word} values per word", f"pad the input width to a multiple of {per_word}")
  return per_word


def pack(q: jax.Array, bits: int = 4) -> jax.Array:
  """q int [..., O, I] in [-2^(b-1), 2^(b-1) - 1] -> int32 [..., O, I / P]."""
  per_word = _per_word(bits, q.shape[-1])
  u = (q.astype(jnp.int32) + (1 << (bits - 1))).astype(jnp.uint32)
  u = u.reshape(*q.shape[:-1], q.shape[-1] // per_word, per_word)
  shifts = jnp.arange(per_word, dtype=jnp.uint32) * bits
  words = jnp.sum(u << shifts, axis=-1, dtype=jnp.uint32)  # disjoint bit fields: sum == or
  return jax.lax.bitcast_convert_type(words, jnp.int32)


def unpack(packed: jax.Array, bits: int = 4) -> jax.Array:
  """int32 [..., O, I / P] -> q int8 [..., O, I]; the inverse of `pack`."""
  per_word = _per_word(bits, 32 // bits)
  words = jax.lax.bitcast_convert_type(packed, jnp.uint32)
  shifts = jnp.arange(per_word, dtype=jnp.uint32) * bits
  u = (words[..., None] >> shifts) & ((1 << bits) - 1)
  q = u.astype(jnp.int32) - (1 << (bits - 1))
  return q.reshape(*packed.shape[:-1], packed.shape[-1] * per_word).astype(jnp.int8)
