"""The simulator's backend: declared sizes, modelled paging and serving time, a virtual clock.

``Runtime.handle`` runs unchanged over it; only time is modelled. A load advances the clock by
the paging cost model's time for the entry's size (and reports that time as the load's cost, as
a real load reports what it measured); serving advances it by ``serve_seconds``. Nothing touches
the disk, so a replay of a million requests takes seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Optional

from edge.catalogue import CatalogueEntry
from edge.paging_cost import PagingCostModel


class VirtualClock:
    """Time that moves only when told to; callable like ``time.monotonic``."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)
        self._lock = threading.Lock()  # requests served on several threads share one clock

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ValueError(f"time cannot move by {seconds!r} seconds")
        with self._lock:
            self.now += seconds


class SimulatedBackend:
    """Loads cost ``paging_cost.paging_seconds(size)`` of virtual time; serving ``serve_seconds``.

    Counts what a real backend would be measured on: loads, unloads, paging seconds, requests
    served, and the bytes loaded that are still held (``held_bytes``, which a test compares with
    the cache's resident bytes to check that every load is unloaded exactly once)."""

    def __init__(self, paging_cost: Optional[PagingCostModel] = None, *,
                 serve_seconds: float = 0.0, clock: Optional[VirtualClock] = None) -> None:
        if not serve_seconds >= 0:
            raise ValueError(f"serve_seconds must be >= 0, got {serve_seconds!r}")
        self.paging_cost = paging_cost or PagingCostModel()
        self.serve_seconds = float(serve_seconds)
        self.clock = clock or VirtualClock()
        self.loads = self.unloads = self.served = 0
        self.paging_seconds = 0.0
        self.held_bytes = 0
        self._lock = threading.Lock()

    def load(self, entry: CatalogueEntry) -> tuple[Any, int, float]:
        seconds = self.paging_cost.paging_seconds(entry.size)
        self.clock.advance(seconds)
        with self._lock:
            self.loads += 1
            self.paging_seconds += seconds
            self.held_bytes += entry.size
        return entry.name, entry.size, seconds

    def unload(self, entry: CatalogueEntry, value: Any) -> None:
        with self._lock:
            self.unloads += 1
            self.held_bytes -= entry.size

    def serve(self, request: Any, objects: Sequence[tuple[CatalogueEntry, Any]]) -> Any:
        self.clock.advance(self.serve_seconds)
        with self._lock:
            self.served += 1
        return None

    def close(self) -> None:
        pass
