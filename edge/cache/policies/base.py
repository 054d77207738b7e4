"""The interface every eviction policy implements.

The cache owns the byte accounting, the pins and the index; a policy only decides which unpinned
key goes next. The decision (``victim``) is side-effect-free: asking twice without an event in
between gives the same answer, and asking changes nothing. Events (``on_insert``, ``on_hit``,
``on_evict``, ``on_remove``) are where a policy updates its own state. The cache calls all of them
under its lock, so a policy needs no locking of its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from edge._native import NativeIndex


class CacheView(Protocol):
    """What a policy may see of the cache that runs it (read-only)."""

    index: NativeIndex

    def key_of_slot(self, slot: int) -> Hashable: ...

    def slot_of(self, key: Hashable) -> int: ...

    def is_pinned(self, key: Hashable) -> bool: ...

    def size_of(self, key: Hashable) -> int: ...

    def now(self) -> float: ...

    @property
    def budget(self) -> int: ...


@dataclass(frozen=True)
class NoParams:
    """For policies without settings: any key given is an error."""


class EvictionPolicy(ABC):
    """Chooses victims among the unpinned resident keys of one cache."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()
        self.view: CacheView | None = None

    def bind(self, view: CacheView) -> None:
        """Called once, by the cache that will run this policy, before any event."""
        if self.view is not None:
            raise RuntimeError(f"policy {self.name!r} is already bound to a cache")
        self.view = view

    # -- events (side effects) --------------------------------------------------------------

    def on_miss(self, key: Hashable, size: int) -> None:  # noqa: B027 - optional hook
        """``key`` (``size`` bytes) is about to be admitted: called before the victims that make
        room for it are chosen (ARC adapts its target here, as the paper does)."""

    def on_insert(self, key: Hashable, slot: int, size: int) -> None:  # noqa: B027
        """``key`` became resident."""

    def on_hit(self, key: Hashable, slot: int) -> None:  # noqa: B027
        """``key`` was requested while resident (the index has already recorded the access)."""

    def on_evict(self, key: Hashable, slot: int) -> None:  # noqa: B027
        """``key`` is being evicted because this policy chose it (still in the index)."""

    def on_remove(self, key: Hashable, slot: int) -> None:
        """``key`` is being removed for another reason (invalidation); still in the index."""
        self.on_evict(key, slot)

    def on_resize(self, budget: int) -> None:  # noqa: B027
        """The cache budget changed (policies that size their queues from it re-read it)."""

    # -- the decision (no side effects) -----------------------------------------------------

    @abstractmethod
    def victim(self) -> Hashable | None:
        """The unpinned resident key to evict next, or None when every resident key is pinned.

        Must not return None while an unpinned key is resident: the cache checks feasibility
        from its byte totals before it starts evicting and relies on this.
        """

    @classmethod
    def overrides(cls, method: str) -> bool:
        """Whether this policy reacts to an event; the cache skips calls to the no-op hooks."""
        return getattr(cls, method) is not getattr(EvictionPolicy, method)
