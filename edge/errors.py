"""The one exception family of edge.

Every error the library raises on purpose is an ``EdgeError``. Status codes returned by the
C core map to subclasses through ``error_for_status`` so a caller never sees a bare integer.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class of every error edge raises on purpose."""


class ConfigError(EdgeError, ValueError):
    """A configuration value or file is invalid; the message names the key path."""


class BudgetError(EdgeError):
    """A byte budget cannot be honoured."""


class ObjectTooLargeError(BudgetError):
    """One object is larger than the whole cache budget."""


class CacheFullError(BudgetError):
    """The object would fit the budget, but pinned objects (and loads in flight) leave no room
    to evict into, and none came free within the wait timeout."""


class CacheClosedError(EdgeError):
    """The cache was closed: before the call, or while it waited for a load or for room."""


class QueueFullError(EdgeError):
    """The runtime's queue of requests waiting for a serving slot is at its configured limit:
    try again later (the daemon answers 429 with Retry-After)."""


class LoadError(EdgeError):
    """A loader returned something the cache cannot accept (bad size, bad shape)."""


class RequestError(EdgeError, ValueError):
    """A request is malformed (no prompt to route on, an adapter name that is not a string)."""


class TraceError(EdgeError, ValueError):
    """A trace file is malformed or truncated; the message names the file and line."""


class NativeError(EdgeError):
    """The C core returned a failure status."""

    status: int = -1


class NativeKeyNotFound(NativeError, KeyError):
    status = 1


class NativeKeyExists(NativeError):
    status = 2


class NativeInvalidArgument(NativeError, ValueError):
    status = 3


class NativeOutOfMemory(NativeError, MemoryError):
    status = 4


class NativeCorrupt(NativeError):
    """``verify()`` found a broken invariant: a bug in the C core or memory corruption."""

    status = 5


class NativeBusy(NativeError):
    """The slot is pinned and the operation needs it unpinned."""

    status = 6


_BY_STATUS: dict[int, type[NativeError]] = {
    cls.status: cls
    for cls in (NativeKeyNotFound, NativeKeyExists, NativeInvalidArgument, NativeOutOfMemory,
                NativeCorrupt, NativeBusy)
}


def error_for_status(status: int, message: str) -> NativeError:
    """The exception instance for a non-zero C status code."""
    cls = _BY_STATUS.get(status, NativeError)
    err = cls(message)
    if cls is NativeError:
        err.status = status
    return err
