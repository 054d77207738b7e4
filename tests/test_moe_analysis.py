"""Routing-locality analysis (edge.moe.analysis) against hand counts and independent references.

Every golden value is derived by hand in the comments, from the definitions in
shared/FIELD-NOTES.md ("Local routing consistency"). The stack algorithms (one pass for all
capacities) are also held to brute-force one-capacity simulations written here, and LRU and
Belady to libCacheSim.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.moe import analysis as A
from edge.moe.commands import moe
from edge.moe.traces import routing_to_trace, save_routing
from edge.sim.trace import write_oracle_general


def one_layer(*tokens) -> np.ndarray:
    """A (tokens, 1, top_k) routing from each token's experts."""
    return np.array(tokens, dtype=np.int64).reshape(len(tokens), 1, -1)


def srp_of(routing, m, n_experts):
    prefix = A._activation_prefix_sums(routing[:, 0, :], n_experts)
    return A.best_f1(*A.srp_counts(prefix, m))


def hits_at(hist, capacity) -> int:
    return int(sum(hist[:capacity]))


# ---------------------------------------------------------------------------------------------
# SRP


def test_srp_perfectly_local_routing_is_one():
    # 8 tokens all on expert 0 of 2, m=4: 5 windows; c(w,0)=4, c(w,1)=0. A = 20. Any tau in
    # 1..4 predicts exactly the 5 pairs of expert 0: M = 20, P = 4*5 = 20, F1 = 40/40 = 1.
    # tau = 0 also predicts expert 1: P = 40, F1 = 40/60. Smallest best tau: 1.
    assert srp_of(one_layer(*[[0]] * 8), 4, 2) == (1.0, 1)


def test_srp_alternating_experts():
    # 0,1,0,1,0,1, m=4: 3 windows, each with c=2 for both experts (6 pairs). A = 12.
    # tau 0..2: M = 12, P = 4*6 = 24, F1 = 24/36 = 2/3; tau 3, 4: nothing predicted, F1 = 0.
    f1, tau = srp_of(one_layer([0], [1], [0], [1], [0], [1]), 4, 2)
    assert f1 == pytest.approx(2 / 3) and tau == 0


def test_srp_threshold_choice_matters():
    # 0,0,0,1,0,0,0, m=4: 4 windows, each c(w,0)=3, c(w,1)=1. A = 4*3 + 4*1 = 16.
    # tau 0, 1: all 8 pairs, M = 16, P = 32, F1 = 32/48 = 2/3.
    # tau 2, 3: the 4 expert-0 pairs, M = 12, P = 16, F1 = 24/32 = 3/4.  tau 4: F1 = 0.
    routing = one_layer([0], [0], [0], [1], [0], [0], [0])
    assert srp_of(routing, 4, 2) == (pytest.approx(0.75), 2)


def test_srp_overall_pools_matches_predictions_and_activations():
    # Layer 0: the threshold case above. Layer 1: 7 tokens on expert 0, m=4: 4 windows with
    # c=4 (expert 0) and c=0 (expert 1): A = 16, M(tau) = 16 for every tau, P(0) = 32,
    # P(1..4) = 16. Pooled: A = 32.
    #   tau 0: M = 32, P = 64: 64/96.   tau 1: M = 32, P = 32 + 16 = 48: 64/80 = 0.8.
    #   tau 2, 3: M = 12 + 16 = 28, P = 16 + 16 = 32: 56/64 = 0.875.
    #   tau 4: M = 16, P = 16: 32/48.   Overall SRP(4) = 0.875 at tau 2.
    layer0 = [0, 0, 0, 1, 0, 0, 0]
    routing = np.array([[[e], [0]] for e in layer0])
    result = A.analyze(routing, windows=(4,), capacity_multiples=(1,))
    assert result.layers[0].srp[4] == pytest.approx(0.75)
    assert result.layers[1].srp[4] == pytest.approx(1.0)
    assert result.overall.srp[4] == pytest.approx(0.875)
    assert result.overall.srp_threshold[4] == 2


def test_windows_longer_than_the_trace_are_left_out():
    routing = one_layer(*[[0]] * 20)
    assert A.analyze(routing, windows=(4, 16, 64)).windows == (4, 16)


# ---------------------------------------------------------------------------------------------
# Hit curves: hand counts


# The cyclic sequence 0 1 2 0 1 2 0 1 (top-1, 3 experts) at capacity 2, first-use convention:
# 0 and 1 are first uses with a free slot (hits); 2 is a first use with the cache full (miss).
CYCLE = one_layer([0], [1], [2], [0], [1], [2], [0], [1])


def test_lru_on_the_cycle():
    # After the three first uses every reuse has 2 distinct experts in between: depths
    # 0, 1, 2, then 2 five times. At capacity 2: the 2 first-use hits only.
    depths = A.lru_depths(CYCLE[:, 0, :], 3)
    assert depths.tolist() == [0, 1, 2, 2, 2, 2, 2, 2]


def test_lru_orders_a_tokens_experts_as_listed():
    # top-2 tokens [0,1], [1,0], [0,2] replay as 0 1 1 0 0 2. Depths: 0 (first, 0 seen),
    # 1 (first, 1 seen), 0 (1 again at once), 1 (0: expert 1 in between), 0, 2 (first, 2 seen).
    depths = A.lru_depths(np.array([[0, 1], [1, 0], [0, 2]]), 3)
    assert depths.tolist() == [0, 1, 0, 1, 0, 2]


def test_belady_on_the_cycle():
    # Capacity 2. t2: 2 misses, evicts 1 (next use t4, later than 0's t3) -> {0,2}.
    # t3: 0 hit. t4: 1 misses, evicts 0 (next t6; 2's is t5) -> {2,1}. t5: 2 hit.
    # t6: 0 misses, evicts 2 (never again) -> {1,0}. t7: 1 hit. Hits: 2 first + 3 = 5.
    assert hits_at(A.belady_hist(CYCLE[:, 0, :], 3), 2) == 5


def test_lfu_on_the_cycle():
    # Capacity 2, priority (uses so far, last use). t2: 2 misses; 0 and 1 both used once, 0
    # least recently: evicted. From then on every use finds its expert evicted just before
    # (each eviction removes the older of two equally used experts, which is the next one
    # needed): hits = the 2 first uses.
    assert hits_at(A.lfu_hist(CYCLE[:, 0, :], 3), 2) == 2


def test_sch_lookahead_beats_lru_on_the_cycle():
    # m=4, capacity 2; uses ahead counted over tokens t..t+3 not yet made (FIELD-NOTES).
    # t0: 0 first, free slot: hit. Then window 1..4 = 1 2 0 1.  t1: 1 first, free: hit.
    # t2 (window 2..5 = 2 0 1 2: 0 once, 1 once): 2 first, full: miss; 0 and 1 tie on one use
    #   ahead, 0 least recent: evicted -> {1,2}.
    # t3 (window 3..6 = 0 1 2 0): 0 misses; 1 and 2 one use each: 1 older, evicted -> {2,0}.
    # t4 (window 4..7 = 1 2 0 1): 1 misses; 2 and 0 one each: 2 older -> {0,1}.
    # t5 (window 5..7 = 2 0 1): 2 misses; 0 and 1 one each: 0 older -> {1,2}.
    # t6 (window 6..7 = 0 1): 0 misses; 2 has none ahead, 1 has one: 2 evicted -> {1,0}.
    # t7: 1 hits. SCH(4, 2) = 3/8, LRU at 2 = 2/8 (test_lru_on_the_cycle).
    assert hits_at(A.sch_hist(CYCLE[:, 0, :], 4, 3), 2) == 3
    result = A.analyze(CYCLE, windows=(4,), capacity_multiples=(2,))
    assert result.layers[0].sch[4][2] == pytest.approx(3 / 8)
    assert result.layers[0].curves["lru"][2] == pytest.approx(2 / 8)


def test_sch_looks_up_a_token_against_the_cache_it_found():
    # top-2, capacity 2, m=4: tokens [0,1], [2,1], [0,1]. t1: 2 misses, the cache {0,1} is
    # full: uses ahead in tokens 1..3 not yet made: 0 once (t2), 1 twice (t1 not yet made,
    # t2): 0 evicted -> {1,2}; 1 was in the cache when the token began: a hit. t2: 0 misses
    # (evicting 2, none ahead), 1 hits. Hits: 2 first uses + 1 + 1 = 4 of 6.
    routing = one_layer([0, 1], [2, 1], [0, 1])
    assert hits_at(A.sch_hist(routing[:, 0, :], 4, 3), 2) == 4


def test_every_curve_reaches_one_when_all_experts_fit():
    routing = np.random.default_rng(0).permuted(np.tile(np.arange(8), (50, 1)), axis=1)[:, :3]
    result = A.analyze(routing[:, None, :], windows=(4,), capacity_multiples=(3,))
    curves = result.layers[0].curves
    assert curves["lru"][8] == 1.0 and curves["lru"][0] == 0.0
    assert curves["belady"][8] == 1.0 and curves["lfu"][8] == 1.0  # max_capacity = min(8, 9)


# ---------------------------------------------------------------------------------------------
# Hit curves: brute-force references and properties


def reference_hits(uses: list[int], capacity: int, victim) -> int:
    """A one-capacity cache over ``uses``; ``victim(cache, i)`` picks whom to evict at use i."""
    cache: set[int] = set()
    seen: set[int] = set()
    hits = 0
    for i, x in enumerate(uses):
        if x in cache:
            hits += 1
        elif len(cache) < capacity:
            hits += x not in seen  # a first use with a free slot is not a miss
            cache.add(x)
        else:
            cache.discard(victim(cache, i))
            cache.add(x)
        seen.add(x)
    return hits


def last_use_before(uses, e, i) -> int:
    return max(j for j in range(i) if uses[j] == e)


def reference_lru(uses, capacity):
    return reference_hits(uses, capacity,
                          lambda cache, i: min(cache, key=lambda e: last_use_before(uses, e, i)))


def reference_belady(uses, capacity):
    def next_use(e, i):
        return next((j for j in range(i + 1, len(uses)) if uses[j] == e), len(uses) + 1)
    return reference_hits(uses, capacity, lambda cache, i: max(cache, key=lambda e: next_use(e, i)))


def reference_lfu(uses, capacity):
    def victim(cache, i):
        done = uses[:i]
        return min(cache, key=lambda e: (done.count(e), last_use_before(uses, e, i)))
    return reference_hits(uses, capacity, victim)


def reference_sch(tokens: list[list[int]], m: int, capacity: int) -> int:
    """FIELD-NOTES' SCH, one capacity, straight from the words: lookups against the cache as the
    token found it, then the token's experts loaded in order; a victim has the fewest uses in
    tokens t..t+m-1 not yet made (ties: least recently used)."""
    cache: list[int] = []
    seen: set[int] = set()
    last: dict[int, int] = {}
    clock = hits = 0
    for t, token in enumerate(tokens):
        for x in token:
            if x in cache:
                hits += 1
            elif x not in seen and len(seen) < capacity:
                hits += 1
            seen.add(x)
        for q, x in enumerate(token):
            if x not in cache:
                if len(cache) == capacity:
                    ahead = [e for tok in tokens[t + 1:t + m] for e in tok] + token[q:]
                    cache.remove(min(cache, key=lambda e: (ahead.count(e), last[e])))
                cache.append(x)
            clock += 1
            last[x] = clock
    return hits


routings = st.integers(2, 6).flatmap(lambda n_experts: st.integers(1, min(3, n_experts)).flatmap(
    lambda top_k: st.lists(st.permutations(range(n_experts)).map(lambda p: list(p[:top_k])),
                           min_size=1, max_size=40).map(lambda rows: (np.array(rows),
                                                                      n_experts))))


@settings(max_examples=60, deadline=None)
@given(routings)
def test_stack_passes_equal_one_capacity_simulations(case):
    routing, n_experts = case
    uses = routing.ravel().tolist()
    lru = np.bincount(A.lru_depths(routing, n_experts), minlength=n_experts + 1)
    lfu = A.lfu_hist(routing, n_experts)
    belady = A.belady_hist(routing, n_experts)
    for capacity in range(1, n_experts + 1):
        assert hits_at(lru, capacity) == reference_lru(uses, capacity)
        assert hits_at(lfu, capacity) == reference_lfu(uses, capacity)
        assert hits_at(belady, capacity) == reference_belady(uses, capacity)
        for m in (1, 2, 4):
            assert hits_at(A.sch_hist(routing, m, n_experts), capacity) == \
                reference_sch(routing.tolist(), m, capacity)


def test_stack_passes_below_the_expert_count_equal_one_capacity_simulations():
    # cap < n_experts: experts fall off the bottom of the stack and come back as misses, the
    # path the small hypothesis cases (cap = n_experts) never take. Routing with locality and
    # without, 16 experts, top 3.
    rng = np.random.default_rng(5)
    sticky = [rng.choice(16, 3, replace=False)]
    for _ in range(299):
        sticky.append(sticky[-1] if rng.random() < 0.6 else rng.choice(16, 3, replace=False))
    for routing in (np.array(sticky), np.argsort(rng.random((300, 16)), axis=1)[:, :3]):
        uses, cap = routing.ravel().tolist(), 7
        lfu, belady = A.lfu_hist(routing, cap), A.belady_hist(routing, cap)
        assert sum(lfu) == sum(belady) == routing.size
        for capacity in range(1, cap + 1):
            assert hits_at(lfu, capacity) == reference_lfu(uses, capacity)
            assert hits_at(belady, capacity) == reference_belady(uses, capacity)
            for m in (1, 4, 16):
                assert hits_at(A.sch_hist(routing, m, cap), capacity) == \
                    reference_sch(routing.tolist(), m, capacity)


def test_stack_passes_refuse_bad_arguments():
    from edge._native.stacks import lookahead_stack_hist, priority_stack_hist

    with pytest.raises(ValueError, match="experts must lie in 0..3, got 0..4"):
        priority_stack_hist(np.array([0, 4]), np.array([1, 2]), 4, 2)
    with pytest.raises(ValueError, match="same length"):
        priority_stack_hist(np.array([0, 1]), np.array([1]), 4, 2)
    with pytest.raises(ValueError, match="n_experts and cap must be >= 1"):
        priority_stack_hist(np.array([0]), np.array([1]), 4, 0)
    with pytest.raises(ValueError, match="the window m must be >= 1"):
        lookahead_stack_hist(np.array([[0, 1]]), 0, 4, 2)
    with pytest.raises(ValueError, match=r"tokens must be \(n_tokens, top_k\)"):
        lookahead_stack_hist(np.array([0, 1]), 1, 4, 2)


@settings(max_examples=40, deadline=None)
@given(routings)
def test_belady_never_below_lru_or_lfu(case):
    routing, n_experts = case
    result = A.analyze(routing[:, None, :], windows=(1,), capacity_multiples=(n_experts,),
                       n_experts=n_experts)
    curves = result.layers[0].curves
    for capacity in range(n_experts + 1):
        assert curves["belady"][capacity] >= curves["lru"][capacity] - 1e-12
        assert curves["belady"][capacity] >= curves["lfu"][capacity] - 1e-12


def test_lru_and_belady_match_libcachesim_on_a_converted_trace(tmp_path):
    # libCacheSim counts every first use as a miss; ours counts the first uses that found a
    # free slot as hits: at capacity C those are the first min(C, distinct experts) of them.
    import libcachesim as lcs  # a dev dependency: never skipped

    from edge.sim.generate import moe_routing
    routing = moe_routing(300, 1, 16, 2, 0.5, seed=3).experts
    path = tmp_path / "layer.oracleGeneral.bin"
    write_oracle_general(routing_to_trace(routing, 1), path)
    lru = np.bincount(A.lru_depths(routing[:, 0, :], 16), minlength=17)
    belady = A.belady_hist(routing[:, 0, :], 16)
    distinct = len(np.unique(routing))
    checked = 0
    for capacity in (1, 2, 3, 5, 8, 12):
        for name, hist in (("LRU", lru), ("Belady", belady)):
            reader = lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE,
                                     lcs.ReaderInitParam(ignore_obj_size=True))
            miss_ratio, _ = getattr(lcs, name)(cache_size=capacity, hashpower=12) \
                .process_trace(reader)
            lcs_hits = round(routing.size * (1 - miss_ratio))
            assert lcs_hits == hits_at(hist, capacity) - min(capacity, distinct), (name, capacity)
            checked += 1
    assert checked == 12


# ---------------------------------------------------------------------------------------------
# Knee


def test_knee_of_a_synthetic_curve():
    # E = 8. h = 0, .5, .8, .9, .94, .96, .98, .99, 1. Height above the line C/8:
    # C=1: .5-.125 = .375; C=2: .8-.25 = .55; C=3: .9-.375 = .525; C=4: .94-.5 = .44.
    # Knee at 2 with gain .55.
    capacity, gain = A.knee([0, .5, .8, .9, .94, .96, .98, .99, 1.0])
    assert capacity == 2 and gain == pytest.approx(0.55)


def test_knee_of_a_straight_line_has_no_gain():
    capacity, gain = A.knee([c / 4 for c in range(5)])
    assert gain == pytest.approx(0.0) and capacity == 1


def test_knee_lands_near_twice_the_active_experts_on_local_routing():
    from edge.sim.generate import moe_routing
    routing = moe_routing(3000, 2, 32, 4, 0.8, seed=1).experts
    result = A.analyze(routing, windows=(4,), capacity_multiples=(1,))
    for layer in result.layers:
        assert 4 <= layer.knee <= 12 and layer.knee_gain > 0.3


# ---------------------------------------------------------------------------------------------
# Options and the CLI


def test_bad_options_are_named():
    routing = one_layer([0], [1])
    with pytest.raises(ValueError, match="window"):
        A.analyze(routing, windows=(0,))
    with pytest.raises(ValueError, match="n_experts=1 but the trace uses expert 1"):
        A.analyze(routing, n_experts=1)


def test_cli_analyzes_a_npy_trace_and_writes_json(tmp_path):
    trace = tmp_path / "routing.npy"
    save_routing(np.array([[[0], [0]], [[0], [1]], [[0], [0]], [[1], [0]], [[0], [0]],
                           [[0], [0]], [[0], [0]]]), trace)  # layer 0 is the threshold case
    out = tmp_path / "report.json"
    result = CliRunner().invoke(moe, ["analyze", str(trace), "--json", str(out), "--window", "4",
                                      "--capacity", "1,2"])
    assert result.exit_code == 0, result.output
    assert "SRP(4)" in result.output and "overall" in result.output
    report = json.loads(out.read_text())
    assert report["layers"][0]["srp"]["4"] == pytest.approx(0.75)
    assert report["n_tokens"] == 7 and report["n_layers"] == 2 and report["top_k"] == 1


def test_cli_reads_a_simulator_trace_the_same(tmp_path):
    routing = np.array([[[0, 1]], [[2, 1]], [[0, 1]]])
    npy, csv = tmp_path / "r.npy", tmp_path / "r.csv"
    save_routing(routing, npy)
    from edge.moe.traces import write_routing_trace
    write_routing_trace(routing, csv, expert_bytes=1000)
    reports = []
    for path in (npy, csv):
        out = tmp_path / f"{path.suffix[1:]}.json"
        result = CliRunner().invoke(moe, ["analyze", str(path), "--json", str(out),
                                          "--window", "2", "--capacity", "1"])
        assert result.exit_code == 0, result.output
        reports.append(json.loads(out.read_text()))
    assert reports[0] == reports[1]
    # The SCH case above (test_sch_looks_up_a_token_against_the_cache_it_found) at m=2: t1
    # evicts 0 (one use ahead in tokens 1..2 not yet made, 1 has two), t2 evicts 2 (none
    # ahead) -> the same 4 hits of 6.
    assert reports[0]["layers"][0]["sch"]["2"]["1"] == pytest.approx(4 / 6)


def test_cli_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 2)))
    result = CliRunner().invoke(moe, ["analyze", str(bad)])
    assert result.exit_code == 1
    assert str(bad) in result.output and "integer" in result.output
    result = CliRunner().invoke(moe, ["analyze", str(tmp_path / "r.npy"), "--window", "4,x"])
    assert result.exit_code == 2
