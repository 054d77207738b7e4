"""The protocol between ``edge.Runtime`` and a backend.

A backend knows how to bring one catalogue object into memory and how to serve a request with
the objects the runtime acquired for it. It does not decide what is resident: the runtime's
``PagedCache`` calls ``load`` on a miss (after making room for the entry's declared size, outside
the cache lock, possibly on a loader thread) and ``unload`` when the object is evicted, exactly
once per successful load. ``serve`` runs while the objects are pinned, so they stay loaded until
it returns.

    class MyBackend:
        clock = time.monotonic                      # optional: the time the runtime measures in
        def load(self, entry): ...                  # -> (value, bytes) or (value, bytes, seconds)
        def unload(self, entry, value): ...
        def serve(self, request, objects): ...      # objects: [(entry, value)], -> output
        def close(self): ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edge.catalogue import CatalogueEntry
    from edge.runtime import InferenceRequest


class Backend(Protocol):
    def load(self, entry: CatalogueEntry) -> tuple[Any, int] | tuple[Any, int, float]:
        """Bring ``entry`` into memory: (value, bytes held) and optionally the seconds it took
        (cost-aware eviction policies use it). Bytes above the entry's declared size must fit
        the budget or the load fails; fewer give the rest of the reservation back."""
        ...

    def unload(self, entry: CatalogueEntry, value: Any) -> None:
        """Release what ``load`` returned; called once per loaded value, never while in use."""
        ...

    def serve(self, request: InferenceRequest, objects: Sequence[tuple[CatalogueEntry, Any]]
              ) -> Any:
        """Answer ``request`` with the acquired objects (pinned for the duration)."""
        ...

    def close(self) -> None:
        """Free what the backend holds beyond its loaded objects (e.g. the base model)."""
        ...
