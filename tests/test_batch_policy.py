"""A policy that chooses a whole batch of victims at once from the view's candidates and features.

``AgeTimesSize`` is the shape of a learned policy without the model: one candidate selection
(``view.candidates``), one feature matrix (``view.features``), one vectorised score for all of
them, and a list of victims that covers the need. It is registered by name, built by
``PagedCache`` from that name, checked against victims derived by hand, and run through the
shared conformance suite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from policy_conformance import PolicyConformance, VictimsChecker

from edge.cache import PagedCache
from edge.cache.policies import POLICIES, EvictionPolicy, register_policy


class AgeTimesSize(EvictionPolicy):
    """Evict the candidates with the largest ``age * size`` first (old and big goes first)."""

    name = "test-age-times-size"

    @dataclass(frozen=True)
    class Params:
        k_lru: int = 8
        k_sample: int = 8

    def victims(self, need_bytes: int) -> list:
        view = self.view
        k_lru = self.params.k_lru
        while True:
            slots = view.candidates(k_lru, self.params.k_sample)
            keys = [view.key_of_slot(int(s)) for s in slots]
            # Fewer LRU candidates than asked for means every unpinned key is already listed.
            if sum(map(view.size_of, keys)) >= need_bytes or len(slots) < k_lru:
                break
            k_lru = max(2 * k_lru, 1)
        matrix = view.features(slots)
        column = view.feature_names.index
        score = matrix[:, column("age")] * matrix[:, column("size")]
        chosen, freed = [], 0
        for i in np.argsort(-score, kind="stable"):  # ties: candidate order, LRU first
            chosen.append(keys[i])
            freed += view.size_of(keys[i])  # bytes from the cache: float32 features round
            if freed >= need_bytes:
                break
        return chosen

    def victim(self):
        chosen = self.victims(1)
        return chosen[0] if chosen else None


@pytest.fixture
def registered():
    """The policy in the registry for one test (the registry is global; other tests list it)."""
    register_policy(AgeTimesSize)
    yield AgeTimesSize.name
    del POLICIES[AgeTimesSize.name]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


SIZES = {"a": 40, "b": 15, "c": 30, "d": 15, "e": 50}


def run_trace(policy, params=None, pin_c=False):
    """Budget 100. Requests at t = 0..5: a b c d a e (c held pinned from t=2 if ``pin_c``).
    Returns the unload order and the keys each victims() call gave."""
    clock = Clock()
    unloaded: list = []
    cache = PagedCache(100, policy, policy_params=params, clock=clock, load_workers=0,
                       loader=lambda k: (k, SIZES[k]), unloader=lambda k, v: unloaded.append(k))
    checker = VictimsChecker(cache)
    held = None
    for t, key in enumerate("abcdae"):
        clock.t = float(t)
        cm = cache.acquire(key)
        cm.__enter__()
        if key == "c" and pin_c:
            held = cm
        else:
            cm.__exit__(None, None, None)
    assert not checker.problems
    cache.verify()
    if held is not None:
        assert "c" in cache
        held.__exit__(None, None, None)
    return unloaded, [r for r in checker.rounds if r]


# At t=5 the cache is full (a40 b15 c30 d15 = 100; a was hit at t=4) and e needs 50 bytes.
# Ages (now - last access): a 1, b 4, c 3, d 2. age * size: a 40, b 60, c 90, d 30.
# - Nothing pinned: c (frees 30), then b (45), then a (85 >= 50): one call, [c, b, a]; d stays.
# - c pinned: b (15), then a (55 >= 50): [b, a].
# LRU on the same trace (order b c d a): b c d, and with c pinned b d a.
@pytest.mark.parametrize(("pin_c", "expected", "lru_expected"), [
    (False, ["c", "b", "a"], ["b", "c", "d"]),
    (True, ["b", "a"], ["b", "d", "a"]),
])
@pytest.mark.parametrize("params", [{}, {"k_lru": 1, "k_sample": 0}, {"k_lru": 0, "k_sample": 8}],
                         ids=["lru8+sample8", "lru1-widened", "sample-only"])
def test_the_batch_is_chosen_at_once_by_age_times_size(registered, params, pin_c, expected,
                                                       lru_expected):
    unloaded, rounds = run_trace(registered, params, pin_c)
    assert unloaded == expected
    assert rounds == [expected]  # one victims() call for the whole miss
    assert run_trace("lru", None, pin_c)[0] == lru_expected  # the score, not recency, decided


def test_the_policy_reads_one_feature_matrix_of_its_candidates(registered):
    clock = Clock()
    cache = PagedCache(100, registered, clock=clock, load_workers=0,
                       loader=lambda k: (k, SIZES[k]))
    for t, key in enumerate("abcda"):
        clock.t = float(t)
        with cache.acquire(key):
            pass
    clock.t = 5.0
    view = cache.view
    with cache._lock:
        slots = view.candidates(8, 8)
        assert [view.key_of_slot(int(s)) for s in slots] == ["b", "c", "d", "a"]  # LRU order
        matrix = view.features(slots)
        column = view.feature_names.index
        assert matrix[:, column("age")].tolist() == [4, 3, 2, 1]
        assert matrix[:, column("size")].tolist() == [15, 30, 15, 40]
        assert cache.policy.victims(50) == ["c", "b", "a"]
        assert cache.policy.victims(1) == ["c"] and cache.policy.victim() == "c"


@pytest.mark.parametrize("params", [AgeTimesSize.Params(), AgeTimesSize.Params(2, 2),
                                    AgeTimesSize.Params(0, 3)],
                         ids=["lru8+sample8", "lru2+sample2", "sample3"])
class TestAgeTimesSizeConformance(PolicyConformance):
    @pytest.fixture
    def new_policy(self, params):
        return lambda: AgeTimesSize(params)
