"""LRU and FIFO through PagedCache (the daemon's code path) hit exactly as often as
libCacheSim's own LRU and FIFO on the committed trace, at several byte budgets."""

from __future__ import annotations

from pathlib import Path

import libcachesim as lcs  # a declared dev dependency: missing means a broken install
import numpy as np
import pytest

from edge.cache import PagedCache
from edge.errors import ObjectTooLargeError

TRACE = Path(__file__).resolve().parent / "data" / "golden_trace.csv"


def load_trace():
    data = np.loadtxt(TRACE, delimiter=",", skiprows=1, dtype=np.int64, usecols=(1, 2))
    return data[:, 0].tolist(), data[:, 1].tolist()


def hits_pagedcache(policy, keys, sizes, budget):
    size_of = dict(zip(keys, sizes, strict=True))
    cache = PagedCache(budget, policy, loader=lambda k: (None, size_of[k]), load_workers=0)
    for key in keys:
        try:
            with cache.acquire(key):
                pass
        except ObjectTooLargeError:
            pass  # libCacheSim does not admit an object larger than the cache either
    return cache.stats().hits


def hits_libcachesim(policy, keys, sizes, budget):
    cache = {"lru": lcs.LRU, "fifo": lcs.FIFO}[policy](cache_size=budget, hashpower=12)
    req = lcs.Request()
    hits = 0
    for key, size in zip(keys, sizes, strict=True):
        req.obj_id = key
        req.obj_size = size
        hits += bool(cache.get(req))
    return hits


@pytest.mark.parametrize("policy", ["lru", "fifo"])
def test_hit_counts_equal_libcachesim(policy):
    keys, sizes = load_trace()
    total = sum(dict(zip(keys, sizes, strict=True)).values())  # bytes of the whole key set
    results = []
    for fraction in (0.02, 0.05, 0.1, 0.25, 0.5):
        budget = int(total * fraction)
        ours = hits_pagedcache(policy, keys, sizes, budget)
        theirs = hits_libcachesim(policy, keys, sizes, budget)
        results.append((budget, ours, theirs))
    assert all(ours == theirs for _, ours, theirs in results), results
    hit_counts = [ours for _, ours, _ in results]
    assert 0 < hit_counts[0] < hit_counts[-1]  # the budgets span a real range of hit ratios
