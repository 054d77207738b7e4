"""Offline references for hit counts: what no online policy can beat, and how close one can get.

``belady_hits``
    Belady's MIN for equal sizes: on a miss with the cache full, evict the object whose next
    request is furthest away. Exact optimum of demand paging (the requested object must be
    loaded, as an adapter or expert must be to serve a request). ``bypass=True`` gives the
    optimum when a miss may also be served without caching (admission control).
``pfoo_l_hits``
    For variable sizes, where the optimum is NP-hard: the PFOO-L upper bound (Berger, Beckmann,
    Harchol-Balter, SIGMETRICS'18). It is a bound, not a policy: no schedule achieves it in
    general, and every policy's hit count is <= it.
``belady_size_hits``
    A feasible variable-size reference: evict furthest-next-request first until the new object
    fits. A real schedule (a hit count some policy achieves), not an optimum.

Counting conventions, shared with libCacheSim and ``NativeIndex.replay``: every request is a hit
or a miss, first requests included (cold misses count); time is the request index. An object
larger than the whole cache is never cached. Hit counts, not ratios, are returned: divide by
``len(keys)``.
"""

from __future__ import annotations

import heapq

import numpy as np

from edge.sim.reuse import next_access_indices


def _dense_ids(keys: np.ndarray) -> np.ndarray:
    """Keys -> 0..n_objects-1, so per-object state lives in flat lists instead of dicts."""
    return np.unique(keys, return_inverse=True)[1].ravel()


def _eviction_priorities(keys: np.ndarray) -> np.ndarray:
    """Priority of the heap entry pushed at request i: its next request index, or n + i if the
    object is never requested again. All distinct, and every entry of a resident object is
    larger than the current request index, while stale entries (superseded by a later request
    of the same object) are <= it: the max-heap top is therefore always a resident object and
    stale entries never need removing."""
    n = len(keys)
    nxt = next_access_indices(keys)
    return np.where(nxt >= 0, nxt, n + np.arange(n, dtype=np.int64))


def _check_hits_out(hits_out: np.ndarray | None, n: int) -> None:
    if hits_out is not None and (hits_out.dtype != np.uint8 or len(hits_out) < n):
        raise ValueError("hits_out must be a uint8 array at least as long as the trace")


def belady_hits(keys: np.ndarray, capacity_objects: int, *, bypass: bool = False,
                hits_out: np.ndarray | None = None) -> int:
    """Hits of Belady's MIN on ``keys`` with room for ``capacity_objects`` equal-size objects.

    O(n log n): next requests come from numpy, the loop keeps a max-heap of resident objects'
    next requests. ``hits_out`` (uint8, optional) receives 1 for each hit and 0 for each miss.
    """
    keys = np.asarray(keys)
    n = len(keys)
    if capacity_objects < 0:
        raise ValueError(f"capacity_objects must be >= 0, got {capacity_objects}")
    _check_hits_out(hits_out, n)
    if hits_out is not None:
        hits_out[:n] = 0
    if n == 0 or capacity_objects == 0:
        return 0
    obj = _dense_ids(keys).tolist()
    neg_priority = (-_eviction_priorities(keys)).tolist()  # heapq is a min-heap
    resident = bytearray(max(obj) + 1)
    heap: list[int] = []
    push, replace = heapq.heappush, heapq.heapreplace
    hit_index: list[int] = []
    hit = hit_index.append
    free = capacity_objects
    for i in range(n):
        o = obj[i]
        if resident[o]:
            hit(i)
            push(heap, neg_priority[i])
        elif free:
            free -= 1
            resident[o] = 1
            push(heap, neg_priority[i])
        elif not bypass or neg_priority[i] > heap[0]:  # bypass: admit only if needed sooner
            furthest = -replace(heap, neg_priority[i])
            resident[obj[furthest if furthest < n else furthest - n]] = 0
            resident[o] = 1
    if hits_out is not None:
        hits_out[hit_index] = 1
    return len(hit_index)


def _sizes_per_object(keys: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dense ids, each request's object size = the smallest size its key is requested with)."""
    obj = _dense_ids(keys)
    smallest = np.full(obj.max() + 1 if len(obj) else 0, np.iinfo(np.uint64).max, np.uint64)
    np.minimum.at(smallest, obj, sizes)
    return obj, smallest[obj]


def _checked_sized_trace(keys, sizes, cache_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    keys = np.asarray(keys)
    sizes = np.asarray(sizes, dtype=np.uint64)
    if len(sizes) != len(keys):
        raise ValueError(f"keys and sizes differ in length ({len(keys)} != {len(sizes)})")
    if cache_bytes < 0:
        raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
    return keys, sizes


def pfoo_l_hits(keys: np.ndarray, sizes: np.ndarray, cache_bytes: int) -> int:
    """Upper bound on the hits of any policy, size-aware or not (PFOO-L, Berger et al. 2018).

    A hit at request j of an object last requested at i needs the object cached through the
    whole reuse interval, which uses size x (j - i) byte-requests of "space-time"; over the trace
    the cache offers cache_bytes x (n - 1). Dropping the per-moment capacity constraint and
    keeping only this total leaves a knapsack that counts intervals, solved exactly by admitting
    the cheapest intervals first; the number admitted bounds every policy's hits from above.
    Where one key comes with several sizes, the smallest is charged, which keeps it a bound.
    It is typically a few percent above what is achievable; it is not a schedule.
    """
    keys, sizes = _checked_sized_trace(keys, sizes, cache_bytes)
    n = len(keys)
    if n < 2 or cache_bytes == 0:
        return 0
    _, object_sizes = _sizes_per_object(keys, sizes)
    nxt = next_access_indices(keys)
    reused = (nxt >= 0) & (object_sizes <= cache_bytes)
    lengths = (nxt[reused] - np.flatnonzero(reused)).astype(np.float64)
    costs = np.sort(object_sizes[reused].astype(np.float64) * lengths)
    budget = float(cache_bytes) * (n - 1)
    # float64 sums of integers are exact below 2**53; beyond that a relative slack of 1e-12
    # errs towards admitting one interval too many, which keeps the result an upper bound.
    return int(np.searchsorted(np.cumsum(costs), budget * (1 + 1e-12), side="right"))


def belady_size_hits(keys: np.ndarray, sizes: np.ndarray, cache_bytes: int, *,
                     bypass: bool = False, hits_out: np.ndarray | None = None) -> int:
    """Hits of the furthest-next-request heuristic with variable sizes (a feasible schedule).

    On a miss, objects are evicted furthest-next-request first until the new one fits. An
    object's size is that of the request that loaded it (as in ``NativeIndex.replay``).
    ``bypass=True`` leaves a missed object out when it is requested later than every resident
    one. Not optimal for variable sizes (nothing fast is); use ``pfoo_l_hits`` for the bound.
    """
    keys, sizes = _checked_sized_trace(keys, sizes, cache_bytes)
    n = len(keys)
    _check_hits_out(hits_out, n)
    if hits_out is not None:
        hits_out[:n] = 0
    if n == 0:
        return 0
    obj = _dense_ids(keys).tolist()
    size = sizes.tolist()
    neg_priority = (-_eviction_priorities(keys)).tolist()
    resident_bytes = [0] * (max(obj) + 1)  # 0 = not resident (sizes are >= 1)
    heap: list[int] = []
    push, pop = heapq.heappush, heapq.heappop
    hit_index: list[int] = []
    used = 0
    for i in range(n):
        o = obj[i]
        if resident_bytes[o]:
            hit_index.append(i)
            push(heap, neg_priority[i])
            continue
        s = size[i]
        if s > cache_bytes or (bypass and used + s > cache_bytes
                               and neg_priority[i] <= heap[0]):  # needed later than all
            continue
        while used + s > cache_bytes:
            furthest = -pop(heap)
            victim = obj[furthest if furthest < n else furthest - n]
            used -= resident_bytes[victim]
            resident_bytes[victim] = 0
        resident_bytes[o] = s
        used += s
        push(heap, neg_priority[i])
    if hits_out is not None:
        hits_out[hit_index] = 1
    return len(hit_index)


def gap_closed(policy_hits: int, lru_hits: int, optimal_hits: int) -> float:
    """Where a policy lands between LRU (0.0) and the offline reference (1.0)."""
    if optimal_hits == lru_hits:
        return 1.0 if policy_hits >= optimal_hits else 0.0
    return (policy_hits - lru_hits) / (optimal_hits - lru_hits)
