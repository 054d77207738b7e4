"""Our policies against libCacheSim (libcachesim 0.3.5, a declared dev dependency): equal hit for
hit where both implement the same algorithm, and every difference accounted for where they do
not, with a tolerance of zero.

- LRU, FIFO, plain LFU: equal on the committed trace at five budgets.
- ARC: equal on unit sizes (both are the paper's algorithm, tie rule included). With byte sizes
  libCacheSim makes two other choices; the reference model (tests/reference_policies.py) with
  exactly those two switched on reproduces libCacheSim's hits, with both off ours.
- S3-FIFO: the same, with five choices, the largest being that libCacheSim never caches an object
  at least as large as the small queue.
- LFU-DA: libCacheSim's LFUDA is not the published algorithm (ours is: test_policies_golden.py
  derives it by hand and checks it against a reference model). Hand-derived traces show where
  the two part, a model of what LFUDA.c does reproduces libCacheSim, and it crashes where the
  model says it will.

libCacheSim traps (FIELD-NOTES): a small ``hashpower``; S3FIFO exits the process for a cache
under 10 bytes (its small queue would be empty), so random traces here use 10 or more.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from reference_policies import (
    LIBCACHESIM_ARC,
    LIBCACHESIM_S3FIFO,
    OURS_ARC,
    PAPER_S3FIFO,
    ARCRules,
    LibCacheSimWouldCrash,
    S3FIFORules,
    arc_hits,
    libcachesim_hits,
    libcachesim_lfuda_hits,
    s3fifo_hits,
)
from test_policies_golden import BUDGETS, GOLDEN_HITS, LIBCACHESIM_HITS, load_trace, replay, unit

from edge.cache import PagedCache
from edge.errors import ObjectTooLargeError


def hits_pagedcache(policy, requests, budget, params=None) -> int:
    size_of = dict(requests)
    cache = PagedCache(budget, policy, policy_params=params, loader=lambda k: (None, size_of[k]),
                       load_workers=0)
    for key, _ in requests:
        try:
            with cache.acquire(key):
                pass
        except ObjectTooLargeError:
            pass  # libCacheSim does not admit an object larger than the cache either
    return cache.stats().hits


@pytest.fixture(scope="module")
def golden_trace():
    return load_trace()


# ---- the same algorithm: equal --------------------------------------------------------------

@pytest.mark.parametrize(("ours", "params", "theirs"), [
    ("lru", None, "LRU"), ("fifo", None, "FIFO"), ("lfu", {"aging": False}, "LFU")])
def test_hit_counts_equal_libcachesim(ours, params, theirs, golden_trace):
    total = sum(dict(golden_trace).values())  # bytes of the whole key set
    results = []
    for fraction in (0.02, 0.05, 0.1, 0.25, 0.5):
        budget = int(total * fraction)
        results.append((budget, hits_pagedcache(ours, golden_trace, budget, params),
                        libcachesim_hits(theirs, golden_trace, budget)))
    assert all(mine == other for _, mine, other in results), results
    hit_counts = [mine for _, mine, _ in results]
    assert 0 < hit_counts[0] < hit_counts[-1]  # the budgets span a real range of hit ratios


def zipf_unit_trace(n_requests=20_000, n_keys=1_000, alpha=0.8, seed=42) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_keys + 1) ** alpha
    keys = rng.choice(n_keys, size=n_requests, p=weights / weights.sum()).tolist()
    return [(key, 1) for key in keys]


@pytest.mark.parametrize("capacity", [25, 100, 400])
def test_arc_equals_libcachesim_on_unit_sizes(capacity):
    requests = zipf_unit_trace()
    ours = hits_pagedcache("arc", requests, capacity)
    assert ours == libcachesim_hits("ARC", requests, capacity)
    assert ours > hits_pagedcache("lru", requests, capacity) + 100  # ARC is not LRU here
    # The paper's tie rule (test_arc_tie_rule_by_hand: 1 hit; 2 without the rule).
    assert libcachesim_hits("ARC", [(ord(k), 1) for k in "abacdbcad"], 3) == 1


def test_arc_equals_libcachesim_on_random_unit_traces():
    # Seeded rather than hypothesis, so that every run sees the same traces: the paper's tie rule
    # changes the hits of 45 of these 300 (test_arc_tie_rule_by_hand shows one by hand).
    rng = np.random.default_rng(7)
    for _ in range(300):
        capacity = int(rng.integers(2, 7))
        keys = rng.integers(0, 10, size=int(rng.integers(10, 60))).tolist()
        requests = [(key, 1) for key in keys]
        assert hits_pagedcache("arc", requests, capacity) == \
            libcachesim_hits("ARC", requests, capacity), (keys, capacity)


# ---- ARC with byte sizes: two choices -----------------------------------------------------------

# Hits on the golden trace at BUDGETS, ours plus one libCacheSim rule at a time:
#   p_step_in_bytes_not_objects     762 1140 1538   (with both rules p never passes 30 bytes
#                                                     here: T1 gives whenever it holds a key)
#   ghosts_trimmed_per_eviction     727 1109 1517
# and both: libCacheSim's 726 1126 1536, against our 748 1117 1513. Neither is a bug of ours:
# the paper has unit sizes only, and a step of one object's bytes is the generalisation that keeps
# "one ghost hit moves the target by what its eviction freed"; keeping the byte bounds of the
# paper's lists exactly is the generalisation of its case IV.
ARC_ONE_RULE_AT_A_TIME = {
    "p_step_in_bytes_not_objects": (762, 1140, 1538),
    "ghosts_trimmed_per_eviction": (727, 1109, 1517),
}


def test_arc_differences_with_sizes_are_exactly_two_rules(golden_trace):
    def model(rules):
        return tuple(arc_hits(golden_trace, b, rules) for b in BUDGETS)

    assert model(OURS_ARC) == GOLDEN_HITS[("arc", None)]
    assert model(LIBCACHESIM_ARC) == LIBCACHESIM_HITS[("ARC", None)]
    assert [f.name for f in dataclasses.fields(ARCRules)] == list(ARC_ONE_RULE_AT_A_TIME)
    for rule, hits in ARC_ONE_RULE_AT_A_TIME.items():
        assert model(ARCRules(**{rule: True})) == hits, rule


sized_traces = st.tuples(
    st.lists(st.integers(0, 14), min_size=1, max_size=150),
    st.lists(st.integers(1, 40), min_size=15, max_size=15),  # one size per key
    st.integers(10, 200))


@settings(max_examples=120, deadline=None)
@given(sized_traces)
def test_arc_model_reproduces_both_on_random_sized_traces(trace):
    keys, sizes, budget = trace
    requests = [(key, sizes[key]) for key in keys]
    assert arc_hits(requests, budget, OURS_ARC) == hits_pagedcache("arc", requests, budget)
    assert arc_hits(requests, budget, LIBCACHESIM_ARC) == libcachesim_hits("ARC", requests,
                                                                           budget)


# ---- S3-FIFO: five choices ----------------------------------------------------------------------

# Hits on the golden trace at BUDGETS, the paper (ours) plus one libCacheSim rule at a time,
# move_to_main_threshold 1 (libCacheSim's S3FIFO(move_to_main_threshold=1)) and 2 (its default):
S3FIFO_ONE_RULE_AT_A_TIME = {  # rule: (threshold 1, threshold 2)
    "ghost_checked_on_request": ((817, 1160, 1537), (827, 1151, 1538)),
    "integer_shares": ((824, 1163, 1537), (827, 1151, 1538)),
    "evict_main_when_over_share": ((810, 1180, 1544), (842, 1160, 1546)),
    "warmup_to_main": ((824, 1162, 1556), (772, 1158, 1559)),
    # At 25 kB the small queue holds 2,500 B: 67 of the 192 keys (520 of the 2000 requests) are
    # at least that large and never cached, which leaves room for the rest: +143 hits by itself.
    # At 75 kB 10 keys are refused, at 200 kB none.
    "refuse_objects_as_large_as_small": ((967, 1194, 1537), (974, 1174, 1538)),
}
# All five together: libCacheSim's numbers, 974 1205 1550 / 981 1203 1566, against our
# 824 1163 1537 / 827 1151 1538. The object-count hit ratio rewards refusing large objects; a
# pager must serve every adapter that fits, so we follow the paper and admit them.


@pytest.mark.parametrize("threshold", [1, 2])
def test_s3fifo_differences_are_exactly_five_rules(threshold, golden_trace):
    def model(rules):
        return tuple(s3fifo_hits(golden_trace, b, threshold, rules) for b in BUDGETS)

    ours = GOLDEN_HITS[("s3fifo", None if threshold == 1 else
                        (("move_to_main_threshold", 2),))]
    theirs = LIBCACHESIM_HITS[("S3FIFO", (("move_to_main_threshold", threshold),))]
    assert model(PAPER_S3FIFO) == ours
    assert model(LIBCACHESIM_S3FIFO) == theirs
    assert [f.name for f in dataclasses.fields(S3FIFORules)] == list(S3FIFO_ONE_RULE_AT_A_TIME)
    for rule, hits in S3FIFO_ONE_RULE_AT_A_TIME.items():
        assert model(S3FIFORules(**{rule: True})) == hits[threshold - 1], rule


@pytest.mark.parametrize("capacity", [25, 100, 400])
def test_s3fifo_model_reproduces_both_on_unit_sizes(capacity):
    # With unit sizes only warm-up, the ghost check's timing and the choice of queue at the
    # rounded shares remain; reproduced exactly on both sides, so the tolerance is zero.
    requests = zipf_unit_trace()
    for threshold in (1, 2):
        ours = hits_pagedcache("s3fifo", requests, capacity,
                               {"move_to_main_threshold": threshold})
        theirs = libcachesim_hits("S3FIFO", requests, capacity,
                                  move_to_main_threshold=threshold)
        assert s3fifo_hits(requests, capacity, threshold, PAPER_S3FIFO) == ours
        assert s3fifo_hits(requests, capacity, threshold, LIBCACHESIM_S3FIFO) == theirs


@settings(max_examples=120, deadline=None)
@given(sized_traces, st.sampled_from([1, 2]), st.booleans())
def test_s3fifo_model_reproduces_both_on_random_traces(trace, threshold, unit_sizes):
    keys, sizes, budget = trace
    requests = [(key, 1 if unit_sizes else sizes[key]) for key in keys]
    assert s3fifo_hits(requests, budget, threshold, PAPER_S3FIFO) == hits_pagedcache(
        "s3fifo", requests, budget, {"move_to_main_threshold": threshold})
    assert s3fifo_hits(requests, budget, threshold, LIBCACHESIM_S3FIFO) == libcachesim_hits(
        "S3FIFO", requests, budget, move_to_main_threshold=threshold)


# ---- LFU-DA: libCacheSim's LFUDA is another algorithm -------------------------------------------
#
# LFU-DA (Arlitt et al. 2000): K = C + L, recomputed with the current L on every reference, and
# L = K of each victim. libCacheSim's LFUDA.c (described in reference_policies.py):
#  1. a hit adds the current L to K, instead of making it C + 1 + L: a hit before the first
#     eviction (L = 0) counts for nothing, and later each hit is worth L, not 1, with every
#     earlier age term kept. The larger effect on the golden trace: this rule alone, in an
#     otherwise exact LFU-DA, takes 723 hits to 841 at 25 kB (libCacheSim: 789).
#  2. L moves up to the lowest priority still resident (after an eviction empties the lowest
#     bucket, or a hit does), not to the victim's, so a new key can enter above keys already
#     resident and be evicted after them.
#  3. When that upward search finds no key (the eviction emptied the cache: a cache of one
#     object, or a large object that needs all of it; or the keys left sit below L, where a hit
#     put them, the search running before the hit key is filed), L stays on an empty bucket and
#     the next eviction dereferences NULL (test_libcachesim_lfuda_crashes_where_the_model_says).
#     The search steps through every integer on its way: on the golden trace at 15 kB one
#     replay takes more than a minute.
# Plain LFU has none of this and is equal hit for hit (test_hit_counts_equal_libcachesim).


def test_libcachesim_lfuda_ignores_hits_before_the_first_eviction():
    # Budget 2, unit sizes, "a a b c a".
    # LFU-DA: a K1, a hit K2, b K1; c: evict b (K1 < 2), L=1, c K2; a hit. Hits 2, victims [b].
    # libCacheSim: a K1; the hit adds L=0: a stays K1, now the newer of its bucket; b K1 (bucket
    # 1 = [a b]); c: evicts the oldest of bucket 1, a; c K2; a misses. Hits 1.
    requests = unit("aabca")
    hits, evicted, _ = replay("lfu", requests, 2)
    assert (hits, evicted) == (2, ["b"])
    assert libcachesim_hits("LFUDA", [(ord(k), s) for k, s in requests], 2) == 1
    assert libcachesim_lfuda_hits(requests, 2)[0] == 1


def test_libcachesim_lfuda_ages_to_the_lowest_resident_priority():
    # Budget 2, unit sizes, "a b c c a b c".
    # LFU-DA: a K1, b K1; c: evict a (tie, older), L=1, c K2; c hit K3; a: evict b (K1), L=1,
    #   a K2; b: evict a (K2 < 3), L=2, b K3; c hit. Hits 2, victims [a b a].
    # libCacheSim: a 1, b 1; c: evict a, L=1 (b left in bucket 1), c 2; c hit: 2 + L = 3; a:
    #   evict b; bucket 1 is empty, so L moves up to the lowest resident, c's 3: a enters at 4,
    #   above c; b: evicts c (3); c misses. Hits 1.
    requests = unit("abccabc")
    hits, evicted, _ = replay("lfu", requests, 2)
    assert (hits, evicted) == (2, ["a", "b", "a"])
    assert libcachesim_hits("LFUDA", [(ord(k), s) for k, s in requests], 2) == 1
    assert libcachesim_lfuda_hits(requests, 2)[0] == 1


def test_libcachesim_lfuda_model_reproduces_it_on_the_golden_trace(golden_trace):
    hits = tuple(libcachesim_lfuda_hits(golden_trace, b)[0] for b in BUDGETS)
    assert hits == LIBCACHESIM_HITS[("LFUDA", None)]  # pinned and rechecked in the golden tests
    assert hits != GOLDEN_HITS[("lfu", None)]  # 789 1181 1545 against LFU-DA's 723 1105 1545


@settings(max_examples=150, deadline=None)
@given(st.tuples(st.lists(st.integers(0, 9), min_size=1, max_size=60), st.integers(2, 8)))
def test_libcachesim_lfuda_model_reproduces_it_on_random_unit_traces(trace):
    keys, capacity = trace
    requests = [(key, 1) for key in keys]
    try:
        hits, highest = libcachesim_lfuda_hits(requests, capacity)
    except LibCacheSimWouldCrash:
        assume(False)  # libCacheSim would take the process down with it
    assume(highest < 100_000)  # libCacheSim's search would be slow
    assert hits == libcachesim_hits("LFUDA", requests, capacity)


def test_libcachesim_lfuda_crashes_where_the_model_says(golden_trace):
    # A cache of one object: "1 6 2". 1 enters at 1; 6 evicts it, which empties the cache: the
    # search for the next non-empty bucket finds none, so L stays 1; 6 enters at 2; 2 needs a
    # victim from bucket 1, which is empty.
    with pytest.raises(LibCacheSimWouldCrash):
        libcachesim_lfuda_hits([(1, 1), (6, 1), (2, 1)], 1)
    script = ("import libcachesim as lcs\n"
              "cache = lcs.LFUDA(cache_size=1, hashpower=4)\n"
              "req = lcs.Request()\n"
              "req.obj_size = 1\n"
              "for key in (1, 6, 2):\n"
              "    req.obj_id = key\n"
              "    cache.get(req)\n"
              "print('survived')\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode != 0 and "survived" not in run.stdout, run
    # The same on the golden trace at 5 kB and 10 kB (an eviction that empties the cache).
    for budget in (5_000, 10_000):
        with pytest.raises(LibCacheSimWouldCrash):
            libcachesim_lfuda_hits(golden_trace, budget)
