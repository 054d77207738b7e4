"""How the runtime orders requests that wait for a serving slot (the policy file's ``serving``).

Only the settings live here (light to import); the scheduler itself is ``edge.scheduler``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ServingConfig:
    """``slots``: requests served at once (None: as many as the backend has contexts, its
    ``slots`` attribute, else 1). ``queue_limit``: requests that may wait for a slot; one more
    is refused (``QueueFullError``, HTTP 429). ``max_bypass``: how many later requests may be
    served before a waiting one (adapter affinity reorders the queue; this bounds how long it
    may starve a request). ``prefetch``: page in the adapters of waiting requests, within the
    budget, while others generate."""

    slots: Optional[int] = None
    queue_limit: int = 64
    max_bypass: int = 4
    prefetch: bool = True

    def __post_init__(self) -> None:
        if self.slots is not None and (isinstance(self.slots, bool) or self.slots < 1):
            raise ValueError(f"slots must be a positive integer or null, got {self.slots!r}")
        if isinstance(self.queue_limit, bool) or self.queue_limit < 0:
            raise ValueError(f"queue_limit must be an integer >= 0, got {self.queue_limit!r}")
        if isinstance(self.max_bypass, bool) or self.max_bypass < 0:
            raise ValueError(f"max_bypass must be an integer >= 0, got {self.max_bypass!r}")
