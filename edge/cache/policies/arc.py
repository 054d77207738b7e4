"""ARC, the Adaptive Replacement Cache (Megiddo & Modha, FAST'03), with sizes in bytes.

Resident keys live in T1 (seen once since they became resident) or T2 (seen again); B1 and B2
are ghost lists of keys recently evicted from T1 and T2. All four are LRU lists. A target ``p``
for T1 moves towards recency when a B1 key comes back and towards frequency when a B2 key does.

Adaptation to variable sizes (``c`` = the cache budget in bytes, ``|X|`` = the bytes of X, ghost
entries counting the size the key had when it was evicted):

- ``p`` is in bytes, in [0, c]. A miss on a B1 key of size s raises it by
  ``s * max(1, |B2| / |B1|)``; a miss on a B2 key lowers it by ``s * max(1, |B1| / |B2|)``. The
  paper's step of one page becomes one object of the size that missed, so a ghost hit on a
  large object moves the target by as many bytes as the eviction that caused it freed.
- REPLACE evicts the LRU of T1 when ``|T1| > p``, or ``|T1| == p`` and the missed key came from
  B2 (the paper's tie rule; ``on_miss`` says which key is being admitted), else the LRU of T2;
  with pins, the least recent unpinned key of the chosen list, or of the other one if the chosen
  list has none.
- The list bounds become byte bounds, kept after every insert by dropping ghost LRUs:
  ``|T1| + |B1| <= c`` (drop from B1) and ``|T1| + |T2| + |B1| + |B2| <= 2c`` (drop from B2,
  then B1). With unit sizes this is exactly the paper's case IV: the B1 LRU deleted when
  ``|L1| = c``, the T1 LRU evicted without a ghost when ``|T1| = c``, the B2 LRU deleted when
  the total reaches 2c.
- ``p`` adapts in ``on_miss``, before the victims for the missed key are chosen, as in the paper.
  With unit sizes this is the paper's algorithm exactly: it hits request for request as
  libCacheSim's ARC (tests/test_libcachesim_crosscheck.py, which also explains why the two
  differ with variable sizes).

An explicit discard (``on_remove``) leaves no ghost entry. Every event is O(1) (OrderedDict
moves); ``victim()`` is O(1) plus the pinned keys it passes over at the LRU end.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from edge.cache.policies.base import EvictionPolicy
from edge.cache.policies.registry import register_policy


@register_policy
class ARCPolicy(EvictionPolicy):
    name = "arc"

    @dataclass(frozen=True)
    class Params:
        # Starting target for T1 as a share of the budget; the paper starts at 0.
        initial_p_fraction: float = 0.0

        def __post_init__(self) -> None:
            if not 0.0 <= self.initial_p_fraction <= 1.0:
                raise ValueError(f"initial_p_fraction must be between 0 and 1, got "
                                 f"{self.initial_p_fraction!r}")

    def __init__(self, params=None) -> None:
        super().__init__(params)
        # key -> size, least recently used first
        self._t1: OrderedDict[Hashable, int] = OrderedDict()
        self._t2: OrderedDict[Hashable, int] = OrderedDict()
        self._b1: OrderedDict[Hashable, int] = OrderedDict()
        self._b2: OrderedDict[Hashable, int] = OrderedDict()
        self.t1_bytes = self.t2_bytes = self.b1_bytes = self.b2_bytes = 0
        self.p: float = 0.0
        self._missed_from_b2 = False  # the key being admitted is in B2 (for the tie rule)

    def bind(self, view) -> None:
        super().bind(view)
        self.p = self.params.initial_p_fraction * view.budget

    # -- events ---------------------------------------------------------------------------

    def on_miss(self, key: Hashable, size: int) -> None:
        # A ghost hit adapts the target before the victims are chosen, as in the paper.
        if key in self._b1:
            ratio = self.b2_bytes / self.b1_bytes
            self.p = min(float(self.view.budget), self.p + size * max(1.0, ratio))
        elif key in self._b2:
            ratio = self.b1_bytes / self.b2_bytes
            self.p = max(0.0, self.p - size * max(1.0, ratio))
        self._missed_from_b2 = key in self._b2

    def on_insert(self, key: Hashable, slot: int, size: int) -> None:
        self._missed_from_b2 = False
        if key in self._b1:
            self.b1_bytes -= self._b1.pop(key)
            self._t2[key] = size
            self.t2_bytes += size
        elif key in self._b2:
            self.b2_bytes -= self._b2.pop(key)
            self._t2[key] = size
            self.t2_bytes += size
        else:
            self._t1[key] = size
            self.t1_bytes += size
        self._trim_ghosts()

    def on_hit(self, key: Hashable, slot: int) -> None:
        size = self._t1.pop(key, None)
        if size is not None:
            self.t1_bytes -= size
            self.t2_bytes += size
            self._t2[key] = size
        else:
            self._t2.move_to_end(key)

    def on_evict(self, key: Hashable, slot: int) -> None:
        size = self._t1.pop(key, None)
        if size is not None:
            self.t1_bytes -= size
            self._b1[key] = size
            self.b1_bytes += size
        else:
            size = self._t2.pop(key)
            self.t2_bytes -= size
            self._b2[key] = size
            self.b2_bytes += size
        # T -> B keeps every bound; nothing to trim.

    def on_remove(self, key: Hashable, slot: int) -> None:
        size = self._t1.pop(key, None)
        if size is not None:
            self.t1_bytes -= size
        else:
            self.t2_bytes -= self._t2.pop(key)

    def on_resize(self, budget: int) -> None:
        self.p = min(self.p, float(budget))
        self._trim_ghosts()

    # -- the decision ---------------------------------------------------------------------

    def victim(self) -> Hashable | None:
        first, second = self._t1, self._t2
        t1, p = self.t1_bytes, self.p
        if not (t1 > 0 and (t1 > p or (t1 == p and self._missed_from_b2))):
            first, second = second, first
        is_pinned = self.view.is_pinned
        for lru in (first, second):
            for key in lru:
                if not is_pinned(key):
                    return key
        return None

    # -- internals ------------------------------------------------------------------------

    def _trim_ghosts(self) -> None:
        c = self.view.budget
        b1, b2 = self._b1, self._b2
        while b1 and self.t1_bytes + self.b1_bytes > c:
            self.b1_bytes -= b1.popitem(last=False)[1]
        while (b1 or b2) and \
                self.t1_bytes + self.t2_bytes + self.b1_bytes + self.b2_bytes > 2 * c:
            ghost = b2 if b2 else b1
            size = ghost.popitem(last=False)[1]
            if ghost is b2:
                self.b2_bytes -= size
            else:
                self.b1_bytes -= size

    def lists(self) -> dict[str, list]:
        """The four lists, LRU first (for tests and diagnostics)."""
        return {"t1": list(self._t1), "t2": list(self._t2), "b1": list(self._b1),
                "b2": list(self._b2)}
