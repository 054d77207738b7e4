"""Eight threads hammer one PagedCache with mixed keys and random sizes.

Checked throughout: resident bytes never exceed the budget (by a sampler thread and by the
loader/unloader's own count of live objects), no key is ever loaded twice at once (single
flight), every value handed out is the right one, and the index is consistent at the end.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from edge.cache import PagedCache, policy_names
from edge.errors import BudgetError

BUDGET = 64 * 1024
THREADS = 8
OPS_PER_THREAD = 1500


@pytest.mark.parametrize("policy", policy_names())
def test_eight_threads_budget_and_single_flight(policy):
    sizes = {k: random.Random(k).randint(256, 12 * 1024) for k in range(200)}
    state_lock = threading.Lock()
    in_flight: set[int] = set()
    live_bytes = [0]  # bytes loaded and not yet unloaded: resident plus rejected-in-transit
    problems: list[str] = []

    def loader(key):
        with state_lock:
            if key in in_flight:
                problems.append(f"{key} loaded twice at once")
            in_flight.add(key)
        time.sleep(random.random() * 0.0005)  # widen the window for races
        with state_lock:
            in_flight.discard(key)
            live_bytes[0] += sizes[key]
        return ("value", key), sizes[key]

    def unloader(key, value):
        if value != ("value", key):
            problems.append(f"unloader got {value!r} for {key}")
        with state_lock:
            live_bytes[0] -= sizes[key]

    cache = PagedCache(BUDGET, policy, loader=loader, unloader=unloader, load_workers=2)
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            s = cache.stats()
            if s.resident_bytes > s.budget:
                problems.append(f"resident {s.resident_bytes} > budget {s.budget}")
            time.sleep(0.0002)

    def worker(seed):
        rng = random.Random(seed)
        for _ in range(OPS_PER_THREAD):
            # Zipf-ish: a hot set everyone shares plus a long tail.
            key = int(rng.paretovariate(1.1)) % 200
            op = rng.random()
            try:
                if op < 0.8:
                    with cache.acquire(key) as value:
                        if value != ("value", key):
                            problems.append(f"acquire({key}) returned {value!r}")
                elif op < 0.9:
                    keys = [int(rng.paretovariate(1.1)) % 200 for _ in range(3)]
                    with cache.acquire_many(keys) as values:
                        if values != [("value", k) for k in keys]:
                            problems.append(f"acquire_many({keys}) returned {values!r}")
                else:
                    cache.prefetch([key])
            except BudgetError:
                pass  # legitimately possible when other threads pin most of the budget

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    watch = threading.Thread(target=sampler)
    watch.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    watch.join(5)
    cache.close()  # waits for prefetches, then unloads everything

    assert not problems, problems[:5]
    s = cache.stats()
    assert s.hits + s.misses >= THREADS * OPS_PER_THREAD * 0.8
    assert s.hits > 0 and s.evictions > 0
    assert s.pinned_bytes == 0 and s.resident_bytes == 0
    assert live_bytes[0] == 0  # every loaded object was unloaded exactly once
