"""Replay (context, true per-arm utility) events through a strategy and a real ``PagedCache``.

The same function serves ``scripts/bench_router.py`` and ``edge sim --router``. Per event:
the strategy picks an arm from the context and the current residency; the request acquires the
arm from the cache (a miss pages it in: ``device.paging_seconds(size)`` of blocking time); the
observed reward is the true utility plus Gaussian noise, clipped to [0, 1]; the strategy learns
from it. When a controller closes an epoch its plan goes to the cache through
``apply_resident_set``; those loads are prefetch paging time (off the request path, but IO all
the same, so they count in ``total_paging_s``).

Metrics (``lambda`` = ``paging_weight``):
- ``regret``: sum over requests of (max_a u - u_chosen), paging ignored (reward-only regret);
- ``objective``: sum of u_chosen - lambda * blocking paging seconds (reward-latency objective);
- ``hit_ratio``: share of requests whose adapter was resident when routed;
- ``blocking_paging_s`` / ``prefetch_paging_s`` / ``total_paging_s``.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from edge.cache.paged import PagedCache
from edge.device import DeviceProfile
from edge.router.polar import apply_resident_set
from edge.router.strategies import Strategy


def replay(strategy: Strategy, contexts: np.ndarray, utilities: np.ndarray, sizes: np.ndarray,
           *, budget_bytes: int, device: DeviceProfile, paging_weight: float,
           rng: np.random.Generator, reward_noise: float = 0.1,
           arm_ids: Optional[tuple[str, ...]] = None, checkpoints: int = 20) -> dict[str, Any]:
    contexts = np.asarray(contexts, dtype=np.float64)
    utilities = np.asarray(utilities, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    T, N = utilities.shape
    if contexts.ndim != 2 or contexts.shape[0] != T:
        raise ValueError(f"contexts {contexts.shape} and utilities {utilities.shape} disagree "
                         "on the number of events")
    if sizes.shape != (N,):
        raise ValueError(f"sizes must have shape ({N},), got {sizes.shape}")
    if not np.all(np.isfinite(contexts)) or not np.all(np.isfinite(utilities)):
        raise ValueError("contexts and utilities must be finite")
    keys = arm_ids if arm_ids is not None else tuple(f"adapter-{i:03d}" for i in range(N))
    index = {k: i for i, k in enumerate(keys)}
    resident = np.zeros(N, dtype=bool)
    paging = {"total": 0.0}
    cost = np.array([device.paging_seconds(int(s)) for s in sizes])

    def loader(key):
        i = index[key]
        resident[i] = True
        paging["total"] += cost[i]
        return key, int(sizes[i])

    def unloader(key, value):
        resident[index[key]] = False

    now = [0.0]
    cache = PagedCache(budget_bytes, "lru", loader=loader, unloader=unloader,
                       clock=lambda: now[0], load_workers=0)
    best = utilities.max(axis=1)
    regret = np.empty(T)
    blocking = 0.0
    hits = 0
    reward_sum = 0.0
    chosen_counts = np.zeros(N, dtype=np.int64)
    started = time.perf_counter()
    try:
        for t in range(T):
            now[0] = float(t)
            x, u = contexts[t], utilities[t]
            arm = strategy.choose(x, resident.copy(), u)
            if resident[arm]:
                hits += 1
            else:
                blocking += cost[arm]
            with cache.acquire(keys[arm]):
                pass
            chosen_counts[arm] += 1
            reward_sum += u[arm]
            regret[t] = best[t] - u[arm]
            observed = float(np.clip(u[arm] + reward_noise * rng.standard_normal(), 0.0, 1.0))
            strategy.observe(x, arm, observed)
            plan = strategy.take_plan()
            if plan is not None:
                apply_resident_set(cache, [keys[i] for i in plan],
                                   {keys[i]: int(sizes[i]) for i in plan})
    finally:
        cache.close()
    cumulative = np.cumsum(regret)
    marks = np.unique(np.linspace(1, T, min(checkpoints, T)).astype(int))
    return {
        "strategy": strategy.name,
        "steps": T,
        "reward": float(reward_sum),
        "regret": float(cumulative[-1]),
        "regret_curve": {"t": marks.tolist(), "regret": cumulative[marks - 1].tolist()},
        "objective": float(reward_sum - paging_weight * blocking),
        "hit_ratio": hits / T,
        "blocking_paging_s": float(blocking),
        "prefetch_paging_s": float(paging["total"] - blocking),
        "total_paging_s": float(paging["total"]),
        "arms_tried": int(np.count_nonzero(chosen_counts)),
        "wall_s": time.perf_counter() - started,
    }
