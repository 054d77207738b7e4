"""Shared machinery of the GreedyDual family (LFU-DA, GDSF): evict the lowest priority.

Every resident key has a priority ``H = L + frequency * weight`` where ``L`` (the inflation
value) is the priority of the last key this policy evicted, so a key that was popular long ago
but is no longer requested is eventually overtaken by newer keys: that is the "dynamic aging".
Subclasses only choose the per-key ``weight`` (1 for LFU-DA, cost/size for GDSF).

The order is a binary heap with lazy deletion: an event pushes a fresh entry and leaves the old
one behind as garbage, recognised by identity against ``_live``. Events are O(log n) amortised;
the heap is rebuilt from the live entries when garbage outnumbers them, which keeps memory O(n).

Ties in priority go to the key whose last event is oldest (LRU), through a sequence number that
every insert and hit takes; entries are ``(priority, seq, key)`` and seq is unique, so keys,
which need not be orderable, are never compared.

``victim()`` reads the heap without changing it: pinned keys and garbage at the top are passed
over by a best-first walk of the heap array (a small side heap of indices), so a decision costs
O(1) when the top is unpinned and O(p log p) when p pinned or stale entries sit above the answer.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable

from edge.cache.policies.base import EvictionPolicy

Entry = tuple  # (priority: float, seq: int, key: Hashable)


class GreedyDualPolicy(EvictionPolicy):
    """Base of LFU-DA and GDSF; subclasses define ``_weight`` and register themselves."""

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self._heap: list[Entry] = []
        self._live: dict[Hashable, Entry] = {}  # key -> its current heap entry
        self._freq: dict[Hashable, int] = {}
        self._weight_of: dict[Hashable, float] = {}
        self._seq = 0
        self.inflation: float = 0  # L: priority of the last evicted key

    # -- what a subclass decides ----------------------------------------------------------

    def _weight(self, key: Hashable, slot: int, size: int) -> float:
        raise NotImplementedError

    def _uses_aging(self) -> bool:
        return True

    # -- events ---------------------------------------------------------------------------

    def on_insert(self, key: Hashable, slot: int, size: int) -> None:
        self._freq[key] = 1
        self._weight_of[key] = self._weight(key, slot, size)
        self._push(key)

    def on_hit(self, key: Hashable, slot: int) -> None:
        self._freq[key] += 1
        self._push(key)

    def on_evict(self, key: Hashable, slot: int) -> None:
        entry = self._forget(key)
        if self._uses_aging():
            self.inflation = entry[0]

    def on_remove(self, key: Hashable, slot: int) -> None:
        # An explicit discard says nothing about what is worth keeping: L stays where it is.
        self._forget(key)

    def priority(self, key: Hashable) -> float:
        """The current priority of a resident key (for tests and diagnostics)."""
        return self._live[key][0]

    # -- the decision ---------------------------------------------------------------------

    def victim(self) -> Hashable | None:
        heap, live, is_pinned = self._heap, self._live, self.view.is_pinned
        if not heap:
            return None
        top = heap[0]
        if live.get(top[2]) is top and not is_pinned(top[2]):
            return top[2]
        # Best-first walk of the heap array: children of an index are >= it, so popping the
        # frontier in entry order visits entries in priority order without touching the heap.
        frontier = [(top, 0)]
        n = len(heap)
        while frontier:
            entry, i = heapq.heappop(frontier)
            key = entry[2]
            if live.get(key) is entry and not is_pinned(key):
                return key
            for child in (2 * i + 1, 2 * i + 2):
                if child < n:
                    heapq.heappush(frontier, (heap[child], child))
        return None

    # -- internals ------------------------------------------------------------------------

    def _push(self, key: Hashable) -> None:
        base = self.inflation if self._uses_aging() else 0
        self._seq += 1
        entry = (base + self._freq[key] * self._weight_of[key], self._seq, key)
        self._live[key] = entry
        heapq.heappush(self._heap, entry)
        self._collect()

    def _forget(self, key: Hashable) -> Entry:
        entry = self._live.pop(key)
        del self._freq[key], self._weight_of[key]
        self._collect()
        return entry

    def _collect(self) -> None:
        """Drop garbage from the top, and rebuild once garbage outnumbers live entries."""
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][2]) is not heap[0]:
            heapq.heappop(heap)
        if len(heap) > 2 * len(live) + 32:
            self._heap = list(live.values())
            heapq.heapify(self._heap)
