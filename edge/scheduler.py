"""Serving slots: which waiting request runs next when the backend is busy.

The backend serves ``slots`` requests at once (the llama backend: one per context). A request
that finds every slot taken waits in a queue; when a slot comes free, the next one is chosen
by adapter affinity, not arrival alone:

1. a request for exactly the adapter set the freed slot just served (its context keeps that
   set's KV, and the adapters are certainly resident);
2. then a request whose adapters are all resident (no page-in while others wait);
3. then the oldest.

Ties go to the oldest. Affinity alone can starve a request for a cold adapter behind a stream
of hot ones, so each waiting request counts how many later ones were served before it; once
that reaches ``max_bypass`` it goes next, whatever its adapters. With ``max_bypass=0`` the
queue is first come, first served.

The queue is bounded: a request that would make more than ``queue_limit`` wait is refused at
once with ``QueueFullError`` (the daemon's 429), rather than waiting behind work it cannot
see the end of. A waiting request can be cancelled (its client went away) through a
``threading.Event``; it leaves the queue without taking a slot.

The scheduler reports the queue's adapter sets, in the order it expects to serve them, to
``on_queue`` after every change, outside its lock: the runtime prefetches those adapters while
the slots generate, so a request that waited finds its adapter resident.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Optional

from edge.errors import CacheClosedError, EdgeError, QueueFullError

# How often a waiting request looks at its cancel event (seconds): a cancel is noticed within
# this delay without a thread per request.
CANCEL_POLL_SECONDS = 0.05


class RequestCancelled(EdgeError):
    """The request was cancelled (its client went away) before or while it was served."""


@dataclass(eq=False)
class _Ticket:
    adapters: tuple[str, ...]
    seq: int
    cancel: Optional[threading.Event]
    bypassed: int = 0
    granted: bool = False


@dataclass
class SchedulerStats:
    served: int = 0  # slots granted
    waited: int = 0  # of which after waiting in the queue
    reordered: int = 0  # granted ahead of an older waiting request
    forced: int = 0  # granted because max_bypass was reached
    refused: int = 0  # QueueFullError
    cancelled: int = 0  # left the queue cancelled
    waiting: int = 0  # now
    running: int = 0  # now


class Scheduler:
    """``slots`` at once, the rest queued (see the module docstring). ``resident()`` is the
    cache's resident set (names), read when choosing."""

    def __init__(self, slots: int, *, queue_limit: int, max_bypass: int,
                 resident: Callable[[], Mapping[str, int]],
                 on_queue: Optional[Callable[[list[tuple[str, ...]]], None]] = None) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ValueError(f"slots must be a positive integer, got {slots!r}")
        self.slots = slots
        self.queue_limit = queue_limit
        self.max_bypass = max_bypass
        self._resident = resident
        self._on_queue = on_queue
        self._cond = threading.Condition()
        self._free = slots
        self._waiting: list[_Ticket] = []
        self._seq = itertools.count()
        self._closed = False
        self._stats = SchedulerStats()

    @contextlib.contextmanager
    def slot(self, adapters: tuple[str, ...], cancel: Optional[threading.Event] = None
             ) -> Iterator[None]:
        """Hold a serving slot for a request on ``adapters`` (waiting for one if needed)."""
        released = self._take(adapters, cancel)
        try:
            yield
        finally:
            self._give_back(released)

    def _take(self, adapters: tuple[str, ...], cancel: Optional[threading.Event]
              ) -> tuple[str, ...]:
        with self._cond:
            if self._closed:
                raise CacheClosedError("the runtime is closed")
            if self._free > 0 and not self._waiting:
                self._free -= 1
                self._stats.served += 1
                self._stats.running += 1
                return adapters
            if len(self._waiting) >= self.queue_limit:
                self._stats.refused += 1
                raise QueueFullError(
                    f"{len(self._waiting)} requests are already waiting for one of the "
                    f"{self.slots} serving slot(s), the queue's limit (serving.queue_limit): "
                    "try again later")
            ticket = _Ticket(adapters, next(self._seq), cancel)
            self._waiting.append(ticket)
            queue = self._expected_order()
        self._report(queue)
        with self._cond:
            while not ticket.granted:
                if self._closed or (cancel is not None and cancel.is_set()):
                    self._waiting.remove(ticket)
                    if self._closed:
                        raise CacheClosedError("the runtime closed while the request waited "
                                               "for a serving slot")
                    self._stats.cancelled += 1
                    queue = self._expected_order()
                    break
                self._cond.wait(CANCEL_POLL_SECONDS if cancel is not None else None)
            else:
                self._stats.waited += 1
                return adapters
        self._report(queue)
        raise RequestCancelled("the request was cancelled while it waited for a serving slot")

    def _give_back(self, adapters: tuple[str, ...]) -> None:
        with self._cond:
            self._stats.running -= 1
            self._free += 1
            if not self._waiting or self._closed:
                return  # closed: the waiters are on their way out with CacheClosedError
            self._dispatch(adapters)
            queue = self._expected_order()
        self._report(queue)

    def _dispatch(self, released: tuple[str, ...]) -> None:
        """Grant free slots to waiting requests (the lock held)."""
        resident = None
        while self._free > 0 and self._waiting:
            oldest = self._waiting[0]
            if oldest.bypassed >= self.max_bypass:
                chosen = oldest
                if oldest.bypassed and self.max_bypass:
                    self._stats.forced += 1
            else:
                if resident is None:
                    resident = set(self._resident())
                chosen = max(self._waiting, key=lambda t: (
                    t.adapters == released, set(t.adapters) <= resident, -t.seq))
            index = self._waiting.index(chosen)
            for older in self._waiting[:index]:
                older.bypassed += 1
            if index:
                self._stats.reordered += 1
            del self._waiting[index]
            chosen.granted = True
            self._free -= 1
            self._stats.served += 1
            self._stats.running += 1
        self._cond.notify_all()

    def _expected_order(self) -> list[tuple[str, ...]]:
        """The waiting requests' adapter sets, oldest first (the lock held): what prefetch
        should bring in, most urgent first."""
        return [t.adapters for t in self._waiting]

    def _report(self, queue: list[tuple[str, ...]]) -> None:
        if self._on_queue is not None and queue:
            self._on_queue(queue)

    def stats(self) -> SchedulerStats:
        with self._cond:
            return dataclasses.replace(self._stats, waiting=len(self._waiting))

    def close(self) -> None:
        """Refuse new requests and wake the waiting ones (they raise CacheClosedError)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
