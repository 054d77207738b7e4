"""Oracle bounds: exact Belady on hand-computed and exhaustively searched traces, bound order on
random ones, and agreement with libCacheSim (LRU, FIFO, Belady) on generated traces."""

from __future__ import annotations

import functools

import libcachesim as lcs  # a declared dev dependency: missing means a broken install
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge._native import NativeIndex
from edge.sim.generate import LognormalSize, SmallHugeMix, zipf_trace
from edge.sim.oracle import belady_hits, belady_size_hits, gap_closed, pfoo_l_hits
from edge.sim.reuse import next_access_indices
from edge.sim.trace import LcsCsvColumns, read_trace, write_oracle_general

HAND_TRACE = [1, 2, 3, 1, 4, 2, 1, 3, 5, 1, 2, 4, 3, 1]


def test_belady_hand_computed():
    # capacity 2: 3 evicts 2 (next at 5 vs 1 at 3); 4 evicts 3; 2 evicts 4; 3 evicts 2; 5 evicts 3;
    # 2 evicts 5 (never again); 4 evicts 2; 3 evicts 4: hits at 3, 6, 9, 13.
    hits = np.empty(len(HAND_TRACE), np.uint8)
    assert belady_hits(HAND_TRACE, 2, hits_out=hits) == 4
    assert np.flatnonzero(hits).tolist() == [3, 6, 9, 13]
    # capacity 3: 4 evicts 3, 3 evicts 4, 5 evicts 3, then 1 and 2 stay: hits at 3,5,6,9,10,13.
    assert belady_hits(HAND_TRACE, 3, hits_out=hits) == 6
    assert np.flatnonzero(hits).tolist() == [3, 5, 6, 9, 10, 13]
    assert belady_hits(HAND_TRACE, 5) == len(HAND_TRACE) - 5  # only cold misses
    assert belady_hits(HAND_TRACE, 0) == 0
    assert belady_hits([], 3) == 0


def test_bypass_beats_demand_paging_when_caching_the_miss_hurts():
    # capacity 1, a b a: demand paging must load b over a (0 hits); bypass keeps a (1 hit).
    assert belady_hits([7, 8, 7], 1) == 0
    assert belady_hits([7, 8, 7], 1, bypass=True) == 1


@functools.cache
def brute_force_hits(keys: tuple, sizes: tuple, capacity: int, bypass: bool) -> int:
    """Maximum hits over every eviction schedule (exponential: tiny traces only)."""

    @functools.cache
    def best(i: int, cache: frozenset) -> int:
        if i == len(keys):
            return 0
        k, s = keys[i], sizes[i]
        if k in cache:
            return 1 + best(i + 1, cache)
        options = [best(i + 1, cache)] if bypass or s > capacity else []
        if s <= capacity:
            size_of = dict(zip(keys, sizes, strict=True))
            resident = sorted(cache)
            for r in range(len(resident) + 1):  # every subset of victims that makes room
                for mask in range(1 << len(resident)):
                    if bin(mask).count("1") != r:
                        continue
                    kept = [o for j, o in enumerate(resident) if not mask >> j & 1]
                    if sum(size_of[o] for o in kept) + s <= capacity:
                        options.append(best(i + 1, frozenset(kept) | {k}))
        return max(options)

    return best(0, frozenset())


small_traces = st.lists(st.integers(0, 4), min_size=1, max_size=11)


@settings(max_examples=150, deadline=None)
@given(small_traces, st.integers(1, 4), st.booleans())
def test_belady_equals_exhaustive_optimum(keys, capacity, bypass):
    ones = (1,) * len(keys)
    assert belady_hits(keys, capacity, bypass=bypass) == brute_force_hits(
        tuple(keys), ones, capacity, bypass)


@settings(max_examples=120, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=9), st.integers(1, 8),
       st.lists(st.integers(1, 5), min_size=4, max_size=4))
def test_pfoo_l_bounds_the_exhaustive_optimum(keys, capacity, object_sizes):
    sizes = [object_sizes[k] for k in keys]
    optimum = brute_force_hits(tuple(keys), tuple(sizes), capacity, True)
    bound = pfoo_l_hits(np.array(keys), np.array(sizes), capacity)
    assert bound >= optimum
    assert optimum >= belady_size_hits(np.array(keys), np.array(sizes), capacity)


def lru_hits(keys, sizes, budget) -> int:
    return NativeIndex().replay("lru", keys, sizes, budget).hits


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sizes", [LognormalSize(10_000, 1.5), SmallHugeMix(1000, 200_000, 0.1)])
def test_bound_above_belady_size_above_lru(seed, sizes):
    t = zipf_trace(20_000, 3000, 0.8, seed, sizes)
    for budget in (200_000, 2_000_000):
        bound = pfoo_l_hits(t.keys, t.sizes, budget)
        heuristic = belady_size_hits(t.keys, t.sizes, budget)
        lru = lru_hits(t.keys, t.sizes, budget)
        assert bound >= heuristic >= lru
        assert bound <= len(t) - len(np.unique(t.keys))  # never more than the reuses


def test_uniform_sizes_bound_is_tight_and_heuristic_is_belady():
    t = zipf_trace(30_000, 3000, 0.9, seed=1)
    for capacity in (50, 500):
        exact = belady_hits(t.keys, capacity)
        assert belady_size_hits(t.keys, t.sizes, capacity * 4096) == exact
        bound = pfoo_l_hits(t.keys, t.sizes, capacity * 4096)
        assert exact <= bound <= exact * 1.05  # PFOO-L is close to OPT on equal sizes
        assert lru_hits(t.keys, np.ones(len(t), np.uint64), capacity) < exact


def test_per_request_hit_flags_and_objects_larger_than_the_cache():
    keys = np.array([1, 2, 1, 2, 1])
    sizes = np.array([5, 50, 5, 50, 5])
    flags = np.empty(5, np.uint8)
    assert belady_size_hits(keys, sizes, 10, hits_out=flags) == 2
    assert flags.tolist() == [0, 0, 1, 0, 1]  # object 2 never fits, never evicts object 1
    assert pfoo_l_hits(keys, sizes, 10) == 2
    with pytest.raises(ValueError, match="hits_out"):
        belady_hits(keys, 1, hits_out=np.empty(5, np.int32))


def test_gap_closed():
    assert gap_closed(policy_hits=75, lru_hits=50, optimal_hits=100) == 0.25 + 0.25
    assert gap_closed(50, 50, 100) == 0.0 and gap_closed(100, 50, 100) == 1.0


def test_next_access_indices():
    assert next_access_indices(np.array([3, 1, 3, 3, 1, 2])).tolist() == [2, 4, 3, -1, -1, -1]


# ---------------------------------------------------------------------------------------------
# libCacheSim cross-check. Traps (FIELD-NOTES): never call TraceReader.close() (double free);
# pass a small hashpower. libCacheSim counts cold misses as misses, as we do, and its Belady is
# demand paging (no bypass), so it is compared with bypass=False.


LCS_POLICIES = {"lru": "LRU", "fifo": "FIFO"}


def lcs_misses(reader_factory, policy: str, cache_size: int) -> int:
    reader, n = reader_factory()
    cache = getattr(lcs, policy)(cache_size=cache_size, hashpower=16)
    miss_ratio, _ = cache.process_trace(reader)
    return round(miss_ratio * n)


def oracle_general_reader(path, n, ignore_size):
    def make():
        param = lcs.ReaderInitParam(ignore_obj_size=ignore_size)
        return lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE, param), n
    return make


def test_libcachesim_agrees_on_generated_oracle_general_trace(tmp_path):
    t = zipf_trace(40_000, 4000, 0.9, seed=21)
    path = tmp_path / "zipf.oracleGeneral.bin"
    write_oracle_general(t, path)
    reader = oracle_general_reader(path, len(t), ignore_size=True)
    ones = np.ones(len(t), np.uint64)
    for capacity in (100, 1500):
        assert lcs_misses(reader, "Belady", capacity) == len(t) - belady_hits(t.keys, capacity)
        for ours, theirs in LCS_POLICIES.items():
            replay = NativeIndex().replay(ours, t.keys, ones, capacity)
            assert lcs_misses(reader, theirs, capacity) == len(t) - replay.hits


def test_libcachesim_agrees_on_libcachesim_csv_format(tmp_path):
    # A small trace in libCacheSim's CSV layout (as its cloudPhysicsIO sample), read by both.
    t = zipf_trace(15_000, 2000, 0.8, seed=22, sizes=LognormalSize(4096, 1.0, max_bytes=2**20))
    path = tmp_path / "io.csv"
    rows = zip(t.times, t.keys, t.sizes, strict=True)
    lines = ["version,time,op,size,lbn"] + [
        f"1,{int(time * 1000)},2a,{size},{key}" for time, key, size in rows]
    path.write_text("\n".join(lines) + "\n")
    ours = read_trace(path, columns=LcsCsvColumns(time=2, key=5, size=4))
    np.testing.assert_array_equal(ours.keys, t.keys)

    def csv_reader():
        param = lcs.ReaderInitParam(has_header=True)
        param.time_field, param.obj_id_field, param.obj_size_field = 2, 5, 4
        return lcs.TraceReader(str(path), lcs.TraceType.CSV_TRACE, param), len(ours)

    for budget in (300_000, 3_000_000):  # byte budgets: variable sizes
        for mine, theirs in LCS_POLICIES.items():
            replay = NativeIndex().replay(mine, ours.keys, ours.sizes, budget)
            assert lcs_misses(csv_reader, theirs, budget) == len(ours) - replay.hits
    # Belady needs next-access times, which only oracleGeneral carries: convert what we read.
    converted = tmp_path / "io.oracleGeneral.bin"
    write_oracle_general(ours, converted)
    reader = oracle_general_reader(converted, len(ours), ignore_size=True)
    for capacity in (50, 800):
        assert lcs_misses(reader, "Belady", capacity) == len(ours) - belady_hits(ours.keys,
                                                                                 capacity)
