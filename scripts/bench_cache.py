"""Benchmark of the pager's hot paths against plain-Python LRU peers, in one run.

Figures (nanoseconds per operation, medians over --repeats):
- PagedCache.acquire on the hit path (``with cache.acquire(k) as v``: lock, C touch+pin, unpin);
- PagedCache.acquire on a miss + evict path (every request misses and evicts one object);
- ``PagedCache.acquire_many`` of 8 resident integer keys (one C call touches and pins all 8),
  beside the same 8 keys taken with 8 nested single ``acquire`` calls;
- the C core's batch lookup (``NativeIndex.lookup_many``) per key, on a large resident set;
peers on the same key streams: ``collections.OrderedDict`` used as an LRU, and
``cachetools.LRUCache``; for the batch lookup a Python dict and a vectorised numpy lookup
(``searchsorted`` over the sorted resident keys). Ratios are ours / peer (below 1: we are faster).

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


# ---- acquire_many on resident keys ------------------------------------------------------------

BATCH = 8  # e.g. a token's top-k experts over a few layers


def many_setup(n_keys: int, n: int) -> tuple[PagedCache, list[list[int]]]:
    cache = PagedCache(n_keys * 100, "lru", loader=lambda k: (k, 100), load_workers=0)
    for k in range(n_keys):
        with cache.acquire(k):
            pass
    rng = np.random.default_rng(2)
    sets = [rng.choice(n_keys, BATCH, replace=False).tolist() for _ in range(n)]
    return cache, sets


def many_ours(n_keys: int, n: int) -> float:
    cache, sets = many_setup(n_keys, n)

    def run(n):
        acquire_many = cache.acquire_many
        for keys in sets[:n]:
            with acquire_many(keys):
                pass

    ns = per_op_ns(run, n)
    assert cache.stats().misses == n_keys
    return ns


def many_singles(n_keys: int, n: int) -> float:
    cache, sets = many_setup(n_keys, n)

    def run(n):
        acquire = cache.acquire
        for a, b, c, d, e, f, g, h in sets[:n]:
            with acquire(a), acquire(b), acquire(c), acquire(d), acquire(e), acquire(f), \
                    acquire(g), acquire(h):
                pass

    ns = per_op_ns(run, n)
    assert cache.stats().misses == n_keys
    return ns


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


def batch_numpy(resident: np.ndarray, probe: np.ndarray) -> float:
    table = np.sort(resident)
    last = len(table) - 1

    def run(n):
        pos = np.minimum(np.searchsorted(table, probe), last)
        return np.where(table[pos] == probe, pos, -1)

    return per_op_ns(run, len(probe))


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
    n_sets = n_ops // BATCH
    many = {"ours": repeat(lambda: many_ours(n_keys, n_sets), repeats),
            "single_acquires": repeat(lambda: many_singles(n_keys, n_sets), repeats)}
    batch = {"ours": repeat(lambda: batch_ours(idx, probe), repeats),
             "python_dict": repeat(lambda: batch_dict(resident, probe), repeats),
             "numpy_searchsorted": repeat(lambda: batch_numpy(resident, probe), repeats)}

    def ratios(section):
        ours = section["ours"]["median"]
        return {peer: round(ours / v["median"], 3) for peer, v in section.items() if peer != "ours"}

    hit_ns = hit["ours"]["median"]
    miss_ns = miss["ours"]["median"]
    batch_ns = batch["ours"]["median"]
    emit({
        "benchmark": "cache",
        "machine": machine(),
        "inputs": {"ops": n_ops, "acquire_many_keys": BATCH, "hit_keys": n_keys,
                   "miss_capacity_objects": capacity,
                   "batch_resident_keys": len(resident), "batch_lookup_keys": len(probe),
                   "repeats": repeats},
        "acquire_hit_ns": hit,
        "acquire_hit_ops_per_s": round(1e9 / hit_ns),
        "acquire_hit_ratio_vs_peer": ratios(hit),
        "acquire_miss_evict_ns": miss,
        "acquire_miss_evict_ops_per_s": round(1e9 / miss_ns),
        "acquire_miss_evict_ratio_vs_peer": ratios(miss),
        "acquire_many_8_resident_ns": many,
        "acquire_many_8_ratio_vs_singles": ratios(many),
        "batch_lookup_ns_per_key": batch,
        "batch_lookup_ratio_vs_peer": ratios(batch),
        "targets": {"acquire_hit_ns": TARGET_HIT_NS, "acquire_hit_met": hit_ns < TARGET_HIT_NS,
                    "batch_lookup_ns_per_key": TARGET_BATCH_NS,
                    "batch_lookup_met": batch_ns < TARGET_BATCH_NS},
    }, args.out)


if __name__ == "__main__":
    main()
