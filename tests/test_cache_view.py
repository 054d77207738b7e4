"""The read-only ``CacheView`` a ``PagedCache`` gives its policy: exactly the documented methods,
no way to reach the index, and no call that changes the cache (its C generator included)."""

from __future__ import annotations

import numpy as np
import pytest

from edge._native import FEATURE_NAMES, N_FEATURES
from edge.cache import CacheView, PagedCache
from edge.errors import EdgeError

API = {"budget", "now", "key_of_slot", "slot_of", "is_pinned", "size_of", "free_bytes",
       "lru_victim_slot", "load_cost", "demand_of", "candidates", "decision_inputs", "features",
       "feature_names"}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def filled(n=30, pinned=(3, 7, 11), seed=0):
    """A cache of ``n`` keys (key k: 10 + k bytes, load cost k / 100, loaded at t = k, keys
    divisible by 5 hit again at the end), with ``pinned`` held; returns (cache, the open pins)."""
    clock = Clock()
    cache = PagedCache(10_000, "lru", clock=clock, load_workers=0, seed=seed,
                       loader=lambda k: (f"v{k}", 10 + k, k / 100))
    for k in range(n):
        clock.t = float(k)
        with cache.acquire(k):
            pass
    for k in range(0, n, 5):
        clock.t += 1
        with cache.acquire(k):
            pass
    pins = []
    for k in pinned:
        clock.t += 1
        pins.append(cache.acquire(k))
        pins[-1].__enter__()
    clock.t += 1
    return cache, pins


def state(cache: PagedCache):
    """Everything a view call could change, as the cache and its index report it."""
    index = cache._index
    slots = {key: cache.view.slot_of(key) for key in cache.resident()}
    return (list(cache.resident().items()), cache.stats(), index.totals(),
            {key: index.slot_info(slot) for key, slot in slots.items()})


def test_the_view_offers_exactly_the_documented_read_only_api():
    cache, _ = filled()
    view = cache.view
    assert cache.policy.view is view
    assert isinstance(view, CacheView) and not isinstance(view, PagedCache)
    assert {name for name in dir(view) if not name.startswith("_")} == API
    assert {name for name in vars(CacheView) if not name.startswith("_")} == API
    assert not hasattr(view, "index")
    with pytest.raises(AttributeError):
        view.index = cache._index  # no attribute can be added
    with pytest.raises(AttributeError):
        view.budget = 1
    assert not hasattr(cache, "index")  # nor is the index public on the cache


def test_no_view_call_changes_the_cache_or_its_generator():
    cache, pins = filled(seed=5)
    twin, twin_pins = filled(seed=5)
    before = state(cache)
    view = cache.view
    for _ in range(3):
        for key in cache.resident():
            slot = view.slot_of(key)
            assert view.key_of_slot(slot) == key
            view.is_pinned(key), view.size_of(key), view.load_cost(slot)
        view.budget, view.now(), view.lru_victim_slot(), view.feature_names
        for k_lru, k_sample in [(0, 0), (1, 0), (0, 4), (5, 5), (100, 100)]:
            view.features(view.candidates(k_lru, k_sample))
            view.decision_inputs(k_lru, k_sample, 0.5, 0.25)
    assert state(cache) == before
    # The index's own sampler did not move: its next draw is the untouched twin's.
    assert cache._index.sample_unpinned(6) == twin._index.sample_unpinned(6)
    for cm in pins + twin_pins:
        cm.__exit__(None, None, None)


def test_decision_inputs_are_the_candidates_and_model_inputs_of_their_features():
    """One C call per decision: the same slots as ``candidates`` and the rows that the numpy
    definition the trainer uses (``model_inputs``) makes of their features."""
    from edge.learned.network import N_INPUTS, model_inputs

    cache, pins = filled(seed=3)
    view = cache.view
    for k_lru, k_sample, k_mru in [(0, 0, 0), (2, 0, 0), (0, 5, 0), (3, 5, 0), (100, 100, 0),
                                   (0, 0, 4), (3, 5, 4)]:
        slots, inputs = view.decision_inputs(k_lru, k_sample, 0.5, 0.25, k_mru=k_mru)
        np.testing.assert_array_equal(slots, view.candidates(k_lru, k_sample, k_mru))
        want = model_inputs(view.features(slots), 0.0, 0.5, 0.25)
        np.testing.assert_allclose(inputs, want, rtol=1e-6, atol=0)
        assert inputs.shape == (len(slots), N_INPUTS) and inputs.dtype == np.float32
        # The view's arrays are the index's reused buffers (grown, then shrunk, by this loop):
        # the same as new arrays for the same draw.
        fresh_slots, fresh_inputs = cache._index.decision_inputs(
            k_lru, k_sample, view._draw_seed(), view._clock(), 0.5, 0.25, k_head=k_mru)
        np.testing.assert_array_equal(slots, fresh_slots)
        np.testing.assert_array_equal(inputs, fresh_inputs)
    again_slots, _ = view.decision_inputs(3, 5, 0.5, 0.25, k_mru=4)
    assert np.shares_memory(slots, again_slots)  # reused: valid until the next call
    with pytest.raises(ValueError, match="must be >= 0"):
        view.decision_inputs(-1, 2, 0.0, 0.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        view.decision_inputs(1, 2, 0.0, 0.0, k_mru=-1)
    for cm in pins:
        cm.__exit__(None, None, None)


def test_keys_slots_sizes_pins_costs_and_time():
    cache, pins = filled()
    view = cache.view
    assert view.budget == 10_000 and view.now() == cache._clock()
    slot = view.slot_of(12)
    assert (view.key_of_slot(slot), view.size_of(12), view.load_cost(slot)) == (12, 22, 0.12)
    assert view.is_pinned(3) and not view.is_pinned(4)
    assert view.key_of_slot(view.lru_victim_slot()) == 1  # 0 was hit again, 3 is pinned
    with pytest.raises(KeyError):
        view.slot_of("absent")
    with pytest.raises(KeyError):
        view.key_of_slot(10_000)
    cache.resize(10_000)
    with cache.acquire(99, lambda k: ("x", 1)):
        pass
    assert view.size_of(99) == 1
    for cm in pins:
        cm.__exit__(None, None, None)
    assert not view.is_pinned(3)
    assert cache.discard(12)
    with pytest.raises(KeyError):
        view.key_of_slot(slot)
    with pytest.raises(KeyError):
        view.load_cost(slot)


def test_candidates_lru_first_then_a_deterministic_uniform_draw():
    cache, pins = filled()
    view = cache.view
    pinned = {3, 7, 11}
    unpinned_lru = [k for k in cache.resident() if k not in pinned]  # LRU end first

    def keys(slots):
        assert slots.dtype == np.int32
        return [view.key_of_slot(int(s)) for s in slots]

    assert keys(view.candidates(4, 0)) == unpinned_lru[:4]
    assert keys(view.candidates(0, 0)) == []
    everything = keys(view.candidates(100, 100))
    assert everything == unpinned_lru  # the draw adds nothing new when the walk took them all
    drawn = keys(view.candidates(0, 5))
    assert len(set(drawn)) == 5 and not pinned & set(drawn)
    assert keys(view.candidates(0, 5)) == drawn  # the same state gives the same draw
    mixed = keys(view.candidates(3, 5))
    assert mixed[:3] == unpinned_lru[:3] and len(set(mixed)) == len(mixed)
    assert 3 <= len(mixed) <= 8 and set(mixed[3:]) <= set(drawn)
    # The MRU head: the most recently used unpinned keys, MRU first, after the tail and before
    # the draw, each key once.
    assert keys(view.candidates(0, 0, 4)) == unpinned_lru[::-1][:4]
    with_head = keys(view.candidates(3, 5, 4))
    assert with_head[:7] == unpinned_lru[:3] + unpinned_lru[::-1][:4]
    assert set(with_head[7:]) <= set(drawn) and len(set(with_head)) == len(with_head)
    assert keys(view.candidates(100, 0, 100)) == unpinned_lru  # the head adds nothing new
    with pytest.raises(ValueError):
        view.candidates(-1, 2)
    with pytest.raises(ValueError):
        view.candidates(1, 2, -1)
    # Each eviction round draws afresh (and over many rounds every unpinned key comes up).
    seen, draws = set(), set()
    for k in range(100, 140):
        cache.resize(cache.stats().resident_bytes)  # full: the next miss evicts one key
        with cache.acquire(k, lambda key: ("x", 1)):
            pass
        drawn = tuple(keys(view.candidates(0, 5)))
        seen |= set(drawn)
        draws.add(drawn)
    assert len(draws) > 30
    assert len(seen) > 20
    for cm in pins:
        cm.__exit__(None, None, None)


def test_features_are_the_c_cores_matrix_in_a_reused_read_only_buffer():
    cache, pins = filled()
    view = cache.view
    assert view.feature_names == FEATURE_NAMES
    slots = view.candidates(6, 0)
    first = view.features(slots)
    assert first.shape == (6, N_FEATURES) and first.dtype == np.float32
    expected = cache._index.features(slots, view.now())
    assert np.array_equal(first, expected)
    age = first[:, FEATURE_NAMES.index("age")]
    assert age.tolist() == [view.now() - k for k in (1, 2, 4, 6, 8, 9)]
    with pytest.raises(ValueError):
        first[0, 0] = 1.0  # the view's buffer: read-only for the policy
    kept = first.copy()
    second = view.features(slots[::-1])
    assert np.shares_memory(first, second)  # valid only until the next call, as documented
    assert np.array_equal(second, kept[::-1]) and np.array_equal(first, kept[::-1])
    assert view.features([]).shape == (0, N_FEATURES)
    big = view.features(view.candidates(100, 0))
    assert big.shape == (27, N_FEATURES)  # the buffer grows as needed
    with pytest.raises(EdgeError):
        view.features([10_000])
    for cm in pins:
        cm.__exit__(None, None, None)


def test_free_bytes_is_the_budget_less_resident_and_reserved_bytes():
    cache, _ = filled()
    # Keys 0..29 of 10 + k bytes: 300 + 435 = 735 resident, nothing loading.
    assert cache.view.free_bytes() == 10_000 - 735
    held = cache.acquire(1000, nbytes=5, loader=lambda k: ("x", 5))
    with held:  # resident now: 5 more bytes
        assert cache.view.free_bytes() == 10_000 - 740
