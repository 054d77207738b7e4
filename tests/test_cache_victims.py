"""How ``PagedCache`` takes victims from ``policy.victims(need)``: in order, with ``on_evict``
between them, only as many as the need takes, asking again when an answer runs out, and a clear
``EdgeError`` (never a loop, never a corrupt cache) for a policy that names an illegal key."""

from __future__ import annotations

import pytest

from edge.cache import PagedCache
from edge.cache.policies import EvictionPolicy
from edge.errors import CacheFullError, EdgeError


class Queue(EvictionPolicy):
    """FIFO that logs its decisions and evictions."""

    name = "test-queue"

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.queue: dict = {}
        self.log: list = []

    def on_insert(self, key, slot, size):
        self.queue[key] = None

    def on_evict(self, key, slot):
        self.log.append(("evict", key))
        del self.queue[key]

    def unpinned(self) -> list:
        return [k for k in self.queue if not self.view.is_pinned(k)]

    def victim(self):
        key = next(iter(self.unpinned()), None)
        self.log.append(("victim", key))
        return key


def make(policy, sizes, budget=100):
    unloaded: list = []
    cache = PagedCache(budget, policy, load_workers=0, loader=lambda k: (k, sizes[k]),
                       unloader=lambda k, v: unloaded.append(k))
    for key in sizes:
        if key != "new":
            with cache.acquire(key):
                pass
    return cache, unloaded


def test_the_default_asks_victim_again_after_each_eviction():
    policy = Queue()
    cache, unloaded = make(policy, {"a": 40, "b": 30, "c": 30, "new": 90})
    with cache.acquire("new"):
        pass
    # One question per eviction, each after the previous on_evict, none once 90 bytes are free.
    assert policy.log == [("victim", "a"), ("evict", "a"), ("victim", "b"), ("evict", "b"),
                          ("victim", "c"), ("evict", "c")]
    assert unloaded == ["a", "b", "c"]


class OneAtATime(Queue):
    """Answers every need with a one-key list: the cache must ask again for the rest."""

    name = "test-one-at-a-time"

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.needs: list = []

    def victims(self, need_bytes):
        self.needs.append(need_bytes)
        return self.unpinned()[:1]


def test_a_short_answer_is_asked_again_with_what_is_still_needed():
    policy = OneAtATime()
    cache, unloaded = make(policy, {"a": 40, "b": 30, "c": 20, "new": 90})  # 10 bytes free
    with cache.acquire("new"):
        pass
    assert policy.needs == [80, 40, 10]
    assert unloaded == ["a", "b", "c"]
    cache.verify()


class Everything(Queue):
    """Offers every unpinned key, lazily and without end of its own: only the need stops it."""

    name = "test-everything"

    def victims(self, need_bytes):
        yield from self.unpinned()
        raise AssertionError("the cache read past the keys it needed")  # pragma: no cover


def test_the_cache_takes_only_the_keys_the_need_requires():
    sizes = {k: 10 for k in "abcdefghij"} | {"new": 25}
    cache, unloaded = make(Everything(), sizes)
    with cache.acquire("new"):
        pass
    assert unloaded == ["a", "b", "c"]  # 30 bytes for 25: the fourth key stays
    assert list(cache.resident()) == list("defghij") + ["new"]


class Scripted(Queue):
    """Answers the cache's questions from a script: one list per call."""

    name = "test-scripted"

    def __init__(self, answers) -> None:
        super().__init__()
        self.answers = list(answers)

    def victims(self, need_bytes):
        return self.answers.pop(0)


# a40 b30 c20 resident, b pinned, 10 bytes free; "new" (70) needs 60 of the 60 unpinned bytes.
@pytest.mark.parametrize(("answers", "message", "evicted"), [
    ([["b", "a"]], "chose 'b', which is pinned", []),
    ([["a", "zz"]], "chose 'zz', which is not resident", ["a"]),
    ([["a", "a"]], "chose 'a', which it had already named in this eviction", ["a"]),
    ([["a"], ["a"]], "chose 'a', which it had already named in this eviction", ["a"]),
    ([[]], "named no victim while 60 more bytes are needed and 60 bytes of unpinned objects", []),
    ([["a"], []], "named no victim while 20 more bytes are needed and 20 bytes of unpinned", ["a"]),
])
def test_an_illegal_answer_is_a_clear_error_and_leaves_the_cache_consistent(answers, message,
                                                                             evicted):
    cache, unloaded = make(Scripted(answers), {"a": 40, "b": 30, "c": 20})
    with cache.acquire("b"):
        with pytest.raises(EdgeError, match=message):
            with cache.acquire("new", lambda k: (k, 70), nbytes=70):
                pass  # pragma: no cover - the room cannot be made
        cache.verify()
        stats = cache.stats()
        assert "new" not in cache and stats.reserved_bytes == 0 and stats.pinned_bytes == 30
        # What went before the bad key stays evicted, and was unloaded exactly once.
        assert unloaded == evicted
        assert sorted(cache.resident()) == sorted({"a", "b", "c"} - set(evicted))
    assert cache.stats().pinned_bytes == 0


def test_infeasible_room_is_cache_full_before_the_policy_is_asked():
    policy = Scripted([])  # any question would fail with IndexError
    cache, unloaded = make(policy, {"a": 40, "b": 30, "c": 20})
    with cache.acquire("b"):
        with pytest.raises(CacheFullError):
            with cache.acquire("new", lambda k: (k, 71), nbytes=71):
                pass  # pragma: no cover
    assert unloaded == [] and len(cache) == 3


def test_victims_is_told_the_bytes_still_missing_when_sizes_are_declared():
    policy = OneAtATime()
    cache, _ = make(policy, {"a": 40, "b": 30, "c": 20})
    with cache.acquire("x", lambda k: (k, 35), nbytes=35):
        pass
    assert policy.needs == [25]  # 10 bytes were free
