"""Shallow-favouring and uniform expert allocations: every branch fits the budget."""
import numpy as np
import pytest

from moe_jax.inference.fate.allocation import FULL, INT4, shallow_favouring, uniform
from moe_jax.utils.errors import ConfigError

L, E, FULL_BYTES, INT4_BYTES = 12, 8, 1000, 280


def _bytes(alloc):
  return sum(c * (FULL_BYTES if p == FULL else INT4_BYTES)
             for c, p in zip(alloc.slots, alloc.precision))


def test_all_full_precision_when_everything_fits():
  alloc = shallow_favouring(L * E * FULL_BYTES, L, E, FULL_BYTES, INT4_BYTES)
  assert alloc.slots == (E,) * L and alloc.precision == (FULL,) * L
  assert alloc.bytes == L * E * FULL_BYTES


def test_all_int4_with_the_first_layers_full_precision():
  # Room for every expert in INT4 plus 3.5 layers' upgrade to full precision: 3 layers upgraded.
  budget = L * E * INT4_BYTES + 3.5 * E * (FULL_BYTES - INT4_BYTES)
  alloc = shallow_favouring(budget, L, E, FULL_BYTES, INT4_BYTES)
  assert alloc.slots == (E,) * L
  assert alloc.precision == (FULL,) * 3 + (INT4,) * (L - 3)


def test_first_four_layers_full_when_c_at_least_4e():
  c = 4 * E + 3 * (L - 4) + 5  # 5 slots left over that the deep layers cannot share evenly
  alloc = shallow_favouring(c * INT4_BYTES + 100, L, E, FULL_BYTES, INT4_BYTES)
  assert alloc.slots == (E,) * 4 + (3,) * (L - 4)
  assert alloc.precision == (INT4,) * L


def test_shallow_layers_fill_first_when_c_below_4e():
  alloc = shallow_favouring((2 * E + 3) * INT4_BYTES, L, E, FULL_BYTES, INT4_BYTES)
  assert alloc.slots == (E, E, 3) + (0,) * (L - 3)


@pytest.mark.parametrize("layers", [2, 4, 5, 12])
def test_every_branch_fits_the_budget(layers):
  # Integer budgets from nothing to past everything at full precision cross every branch.
  rng = np.random.default_rng(layers)
  budgets = np.concatenate([rng.integers(0, layers * E * FULL_BYTES * 1.2, 300),
                            [0, layers * E * INT4_BYTES, layers * E * FULL_BYTES,
                             4 * E * INT4_BYTES, 4 * E * INT4_BYTES - 1]])
  for budget in budgets.tolist():
    for scheme in (shallow_favouring, uniform):
      alloc = scheme(budget, layers, E, FULL_BYTES, INT4_BYTES)
      assert _bytes(alloc) == alloc.bytes <= budget
      assert len(alloc.slots) == layers and all(0 <= c <= E for c in alloc.slots)
    alloc = shallow_favouring(budget, layers, E, FULL_BYTES, INT4_BYTES)
    assert list(alloc.slots[:4]) == sorted(alloc.slots[:4], reverse=True)  # shallow first
    if budget // INT4_BYTES >= 4 * E:
      assert alloc.slots[:4] == (E,) * min(4, layers)


def test_uniform_gives_every_layer_the_same_slots():
  alloc = uniform((L * 3 + 5) * INT4_BYTES, L, E, FULL_BYTES, INT4_BYTES)
  assert alloc.slots == (3,) * L and alloc.precision == (INT4,) * L
  assert uniform(L * E * INT4_BYTES, L, E, FULL_BYTES, INT4_BYTES).slots == (E,) * L


def test_int4_must_be_smaller_than_full():
  with pytest.raises(ConfigError, match="int4_bytes"):
    shallow_favouring(1e9, L, E, 100, 100)
