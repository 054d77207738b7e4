"""Hypothesis drives random acquire/acquire_many/release/prefetch/resize/discard sequences, with
and without declared sizes, through a real PagedCache (LRU, synchronous loads) and through a
pure-Python model of the same semantics, and compares them after every step, with the C index's
verify() in between."""

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

    def acquire_many(self, keys: list[int]) -> None:
        """All or nothing. Resident members are pinned once per listing and touched in the order
        listed; victims are chosen (with the members pinned) before those touches; the missing
        keys are inserted after them; later listings of a missing key add a pin and a hit."""
        unique = list(dict.fromkeys(keys))
        resident = [k for k in unique if k in self.order]
        missing = [k for k in unique if k not in self.order]
        need = sum(size_of(k) for k in missing)
        if need + sum(self.order[k] for k in resident) > self.budget:
            raise ObjectTooLargeError(keys)
        held = sum(self.order[k] for k in resident if not self.pins.get(k))
        if need > self.budget - self.pinned_bytes() - held:
            raise CacheFullError(keys)
        listed = [k for k in keys if k in self.order]
        for k in listed:
            self.pins[k] = self.pins.get(k, 0) + 1
        self._evict_to(self.budget - need)
        for k in listed:
            self.hits += 1
            self.order.move_to_end(k)
        for k in missing:
            self.misses += 1
            self.order[k] = size_of(k)
            self.pins[k] = 1
        for k in [k for i, k in enumerate(keys) if k in missing and k in keys[:i]]:
            self.pins[k] += 1
            self.hits += 1

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

    @rule(key=KEYS, declare=st.booleans())
    def acquire(self, key, declare):
        handle = self.cache.acquire(key, nbytes=size_of(key) if declare else None)
        value = self._both(handle.__enter__, lambda: self.model.acquire(key))
        if value is not None:
            assert value == key
            self.held.append(([key], handle))

    @rule(keys=st.lists(KEYS, min_size=1, max_size=5), declare=st.booleans())
    def acquire_many(self, keys, declare):
        handle = self.cache.acquire_many(keys, nbytes=[size_of(k) for k in keys] if declare
                                         else None)
        values = self._both(handle.__enter__, lambda: self.model.acquire_many(keys))
        if values is not None:
            assert values == keys
            self.held.append((keys, handle))

    @precondition(lambda self: self.held)
    @rule(which=st.integers(0, 100))
    def release(self, which):
        keys, handle = self.held.pop(which % len(self.held))
        handle.__exit__(None, None, None)
        for key in keys:
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
