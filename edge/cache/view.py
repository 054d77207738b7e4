"""``PagedCacheView``: the read-only ``CacheView`` a ``PagedCache`` hands its eviction policy.

The policy gets this object, never the cache or its ``NativeIndex``: every method here only
reads (the C calls it makes take a ``const edge_index *``), so a policy cannot pin, evict,
insert or reorder anything, and a decision built on the view is as side-effect-free as the
policy's own code. The view reads the cache's state in place, under the cache's lock (policies
are only called with it held); it copies nothing per call except the small candidate arrays.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import numpy as np

from edge._native import FEATURE_NAMES, N_FEATURES

if TYPE_CHECKING:
    from edge.cache.paged import PagedCache

# Mixes the cache's seed with its eviction count into the seed of one candidate draw.
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def candidate_seed(cache_seed: int, evictions: int) -> int:
    """The seed of the candidate draw a cache seeded ``cache_seed`` makes after ``evictions``
    evictions (the offline trainer replays the same draws)."""
    return ((cache_seed & _MASK64) * _GOLDEN + evictions) & _MASK64


class PagedCacheView:
    """Read-only access to one ``PagedCache`` for its policy (see ``CacheView``)."""

    __slots__ = ("_cache", "_entries", "_entry_of_slot", "_index", "_clock", "_seed",
                 "_features_out")

    def __init__(self, cache: PagedCache, seed: int) -> None:
        # The containers are the cache's own, updated in place for its whole life.
        self._cache = cache
        self._entries = cache._entries
        self._entry_of_slot = cache._entry_of_slot
        self._index = cache._index
        self._clock = cache._clock
        self._seed = seed & _MASK64
        self._features_out = np.empty((0, N_FEATURES), dtype=np.float32)

    @property
    def budget(self) -> int:
        return self._cache._budget

    def now(self) -> float:
        return self._clock()

    def key_of_slot(self, slot: int) -> Hashable:
        try:
            entry = self._entry_of_slot[slot] if slot >= 0 else None  # -1 is no slot, not the last
        except IndexError:
            entry = None
        if entry is None:
            raise KeyError(f"slot {slot} holds no resident key")
        return entry.key

    def slot_of(self, key: Hashable) -> int:
        return self._entries[key].slot

    def is_pinned(self, key: Hashable) -> bool:
        return self._index.pin_count(self._entries[key].slot) > 0

    def size_of(self, key: Hashable) -> int:
        return self._entries[key].size

    def free_bytes(self) -> int:
        return self._cache._budget - self._index.resident_bytes() - self._cache._reserved

    def lru_victim_slot(self) -> int:
        return self._index.lru_victim()

    def load_cost(self, slot: int) -> float:
        self.key_of_slot(slot)  # a KeyError for a free slot, as everywhere else here
        return self._index.slot_info(slot).load_cost

    def demand_of(self, key: Hashable) -> float:
        return self._cache._demand.get(key, 0.0)

    def candidates(self, k_lru: int, k_sample: int, k_mru: int = 0) -> np.ndarray:
        if k_lru < 0 or k_sample < 0 or k_mru < 0:
            raise ValueError(f"k_lru, k_sample and k_mru must be >= 0, got {k_lru}, {k_sample}, "
                             f"{k_mru}")
        return self._index.candidates(k_lru, k_sample, self._draw_seed(), k_head=k_mru)

    def decision_inputs(self, k_lru: int, k_sample: int, free_fraction: float,
                        need_fraction: float, k_mru: int = 0) -> tuple[np.ndarray, np.ndarray]:
        if k_lru < 0 or k_sample < 0 or k_mru < 0:
            raise ValueError(f"k_lru, k_sample and k_mru must be >= 0, got {k_lru}, {k_sample}, "
                             f"{k_mru}")
        return self._index.decision_inputs(k_lru, k_sample, self._draw_seed(), self._clock(),
                                           free_fraction, need_fraction, k_head=k_mru,
                                           reuse=True)

    def _draw_seed(self) -> int:
        # Seeded by the eviction count: the same state gives the same draw (asking twice
        # changes nothing), and each eviction round draws afresh.
        return candidate_seed(self._seed, self._cache._evictions)

    def features(self, slots: Any) -> np.ndarray:
        slots = np.ascontiguousarray(slots, dtype=np.int32)
        n = len(slots)
        if n > len(self._features_out):
            self._features_out = np.empty((max(n, 2 * len(self._features_out)), N_FEATURES),
                                          dtype=np.float32)
        self._index.features(slots, self._clock(), out=self._features_out)
        matrix = self._features_out[:n]
        matrix.flags.writeable = False  # the buffer is the view's; a policy reads it
        return matrix

    @property
    def feature_names(self) -> tuple[str, ...]:
        return FEATURE_NAMES
