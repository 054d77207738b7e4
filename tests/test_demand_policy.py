"""The ``demand`` eviction policy (lowest router demand first, least recently used among equal
shares) and the epoch plan that only hands its demand to the cache (``prefetch_plan: false``).
With POLAR+'s paging charge at 0 the router routes exactly as the cache-unaware learner does,
so only the paging differs (docs/router.md)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.cache import PagedCache
from edge.catalogue import Catalogue
from edge.config import CacheConfig, EdgeConfig
from edge.paging_cost import PagingCostModel
from edge.router.config import FeatureConfig, LinUCBConfig, PolarConfig, RouterConfig
from edge.runtime import InferenceRequest, Runtime
from edge.sim.backend import SimulatedBackend
from edge.sim.routing import replay_routing
from edge.sim.synthetic import make_problem

MiB = 2**20


def cache_of(policy: str, budget: int, sizes: dict[str, int]) -> PagedCache:
    return PagedCache(budget, policy, load_workers=0,
                      loader=lambda key: (f"v{key}", sizes[key], 0.01))


def touch(cache: PagedCache, key: str) -> bool:
    """Request ``key``; True on a hit."""
    acquisition = cache.acquire(key)
    with acquisition:
        return acquisition.hit


def test_lowest_demand_goes_first_and_lru_order_breaks_ties():
    # Hand derivation. Five 100-byte keys requested a, b, c, d, e, then a again: the LRU order
    # is b, c, d, e, a. Shares b 0.5 and d 0.2, the rest 0: the keys nobody is expected to ask
    # for go first in LRU order (c, e, a), then d (0.2), then b (0.5).
    sizes = {k: 100 for k in "abcdef"}
    cache = cache_of("demand", 500, sizes)
    for key in "abcdea":
        touch(cache, key)
    cache.set_demand({"b": 0.5, "d": 0.2})
    assert list(cache.policy.victims(400)) == ["c", "e", "a", "d", "b"]
    # Enough bytes among the unwanted keys: only those are offered.
    assert list(cache.policy.victims(200)) == ["c", "e"]
    assert cache.policy.victim() == "c"
    touch(cache, "f")  # a miss: evicts c
    assert set(cache.resident()) == {"a", "b", "d", "e", "f"}
    # A pinned key is never offered; a new estimate replaces the old one.
    cache.set_demand({"e": 0.1})
    with cache.acquire("a"):
        assert list(cache.policy.victims(500)) == ["b", "d", "f", "e"]


def test_one_hit_first_evicts_the_keys_not_requested_since_loading_before_the_others():
    # Hand derivation. a loaded and hit again, then b and c loaded: the LRU order is a, b, c.
    # All shares 0. With one_hit_first, b and c (never requested again) go before a; by default
    # the LRU order stands. Shares still come first: with a share for b, b goes last.
    sizes = {k: 100 for k in "abcd"}
    plain = cache_of("demand", 300, sizes)
    one_hit = PagedCache(300, "demand", policy_params={"one_hit_first": True}, load_workers=0,
                         loader=lambda key: (f"v{key}", sizes[key], 0.01))
    for cache in (plain, one_hit):
        for key in "aabc":
            touch(cache, key)
    assert list(plain.policy.victims(300)) == ["a", "b", "c"]
    assert list(one_hit.policy.victims(300)) == ["b", "c", "a"]
    assert list(one_hit.policy.victims(100)) == ["b"]
    one_hit.set_demand({"b": 0.5})
    assert list(one_hit.policy.victims(300)) == ["c", "a", "b"]
    touch(one_hit, "d")  # evicts c; d is new, so it is one-hit until requested again
    assert list(one_hit.policy.victims(300)) == ["d", "a", "b"]
    with pytest.raises(ValueError, match="one_hit_first"):
        PagedCache(300, "demand", policy_params={"one_hit_first": "yes"})


def test_without_a_router_it_is_lru_hit_for_hit():
    # Every share 0: the order is the LRU list's. The reference is the `lru` policy (pinned to
    # libCacheSim's LRU in test_policies_golden.py) on the same mixed-size requests.
    rng = np.random.default_rng(7)
    sizes = {f"k{i}": int(s) for i, s in enumerate(rng.integers(50, 400, size=60))}
    keys = [f"k{i}" for i in np.minimum(rng.zipf(1.3, size=3000) - 1, 59)]
    hits = {}
    for policy in ("lru", "demand"):
        cache = cache_of(policy, 3000, sizes)
        hits[policy] = [touch(cache, key) for key in keys]
    assert hits["demand"] == hits["lru"]
    assert 0 < sum(hits["lru"]) < len(keys)


def runtime(prefetch_plan: bool) -> Runtime:
    sizes = {"sql": 40 * MiB, "poetry": 30 * MiB, "legal": 50 * MiB}
    config = EdgeConfig(
        cache=CacheConfig(budget=80 * MiB, policy="demand", load_workers=0),
        router=RouterConfig(features=FeatureConfig(dim=32),
                            polar=PolarConfig(mode="polar", epoch_length=4,
                                              prefetch_plan=prefetch_plan)))
    return Runtime.from_config(config, backend=SimulatedBackend(),
                               catalogue=Catalogue.from_sizes(sizes))


@pytest.mark.parametrize("prefetch_plan", [True, False])
def test_a_plan_prefetches_or_only_hands_its_demand_to_the_cache(prefetch_plan):
    with runtime(prefetch_plan) as rt:
        for i in range(4):  # the 4th routing decision closes the epoch
            out = rt.handle(InferenceRequest(prompt=f"request {i}", request_id=i))
            rt.feedback(i, 1.0 if out.adapter == "sql" else 0.0)
        stats = rt.stats()
        assert stats["requests"]["plans_applied"] == 1
        assert rt.cache.demand() == pytest.approx(rt.router.demand())
        assert sum(rt.cache.demand().values()) == pytest.approx(1.0)
        prefetched = rt.cache.stats().prefetches
        assert (prefetched > 0) if prefetch_plan else (prefetched == 0)
        # Without prefetching the controller measures the shares and plans no set.
        assert (rt.router.polar.plan() != []) if prefetch_plan else (rt.router.polar.plan() == [])


def test_polar_plus_at_paging_weight_0_routes_as_the_cache_unaware_learner():
    # Same contexts, rewards, router seed and learner settings: with no charge, no forced
    # rounds and plans that prefetch nothing, residency cannot change a route, so reward and
    # regret are equal to the last digit whatever the cache evicts; only the paging differs.
    problem = make_problem(16, 8, 1500, np.random.default_rng(3))
    budget = int(problem.sizes.sum() * 0.25)
    router = RouterConfig(linucb=LinUCBConfig(alpha=0.2), seed=4,
                          polar=PolarConfig(paging_weight=0.0, forced_exploration_scale=0.0,
                                            epoch_length=64, max_epoch_length=64,
                                            charge_eviction=False, prefetch_plan=False))
    runs = {}
    for strategy, policy in (("linucb", "lru"), ("polar+", "lru"), ("polar+", "demand")):
        config = EdgeConfig(cache=CacheConfig(policy=policy), router=router)
        runs[strategy, policy] = replay_routing(
            strategy, problem.contexts, problem.utilities, problem.sizes, config=config,
            budget_bytes=budget, paging_cost=PagingCostModel(), rng=np.random.default_rng(5),
            arm_ids=problem.arm_ids)
    reference = runs["linucb", "lru"]
    for run in runs.values():
        assert run["reward"] == reference["reward"] and run["regret"] == reference["regret"]
        assert run["prefetch_paging_s"] == 0.0
    # Same routes and the same eviction policy: the same paging too.
    assert runs["polar+", "lru"]["total_paging_s"] == reference["total_paging_s"]
    # The demand policy evicts differently (whether it pages less is the benchmark's question).
    assert runs["polar+", "demand"]["hit_ratio"] != reference["hit_ratio"]
