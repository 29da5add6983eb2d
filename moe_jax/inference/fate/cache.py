"""Per-layer expert caches: ARC (Fate's choice) and LRU (the baseline), one interface.

Legend: c capacity (experts a layer keeps on the device), E experts of the layer, p ARC's target
size of T1.

ARC (Megiddo & Modha, FAST 2003, Fig. 4) keeps c resident keys in two LRU lists, T1 (seen once
recently) and T2 (seen at least twice), and remembers c evicted keys in the ghost lists B1 and B2
(evicted from T1 and from T2). A request x:
  I   x in T1 u T2 (hit): move x to T2's MRU end.
  II  x in B1: p = min(c, p + max(1, |B2| / |B1|)); REPLACE; move x to T2's MRU end.
  III x in B2: p = max(0, p - max(1, |B1| / |B2|)); REPLACE; move x to T2's MRU end.
  IV  otherwise: if |T1| + |B1| = c: drop B1's LRU and REPLACE when |T1| < c, else drop T1's LRU;
      elif the four lists hold >= c keys: drop B2's LRU when they hold 2c, then REPLACE;
      put x at T1's MRU end.
  REPLACE: if T1 is non-empty and (|T1| > p or (x in B2 and |T1| = p)), move T1's LRU to B1,
      else move T2's LRU to B2.
Invariants (`ARCCache.invariants`): |T1| + |T2| <= c, |T1| + |B1| <= c, all four <= 2c, 0 <= p <= c,
the lists disjoint, the ghosts empty until the directory holds c keys, T1 u T2 full from then on.

Requests are the experts the router actually chose, in Fate's order: a layer's [T, K] choices
flattened token-major, repeats kept (`ARC_Cache.update_list(expert_index)`), so in prefill an
expert two tokens use reaches T2 within one pass.

Prefetches, following Fate (`Qwen2MoeSparseMoeBlock.forward` / `load_weights` / `post_comp`): a
predicted expert that is not resident is copied into a staging buffer outside the cache and is
never a request. If the router then uses it, that use is the request: ARC sees a miss (case
II-IV), admits it and may evict. If it goes unused, it is freed after the layer and never touches
T1, T2, B1, B2 or p, so a wrong prediction cannot evict a resident expert nor move ARC's target.
`insert(key)` is the other path, for copies that do not come from a request: the warm start
(Fate loads experts 0..c-1 of each layer at start-up, which is ARC's case IV on an empty cache)
and any policy that wants its prefetches cached. It admits a non-resident key through case IV
(after dropping it from a ghost list, without adapting p: a copy is no evidence of reuse) and
leaves a resident key where it is.

A cache of capacity 0 holds nothing: every request misses and nothing is remembered.

Fate's `expert_ARC_cache.py` departs from the paper in three places; this module follows the paper:
it moves p by +-min(|T1|, c) / +-min(|T2|, c) on ghost hits (the paper: max(1, |B2| / |B1|) and
max(1, |B1| / |B2|)), its REPLACE never evicts from T1 when |T1| = p (it tests x in B2, |T1| > p),
and when the directory is full (2c) it drops B1's LRU first (the paper: B2's).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Iterable, Sequence

from moe_jax.utils.errors import check_choice, require


class LRUCache:
  """Least-recently-used cache of `capacity` keys: a hit moves the key to the MRU end."""

  def __init__(self, capacity: int, initial: Iterable[Hashable] = ()):
    require(capacity >= 0, "capacity", f"{capacity} < 0", "pass the number of resident experts")
    self.capacity = capacity
    self._keys: OrderedDict = OrderedDict()
    for key in initial:
      self.insert(key)

  def __len__(self) -> int:
    return len(self._keys)

  def contains(self, key: Hashable) -> bool:
    """Whether `key` is resident; changes nothing."""
    return key in self._keys

  def keys(self) -> set:
    """The resident keys."""
    return set(self._keys)

  def access(self, key: Hashable) -> bool:
    """One request: returns whether `key` was resident; admits it on a miss (evicting the LRU)."""
    if key in self._keys:
      self._keys.move_to_end(key)
      return True
    self.insert(key)
    return False

  def insert(self, key: Hashable) -> None:
    """Admits `key` at the MRU end without a request; a resident key stays where it is."""
    if self.capacity == 0 or key in self._keys:
      return
    if len(self._keys) == self.capacity:
      self._keys.popitem(last=False)
    self._keys[key] = None


class ARCCache:
  """Adaptive replacement cache of `capacity` keys (module docstring: cases I-IV and REPLACE)."""

  def __init__(self, capacity: int, initial: Iterable[Hashable] = ()):
    require(capacity >= 0, "capacity", f"{capacity} < 0", "pass the number of resident experts")
    self.capacity = capacity
    self.p = 0.0
    self.t1: OrderedDict = OrderedDict()  # LRU first
    self.t2: OrderedDict = OrderedDict()
    self.b1: OrderedDict = OrderedDict()
    self.b2: OrderedDict = OrderedDict()
    for key in initial:
      self.insert(key)

  def __len__(self) -> int:
    return len(self.t1) + len(self.t2)

  def contains(self, key: Hashable) -> bool:
    """Whether `key` is resident (in T1 or T2); changes nothing."""
    return key in self.t1 or key in self.t2

  def keys(self) -> set:
    """The resident keys (T1 u T2)."""
    return set(self.t1) | set(self.t2)

  def access(self, key: Hashable) -> bool:
    """One request (cases I-IV): returns whether `key` was resident; admits it on a miss."""
    if self.capacity == 0:
      return False
    if key in self.t1 or key in self.t2:  # case I
      (self.t1 if key in self.t1 else self.t2).pop(key)
      self.t2[key] = None
      return True
    c, n1, n2 = self.capacity, len(self.b1), len(self.b2)
    if key in self.b1:  # case II
      self.p = min(float(c), self.p + max(1.0, n2 / n1))
    elif key in self.b2:  # case III
      self.p = max(0.0, self.p - max(1.0, n1 / n2))
    else:  # case IV
      self._admit(key)
      return False
    self._replace(key)
    (self.b1 if key in self.b1 else self.b2).pop(key)
    self.t2[key] = None
    return False

  def insert(self, key: Hashable) -> None:
    """Admits `key` at T1's MRU end without a request (case IV, p unchanged); resident: no-op."""
    if self.capacity == 0 or self.contains(key):
      return
    self.b1.pop(key, None)
    self.b2.pop(key, None)
    self._admit(key)

  def _admit(self, key: Hashable) -> None:
    """Case IV: make room for a key in no list, then put it at T1's MRU end."""
    c = self.capacity
    if len(self.t1) + len(self.b1) == c:
      if len(self.t1) < c:
        self.b1.popitem(last=False)
        self._replace(key)
      else:
        self.t1.popitem(last=False)
    elif len(self.t1) + len(self.t2) + len(self.b1) + len(self.b2) >= c:
      if len(self.t1) + len(self.t2) + len(self.b1) + len(self.b2) == 2 * c:
        self.b2.popitem(last=False)
      self._replace(key)
    self.t1[key] = None

  def _replace(self, key: Hashable) -> None:
    """REPLACE: evict T1's LRU to B1 or T2's LRU to B2, steered by the target p."""
    if self.t1 and (len(self.t1) > self.p or (key in self.b2 and len(self.t1) == self.p)):
      self.b1[self.t1.popitem(last=False)[0]] = None
    else:
      self.b2[self.t2.popitem(last=False)[0]] = None

  def invariants(self) -> dict:
    """ARC's invariants by name -> whether they hold now."""
    c = self.capacity
    t1, t2, b1, b2 = (set(x) for x in (self.t1, self.t2, self.b1, self.b2))
    total = len(t1) + len(t2) + len(b1) + len(b2)
    return {
        "T1+T2<=c": len(t1) + len(t2) <= c,
        "T1+B1<=c": len(t1) + len(b1) <= c,
        "T1+T2+B1+B2<=2c": total <= 2 * c,
        "0<=p<=c": 0 <= self.p <= c,
        "disjoint": len(t1 | t2 | b1 | b2) == total,
        "ghosts empty below c": total >= c or not (b1 or b2),
        "full from c on": total < c or len(t1) + len(t2) == c,
    }


POLICIES = {"arc": ARCCache, "lru": LRUCache}


def make_caches(slots: Sequence[int], policy: str = "arc") -> list:
  """One cache per layer, layer l of `slots[l]` experts, warm with 0..slots[l]-1 (as in Fate)."""
  check_choice("policy", policy, POLICIES)
  return [POLICIES[policy](int(c), initial=range(int(c))) for c in slots]
