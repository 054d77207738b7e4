"""The replay engine: the C loop and the PagedCache path agree exactly; metrics add up."""

from __future__ import annotations

import numpy as np
import pytest

from edge.cache import policy_names
from edge.config import CacheConfig
from edge.paging_cost import PagingCostModel
from edge.sim.replay import replay_arrays, replay_grid


def zipf_trace(n=20000, n_keys=800, seed=3):
    rng = np.random.default_rng(seed)
    keys = (rng.zipf(1.1, n) % n_keys).astype(np.uint64)
    size_of = rng.lognormal(8, 1.2, n_keys).astype(np.uint64) + 1
    return keys, size_of[keys], np.cumsum(rng.exponential(0.01, n))


@pytest.mark.parametrize("policy", ["lru", "fifo"])
def test_native_engine_equals_pagedcache_engine(policy):
    keys, sizes, times = zipf_trace()
    total = int(np.unique(keys).size * sizes.mean())
    for budget in (total // 50, total // 10, total // 3):
        fast = replay_arrays(keys, sizes, policy, budget, times=times)
        slow = replay_arrays(keys, sizes, policy, budget, times=times, engine="pagedcache")
        assert fast.engine == "native" and slow.engine == "pagedcache"
        same = ("hits", "bytes_hit", "bytes_loaded", "evictions", "bytes_requested")
        assert [getattr(fast, f) for f in same] == [getattr(slow, f) for f in same]
        assert fast.paging_seconds == pytest.approx(slow.paging_seconds)


def test_metrics_are_consistent():
    keys, sizes, times = zipf_trace(5000)
    profile = PagingCostModel(cold_latency_s=0.001, cold_bandwidth_bytes_per_s=1e6)
    result = replay_arrays(keys, sizes, "lru", int(sizes.sum() // 20), profile=profile)
    misses = result.requests - result.hits
    assert 0 < result.hits < result.requests
    assert result.bytes_hit + result.bytes_loaded <= result.bytes_requested
    # Every load costs latency + size / bandwidth under this profile.
    n_loads = misses  # no object in this trace exceeds the budget
    assert result.paging_seconds == pytest.approx(0.001 * n_loads + result.bytes_loaded / 1e6)
    assert 0 < result.byte_hit_ratio < 1 and result.hit_ratio == result.hits / result.requests


def test_every_registered_policy_replays_and_is_deterministic():
    keys, sizes, times = zipf_trace(4000)
    budget = int(sizes.sum() // 30)
    # The learned policy's decisions depend on wall time only through its time budget.
    policies = [CacheConfig(policy=name, policy_params={"budget_us": 1e9})
                if name == "learned" else name for name in policy_names()]
    first = replay_grid(keys, sizes, policies, [budget], times=times)
    second = replay_grid(keys, sizes, policies, [budget], times=times)
    assert [r.hits for r in first] == [r.hits for r in second]
    assert {r.policy.split("(")[0] for r in first} == set(policy_names())
    assert all(0 < r.hits < r.requests for r in first)


def test_oversized_objects_are_misses_never_admitted():
    keys = np.array([1, 2, 1, 2, 1], dtype=np.uint64)
    sizes = np.array([10, 500, 10, 500, 10], dtype=np.uint64)
    for engine in ("native", "pagedcache"):
        r = replay_arrays(keys, sizes, "lru", 100, engine=engine)
        assert (r.hits, r.bytes_loaded) == (2, 10), engine


def test_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        replay_arrays(np.arange(3), np.ones(2), "lru", 10)
    with pytest.raises(ValueError, match="size 0"):
        replay_arrays(np.arange(3), np.array([1, 0, 1]), "lru", 10)
    with pytest.raises(ValueError, match="no native replay engine"):
        replay_arrays(np.arange(3), np.ones(3), CacheConfig(policy="arc"), 10, engine="native")
