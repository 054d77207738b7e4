"""Benchmark of the pager's hot paths against plain-Python LRU peers, in one run.

Figures (nanoseconds per operation, medians over --repeats):
- PagedCache.acquire on the hit path (``with cache.acquire(k) as v``: lock, C touch+pin, unpin);
- PagedCache.acquire on a miss + evict path (every request misses and evicts one object);
- the C core's batch lookup (``NativeIndex.lookup_many``) per key, on a large resident set;
peers on the same key streams: ``collections.OrderedDict`` used as an LRU, and
``cachetools.LRUCache``. Ratios are ours / peer (below 1: we are faster).

The peers do less than the pager (no pins, no thread safety, no byte budget, no per-object
statistics): they bound from below what a Python-level LRU can cost, they are not equivalents.

    python scripts/bench_cache.py [--quick] [--out results/bench_cache.json]
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import emit, machine, per_op_ns, repeat  # noqa: E402

from edge._native import NativeIndex  # noqa: E402
from edge.cache import PagedCache  # noqa: E402

TARGET_HIT_NS = 2000
TARGET_BATCH_NS = 100


def key_stream(n_keys: int, n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(0, n_keys, n).tolist()


# ---- hit path ---------------------------------------------------------------------------------

def hit_ours(keys: list[int], n_keys: int) -> float:
    cache = PagedCache(n_keys * 100, "lru", loader=lambda k: (k, 100), load_workers=0)
    for k in range(n_keys):
        with cache.acquire(k):
            pass

    def run(n):
        acquire = cache.acquire
        for k in keys[:n]:
            with acquire(k):
                pass

    ns = per_op_ns(run, len(keys))
    assert cache.stats().misses == n_keys
    return ns


def hit_ordereddict(keys: list[int], n_keys: int) -> float:
    od = OrderedDict((k, k) for k in range(n_keys))

    def run(n):
        move = od.move_to_end
        for k in keys[:n]:
            od[k]
            move(k)

    return per_op_ns(run, len(keys))


def hit_cachetools(keys: list[int], n_keys: int) -> float:
    import cachetools

    cache = cachetools.LRUCache(maxsize=n_keys)
    for k in range(n_keys):
        cache[k] = k

    def run(n):
        for k in keys[:n]:
            cache[k]

    return per_op_ns(run, len(keys))


# ---- miss + evict path ------------------------------------------------------------------------

def miss_ours(n: int, capacity: int) -> float:
    cache = PagedCache(capacity * 100, "lru", loader=lambda k: (k, 100), load_workers=0)

    def run(n):
        acquire = cache.acquire
        for k in range(n):  # never repeats: every request misses, and evicts once full
            with acquire(k):
                pass

    ns = per_op_ns(run, n)
    assert cache.stats().hits == 0 and cache.stats().evictions == n - capacity
    return ns


def miss_ordereddict(n: int, capacity: int) -> float:
    od: OrderedDict[int, int] = OrderedDict()

    def run(n):
        for k in range(n):
            if k in od:
                od.move_to_end(k)
                continue
            if len(od) >= capacity:
                od.popitem(last=False)
            od[k] = k

    return per_op_ns(run, n)


def miss_cachetools(n: int, capacity: int) -> float:
    import cachetools

    cache = cachetools.LRUCache(maxsize=capacity)

    def run(n):
        for k in range(n):
            if k not in cache:
                cache[k] = k

    return per_op_ns(run, n)


# ---- batch lookup -----------------------------------------------------------------------------

def batch_setup(n_resident: int, n_lookup: int):
    rng = np.random.default_rng(1)
    resident = np.unique(rng.integers(0, 2**63, n_resident, dtype=np.uint64))
    idx = NativeIndex(initial_capacity=len(resident))
    for i, k in enumerate(resident.tolist()):
        idx.insert(k, 1, now=float(i))
    # Half resident keys, half absent ones, shuffled.
    probe = np.concatenate([rng.choice(resident, n_lookup // 2),
                            rng.integers(2**63, 2**64 - 1, n_lookup // 2, dtype=np.uint64)])
    rng.shuffle(probe)
    return idx, resident, probe


def batch_ours(idx: NativeIndex, probe: np.ndarray) -> float:
    out = np.empty(len(probe), dtype=np.int32)
    return per_op_ns(lambda n: idx.lookup_many(probe, out), len(probe))


def batch_dict(resident: np.ndarray, probe: np.ndarray) -> float:
    table = {k: i for i, k in enumerate(resident.tolist())}
    keys = probe.tolist()
    return per_op_ns(lambda n: [table.get(k, -1) for k in keys], len(keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    n_ops = 20_000 if args.quick else 200_000
    n_keys = 1_000
    capacity = 1_000
    n_resident = 100_000 if args.quick else 1_000_000
    n_lookup = 100_000 if args.quick else 1_000_000

    keys = key_stream(n_keys, n_ops)
    idx, resident, probe = batch_setup(n_resident, n_lookup)
    hit = {"ours": repeat(lambda: hit_ours(keys, n_keys), repeats),
           "ordereddict": repeat(lambda: hit_ordereddict(keys, n_keys), repeats),
           "cachetools": repeat(lambda: hit_cachetools(keys, n_keys), repeats)}
    miss = {"ours": repeat(lambda: miss_ours(n_ops, capacity), repeats),
            "ordereddict": repeat(lambda: miss_ordereddict(n_ops, capacity), repeats),
            "cachetools": repeat(lambda: miss_cachetools(n_ops, capacity), repeats)}
    batch = {"ours": repeat(lambda: batch_ours(idx, probe), repeats),
             "python_dict": repeat(lambda: batch_dict(resident, probe), repeats)}

    def ratios(section):
        ours = section["ours"]["median"]
        return {peer: round(ours / v["median"], 3) for peer, v in section.items() if peer != "ours"}

    hit_ns = hit["ours"]["median"]
    miss_ns = miss["ours"]["median"]
    batch_ns = batch["ours"]["median"]
    emit({
        "benchmark": "cache",
        "machine": machine(),
        "inputs": {"ops": n_ops, "hit_keys": n_keys, "miss_capacity_objects": capacity,
                   "batch_resident_keys": len(resident), "batch_lookup_keys": len(probe),
                   "repeats": repeats},
        "acquire_hit_ns": hit,
        "acquire_hit_ops_per_s": round(1e9 / hit_ns),
        "acquire_hit_ratio_vs_peer": ratios(hit),
        "acquire_miss_evict_ns": miss,
        "acquire_miss_evict_ops_per_s": round(1e9 / miss_ns),
        "acquire_miss_evict_ratio_vs_peer": ratios(miss),
        "batch_lookup_ns_per_key": batch,
        "batch_lookup_ratio_vs_peer": ratios(batch),
        "targets": {"acquire_hit_ns": TARGET_HIT_NS, "acquire_hit_met": hit_ns < TARGET_HIT_NS,
                    "batch_lookup_ns_per_key": TARGET_BATCH_NS,
                    "batch_lookup_met": batch_ns < TARGET_BATCH_NS},
    }, args.out)


if __name__ == "__main__":
    main()
