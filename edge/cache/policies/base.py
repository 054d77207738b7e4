"""The interface every eviction policy implements, and the read-only view it sees of its cache.

The cache owns the byte accounting, the pins and the index; a policy only decides which unpinned
keys go next. The decision (``victim``, ``victims``) is side-effect-free: asking twice without an
event in between gives the same answer, and asking changes nothing. Events (``on_insert``,
``on_hit``, ``on_evict``, ``on_remove``) are where a policy updates its own state. The cache calls
all of them under its lock, so a policy needs no locking of its own.

A policy sees its cache only through a ``CacheView`` (``self.view``): keys, sizes, pins, the clock
and the C core's per-object statistics, all read-only. It never holds the index or the cache
itself, so no policy can change what is resident, pinned or counted.

A policy module must not import the C core (``edge._native``) or numpy at module level:
``edge.cache.policies`` is imported to validate configuration, which must stay light. What a
learned policy needs from the C core, the view hands it (``candidates``, ``features``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np


@runtime_checkable
class CacheView(Protocol):
    """What a policy may see of the cache that runs it. Every method only reads.

    Keys are the cache's keys; slots are the C index's ids for resident keys (stable while the
    key is resident, reused after it leaves). A slot or key that is not resident is a
    ``KeyError``. Everything is read under the cache's lock, so it is consistent within one
    event or decision.
    """

    @property
    def budget(self) -> int:
        """The byte budget (changes on ``resize``; ``on_resize`` says when)."""

    def now(self) -> float:
        """The cache's clock (virtual time in the simulator)."""

    def key_of_slot(self, slot: int) -> Hashable: ...

    def slot_of(self, key: Hashable) -> int: ...

    def is_pinned(self, key: Hashable) -> bool: ...

    def size_of(self, key: Hashable) -> int: ...

    def free_bytes(self) -> int:
        """Bytes of the budget neither resident nor reserved for loads in flight."""

    def lru_victim_slot(self) -> int:
        """The least-recently-used unpinned slot, or -1 when every resident key is pinned."""

    def load_cost(self, slot: int) -> float:
        """The load cost recorded at insert (the loader's, else the measured seconds)."""

    def demand_of(self, key: Hashable) -> float:
        """The router's demand estimate for ``key`` as the cache was last given it
        (``PagedCache.set_demand``: the share of the router's recent requests that ``key`` is
        the best adapter for); 0 for a key left out of it, and for every key without a router."""

    def candidates(self, k_lru: int, k_sample: int, k_mru: int = 0) -> np.ndarray:
        """Eviction candidates for a learned policy, as int32 slots: the ``k_lru`` least-
        recently-used unpinned ones (LRU end first), then those of the ``k_mru`` most recently
        used unpinned ones (MRU end first) and then those of ``k_sample`` unpinned slots drawn
        uniformly that are not already listed (in draw order). Distinct, unpinned, fewer when
        fewer are unpinned. The draw is seeded by the cache's seed and eviction count, so the
        same state gives the same candidates: a decision built on them is side-effect-free,
        and each eviction round draws afresh."""

    def decision_inputs(self, k_lru: int, k_sample: int, free_fraction: float,
                        need_fraction: float, k_mru: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``candidates(k_lru, k_sample, k_mru)`` and their learned-policy network input rows (the
        ``features`` transformed as ``edge.learned.network.model_inputs`` does, then each
        candidate's demand, the router's estimate the cache was given (``PagedCache.set_demand``;
        0 without one), and the two given cache-level columns), float32 (n, N_INPUTS): one C
        call per decision. Both arrays are buffers the view reuses, as ``features``' is: valid
        only until the next ``decision_inputs`` call (copy them to keep them)."""

    def features(self, slots: Any) -> np.ndarray:
        """The (len(slots), N_FEATURES) float32 feature matrix of ``slots`` at ``now()``, written
        by the C core into a buffer the view reuses: read-only, and valid only until the next
        ``features`` call (copy it to keep it). Columns are ``feature_names``."""

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Column names of ``features`` (native/include/edge.h's ``edge_feature`` order)."""


@dataclass(frozen=True)
class NoParams:
    """For policies without settings: any key given is an error."""


class EvictionPolicy(ABC):
    """Chooses victims among the unpinned resident keys of one cache."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    # Ranks by the router's demand estimate (CacheView.demand_of): without a router it has none
    # and is another policy (`demand` is LRU), so trace replays without one leave it out.
    needs_router: ClassVar[bool] = False

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

    def stats(self) -> dict[str, Any]:
        """The policy's own counters (the learned policy's decisions and fallbacks), shown in
        ``CacheStats.policy``; none by default."""
        return {}

    # -- the decision (no side effects) -----------------------------------------------------

    @abstractmethod
    def victim(self) -> Hashable | None:
        """The unpinned resident key to evict next, or None when every resident key is pinned.

        Must not return None while an unpinned key is resident: the cache checks feasibility
        from its byte totals before it starts evicting and relies on this.
        """

    def victims(self, need_bytes: int) -> Iterable[Hashable]:
        """Keys to evict, in order, to free at least ``need_bytes`` (>= 1) bytes.

        Contract: the keys are distinct, resident and unpinned, and together free at least
        ``need_bytes`` whenever the unpinned bytes allow (the conformance suite checks both).
        The cache evicts them in order, calling ``on_evict`` for each before taking the next,
        and stops as soon as the need is met (later keys stay resident: a policy must not
        assume they went). If the iterable runs out first, the cache asks again with what is
        still needed; an empty answer while bytes are missing is a policy bug, reported as
        ``EdgeError``, as is a key that is pinned, not resident or already given. Calling this
        changes nothing; iterating the default answer asks ``victim()``, which changes nothing
        either.

        The default asks ``victim()`` again after each eviction, so every policy written for
        ``victim()`` works unchanged (and its events keep their order). A policy that decides a
        batch at once (one candidate selection, one feature matrix, one model call for a
        layer's experts) overrides this and returns a list.
        """
        # victim() asked anew at each step (the cache steps only after evicting the last key)
        # until it says None; built in C, so the default costs no generator frame per eviction.
        return iter(self.victim, None)

    @classmethod
    def overrides(cls, method: str) -> bool:
        """Whether this policy reacts to an event; the cache skips calls to the no-op hooks."""
        return getattr(cls, method) is not getattr(EvictionPolicy, method)
