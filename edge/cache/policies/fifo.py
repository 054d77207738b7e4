"""First in, first out: evict the unpinned key that became resident earliest.

Hits do not change the order, so unlike LRU the policy keeps its own insertion-ordered dict.
"""

from __future__ import annotations

from collections.abc import Hashable

from edge.cache.policies.base import EvictionPolicy
from edge.cache.policies.registry import register_policy


@register_policy
class FIFOPolicy(EvictionPolicy):
    name = "fifo"

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self._queue: dict[Hashable, None] = {}  # insertion order is the eviction order

    def on_insert(self, key: Hashable, slot: int, size: int) -> None:
        self._queue[key] = None

    def on_evict(self, key: Hashable, slot: int) -> None:
        del self._queue[key]

    def victim(self) -> Hashable | None:
        is_pinned = self.view.is_pinned
        for key in self._queue:
            if not is_pinned(key):
                return key
        return None
