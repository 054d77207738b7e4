"""Eight threads hammer one PagedCache with mixed keys, random sizes and slow loads.

Checked throughout: resident plus reserved bytes never exceed the budget (a sampler reads both
under the cache lock, continuously); with declared sizes the memory the loader and unloader see
in use (bytes being loaded plus loaded and not yet unloaded) never exceeds it either; no key is
ever loaded twice at once (single flight); every value handed out is the right one; the index is
consistent and everything is unloaded exactly once at the end. Workers run under
``threads.run_threads``: any exception other than a legitimate ``BudgetError`` fails the test.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from threads import WorkerFailed, run_threads

from edge.cache import PagedCache, policy_names
from edge.errors import BudgetError

BUDGET = 64 * 1024
THREADS = 8
OPS_PER_THREAD = 1200
N_KEYS = 200
SIZES = {k: random.Random(k).randint(256, 12 * 1024) for k in range(N_KEYS)}


def stress(policy: str, *, declare_sizes: bool, ops: int = OPS_PER_THREAD,
           wait_timeout: float = 0.0) -> PagedCache:
    """Run the mix; return the closed cache for the caller's final checks."""
    state_lock = threading.Lock()
    in_flight: set[int] = set()
    live_bytes = [0]  # being loaded, or loaded and not yet unloaded
    problems: list[str] = []

    def loader(key):
        with state_lock:
            if key in in_flight:
                problems.append(f"{key} loaded twice at once")
            in_flight.add(key)
            live_bytes[0] += SIZES[key]
            if declare_sizes and live_bytes[0] > BUDGET:
                problems.append(f"{live_bytes[0]} bytes in use while loading {key}")
        time.sleep(random.random() * 0.0005)  # a slow load widens the window for races
        with state_lock:
            in_flight.discard(key)
        return ("value", key), SIZES[key]

    def unloader(key, value):
        if value != ("value", key):
            problems.append(f"unloader got {value!r} for {key}")
        with state_lock:
            live_bytes[0] -= SIZES[key]

    cache = PagedCache(BUDGET, policy, loader=loader, unloader=unloader, load_workers=2,
                       sizer=SIZES.get if declare_sizes else None, wait_timeout=wait_timeout)
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            s = cache.stats()  # one snapshot under the cache lock
            if s.resident_bytes + s.reserved_bytes > s.budget:
                problems.append(f"resident {s.resident_bytes} + reserved {s.reserved_bytes} "
                                f"> budget {s.budget}")
            time.sleep(0.0002)

    def worker(seed):
        rng = random.Random(seed)
        for _ in range(ops):
            key = int(rng.paretovariate(1.1)) % N_KEYS  # a shared hot set and a long tail
            op = rng.random()
            try:
                if op < 0.75:
                    with cache.acquire(key) as value:
                        if value != ("value", key):
                            problems.append(f"acquire({key}) returned {value!r}")
                elif op < 0.9:
                    keys = [int(rng.paretovariate(1.1)) % N_KEYS for _ in range(3)]
                    with cache.acquire_many(keys) as values:
                        if values != [("value", k) for k in keys]:
                            problems.append(f"acquire_many({keys}) returned {values!r}")
                else:
                    cache.prefetch([key, (key * 7) % N_KEYS])
            except BudgetError:
                pass  # legitimate while other threads pin most of the budget

    watch = threading.Thread(target=sampler)
    watch.start()
    try:
        run_threads([lambda i=i: worker(i) for i in range(THREADS)])
    finally:
        stop.set()
        watch.join(5)
    cache.close()  # waits for prefetches, then unloads everything
    assert not watch.is_alive()
    assert not problems, problems[:5]
    assert live_bytes[0] == 0  # every loaded object was unloaded exactly once
    return cache


@pytest.mark.parametrize("policy", policy_names())
def test_eight_threads_sized_loads_never_exceed_the_budget(policy):
    cache = stress(policy, declare_sizes=True, wait_timeout=0.02)
    s = cache.stats()
    assert s.hits + s.misses >= THREADS * OPS_PER_THREAD * 0.6
    assert s.hits > 0 and s.evictions > 0 and s.prefetches > 0
    assert s.pinned_bytes == s.resident_bytes == s.reserved_bytes == 0


@pytest.mark.parametrize("policy", ["lru", "arc"])
def test_eight_threads_undeclared_sizes_keep_resident_bytes_in_budget(policy):
    cache = stress(policy, declare_sizes=False, ops=600)
    s = cache.stats()
    assert s.hits > 0 and s.evictions > 0
    assert s.pinned_bytes == s.resident_bytes == s.reserved_bytes == 0


def test_the_stress_run_fails_when_a_worker_raises(monkeypatch):
    """The harness itself: one injected RuntimeError in prefetch must fail the run (it once
    gave "1 passed, 1 warning")."""
    real_prefetch = PagedCache.prefetch
    calls = [0]

    def flaky_prefetch(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("injected into prefetch")
        return real_prefetch(self, *args, **kwargs)

    monkeypatch.setattr(PagedCache, "prefetch", flaky_prefetch)
    with pytest.raises(WorkerFailed, match="injected into prefetch"):
        stress("lru", declare_sizes=True, ops=200)
