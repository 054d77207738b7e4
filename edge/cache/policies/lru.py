"""Least recently used: evict the unpinned key whose last access is oldest.

The order lives in the C index's intrusive LRU list, which the cache updates on every access, so
this policy keeps no state at all and its decision is one C call.
"""

from __future__ import annotations

from collections.abc import Hashable

from edge.cache.policies.base import EvictionPolicy
from edge.cache.policies.registry import register_policy


@register_policy
class LRUPolicy(EvictionPolicy):
    name = "lru"

    def victim(self) -> Hashable | None:
        slot = self.view.lru_victim_slot()
        return None if slot < 0 else self.view.key_of_slot(slot)
