"""Replay a trace through the pager: policies x budgets, with the daemon's own code.

Every policy runs through ``PagedCache`` exactly as the daemon runs it; only the clock (the
trace's timestamps) and the loader (returns the trace's size and load cost, touches no disk)
are simulated. LRU and FIFO have a second, equivalent engine: the whole loop runs in the C core
(``edge_index_replay``) over the same index and the same LRU list, which is what makes replaying
millions of requests per second possible; a test holds the two engines to identical results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from edge._native import NativeIndex
from edge._native.index import REPLAY_POLICIES
from edge.cache.paged import PagedCache
from edge.config import CacheConfig
from edge.errors import ObjectTooLargeError
from edge.paging_cost import PagingCostModel
from edge.sim.trace import Trace, check_byte_total

# Progress callback: (requests done, requests total) -> None.
Progress = Callable[[int, int], None]
_PROGRESS_EVERY = 65536


@dataclass(frozen=True)
class ReplayResult:
    policy: str
    budget: int
    requests: int
    hits: int
    bytes_requested: int
    bytes_hit: int
    bytes_loaded: int
    evictions: int
    paging_seconds: float  # modelled: the device profile's cost of every load
    wall_seconds: float
    engine: str  # "native" (C loop) or "pagedcache"

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def byte_hit_ratio(self) -> float:
        return self.bytes_hit / self.bytes_requested if self.bytes_requested else 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "budget": self.budget, "requests": self.requests,
                "hits": self.hits, "hit_ratio": self.hit_ratio,
                "byte_hit_ratio": self.byte_hit_ratio, "bytes_loaded": self.bytes_loaded,
                "evictions": self.evictions, "paging_seconds": self.paging_seconds,
                "wall_seconds": self.wall_seconds,
                "requests_per_second": self.requests_per_second, "engine": self.engine}


def as_cache_config(policy: str | CacheConfig) -> CacheConfig:
    """A policy name stands for a cache section with that policy and no settings."""
    return policy if isinstance(policy, CacheConfig) else CacheConfig(policy=policy)


def replay_arrays(
    keys: np.ndarray,
    sizes: np.ndarray,
    policy: str | CacheConfig,
    budget: int,
    *,
    times: np.ndarray | None = None,
    load_costs: np.ndarray | None = None,
    profile: PagingCostModel | None = None,
    engine: str = "auto",
    progress: Progress | None = None,
) -> ReplayResult:
    """Replay one (policy, budget) over a trace given as arrays.

    ``policy`` is a policy file's cache section (or just a policy name); the cache is built
    from it as the runtime builds it, at ``budget`` bytes instead of the section's own budget.
    ``engine``: "auto" uses the C loop where it exists (LRU, FIFO without params), "native"
    insists on it, "pagedcache" forces the daemon's Python path (for cross-checks).
    """
    spec = as_cache_config(policy)
    keys = np.ascontiguousarray(keys, dtype=np.uint64)
    sizes = np.ascontiguousarray(sizes, dtype=np.uint64)
    if len(keys) != len(sizes):
        raise ValueError(f"keys and sizes differ in length ({len(keys)} != {len(sizes)})")
    bytes_requested = check_byte_total(sizes)  # the uint64 counters below cannot wrap
    if len(sizes) and int(sizes.min()) == 0:
        raise ValueError(f"request {int(np.argmin(sizes))} has size 0; sizes must be positive")
    profile = profile or PagingCostModel()
    native_ok = spec.policy in REPLAY_POLICIES and not spec.policy_params
    if engine == "native" and not native_ok:
        raise ValueError(f"policy {spec.policy_label!r} has no native replay engine (only "
                         f"{sorted(REPLAY_POLICIES)} without params)")
    if engine not in ("auto", "native", "pagedcache"):
        raise ValueError(f"engine must be auto, native or pagedcache, not {engine!r}")
    use_native = native_ok and engine != "pagedcache"
    run = _replay_native if use_native else _replay_pagedcache
    start = time.perf_counter()
    loaded_mask, hits, bytes_hit, evictions = run(keys, sizes, spec, budget, times, load_costs,
                                                  profile, progress)
    wall = time.perf_counter() - start
    loaded_sizes = sizes[loaded_mask].astype(np.float64)
    paging = float(np.sum(profile.paging_seconds(loaded_sizes))) if len(loaded_sizes) else 0.0
    return ReplayResult(
        policy=spec.policy_label, budget=int(budget), requests=len(keys), hits=hits,
        bytes_requested=bytes_requested, bytes_hit=bytes_hit,
        bytes_loaded=int(sizes[loaded_mask].sum(dtype=np.uint64)), evictions=evictions,
        paging_seconds=paging,
        wall_seconds=wall, engine="native" if use_native else "pagedcache")


def _replay_native(keys, sizes, spec, budget, times, load_costs, profile, progress):
    # No ghost list: this replay never reads features, and its table probes cost it half to two
    # thirds of its speed (scripts/bench_sim.py: 21 M requests/s without, 7-11 M with).
    index = NativeIndex(initial_capacity=min(len(keys), 1 << 20), remember_removed=False)
    hit_flags = np.zeros(len(keys), dtype=np.uint8)
    result = index.replay(spec.policy, keys, sizes, budget, times=times, hits_out=hit_flags)
    if progress:
        progress(len(keys), len(keys))
    loaded = (hit_flags == 0) & (sizes <= budget)
    return loaded, result.hits, result.bytes_hit, result.evictions


def _replay_pagedcache(keys, sizes, spec, budget, times, load_costs, profile, progress):
    clock_now = 0.0

    def loader(key):  # never called: every acquire below passes its own sized loader
        raise AssertionError(f"unsized load of {key!r} in the replay")

    cache = PagedCache.from_config(replace(spec, budget=int(budget), load_workers=0),
                                   loader=loader, clock=lambda: clock_now)
    acquire = cache.acquire
    loaded = np.zeros(len(keys), dtype=bool)
    bytes_hit = 0
    key_list = keys.tolist()
    size_list = sizes.tolist()
    time_list = times.tolist() if times is not None else None
    # A trace without load costs gets the device profile's modelled cost, so cost-aware
    # policies (gdsf) see what the daemon would measure rather than zeros.
    if load_costs is None:
        load_costs = profile.paging_seconds(sizes.astype(np.float64))
    cost_list = load_costs.tolist()
    total = len(key_list)
    for i, key in enumerate(key_list):
        clock_now = time_list[i] if time_list is not None else float(i)
        size = size_list[i]
        # The size is declared, as the daemon declares an adapter's: room is made before the
        # (simulated) load, and the loader hands back this request's size and cost.
        request = acquire(key, partial(_simulated_load, size, cost_list[i]), nbytes=size)
        try:
            with request:
                pass
        except ObjectTooLargeError:
            continue  # never admitted, like libCacheSim
        if request.hit:
            bytes_hit += size
        else:
            loaded[i] = True
        if progress and i % _PROGRESS_EVERY == 0:
            progress(i, total)
    if progress:
        progress(total, total)
    stats = cache.stats()
    cache.close()
    return loaded, stats.hits, bytes_hit, stats.evictions


def _simulated_load(size: int, cost: float, key) -> tuple[None, int, float]:
    return None, size, cost


def replay_trace(trace: Trace, policies: Sequence[str | CacheConfig], budgets: Sequence[int],
                 **kwargs: Any) -> list[ReplayResult]:
    """``replay_grid`` over a ``Trace``, with its times and load costs."""
    return replay_grid(trace.keys, trace.sizes, policies, budgets, times=trace.times,
                       load_costs=trace.load_costs, **kwargs)


def replay_grid(
    keys: np.ndarray,
    sizes: np.ndarray,
    policies: Sequence[str | CacheConfig],
    budgets: Sequence[int],
    **kwargs: Any,
) -> list[ReplayResult]:
    """Every policy at every budget, in policy-major order."""
    return [replay_arrays(keys, sizes, policy, budget, **kwargs)
            for policy in policies for budget in budgets]
