"""Hypothesis drives random acquire/release/prefetch/resize/discard sequences through a real
PagedCache (LRU, synchronous loads) and through a pure-Python model of the same semantics, and
compares them after every step, with the C index's verify() in between."""

from __future__ import annotations

from collections import OrderedDict

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edge.cache import PagedCache
from edge.errors import CacheFullError, EdgeError, ObjectTooLargeError

KEYS = st.integers(0, 15)


def size_of(key: int) -> int:
    return 10 + 37 * key % 90  # 10..99 bytes, fixed per key


class CacheModel:
    """LRU PagedCache semantics in plain Python."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.order: OrderedDict[int, int] = OrderedDict()  # key -> size, LRU first
        self.pins: dict[int, int] = {}
        self.hits = self.misses = self.evictions = 0

    def pinned_bytes(self) -> int:
        return sum(self.order[k] for k, n in self.pins.items() if n)

    def _admit(self, key: int, pins: int) -> None:
        size = size_of(key)
        if size > self.budget:
            raise ObjectTooLargeError(key)
        if size > self.budget - self.pinned_bytes():
            raise CacheFullError(key)
        self._evict_to(self.budget - size)
        self.order[key] = size
        self.pins[key] = pins

    def _evict_to(self, limit: int) -> None:
        used = sum(self.order.values())
        for key in list(self.order):
            if used <= limit:
                break
            if self.pins.get(key):
                continue
            used -= self.order.pop(key)
            self.pins.pop(key, None)
            self.evictions += 1

    def acquire(self, key: int) -> None:
        if key in self.order:
            self.hits += 1
            self.order.move_to_end(key)
            self.pins[key] = self.pins.get(key, 0) + 1
            return
        self.misses += 1
        self._admit(key, 1)

    def release(self, key: int) -> None:
        self.pins[key] -= 1

    def prefetch(self, key: int) -> None:
        if key not in self.order:
            try:
                self._admit(key, 0)
            except (ObjectTooLargeError, CacheFullError):
                pass

    def resize(self, budget: int) -> None:
        if self.pinned_bytes() > budget:
            raise CacheFullError(budget)
        self.budget = budget
        self._evict_to(budget)

    def discard(self, key: int) -> None:
        if key in self.order:
            if self.pins.get(key):
                raise EdgeError(key)
            del self.order[key]
            self.pins.pop(key, None)


class PagedCacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = CacheModel(300)
        self.cache = PagedCache(300, "lru", loader=lambda k: (k, size_of(k)), load_workers=0)
        self.held: list = []  # (key, context manager) of open acquires

    def _both(self, real, model):
        """Run the same step on both; they must succeed or fail alike."""
        try:
            model()
        except EdgeError as exc:
            expected = type(exc)
        else:
            expected = None
        try:
            result = real()
        except EdgeError as exc:
            assert expected is not None and isinstance(exc, expected), (exc, expected)
            return None
        assert expected is None, f"model raised {expected.__name__}, the cache did not"
        return result

    @rule(key=KEYS)
    def acquire(self, key):
        handle = self.cache.acquire(key)
        value = self._both(handle.__enter__, lambda: self.model.acquire(key))
        if value is not None:
            assert value == key
            self.held.append((key, handle))

    @precondition(lambda self: self.held)
    @rule(which=st.integers(0, 100))
    def release(self, which):
        key, handle = self.held.pop(which % len(self.held))
        handle.__exit__(None, None, None)
        self.model.release(key)

    @rule(key=KEYS)
    def prefetch(self, key):
        self.cache.prefetch([key])
        self.model.prefetch(key)

    @rule(budget=st.integers(50, 400))
    def resize(self, budget):
        self._both(lambda: self.cache.resize(budget), lambda: self.model.resize(budget))

    @rule(key=KEYS)
    def discard(self, key):
        self._both(lambda: self.cache.discard(key), lambda: self.model.discard(key))

    @invariant()
    def agrees_with_model(self):
        self.cache.verify()
        assert list(self.cache.resident()) == list(self.model.order)
        s = self.cache.stats()
        assert (s.hits, s.misses, s.evictions) == (self.model.hits, self.model.misses,
                                                     self.model.evictions)
        assert s.resident_bytes <= s.budget == self.model.budget
        assert s.pinned_bytes == self.model.pinned_bytes()

    def teardown(self):
        for _, handle in self.held:
            handle.__exit__(None, None, None)
        self.cache.close()


PagedCacheMachine.TestCase.settings = settings(max_examples=120, stateful_step_count=60,
                                               deadline=None)
TestPagedCacheAgainstModel = PagedCacheMachine.TestCase
