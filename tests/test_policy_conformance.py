"""Runs the shared conformance suite (tests/policy_conformance.py) for every registered policy."""

from __future__ import annotations

import pytest
from policy_conformance import PolicyConformance

from edge.cache.policies import EvictionPolicy, make_policy, policy_names
from edge.errors import EdgeError


@pytest.fixture(params=policy_names())
def policy_name(request) -> str:
    return request.param


# The learned policy falls back to LRU for a decision over its time budget: with the default
# budget, twin caches could decide differently on a loaded machine. Its conformance is about
# its decisions, so the budget is unbounded here (tests/test_learned_policy.py covers the rest).
DETERMINISTIC = {"learned": {"budget_us": 1e9}}


class TestRegisteredPolicy(PolicyConformance):
    @pytest.fixture
    def new_policy(self, policy_name):
        return lambda: make_policy(policy_name, DETERMINISTIC.get(policy_name))


def test_the_suite_covers_the_policies_of_the_foundation():
    # policy_names() is the parametrisation above; this guards against a module not imported.
    assert {"lru", "fifo", "lfu", "gdsf", "s3fifo", "arc"} <= set(policy_names())


# -- the suite can fail: policies with known defects must be caught ---------------------------

class _IgnoresPins(EvictionPolicy):
    """FIFO that forgets to skip pinned keys."""

    name = "broken-ignores-pins"

    def __init__(self, params=None):
        super().__init__(params)
        self.queue: dict = {}

    def on_insert(self, key, slot, size):
        self.queue[key] = None

    def on_evict(self, key, slot):
        del self.queue[key]

    def victim(self):
        return next(iter(self.queue), None)


class _DecidesWhileAsked(EvictionPolicy):
    """FIFO whose victim() rotates its queue: asking changes the answer."""

    name = "broken-side-effects"

    def __init__(self, params=None):
        super().__init__(params)
        self.queue: dict = {}

    def on_insert(self, key, slot, size):
        self.queue[key] = None

    def on_evict(self, key, slot):
        del self.queue[key]

    def victim(self):
        for key in list(self.queue):
            del self.queue[key]
            self.queue[key] = None  # second chance for everyone, granted on every question
            if not self.view.is_pinned(key):
                return key
        return None


class _FIFO(EvictionPolicy):
    name = "broken-fifo-base"

    def __init__(self, params=None):
        super().__init__(params)
        self.queue: dict = {}

    def on_insert(self, key, slot, size):
        self.queue[key] = None

    def on_evict(self, key, slot):
        del self.queue[key]

    def victim(self):
        return next((k for k in self.queue if not self.view.is_pinned(k)), None)


class _BatchTooShort(_FIFO):
    """Answers every need with one key: the cache copes (it asks again), the contract does not."""

    name = "broken-batch-too-short"

    def victims(self, need_bytes):
        key = self.victim()
        return [] if key is None else [key]


class _BatchWithPinned(_FIFO):
    """A batch of the oldest keys, pinned or not."""

    name = "broken-batch-with-pinned"

    def victims(self, need_bytes):
        chosen, freed = [], 0
        for key in self.queue:
            if freed >= need_bytes:
                break
            chosen.append(key)
            freed += self.view.size_of(key)
        return chosen


class _BatchRepeats(_FIFO):
    """Lists its first victim twice when one is not enough."""

    name = "broken-batch-repeats"

    def victims(self, need_bytes):
        keys = [k for k in self.queue if not self.view.is_pinned(k)]
        return keys[:1] + keys if keys else []


class _BatchDecidesWhileAsked(_FIFO):
    """Every question sends the queue's head to the back."""

    name = "broken-batch-side-effects"

    def victims(self, need_bytes):
        for key in list(self.queue)[:1]:
            del self.queue[key]
            self.queue[key] = None
        return [k for k in self.queue if not self.view.is_pinned(k)]


class _BrokenSuite(PolicyConformance):
    pass


@pytest.mark.parametrize(("broken", "test"), [
    (_IgnoresPins, "test_objects_held_open_survive_many_other_acquires"),
    (_IgnoresPins, "test_budget_pins_accounting_and_verify_under_a_random_workload"),
    (_DecidesWhileAsked, "test_victim_is_side_effect_free"),
    (_BatchTooShort, "test_victims_as_the_cache_takes_them_are_legal_and_enough"),
    (_BatchTooShort, "test_victims_is_side_effect_free"),
    (_BatchWithPinned, "test_victims_as_the_cache_takes_them_are_legal_and_enough"),
    (_BatchWithPinned, "test_victims_is_side_effect_free"),
    (_BatchRepeats, "test_victims_as_the_cache_takes_them_are_legal_and_enough"),
    (_BatchRepeats, "test_victims_is_side_effect_free"),
    (_BatchDecidesWhileAsked, "test_victims_is_side_effect_free"),
])
def test_the_suite_catches_broken_policies(broken, test):
    with pytest.raises((AssertionError, EdgeError)):
        getattr(_BrokenSuite(), test)(lambda: broken())
