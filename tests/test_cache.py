"""PagedCache behaviour: hits and misses, pins, errors that leave the cache unchanged."""

from __future__ import annotations

import threading
import time

import pytest

from edge.cache import PagedCache
from edge.errors import (
    CacheFullError,
    ConfigError,
    EdgeError,
    LoadError,
    ObjectTooLargeError,
)


class Store:
    """A loader/unloader pair that records what happened (sizes from a dict)."""

    def __init__(self, sizes=None, default=100):
        self.sizes = sizes or {}
        self.default = default
        self.loads: list = []
        self.unloads: list = []
        self.lock = threading.Lock()

    def load(self, key):
        with self.lock:
            self.loads.append(key)
        return f"value-{key}", self.sizes.get(key, self.default)

    def unload(self, key, value):
        assert value == f"value-{key}"
        with self.lock:
            self.unloads.append(key)


def make(budget=1000, policy="lru", **kw):
    store = Store(kw.pop("sizes", None))
    cache = PagedCache(budget, policy, loader=store.load, unloader=store.unload,
                       load_workers=kw.pop("load_workers", 0), **kw)
    return cache, store


def test_hit_and_miss_accounting_and_lru_eviction():
    cache, store = make(budget=300)
    for key in ["a", "b", "a", "c", "d"]:  # d evicts b (a was used after b)
        with cache.acquire(key) as value:
            assert value == f"value-{key}"
    assert store.loads == ["a", "b", "c", "d"]
    assert store.unloads == ["b"]
    assert list(cache.resident()) == ["a", "c", "d"]
    s = cache.stats()
    assert (s.hits, s.misses, s.loads, s.evictions, s.bytes_evicted) == (1, 4, 4, 1, 100)
    assert (s.resident_bytes, s.bytes_loaded, s.budget) == (300, 400, 300)
    assert s.hit_ratio == pytest.approx(0.2)
    cache.verify()


def test_pinned_objects_are_never_evicted():
    cache, store = make(budget=300)
    with cache.acquire("pinned"):
        for i in range(20):
            with cache.acquire(i):
                pass
        assert "pinned" in cache
    assert "pinned" not in store.unloads
    cache.verify()


def test_budget_strings_and_bad_budgets():
    assert PagedCache("2KiB").budget == 2048
    assert PagedCache("1.5 kB").budget == 1500
    assert PagedCache(4096).budget == 4096
    for bad, message in [(0, "must be positive"), (-5, "must be positive"),
                         ("lots", "is not a size"), ("12 parsecs", "is not a size"),
                         (None, "byte count"), (True, "byte count")]:
        with pytest.raises(ConfigError, match=message):
            PagedCache(bad)


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"unknown eviction policy 'mru' \(known: .*lru"):
        PagedCache(100, "mru")


def test_object_larger_than_budget_leaves_cache_unchanged():
    cache, store = make(budget=250, sizes={"huge": 251})
    with cache.acquire("x"):
        pass
    with pytest.raises(ObjectTooLargeError, match=r"'huge' needs .*251 bytes.*budget of .*250"):
        with cache.acquire("huge"):
            pass
    assert list(cache.resident()) == ["x"]
    assert store.unloads == ["huge"]  # the loaded value was handed back, not leaked
    assert cache.stats().pinned_bytes == 0
    cache.verify()


def test_everything_pinned_raises_cache_full_and_evicts_nothing():
    cache, store = make(budget=200)
    with cache.acquire("a"), cache.acquire("b"):
        with pytest.raises(CacheFullError, match=r"no room for 'c' .*200 of the 200-byte budget "
                                                 r"is pinned by 2 objects"):
            with cache.acquire("c"):
                pass
        assert list(cache.resident()) == ["a", "b"]
    assert store.unloads == ["c"]
    cache.verify()


def test_loader_that_raises_propagates_and_leaves_nothing_pinned():
    def broken(key):
        raise OSError(f"disk on fire while reading {key}")

    cache, _ = make(budget=200)
    with pytest.raises(OSError, match="disk on fire while reading k"):
        with cache.acquire("k", broken):
            pass
    s = cache.stats()
    assert (s.resident_count, s.pinned_bytes, s.load_failures, s.misses) == (0, 0, 1, 1)
    with cache.acquire("k") as value:  # the default loader still works for the same key
        assert value == "value-k"
    cache.verify()


@pytest.mark.parametrize("bad", [("v",), ("v", 0), ("v", -3), ("v", "100"), "v", ("v", 1.5)])
def test_loader_returning_garbage_is_a_load_error(bad):
    cache, _ = make()
    with pytest.raises(LoadError, match="loader for 'k'"):
        with cache.acquire("k", lambda key: bad):
            pass
    assert len(cache) == 0 and cache.stats().pinned_bytes == 0


@pytest.mark.parametrize("cost", [-1.0, float("nan"), float("inf"), "slow"])
def test_loader_returning_a_bad_load_cost_is_a_load_error(cost):
    cache, _ = make()
    with pytest.raises(LoadError, match="load_cost="):
        with cache.acquire("k", lambda key: ("v", 10, cost)):
            pass
    assert len(cache) == 0


def test_loader_may_supply_its_load_cost():
    cache, _ = make()
    with cache.acquire("k", lambda key: ("v", 10, 2.5)):
        pass
    assert cache.view.load_cost(cache.view.slot_of("k")) == 2.5


def test_missing_loader_is_a_clear_error():
    cache = PagedCache(100)
    with pytest.raises(EdgeError, match="no loader for 'k'"):
        with cache.acquire("k"):
            pass


def test_single_flight_loads_once_for_concurrent_callers():
    release = threading.Event()
    calls = []

    def slow(key):
        calls.append(key)
        release.wait(5)
        return "v", 10

    cache = PagedCache(100, loader=slow, load_workers=0)
    seen = []

    def worker():
        with cache.acquire("k") as value:
            seen.append(value)
            time.sleep(0.01)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.1)  # let all of them find the flight
    release.set()
    for t in threads:
        t.join(5)
    assert calls == ["k"] and seen == ["v"] * 8
    s = cache.stats()
    assert (s.loads, s.misses, s.coalesced, s.pinned_bytes) == (1, 8, 7, 0)


def test_waiters_see_the_leaders_load_error():
    release = threading.Event()

    def failing(key):
        release.wait(5)
        raise RuntimeError("bad adapter file")

    cache = PagedCache(100, loader=failing, load_workers=0)
    errors = []

    def worker():
        try:
            with cache.acquire("k"):
                pass
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    release.set()
    for t in threads:
        t.join(5)
    assert errors == ["bad adapter file"] * 4
    assert len(cache) == 0


def test_acquire_many_pins_the_whole_set():
    cache, store = make(budget=500)
    with cache.acquire("old"):
        pass
    with cache.acquire_many(["e1", "e2", "old", "e2"]) as values:
        assert values == ["value-e1", "value-e2", "value-old", "value-e2"]
        assert cache.stats().pinned_bytes == 300
    assert cache.stats().pinned_bytes == 0
    assert sorted(store.loads) == ["e1", "e2", "old"]


def test_acquire_many_all_or_nothing():
    cache, store = make(budget=300)
    with cache.acquire("held"):
        with pytest.raises(CacheFullError, match="the set of 3 objects"):
            with cache.acquire_many(["x", "y", "z"]):
                pass
        assert cache.stats().pinned_bytes == 100  # only the outer pin
    with pytest.raises(ObjectTooLargeError, match="more than the whole budget"):
        with cache.acquire_many(["p", "q", "r", "s"]):
            pass
    assert cache.stats().pinned_bytes == 0
    assert set(store.unloads) >= {"x", "y", "z", "p", "q", "r", "s"}
    cache.verify()


def test_acquire_many_loads_misses_in_parallel():
    barrier = threading.Barrier(3, timeout=5)

    def loader(key):
        barrier.wait()  # deadlocks (BrokenBarrierError) unless three loads run at once
        return key, 10

    cache = PagedCache(1000, loader=loader, load_workers=3)
    with cache.acquire_many(["a", "b", "c"]) as values:
        assert values == ["a", "b", "c"]
    cache.close()


def test_acquire_many_failure_releases_hits_too():
    def loader(key):
        if key == "bad":
            raise ValueError("corrupt")
        return key, 10

    cache = PagedCache(1000, loader=loader, load_workers=2)
    with cache.acquire("hit"):
        pass
    with pytest.raises(ValueError, match="corrupt"):
        with cache.acquire_many(["hit", "ok", "bad"]):
            pass
    assert cache.stats().pinned_bytes == 0
    assert "bad" not in cache
    cache.close()


def test_prefetch_background_and_inline():
    cache, store = make(budget=300, load_workers=2)
    assert cache.prefetch(["a", "b"]) == 2
    deadline = time.time() + 5
    while len(cache) < 2 and time.time() < deadline:
        time.sleep(0.005)
    assert set(cache.resident()) == {"a", "b"}
    assert cache.prefetch(["a", "c"]) == 1  # a is resident already
    cache.close()

    inline, _ = make(budget=300)
    inline.prefetch(["a", "b"])
    assert list(inline.resident()) == ["a", "b"] and inline.stats().pinned_bytes == 0


def test_prefetch_never_evicts_pinned_and_drops_what_does_not_fit():
    cache, store = make(budget=200)
    with cache.acquire("a"), cache.acquire("b"):
        cache.prefetch(["c"])
        assert set(cache.resident()) == {"a", "b"}
        assert cache.stats().prefetch_failures == 1
    assert store.unloads == ["c"]


def test_resize_evicts_down_and_refuses_below_pinned():
    cache, store = make(budget=500)
    for key in "abcde":
        with cache.acquire(key):
            pass
    cache.resize("300")
    assert list(cache.resident()) == ["c", "d", "e"] and cache.budget == 300
    with cache.acquire("e"):
        with pytest.raises(CacheFullError, match="pinned"):
            cache.resize(50)
        assert cache.budget == 300
        cache.resize(100)
        assert list(cache.resident()) == ["e"]
    with pytest.raises(ConfigError, match="must be positive"):
        cache.resize(0)
    cache.verify()


def test_discard_and_close():
    cache, store = make()
    with cache.acquire("a"):
        with pytest.raises(EdgeError, match="pinned"):
            cache.discard("a")
    assert cache.discard("a") is True and cache.discard("a") is False
    with cache.acquire("b"):
        pass
    cache.close()
    assert store.unloads == ["a", "b"]
    with pytest.raises(EdgeError, match="closed"):
        with cache.acquire("c"):
            pass


def test_acquisition_cannot_be_entered_twice():
    cache, _ = make()
    handle = cache.acquire("a")
    with handle:
        with pytest.raises(EdgeError, match="already entered"):
            handle.__enter__()
    assert cache.stats().pinned_bytes == 0


def test_missing_loader_in_acquire_many_and_prefetch_leaves_nothing_behind():
    cache = PagedCache(1000)
    with cache.acquire("hit", lambda key: ("v", 10)):
        pass
    with pytest.raises(EdgeError, match="no loader for 'miss'"):
        with cache.acquire_many(["hit", "miss"]):
            pass
    with pytest.raises(EdgeError, match="no loader"):
        cache.prefetch(["other"])
    assert cache.stats().pinned_bytes == 0
    # No half-open load is left behind: a later acquire with a loader proceeds normally.
    with cache.acquire("miss", lambda key: ("w", 10)) as value:
        assert value == "w"
    cache.close()


@pytest.mark.parametrize("key", ["adapter-a", ("layer", 3), 2**63 + 5, -4, 7],
                         ids=["name", "tuple", "int-past-2**63", "negative-int", "int"])
def test_an_evicted_key_of_any_kind_comes_back_with_its_history(key):
    """The C core's ghost list (past accesses, past residencies: inputs of the learned policy)
    knows a returning object by its C id. An adapter's name, like any key the C table cannot
    take as itself, must get the same id at every load, not a new one (until 2026-12-06 it got
    a new one, and the daemon's adapters always looked new)."""
    now = 0.0
    cache, _ = make(budget=100, clock=lambda: now)
    for other, t in ((key, 0.0), (key, 1.0), (key, 2.0), ("other", 3.0), (key, 4.0)):
        now = t  # three accesses in a first residency, evicted by "other", loaded again
        with cache.acquire(other):
            pass
    view = cache.view
    row = dict(zip(view.feature_names, view.features([view.slot_of(key)])[0].tolist(),
                   strict=True))
    assert (row["past_accesses"], row["past_residencies"]) == (3.0, 1.0)
    assert (row["accesses"], row["residency"]) == (1.0, 0.0)
