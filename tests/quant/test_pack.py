"""Packing into int32 words: a word built by hand, round trips, refusals."""
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.quant import pack
from moe_jax.utils.errors import ConfigError


def test_4bit_word_by_hand():
  # Nibbles, least significant first, each q + 8: q = -8, -1, 0, 1, 7, 3, -5, 2 ->
  # 0x0, 0x7, 0x8, 0x9, 0xF, 0xB, 0x3, 0xA -> word 0xA3BF9870 (as a signed int32).
  q = np.array([[-8, -1, 0, 1, 7, 3, -5, 2]], np.int8)
  word = 0xA3BF9870 - (1 << 32)
  packed = pack.pack(jnp.asarray(q), bits=4)
  assert packed.dtype == jnp.int32 and packed.shape == (1, 1)
  assert int(packed[0, 0]) == word
  np.testing.assert_array_equal(pack.unpack(jnp.asarray([[word]], jnp.int32), bits=4), q)
  # The second word of a row holds columns 8..15; all zeros is 0x88888888.
  q2 = np.concatenate([q, np.zeros((1, 8), np.int8)], axis=1)
  assert int(pack.pack(jnp.asarray(q2))[0, 1]) == 0x88888888 - (1 << 32)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_round_trip_with_leading_expert_axis(bits):
  rng = np.random.default_rng(bits)
  per_word = 32 // bits
  q = rng.integers(-2 ** (bits - 1), 2 ** (bits - 1), size=(3, 5, 4 * per_word)).astype(np.int8)
  packed = pack.pack(jnp.asarray(q), bits)
  assert packed.shape == (3, 5, 4)
  np.testing.assert_array_equal(pack.unpack(packed, bits), q)
  # The same words by a plain loop over values.
  expect = np.zeros((3, 5, 4), np.uint64)
  for k in range(q.shape[-1]):
    expect[..., k // per_word] += (q[..., k].astype(np.int64) + 2 ** (bits - 1)).astype(
        np.uint64) << np.uint64(bits * (k % per_word))
  np.testing.assert_array_equal(np.asarray(packed).view(np.uint32), expect.astype(np.uint32))


def test_refusals():
  with pytest.raises(ConfigError, match="^bits: 3-bit values do not fill"):
    pack.pack(jnp.zeros((2, 30), jnp.int8), bits=3)
  with pytest.raises(ConfigError, match="^q: the last axis \\(12\\) is not a multiple of 8"):
    pack.pack(jnp.zeros((2, 12), jnp.int8), bits=4)
