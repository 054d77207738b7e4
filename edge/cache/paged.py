"""``PagedCache``: keeps pageable objects resident under a byte budget.

Every pageable thing in edge (a LoRA adapter, one expert's weights in one layer) goes through
this class. It owns the byte accounting, the reservations and the pins; the C index keeps
per-object metadata and LRU order; an ``EvictionPolicy`` only chooses victims.

Guarantees:
- Resident plus reserved bytes never exceed the budget. When an object's size is declared before
  it is loaded (``nbytes=`` or a ``sizer``), its bytes are reserved and victims evicted *before*
  the loader runs, so the budget bounds memory during loads too. Without a declared size the
  loader runs first and room is made afterwards: the one case where the bytes being loaded are
  briefly outside the budget.
- A pinned object (one inside an ``acquire`` block) is never evicted.
- Loaders run outside the lock, and concurrent requests for one key load it once (single-flight):
  the waiters' pins are taken on their behalf when the object is inserted, so it cannot be
  evicted between the load and their use.
- When pins leave no room, a miss waits for releases (first come, first served) for up to
  ``wait_timeout`` seconds; with 0 it fails at once with ``CacheFullError``. A request that can
  never fit (larger than the whole budget) fails at once with ``ObjectTooLargeError``.
- A failure leaves the cache as it was: nothing stays pinned or reserved, a value that was loaded
  but cannot be admitted goes to the unloader, and a failed ``acquire_many`` changes no counter,
  pin or LRU position (its failed loads are counted in ``load_failures``).
- No lock is held across a call that raises. ``close()`` refuses (and stays open) while objects
  are pinned; otherwise it fails every waiter with ``CacheClosedError``, finishes or cancels every
  load, and hands every loaded value to the unloader exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge._native import NativeIndex
from edge.cache.policies import CacheView, EvictionPolicy, make_policy
from edge.cache.view import PagedCacheView
from edge.errors import (
    BudgetError,
    CacheClosedError,
    CacheFullError,
    ConfigError,
    EdgeError,
    LoadError,
    ObjectTooLargeError,
)
from edge.schema import format_bytes, parse_bytes

log = logging.getLogger(__name__)

Loader = Callable[[Hashable], tuple]  # key -> (value, nbytes) or (value, nbytes, load_cost)
Unloader = Callable[[Hashable, Any], None]
# (key, value, bytes of the budget it holds until the unloader has returned)
_Leaving = tuple[Hashable, Any, int]
Sizer = Callable[[Hashable], "int | None"]  # key -> bytes it will take once loaded, if known
Sizes = "Sequence[int | None] | Mapping[Hashable, int] | None"

# Integer keys below this go to the C table as themselves (the batch hit path needs no Python
# dict per key); every other key gets an id from 2**63 up, so the two never collide.
_DIRECT_KEY_LIMIT = 1 << 63
_FLOAT32_MAX = float(np.finfo(np.float32).max)  # the largest demand the C core can hold


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    coalesced: int  # misses that waited for another caller's load of the same key
    loads: int
    load_failures: int
    bytes_loaded: int
    load_seconds: float
    evictions: int
    bytes_evicted: int
    prefetches: int
    prefetch_failures: int
    room_waits: int  # misses that waited for pinned bytes to be released
    room_timeouts: int  # ... and gave up after wait_timeout
    resident_count: int
    resident_bytes: int
    pinned_bytes: int
    reserved_bytes: int  # declared sizes of loads in flight
    budget: int
    # The eviction policy's own counters (EvictionPolicy.stats: the learned policy's decisions,
    # fallbacks by reason, overruns); empty for the classical ones.
    policy: dict = field(default_factory=dict)

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class _Entry:
    __slots__ = ("c_key", "key", "value", "size", "slot")

    def __init__(self, c_key: int, key: Hashable, value: Any, size: int, slot: int) -> None:
        self.c_key = c_key
        self.key = key
        self.value = value
        self.size = size
        self.slot = slot


class _Flight:
    """One in-progress load; later callers for the same key wait on it.

    The Event is made by the first waiter (under the cache lock, so before the leader can
    finish): most loads have no waiter, and an Event costs more than the rest of a miss.
    """

    __slots__ = ("done", "waiters", "error", "entry")

    def __init__(self) -> None:
        self.done: threading.Event | None = None
        self.waiters = 0  # callers (besides the leader) that want a pin when it lands
        self.error: BaseException | None = None
        self.entry: _Entry | None = None

    def join(self) -> None:
        """Called under the cache lock by a caller that will wait for this load."""
        self.waiters += 1
        if self.done is None:
            self.done = threading.Event()

    def wait(self) -> _Entry:
        self.done.wait()  # the leader pins on our behalf when it inserts
        if self.error is not None:
            raise self.error
        return self.entry


class _RoomWait:
    """One caller's claim on the wait for room: its deadline and its place in the queue."""

    __slots__ = ("timeout", "deadline", "queued")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.queued = False


@dataclass
class _Loaded:
    key: Hashable
    flight: _Flight
    reserved: int = 0  # bytes reserved for it before the load (0: size not declared)
    value: Any = None
    size: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    error: BaseException | None = None
    loaded: bool = False  # the loader returned a value that someone must unload


def _budget_bytes(budget: int | str) -> int:
    try:
        return parse_bytes(budget, "budget")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_size(key: Hashable, size: Any, source: str) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise LoadError(f"{source} for {key!r} gave nbytes={size!r}; it must be a positive int")
    return size


class PagedCache:
    """A byte-budgeted, thread-safe cache of pinned-while-used objects.

    ``loader(key)`` returns ``(value, nbytes)`` or ``(value, nbytes, load_cost)``; without an
    explicit cost the measured load time in seconds is recorded (a feature for learned policies).
    ``sizer(key)`` (or ``nbytes=`` per call) declares the size before the load, so room is made
    first; a loaded object larger than declared makes the extra room or fails, a smaller one
    gives the rest back. ``unloader(key, value)`` is called, outside the lock, for every object
    leaving the cache. ``clock`` is the time source of access statistics (the simulator passes a
    virtual one). ``load_workers`` threads run ``prefetch`` and the parallel loads of
    ``acquire_many``; with 0 everything loads in the calling thread (deterministic, for
    simulation). ``wait_timeout`` is how long a miss may wait for pinned bytes to be released.
    """

    def __init__(
        self,
        budget: int | str,
        policy: str | EvictionPolicy = "lru",
        *,
        loader: Loader | None = None,
        unloader: Unloader | None = None,
        sizer: Sizer | None = None,
        clock: Callable[[], float] = time.monotonic,
        load_workers: int = 4,
        wait_timeout: float = 0.0,
        policy_params: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self._budget = _budget_bytes(budget)
        if isinstance(load_workers, bool) or not isinstance(load_workers, int) \
                or load_workers < 0:
            raise ConfigError(f"load_workers must be an int >= 0, got {load_workers!r}")
        if isinstance(wait_timeout, bool) or not isinstance(wait_timeout, (int, float)) \
                or not wait_timeout >= 0 or wait_timeout == math.inf:
            raise ConfigError(f"wait_timeout must be a finite number of seconds >= 0, "
                              f"got {wait_timeout!r}")
        self._policy = policy if isinstance(policy, EvictionPolicy) else make_policy(
            policy, policy_params)
        self._loader = loader
        self._unloader = unloader
        self._sizer = sizer
        self._clock = clock
        self._wait_timeout = float(wait_timeout)
        self._index = NativeIndex(seed=seed)
        self._raw = self._index.raw_paths()
        # The single-key hit path reads these three straight off the cache (see _Acquisition).
        self._c_ptr, self._c_acquire_slot, self._c_unpin = \
            self._raw.ptr, self._raw.acquire_slot, self._raw.unpin
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # notified when room or state changes
        self._room_queue: deque[_RoomWait] = deque()  # misses waiting for room, first come first
        self._entries: dict[Hashable, _Entry] = {}
        self._entry_of_slot: list[_Entry | None] = []
        self._flights: dict[Hashable, _Flight] = {}
        # The router's demand estimate per key (set_demand), resident or not: a key loaded
        # later gets its value in the C core at insert.
        self._demand: dict[Hashable, float] = {}
        self._reserved = 0
        self._next_id = _DIRECT_KEY_LIMIT
        # Every other key's C id, kept for the cache's life: an object evicted and loaded again
        # must come back under the same id, or the C core's ghost list (the history the learned
        # policy reads) would not know it. One entry per distinct such key ever loaded.
        self._c_key_of: dict[Hashable, int] = {}
        self._executor = (ThreadPoolExecutor(load_workers, thread_name_prefix="edge-load")
                          if load_workers else None)
        self._closed = False
        self._view = PagedCacheView(self, seed)
        self._policy.bind(self._view)
        # Calling a no-op hook on every hit costs more than the LRU decision itself.
        self._policy_wants_hits = self._policy.overrides("on_hit")
        self._policy_wants_misses = self._policy.overrides("on_miss")
        self._hits = self._misses = self._coalesced = self._loads = self._load_failures = 0
        self._bytes_loaded = self._evictions = self._bytes_evicted = 0
        self._prefetches = self._prefetch_failures = 0
        self._room_waits = self._room_timeouts = 0
        self._load_seconds = 0.0

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> PagedCache:
        """A cache from a policy file's ``cache`` section (an ``edge.config.CacheConfig``);
        ``kwargs`` supply what a file cannot (loader, unloader, sizer, clock)."""
        return cls(config.budget, config.policy, policy_params=config.policy_params,
                   load_workers=config.load_workers, wait_timeout=config.wait_timeout, **kwargs)

    @property
    def budget(self) -> int:
        return self._budget

    @property
    def policy(self) -> EvictionPolicy:
        return self._policy

    @property
    def view(self) -> CacheView:
        """The read-only view the policy sees (consistent only under the cache's lock, which
        every policy call holds; for tests and diagnostics otherwise)."""
        return self._view

    # ---- acquire -----------------------------------------------------------------------------

    def acquire(self, key: Hashable, loader: Loader | None = None, *,
                nbytes: int | None = None) -> _Acquisition:
        """``with cache.acquire(key) as value:`` -- the value, pinned until the block ends.

        ``nbytes`` declares the object's size before it is loaded (overrides the ``sizer``).
        After the block, ``.hit`` on the returned object says whether it was resident."""
        return _Acquisition(self, key, loader, nbytes)

    def acquire_many(self, keys: Sequence[Hashable], loader: Loader | None = None, *,
                     nbytes: Sizes = None) -> _AcquisitionMany:
        """``with cache.acquire_many(keys) as values:`` -- all of them pinned together, or none.

        Misses load in parallel on the load workers. ``nbytes`` declares sizes (a sequence
        parallel to ``keys`` or a mapping). A set larger than the budget raises
        ``ObjectTooLargeError`` at once; one that pins leave no room for raises
        ``CacheFullError`` after ``wait_timeout``. Either way nothing changes. A key listed
        twice is pinned (and counted as a hit, if resident) once per listing.
        """
        return _AcquisitionMany(self, keys, loader, nbytes)

    def _pin(self, key: Hashable, loader: Loader | None, nbytes: int | None
             ) -> tuple[_Entry, bool]:
        """The miss path of ``acquire`` (and the hit path's retry): (entry, was it a hit)."""
        size = self._declared_size(key, nbytes)
        wait = _RoomWait(self._wait_timeout)
        leader = None
        victims: list[_Leaving] = []
        try:
            with self._lock:
                try:
                    while True:
                        self._check_open()
                        entry = self._entries.get(key)
                        if entry is not None:
                            self._index.acquire_slot(entry.slot, self._clock())
                            self._hits += 1
                            if self._policy_wants_hits:
                                self._call_on_hit(entry)
                            return entry, True
                        flight = self._flights.get(key)
                        if flight is not None:
                            flight.join()
                            self._misses += 1
                            self._coalesced += 1
                            break
                        loader = self._loader_for(loader, key)
                        if size is not None:
                            try:
                                if not self._wait_for_room(size, 0, size, repr(key), wait):
                                    continue  # waited: look again, the key may be here now
                            except BudgetError:
                                self._misses += 1  # as when an undeclared load fails to fit
                                raise
                            self._reserve([(key, size)], victims)
                        self._misses += 1
                        flight = self._flights[key] = _Flight()
                        leader = _Loaded(key, flight, reserved=size or 0)
                        break
                finally:
                    self._leave_queue(wait)
        finally:
            self._unload(victims)
        if leader is None:
            return flight.wait(), False
        self._load(leader, loader)
        try:
            with self._lock:
                self._settle([leader], 1, victims, wait)
        finally:
            self._unload(victims)
        if leader.error is not None:
            raise leader.error
        return flight.entry, False

    def _call_on_hit(self, entry: _Entry) -> None:
        try:
            self._policy.on_hit(entry.key, entry.slot)
        except BaseException:
            self._index.unpin(entry.slot)
            self._hits -= 1
            raise

    def _release(self, entries: Iterable[_Entry]) -> None:
        with self._lock:
            slots = np.fromiter((entry.slot for entry in entries), np.int32)
            self._index.unpin_many(slots)
            if self._room_queue:
                self._room.notify_all()

    def _pin_many(self, keys: list[Hashable], loader: Loader | None, nbytes: Sizes
                  ) -> list[_Entry]:
        """The general path of ``acquire_many`` (the batch C call found a key missing): one
        entry per listed key, each pinned once per listing."""
        unique = list(dict.fromkeys(keys))
        declared = self._declared_sizes(unique, keys, nbytes)
        wait = _RoomWait(self._wait_timeout)
        joined: list[_Flight] = []
        leading: list[_Loaded] = []
        victims: list[_Leaving] = []
        try:
            with self._lock:
                try:
                    while True:
                        self._check_open()
                        resident, flying, missing = self._classify(unique)
                        if missing:
                            loader = self._loader_for(loader, missing[0])
                        need = sum(declared[key] or 0 for key in missing)
                        # The unpinned resident members are about to be pinned: their bytes
                        # are no room for the rest.
                        held = sum(e.size for e in resident if not self._index.pin_count(e.slot))
                        whole = need + sum(e.size for e in resident)
                        if self._wait_for_room(need, held, whole, f"the set {unique[:8]!r}", wait):
                            break
                    # It fits: commit. From here on a failure undoes exactly this. Resident
                    # members are pinned once per listing now, and touched only on success.
                    listed = [self._entries[key] for key in keys if key in self._entries]
                    self._index.pin_many(_slots(listed))
                    self._reserve([(key, declared[key]) for key in missing if declared[key]],
                                  victims)
                    for key in missing:
                        flight = self._flights[key] = _Flight()
                        leading.append(_Loaded(key, flight, reserved=declared[key] or 0))
                    for flight in flying:
                        flight.join()
                        joined.append(flight)
                finally:
                    self._leave_queue(wait)
        finally:
            self._unload(victims)

        self._load_all(leading, loader)
        pinned = list(listed)
        error: BaseException | None = None
        for flight in joined:  # other callers' loads of our keys; they pin for us
            try:
                pinned.append(flight.wait())
            except BaseException as exc:  # noqa: B036 - the first cause wins, all are waited
                error = error or exc
        try:
            with self._lock:
                self._settle(leading, 1, victims, wait, error=error,
                             before_insert=lambda: self._touch(listed),
                             members_bytes=sum(entry.size for entry in resident))
                error = error or next((i.error for i in leading if i.error is not None), None)
                if error is None:
                    new = [item.flight.entry for item in leading] + pinned[len(listed):]
                    by_key = {entry.key: entry for entry in new}
                    # Later listings of a key that was not resident: one more pin each.
                    repeats = _repeats([key for key in keys if key in by_key], by_key)
                    self._index.pin_many(_slots(repeats))
                    self._hits += len(repeats)
                    self._misses += len(leading) + len(joined)
                    self._coalesced += len(joined)
                    return [self._entries[key] for key in keys]
        finally:
            self._unload(victims)
        self._release(pinned)
        raise error

    def _load_all(self, items: list[_Loaded], loader: Loader) -> None:
        if len(items) > 1 and self._executor is not None:
            try:
                list(self._executor.map(lambda item: self._load(item, loader), items))
                return
            except RuntimeError:  # the workers were shut down by close(): load here instead
                pass
        for item in items:
            if not item.loaded and item.error is None:
                self._load(item, loader)

    def _classify(self, unique: list[Hashable]):
        resident, flying, missing = [], [], []
        for key in unique:
            entry = self._entries.get(key)
            if entry is not None:
                resident.append(entry)
            elif key in self._flights:
                flying.append(self._flights[key])
            else:
                missing.append(key)
        return resident, flying, missing

    def _touch(self, resident: list[_Entry]) -> None:
        """The whole set is in: record an access (a hit) for each listing of a member that was
        resident, in the order listed (lock held)."""
        if not resident:
            return
        self._index.touch_slots(_slots(resident), self._clock())
        self._hits += len(resident)
        if self._policy_wants_hits:
            for entry in resident:
                self._policy.on_hit(entry.key, entry.slot)

    # ---- sizes, room and waiting (lock held unless said otherwise) ---------------------------

    def _declared_size(self, key: Hashable, nbytes: int | None) -> int | None:
        """The size declared for ``key`` before its load, if any (called without the lock:
        a sizer may stat a file)."""
        if nbytes is not None:
            return _check_size(key, nbytes, "nbytes")
        if self._sizer is None:
            return None
        size = self._sizer(key)
        return None if size is None else _check_size(key, size, "the sizer")

    def _declared_sizes(self, unique: list[Hashable], keys: list[Hashable], nbytes: Sizes
                        ) -> dict[Hashable, int | None]:
        if nbytes is None:
            return {key: self._declared_size(key, None) for key in unique}
        if isinstance(nbytes, Mapping):
            return {key: self._declared_size(key, nbytes.get(key)) for key in unique}
        nbytes = list(nbytes)
        if len(nbytes) != len(keys):
            raise ValueError(f"nbytes has {len(nbytes)} sizes for {len(keys)} keys")
        given = dict(zip(keys, nbytes, strict=True))
        return {key: self._declared_size(key, given[key]) for key in unique}

    def _wait_for_room(self, need: int, held: int, whole: int, what: str,
                       wait: _RoomWait) -> bool:
        """True when ``need`` bytes can be made free now and it is this caller's turn;
        otherwise wait once (in the queue) and return False: the caller must then look at the
        cache again, anything may have changed. ``held``: bytes of unpinned objects the caller
        is about to pin; ``whole``: the bytes of everything the request needs resident at
        once. Raises ``ObjectTooLargeError`` for a request that can never fit (``whole`` over
        the budget), ``CacheFullError`` at the deadline."""
        if whole > self._budget:
            raise ObjectTooLargeError(
                f"{what} needs {format_bytes(whole)} ({whole} bytes), more than the "
                f"whole budget of {format_bytes(self._budget)} ({self._budget} bytes); it can "
                "never be resident")
        room = self._budget - self._index.pinned_bytes() - self._reserved - held
        my_turn = not self._room_queue or self._room_queue[0] is wait
        if my_turn and need <= room:
            return True
        remaining = wait.deadline - time.monotonic()
        if remaining <= 0:
            if wait.queued:
                self._room_timeouts += 1
            totals = self._index.totals()
            waited = (f" after waiting {self._wait_timeout:g} s (wait_timeout)"
                      if wait.timeout else " (wait_timeout is 0: no waiting)")
            raise CacheFullError(
                f"no room for {what} ({need} bytes): {totals.pinned_bytes} of the "
                f"{self._budget}-byte budget is pinned by {totals.pinned_count} objects in use "
                f"and {self._reserved} bytes are reserved by loads in flight{waited}")
        if not wait.queued:
            wait.queued = True
            self._room_queue.append(wait)
            self._room_waits += 1
        self._room.wait(remaining)
        return False

    def _leave_queue(self, wait: _RoomWait) -> None:
        if wait.queued:
            wait.queued = False
            self._room_queue.remove(wait)
            self._room.notify_all()  # the next in line may go now

    def _reserve(self, sized: list[tuple[Hashable, int]], victims: list) -> None:
        """Evict until the declared sizes are free, then hold them for loads about to start
        (the caller has checked that they fit)."""
        if not sized:
            return
        if self._policy_wants_misses:
            for key, size in sized:
                self._policy.on_miss(key, size)
        need = sum(size for _, size in sized)
        self._evict_until_free(need, victims)
        self._reserved += need

    # ---- loading and admission ------------------------------------------------------------

    def _loader_for(self, loader: Loader | None, key: Hashable) -> Loader:
        loader = loader or self._loader
        if loader is None:
            raise EdgeError(f"no loader for {key!r}: pass one to acquire() or to PagedCache()")
        return loader

    def _load(self, item: _Loaded, loader: Loader) -> None:
        """Run the loader (no lock held); the outcome is recorded on ``item``."""
        start = time.perf_counter()
        try:
            result = loader(item.key)
        except BaseException as exc:  # noqa: B036 - any failure must release the flight
            item.error = exc
            return
        item.seconds = time.perf_counter() - start
        if isinstance(result, tuple) and result:
            item.value, item.loaded = result[0], True  # ours to unload from here on
        try:
            item.size, item.cost = self._check_loaded(item.key, result, item.seconds)
        except LoadError as exc:
            item.error = exc

    @staticmethod
    def _check_loaded(key: Hashable, result: Any, seconds: float) -> tuple[int, float]:
        if not isinstance(result, tuple) or len(result) not in (2, 3):
            raise LoadError(f"loader for {key!r} must return (value, nbytes) or "
                            f"(value, nbytes, load_cost), got {type(result).__name__}")
        size = _check_size(key, result[1], "the loader")
        cost = result[2] if len(result) == 3 else seconds
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) \
                or not math.isfinite(cost) or cost < 0:
            raise LoadError(f"loader for {key!r} returned load_cost={cost!r}; it must be a "
                            "finite number >= 0")
        return size, float(cost)

    def _settle(self, items: list[_Loaded], extra_pins: int, victims: list, wait: _RoomWait,
                error: BaseException | None = None,
                before_insert: Callable[[], None] | None = None,
                members_bytes: int = 0) -> None:
        """After the loads (lock held): give the reservations back, then admit every loaded
        object or none, and publish the outcome to each flight's waiters. Values that are not
        admitted go to ``victims``, and each item's ``error`` says why. ``members_bytes``:
        the other members of the set (already pinned), for the never-fits check."""
        error = error or next((item.error for item in items if item.error is not None), None)
        if error is None and self._closed:
            error = CacheClosedError(
                f"the cache was closed while loading {[item.key for item in items][:8]!r}")
        # Each reservation is given back here; a value that is not admitted takes it up again
        # until its unloader returns (below).
        self._reserved -= sum(item.reserved for item in items)
        try:
            if error is None:
                self._make_room_after_load(items, victims, wait, members_bytes)
                if before_insert is not None:
                    before_insert()
                for item in items:
                    self._insert(item, extra_pins)
        except BaseException as exc:  # noqa: B036 - the waiters must hear of any failure
            error = exc
            if not isinstance(exc, EdgeError):
                raise
        finally:
            if error is not None:
                for item in items:
                    if item.loaded:  # its reservation, if any, holds until it is unloaded
                        victims.append((item.key, item.value, self._hold(item.reserved)))
                    if item.error is None:
                        item.error = error
            for item in items:
                self._finish_flight(item)
            if self._room_queue or self._closed:
                self._room.notify_all()

    def _make_room_after_load(self, items: list[_Loaded], victims: list, wait: _RoomWait,
                              members_bytes: int) -> None:
        """Free the room for loaded objects: their reservations held it unless a size was not
        declared (then we may wait for room while the values sit outside the budget: the one
        documented overshoot) or the loader returned more than declared."""
        need = sum(item.size for item in items)
        if need > self._budget - self._index.resident_bytes() - self._reserved:
            what = (repr(items[0].key) if len(items) == 1 else
                    f"the set of {len(items)} objects {[item.key for item in items][:8]!r}")
            over = next((i for i in items if i.reserved and i.size > i.reserved), None)
            if over is not None:
                what += (f" (its loader returned {over.size} bytes for {over.key!r}, "
                         f"{over.size - over.reserved} more than the {over.reserved} declared)")
            try:
                while not self._wait_for_room(need, 0, need + members_bytes, what, wait):
                    self._check_open()
            finally:
                self._leave_queue(wait)
        if self._policy_wants_misses:  # only once it is sure to fit: a failure leaves no trace
            for item in items:
                if not item.reserved:
                    self._policy.on_miss(item.key, item.size)
        self._evict_until_free(need, victims)

    def _evict_until_free(self, need: int, victims: list) -> None:
        """Evict the policy's victims until ``need`` bytes are free (lock held).

        The bytes that cover ``need`` belong to the caller's reservation or insert, made next,
        and the caller unloads its victims before it loads anything; whatever is evicted beyond
        that stays reserved until the unloader returns, so no other caller can load into memory
        that is still in use.

        The callers have checked from the byte totals that unpinned objects cover the deficit;
        the policy's ``victims(still_needed)`` names them, asked again if its answer runs out
        early. A key that is pinned, not resident or given twice, or no key at all while the
        deficit remains, is a policy bug: ``EdgeError``, never a loop (every accepted key frees
        at least one byte)."""
        resident, pinned = self._index.byte_totals()
        free = self._budget - resident - self._reserved
        if free >= need:
            return
        deficit = need - free
        evictable = resident - pinned
        if deficit > evictable:
            raise EdgeError(f"cannot free {deficit} bytes: only {evictable} bytes of resident "
                            "objects are unpinned (the caller should have checked the room)")
        first = len(victims)
        evicted = 0
        policy, entries, pin_count = self._policy, self._entries, self._index.pin_count
        while free < need:
            chose_any = False
            for key in policy.victims(need - free):
                entry = entries.get(key)
                if entry is None or pin_count(entry.slot):
                    raise EdgeError(self._bad_victim(key, entry, victims[first:]))
                chose_any = True
                policy.on_evict(key, entry.slot)
                self._drop(entry)
                self._evictions += 1
                self._bytes_evicted += entry.size
                free += entry.size
                evicted += entry.size
                victims.append((key, entry.value, 0))
                if free >= need:
                    break
            if not chose_any:
                raise EdgeError(
                    f"eviction policy {policy.name!r} named no victim while {need - free} more "
                    f"bytes are needed and {evictable - evicted} bytes of unpinned objects are "
                    "resident (a bug in the policy)")
        surplus = evicted - max(deficit, 0)
        if evicted and surplus > 0:
            key, value, _ = victims[-1]
            victims[-1] = (key, value, self._hold(surplus))

    def _bad_victim(self, key: Hashable, entry: _Entry | None, evicted_now: list) -> str:
        if entry is not None:
            why = "which is pinned"
        elif any(k == key for k, _, _ in evicted_now):
            why = "which it had already named in this eviction (a duplicate)"
        else:
            why = "which is not resident"
        return (f"eviction policy {self._policy.name!r} chose {key!r}, {why}; a victim must be "
                "an unpinned resident object (a bug in the policy)")

    def _drop(self, entry: _Entry) -> None:
        self._index.remove(entry.c_key)
        del self._entries[entry.key]
        self._entry_of_slot[entry.slot] = None

    def _c_key_for(self, key: Hashable) -> int:
        if type(key) is int and 0 <= key < _DIRECT_KEY_LIMIT:
            return key
        c_key = self._c_key_of.get(key)
        if c_key is None:
            self._next_id += 1
            c_key = self._c_key_of[key] = self._next_id
        return c_key

    def _insert(self, item: _Loaded, extra_pins: int) -> None:
        pins = extra_pins + item.flight.waiters
        c_key = self._c_key_for(item.key)
        slot = self._index.insert(c_key, item.size, self._clock(), item.cost, pins)
        entry = _Entry(c_key, item.key, item.value, item.size, slot)
        self._entries[item.key] = entry
        if slot >= len(self._entry_of_slot):
            self._entry_of_slot.extend([None] * (slot + 1 - len(self._entry_of_slot)))
        self._entry_of_slot[slot] = entry
        demand = self._demand.get(item.key)
        if demand:
            self._index.set_demand(slot, demand)
        item.flight.entry = entry
        self._loads += 1
        self._bytes_loaded += item.size
        self._load_seconds += item.seconds
        self._policy.on_insert(item.key, slot, item.size)

    def _finish_flight(self, item: _Loaded) -> None:
        """Publish the outcome of a load to its waiters (lock held)."""
        del self._flights[item.key]
        if item.error is not None:
            self._load_failures += 1
            item.flight.error = item.error
        if item.flight.done is not None:
            item.flight.done.set()

    def _hold(self, nbytes: int) -> int:
        """Keep ``nbytes`` of the budget reserved for an object on its way out until its
        unloader returns: until then its memory is still in use (lock held)."""
        if self._unloader is None:
            return 0  # nothing frees it explicitly: it goes when the last reference does
        self._reserved += nbytes
        return nbytes

    def _unload(self, victims: list[_Leaving]) -> None:
        """Hand values to the unloader (no lock held), release the bytes they held, and empty
        the list."""
        done, victims[:] = list(victims), []
        held = 0
        try:
            for key, value, nbytes in done:
                held += nbytes
                if self._unloader is None:
                    continue
                try:
                    self._unloader(key, value)
                except Exception:  # an unloader failure must not undo the eviction
                    log.exception("unloader failed for %r", key)
        finally:
            if held:
                with self._lock:
                    self._reserved -= held
                    if self._room_queue or self._closed:
                        self._room.notify_all()

    # ---- holding without using --------------------------------------------------------------

    @contextlib.contextmanager
    def hold(self, keys: Iterable[Hashable]) -> Iterator[list[Hashable]]:
        """``with cache.hold(keys) as held:`` -- the resident ones among ``keys`` (``held``, in
        order, each once) are pinned so nothing evicts them, without recording an access: no
        hit, no miss, no policy event, no recency. For protecting objects while other loads
        make room (the MoE prefetcher's next-layer experts); their real use records the access.
        Keys not resident are skipped, not loaded."""
        with self._lock:
            self._check_open()
            entries = [self._entries[key] for key in dict.fromkeys(keys) if key in self._entries]
            if entries:
                self._index.pin_many(_slots(entries))
        try:
            yield [entry.key for entry in entries]
        finally:
            if entries:
                self._release(entries)

    # ---- prefetch ---------------------------------------------------------------------------

    def prefetch(self, keys: Iterable[Hashable], loader: Loader | None = None, *,
                 nbytes: Sizes = None) -> int:
        """Start loading ``keys`` that are neither resident nor loading; returns how many.

        Runs on the load workers and never blocks the caller (with ``load_workers=0`` it loads
        inline). A prefetched object is inserted unpinned and may evict unpinned objects, never
        pinned ones; one that does not fit is dropped and counted in ``prefetch_failures``. A
        declared size is reserved now, so the load itself stays inside the budget; a key there
        is no room for now is not started.
        """
        keys = list(dict.fromkeys(keys))
        declared = self._declared_sizes(keys, keys, nbytes)
        started: list[_Loaded] = []
        victims: list[_Leaving] = []
        try:
            with self._lock:
                self._check_open()
                if keys:
                    loader = self._loader_for(loader, keys[0])  # before any flight is opened
                for key in keys:
                    if key in self._entries or key in self._flights:
                        continue
                    size = declared[key]
                    if size is not None:
                        if self._room_queue or size > self._budget - \
                                self._index.pinned_bytes() - self._reserved:
                            self._prefetch_failures += 1  # demand waits first; no room now
                            continue
                        self._reserve([(key, size)], victims)
                    flight = self._flights[key] = _Flight()
                    started.append(_Loaded(key, flight, reserved=size or 0))
                    self._prefetches += 1
        finally:
            self._unload(victims)
        for n, item in enumerate(started):
            if self._executor is None:
                self._prefetch_one(item, loader)
                continue
            try:
                self._executor.submit(self._prefetch_one, item, loader)
            except RuntimeError:  # closed meanwhile: these loads will never run
                with self._lock:
                    self._settle(started[n:], 0, victims, _RoomWait(0.0),
                                 error=CacheClosedError("the cache was closed before this "
                                                        "prefetch could start"))
                    self._prefetch_failures += len(started) - n
                break
        self._unload(victims)
        return len(started)

    def _prefetch_one(self, item: _Loaded, loader: Loader) -> None:
        if not self._closed:  # a queued prefetch after close() only releases its flight
            self._load(item, loader)
        victims: list[_Leaving] = []
        try:
            with self._lock:
                self._settle([item], 0, victims, _RoomWait(0.0))  # a prefetch never waits
                if item.error is not None:
                    self._prefetch_failures += 1
                    log.info("prefetch of %r failed: %s", item.key, item.error)
        finally:
            self._unload(victims)

    # ---- management -------------------------------------------------------------------------

    def resize(self, budget: int | str) -> None:
        """Change the budget, evicting unpinned objects to meet a smaller one.

        Raises ``CacheFullError`` (budget unchanged) if pinned objects and reservations alone
        exceed it."""
        new_budget = _budget_bytes(budget)
        victims: list[_Leaving] = []
        try:
            with self._lock:
                totals = self._index.totals()
                if totals.pinned_bytes + self._reserved > new_budget:
                    raise CacheFullError(
                        f"cannot resize to {new_budget} bytes: {totals.pinned_bytes} bytes are "
                        f"pinned and {self._reserved} reserved by loads in flight")
                self._budget = new_budget
                self._policy.on_resize(new_budget)
                self._evict_until_free(0, victims)
                if self._room_queue:
                    self._room.notify_all()
        finally:
            self._unload(victims)  # whatever left the cache, even if a policy failed midway

    def set_demand(self, demand: Mapping[Hashable, float]) -> None:
        """The router's demand estimate per key, replacing the last one (keys left out: 0).

        Read by a learned eviction policy as each candidate's demand input (the C core keeps
        the value beside the key's other features); a key not resident now gets its value when
        it is loaded. ``Runtime`` calls this with ``Router.demand()`` after each epoch plan.
        Each value must be a finite number >= 0 (in a float32's range); a bad one raises
        ``ValueError`` naming its key, and nothing is changed."""
        checked: dict[Hashable, float] = {}
        for key, value in demand.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            # The C core keeps a float32: a larger value would become infinite there.
            if isinstance(value, bool) or not (0.0 <= number <= _FLOAT32_MAX):
                raise ValueError(f"demand for {key!r} must be a finite number >= 0, got "
                                 f"{value!r}")
            if number:
                checked[key] = number
        with self._lock:
            self._demand = checked
            for key, entry in self._entries.items():
                self._index.set_demand(entry.slot, checked.get(key, 0.0))

    def demand(self) -> dict[Hashable, float]:
        """The demand estimate last given to ``set_demand`` (its non-zero values)."""
        with self._lock:
            return dict(self._demand)

    def discard(self, key: Hashable) -> bool:
        """Remove ``key`` now (e.g. its file was deleted); False if it was not resident.

        Raises ``EdgeError`` if it is pinned: it is in use and stays until released."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            if self._index.pin_count(entry.slot):
                raise EdgeError(f"cannot discard {key!r}: it is pinned by a caller using it")
            self._policy.on_remove(key, entry.slot)
            self._drop(entry)
            leaving = [(key, entry.value, self._hold(entry.size))]
        self._unload(leaving)
        return True

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def resident(self) -> dict[Hashable, int]:
        """Resident keys and their sizes in bytes, from least to most recently used."""
        with self._lock:
            slots = self._index.walk_lru(len(self._entries), skip_pinned=False)
            return {self._entry_of_slot[s].key: self._entry_of_slot[s].size for s in slots}

    def stats(self) -> CacheStats:
        with self._lock:
            totals = self._index.totals()
            return CacheStats(
                hits=self._hits, misses=self._misses, coalesced=self._coalesced,
                loads=self._loads, load_failures=self._load_failures,
                bytes_loaded=self._bytes_loaded, load_seconds=self._load_seconds,
                evictions=self._evictions, bytes_evicted=self._bytes_evicted,
                prefetches=self._prefetches, prefetch_failures=self._prefetch_failures,
                room_waits=self._room_waits, room_timeouts=self._room_timeouts,
                resident_count=totals.count, resident_bytes=totals.bytes,
                pinned_bytes=totals.pinned_bytes, reserved_bytes=self._reserved,
                budget=self._budget, policy=self._policy.stats())

    def verify(self) -> None:
        """Check the C index's invariants and that it agrees with this object (for tests)."""
        with self._lock:
            self._index.verify()
            totals = self._index.totals()
            if totals.count != len(self._entries) or totals.bytes + self._reserved > self._budget:
                raise EdgeError(f"cache out of sync: {totals}, {self._reserved} bytes reserved, "
                                f"{len(self._entries)} entries, budget {self._budget}")
            for key, entry in self._entries.items():
                if self._entry_of_slot[entry.slot] is not entry:
                    raise EdgeError(f"slot map out of sync for {key!r}")
                info = self._index.slot_info(entry.slot)
                if info.key != entry.c_key or info.size != entry.size:
                    raise EdgeError(f"index entry of {key!r} does not match: {info}")

    def close(self, wait: bool = True) -> None:
        """Unload every resident object and stop the load workers.

        Refuses with ``EdgeError``, leaving the cache open and unchanged, while objects are
        pinned. Otherwise: new calls fail, callers waiting for room or for a load get
        ``CacheClosedError``, queued prefetches are dropped, and every loaded value reaches the
        unloader exactly once. With ``wait`` it returns after loads in progress have finished
        (their values unloaded); without, those loads unload their own values when they end.
        """
        with self._lock:
            if self._closed:
                return
            totals = self._index.totals()
            if totals.pinned_count:
                raise EdgeError(f"close() refused: {totals.pinned_count} objects are still "
                                "pinned by callers using them; release them and close again")
            self._closed = True
            self._room.notify_all()
        if self._executor is not None:
            self._executor.shutdown(wait=wait)
        victims: list[_Leaving] = []
        with self._lock:
            while wait and self._flights:
                self._room.wait()
            for entry in list(self._entries.values()):
                self._policy.on_remove(entry.key, entry.slot)
                self._drop(entry)
                victims.append((entry.key, entry.value, 0))
        self._unload(victims)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> PagedCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise CacheClosedError("the cache is closed")


def _slots(entries: Sequence[_Entry]) -> np.ndarray:
    return np.fromiter((entry.slot for entry in entries), np.int32, len(entries))


def _repeats(keys: list[Hashable], by_key: dict[Hashable, _Entry]) -> list[_Entry]:
    """The entries of the second and later listings of each key."""
    seen: set = set()
    repeats = []
    for key in keys:
        if key in seen:
            repeats.append(by_key[key])
        seen.add(key)
    return repeats


class _Acquisition:
    """The context manager ``acquire`` returns; pins on enter, unpins on exit."""

    __slots__ = ("_cache", "_key", "_loader", "_nbytes", "_entry", "hit")

    def __init__(self, cache: PagedCache, key: Hashable, loader: Loader | None,
                 nbytes: int | None) -> None:
        self._cache = cache
        self._key = key
        self._loader = loader
        self._nbytes = nbytes
        self._entry: _Entry | None = None
        self.hit: bool | None = None  # after enter: whether the key was resident

    def __enter__(self) -> Any:
        if self._entry is not None:
            raise EdgeError(f"acquire({self._key!r}) is already entered; acquire again instead")
        cache = self._cache
        # The hit path, inlined: at about 2 us per acquire every Python call shows. A key whose
        # hash raises, a clock that raises or a failing policy hook must not leave the lock held.
        cache._lock.acquire()
        try:
            entry = cache._entries.get(self._key)
            if entry is not None and not cache._closed:
                if not cache._c_acquire_slot(cache._c_ptr, entry.slot, cache._clock()):
                    cache._hits += 1
                    if cache._policy_wants_hits:
                        cache._call_on_hit(entry)
                    self._entry = entry
                    self.hit = True
                    return entry.value
        finally:
            cache._lock.release()
        self._entry, self.hit = cache._pin(self._key, self._loader, self._nbytes)
        return self._entry.value

    def __exit__(self, *exc: object) -> None:
        entry, self._entry = self._entry, None
        cache = self._cache
        cache._lock.acquire()
        try:
            status = cache._c_unpin(cache._c_ptr, entry.slot)
            if cache._room_queue:
                cache._room.notify_all()
        finally:
            cache._lock.release()
        if status:
            cache._raw.raise_status(status, f"releasing {self._key!r}")


class _AcquisitionMany:
    __slots__ = ("_cache", "_keys", "_loader", "_nbytes", "_slots", "_entries")

    def __init__(self, cache: PagedCache, keys: Sequence[Hashable], loader: Loader | None,
                 nbytes: Sizes) -> None:
        self._cache = cache
        self._keys = list(keys)
        self._loader = loader
        self._nbytes = nbytes
        self._slots = None  # C array of the pinned slots (the batch hit path)
        self._entries: list[_Entry] | None = None  # or the pinned entries (the general path)

    def __enter__(self) -> list[Any]:
        if self._slots is not None or self._entries is not None:
            raise EdgeError("acquire_many(...) is already entered; acquire again instead")
        values = self._enter_resident_ints()
        if values is not None:
            return values
        self._entries = self._cache._pin_many(self._keys, self._loader, self._nbytes)
        return [entry.value for entry in self._entries]

    def _enter_resident_ints(self) -> list[Any] | None:
        """The batch hit path: integer keys that are all resident are touched and pinned in one
        C call, with no Python dict per key. None when it does not apply (nothing changed)."""
        keys, cache = self._keys, self._cache
        if not keys:
            return None
        try:
            if max(keys) >= _DIRECT_KEY_LIMIT:
                return None
            c_keys = cache._raw.new_keys(keys)  # refuses anything but non-negative ints
        except (TypeError, OverflowError, ValueError):
            return None
        raw = cache._raw
        n = len(keys)
        slots = raw.new_slots(n)
        cache._lock.acquire()
        try:
            if cache._closed:
                return None  # the general path raises the clear error
            status = raw.acquire_many(raw.ptr, c_keys, n, cache._clock(), slots, raw.n_found)
            if status:
                if raw.n_found[0] < n:
                    return None
                raw.raise_status(status, "acquire_many")
            cache._hits += n
            of_slot = cache._entry_of_slot
            entries = [of_slot[slot] for slot in slots]
            if cache._policy_wants_hits:
                try:
                    for entry in entries:
                        cache._policy.on_hit(entry.key, entry.slot)
                except BaseException:
                    raw.unpin_many(raw.ptr, slots, n)
                    cache._hits -= n
                    raise
        finally:
            cache._lock.release()
        self._slots = slots
        return [entry.value for entry in entries]

    def __exit__(self, *exc: object) -> None:
        cache = self._cache
        if self._slots is not None:
            slots, self._slots = self._slots, None
            raw = cache._raw
            cache._lock.acquire()
            try:
                status = raw.unpin_many(raw.ptr, slots, len(slots))
                if cache._room_queue:
                    cache._room.notify_all()
            finally:
                cache._lock.release()
            if status:
                raw.raise_status(status, "releasing acquire_many")
            return
        entries, self._entries = self._entries, None
        cache._release(entries)
