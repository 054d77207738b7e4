"""The C core through its Python wrapper: semantics, errors, batch calls, sampling, replay."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import pytest

from edge._native import FEATURE_NAMES, N_FEATURES, NativeIndex
from edge.errors import (
    NativeBusy,
    NativeError,
    NativeInvalidArgument,
    NativeKeyExists,
    NativeKeyNotFound,
)

ROOT = Path(__file__).resolve().parents[1]


def test_insert_lookup_remove_and_totals():
    idx = NativeIndex()
    slot = idx.insert(42, 1000, now=1.0, load_cost=0.25)
    assert idx.lookup(42) == slot
    assert idx.lookup(7) == -1
    info = idx.slot_info(slot)
    assert (info.key, info.size, info.accesses, info.load_cost) == (42, 1000, 1, 0.25)
    assert idx.totals().bytes == 1000 and idx.totals().count == 1
    idx.remove(42)
    assert idx.lookup(42) == -1
    assert idx.totals().bytes == 0
    idx.verify()


def test_status_codes_map_to_error_classes_with_messages():
    idx = NativeIndex()
    idx.insert(1, 10, now=0.0)
    with pytest.raises(NativeKeyExists, match="already present"):
        idx.insert(1, 10, now=0.0)
    with pytest.raises(NativeKeyNotFound, match="not found"):
        idx.remove(2)
    with pytest.raises(NativeInvalidArgument, match="invalid argument"):
        idx.insert(3, 0, now=0.0)  # zero size
    with pytest.raises(NativeInvalidArgument):
        idx.pin(12345)  # no such slot
    slot = idx.acquire(1, now=1.0)
    with pytest.raises(NativeBusy, match="pin state"):
        idx.remove(1)  # pinned
    idx.unpin(slot)
    with pytest.raises(NativeBusy):
        idx.unpin(slot)  # not pinned any more
    assert issubclass(NativeBusy, NativeError)


def test_lru_order_touch_and_pinned_walk():
    idx = NativeIndex()
    for key in range(5):
        idx.insert(key, 1, now=float(key))
    idx.touch(0, now=10.0)  # 0 becomes most recent
    order = [idx.slot_info(s).key for s in idx.walk_lru(10, skip_pinned=False)]
    assert order == [1, 2, 3, 4, 0]
    idx.acquire(1, now=11.0)  # pinned and most recent
    assert [idx.slot_info(s).key for s in idx.walk_lru(2)] == [2, 3]
    assert idx.slot_info(idx.lru_victim()).key == 2
    idx.verify()


def test_all_pinned_has_no_victim():
    idx = NativeIndex()
    for key in range(3):
        idx.insert(key, 1, now=0.0, pins=1)
    assert idx.lru_victim() == -1
    assert idx.walk_lru(3) == []
    assert idx.sample_unpinned(2) == []
    assert idx.totals().pinned_bytes == 3


def test_features_match_slot_metadata():
    idx = NativeIndex()
    a = idx.insert(1, 4096, now=0.0, load_cost=0.5)
    b = idx.insert(2, 100, now=1.0)
    idx.touch(1, now=4.0)  # gap 4
    idx.touch(1, now=6.0)  # gap 2 -> ewma 0.25*2 + 0.75*4 = 3.5
    feats = idx.features([a, b], now=10.0)
    assert feats.shape == (2, N_FEATURES) and feats.dtype == np.float32
    row = dict(zip(FEATURE_NAMES, feats[0], strict=True))
    assert row == {"age": 4.0, "size": 4096.0, "accesses": 3.0, "iat": 3.5, "load_cost": 0.5,
                   "residency": 10.0, "past_accesses": 0.0, "past_residencies": 0.0}
    row_b = dict(zip(FEATURE_NAMES, feats[1], strict=True))
    assert row_b["iat"] == row_b["residency"] == 9.0  # never re-accessed: residency bounds it
    out = np.zeros((4, N_FEATURES), dtype=np.float32)
    assert idx.features([b], now=10.0, out=out) is out and out[0, 1] == 100.0
    with pytest.raises(ValueError, match="float32"):
        idx.features([a], now=1.0, out=np.zeros((1, N_FEATURES)))


def test_batch_lookup_and_touch_many():
    idx = NativeIndex()
    for key in range(0, 100, 2):
        idx.insert(key, 1, now=0.0)
    keys = np.arange(100, dtype=np.uint64)
    slots = idx.lookup_many(keys)
    assert (slots[::2] >= 0).all() and (slots[1::2] == -1).all()
    touched = idx.touch_many(keys[:10], now=5.0)
    assert (touched == slots[:10]).all()
    assert idx.slot_info(int(slots[0])).accesses == 2
    assert idx.slot_info(int(slots[20])).accesses == 1


def test_growth_keeps_everything_findable():
    idx = NativeIndex(initial_capacity=1)
    keys = np.unique(np.random.default_rng(0).integers(0, 2**64, size=5000, dtype=np.uint64))
    for k in keys:
        idx.insert(int(k), 1, now=0.0)
    assert idx.totals().capacity >= len(keys) > 4990
    assert (idx.lookup_many(keys) >= 0).all()
    for k in keys[::3]:
        idx.remove(int(k))
    found = idx.lookup_many(keys) >= 0
    assert found.sum() == len(keys) - len(keys[::3]) and not found[::3].any()
    idx.verify()


def test_sample_unpinned_is_uniform_and_seeded():
    def draw(seed):
        idx = NativeIndex(seed=seed)
        for key in range(40):
            idx.insert(key, 1, now=0.0, pins=1 if key < 10 else 0)
        counts = Counter()
        for _ in range(6000):
            slots = idx.sample_unpinned(3)
            assert len(set(slots)) == 3
            for s in slots:
                counts[idx.slot_info(s).key] += 1
        return counts

    counts = draw(1)
    assert set(counts) == set(range(10, 40))  # never a pinned key
    expected = 6000 * 3 / 30
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 70  # 29 dof: p(chi2 > 70) < 1e-4 for a uniform sampler
    assert draw(1) == counts and draw(2) != counts


def test_seeded_sample_is_uniform_a_function_of_its_seed_and_leaves_the_index_alone():
    def filled(seed=3):
        idx = NativeIndex(seed=seed)
        for key in range(40):
            idx.insert(key, 1, now=0.0, pins=1 if key < 10 else 0)
        return idx

    idx, twin, fresh = filled(), filled(), filled()
    assert idx.sample_unpinned_seeded(5, 3) == fresh.sample_unpinned(5)  # the same sampler
    counts = Counter()
    for seed in range(4000):
        slots = idx.sample_unpinned_seeded(3, seed)
        assert slots == idx.sample_unpinned_seeded(3, seed)
        assert len(set(slots)) == 3
        for s in slots:
            counts[idx.slot_info(s).key] += 1
    assert set(counts) == set(range(10, 40))
    expected = 4000 * 3 / 30
    assert sum((c - expected) ** 2 / expected for c in counts.values()) < 70  # as above
    assert idx.sample_unpinned(6) == twin.sample_unpinned(6)  # its own generator did not move
    assert len(idx.sample_unpinned_seeded(2, -1)) == 2  # any int seed (taken modulo 2**64)
    idx.verify()


def test_sample_when_mostly_pinned_uses_all_unpinned():
    idx = NativeIndex(seed=3)
    for key in range(100):
        idx.insert(key, 1, now=0.0, pins=0 if key % 10 == 0 else 1)
    seen = Counter()
    for _ in range(2000):
        for s in idx.sample_unpinned(4):
            seen[idx.slot_info(s).key] += 1
    assert set(seen) == set(range(0, 100, 10))
    assert min(seen.values()) > 0.6 * max(seen.values())


def _python_lru(keys, sizes, budget, promote=True):
    cache: OrderedDict[int, int] = OrderedDict()
    used = hits = evictions = 0
    for key, size in zip(keys.tolist(), sizes.tolist(), strict=True):
        if key in cache:
            hits += 1
            if promote:
                cache.move_to_end(key)
            continue
        if size > budget:
            continue
        while used + size > budget:
            _, old = cache.popitem(last=False)
            used -= old
            evictions += 1
        cache[key] = size
        used += size
    return hits, evictions


@pytest.mark.parametrize("policy", ["lru", "fifo"])
def test_replay_matches_a_python_model(policy):
    rng = np.random.default_rng(5)
    keys = rng.zipf(1.2, 20000).astype(np.uint64) % 500
    size_of = rng.integers(1, 5000, 500).astype(np.uint64)
    sizes = size_of[keys]
    for budget in (10_000, 100_000, 10**6):
        idx = NativeIndex()
        hits_out = np.zeros(len(keys), dtype=np.uint8)
        res = idx.replay(policy, keys, sizes, budget, hits_out=hits_out)
        assert (res.hits, res.evictions) == _python_lru(keys, sizes, budget, policy == "lru")
        assert res.requests == len(keys) and hits_out.sum() == res.hits
        assert idx.totals().bytes <= budget
        idx.verify()


def test_replay_rejects_bad_input():
    idx = NativeIndex()
    with pytest.raises(ValueError, match="differ in length"):
        idx.replay("lru", np.arange(3), np.ones(2), 10)
    with pytest.raises(ValueError, match="not one of"):
        idx.replay("belady", np.arange(3), np.ones(3), 10)
    with pytest.raises(NativeInvalidArgument, match="request 1"):
        idx.replay("lru", np.arange(3), np.array([1, 0, 1]), 10)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="no C compiler")
def test_c_core_under_address_and_undefined_behaviour_sanitizers():
    result = subprocess.run(["make", "-s", "-C", str(ROOT / "native"), "sanitize"],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "steps ok" in result.stdout


def test_missing_extension_fails_loudly_with_instructions():
    # Simulate an install whose C core was never built: the import must fail with a message that
    # says how to build it, never fall back to something slower.
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'edge._native._edge_core':\n"
        "            raise ImportError('no module named edge._native._edge_core')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import edge.cache.policies\n"  # needs no C core, so still fine
        "from edge.cache import PagedCache\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "C core (edge._native._edge_core) is not built" in result.stderr
    assert "pip install ." in result.stderr
