"""ARC and LRU expert caches against list-based transcriptions of their definitions."""
import numpy as np
import pytest

from moe_jax.inference.fate.cache import ARCCache, LRUCache, make_caches
from moe_jax.utils.errors import ConfigError


class _ListARC:
  """ARC (Megiddo & Modha 2003, Fig. 4) on plain lists, LRU at index 0."""

  def __init__(self, c):
    self.c, self.p, self.t1, self.t2, self.b1, self.b2 = c, 0.0, [], [], [], []

  def _replace(self, x):
    if self.t1 and (len(self.t1) > self.p or (x in self.b2 and len(self.t1) == self.p)):
      self.b1.append(self.t1.pop(0))
    else:
      self.b2.append(self.t2.pop(0))

  def request(self, x):
    if x in self.t1 or x in self.t2:
      (self.t1 if x in self.t1 else self.t2).remove(x)
      self.t2.append(x)
      return True
    if x in self.b1:
      delta = 1.0 if len(self.b1) >= len(self.b2) else len(self.b2) / len(self.b1)
      self.p = min(self.p + delta, self.c)
      self._replace(x)
      self.b1.remove(x)
      self.t2.append(x)
    elif x in self.b2:
      delta = 1.0 if len(self.b2) >= len(self.b1) else len(self.b1) / len(self.b2)
      self.p = max(self.p - delta, 0.0)
      self._replace(x)
      self.b2.remove(x)
      self.t2.append(x)
    else:
      l1 = len(self.t1) + len(self.b1)
      total = l1 + len(self.t2) + len(self.b2)
      if l1 == self.c:
        if len(self.t1) < self.c:
          self.b1.pop(0)
          self._replace(x)
        else:
          self.t1.pop(0)
      elif total >= self.c:
        if total == 2 * self.c:
          self.b2.pop(0)
        self._replace(x)
      self.t1.append(x)
    return False


def _lists(arc):
  return [list(arc.t1), list(arc.t2), list(arc.b1), list(arc.b2)]


@pytest.mark.parametrize("seed", range(3))
def test_arc_matches_the_papers_pseudocode_and_keeps_its_invariants(seed):
  rng = np.random.default_rng(seed)
  c = int(rng.integers(1, 9))
  # A skewed stream over 3c keys: hot keys recur (T2, B2 traffic), cold ones scan (T1, B1).
  keys = np.minimum(rng.zipf(1.3, size=3000), 3 * c).tolist()
  arc, ref = ARCCache(c), _ListARC(c)
  for k in keys:
    assert arc.access(k) == ref.request(k)
    assert _lists(arc) == [ref.t1, ref.t2, ref.b1, ref.b2] and arc.p == ref.p
    assert all(arc.invariants().values()), arc.invariants()


def test_arc_invariants_hold_with_inserts_and_warm_start():
  rng = np.random.default_rng(5)
  arc = ARCCache(6, initial=range(6))
  assert _lists(arc) == [list(range(6)), [], [], []]
  for _ in range(4000):
    k = int(rng.integers(0, 20))
    if rng.random() < 0.3:
      p = arc.p
      arc.insert(k)
      assert arc.contains(k) and arc.p == p  # a copy is no evidence of reuse
    else:
      arc.access(k)
    assert all(arc.invariants().values()), arc.invariants()


def test_arc_resists_a_scan_that_flushes_lru():
  # Two hot experts used twice (frequency: T2), then rounds of the hot pair followed by a scan of
  # c one-time experts. LRU loses the pair to every scan (it hits only before the first one); ARC
  # keeps it in T2 while the scan cycles through T1 (p stays 0: no scanned key ever returns).
  c = 4
  trace = [0, 1, 0, 1]
  for r in range(10):
    trace += [0, 1] + [100 + c * r + i for i in range(c)]
  arc, lru = ARCCache(c), LRUCache(c)
  arc_hits = [arc.access(k) for k in trace]
  lru_hits = [lru.access(k) for k in trace]
  assert sum(arc_hits) == 2 + 20 and sum(lru_hits) == 2 + 2
  assert list(arc.t2) == [0, 1] and arc.p == 0


def test_arc_adapts_to_recency_after_frequency():
  # Frequency first (0, 1 twice: T2), then recency: 2, 3 once, a new key pushes 2 out of T1 into
  # B1; when 2 returns, ARC raises its target for T1 (p = 1) and serves it from T2.
  arc = ARCCache(4)
  for k in [0, 1, 0, 1, 2, 3, 4]:
    arc.access(k)
  assert _lists(arc) == [[3, 4], [0, 1], [2], []] and arc.p == 0
  assert not arc.access(2)
  assert _lists(arc) == [[4], [0, 1, 2], [3], []] and arc.p == 1
  for k in [5, 6, 3]:  # 3 returns from B1: p grows to 2, T2 gives up its LRU (1) instead
    arc.access(k)
  assert _lists(arc) == [[5, 6], [2, 3], [4], [0, 1]] and arc.p == 2


@pytest.mark.parametrize("capacity", [0, 1, 3])
def test_lru_matches_a_list_reference(capacity):
  rng = np.random.default_rng(capacity)
  lru, ref = LRUCache(capacity), []
  for k in rng.integers(0, 7, size=500).tolist():
    hit = k in ref
    if hit:
      ref.remove(k)
    elif capacity and len(ref) == capacity:
      ref.pop(0)
    if capacity:
      ref.append(k)
    assert lru.access(k) == hit
    assert all(lru.contains(x) for x in ref) and len(lru) == len(ref)


def test_capacity_zero_arc_never_hits_and_remembers_nothing():
  arc = ARCCache(0)
  assert not any(arc.access(k) for k in [1, 1, 2, 1])
  assert _lists(arc) == [[], [], [], []]


def test_make_caches_warm_starts_each_layer():
  caches = make_caches([4, 0, 2], "lru")
  assert [len(c) for c in caches] == [4, 0, 2]
  assert caches[2].contains(1) and not caches[2].contains(2)
  with pytest.raises(ConfigError, match="policy"):
    make_caches([1], "fifo")
