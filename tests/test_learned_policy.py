"""The ``learned`` eviction policy in a real ``PagedCache``, with real ONNX models.

- It keeps every promise of the conformance suite with a model (several candidate settings) and
  without one; without a usable model, or past its time budget, it evicts exactly as ``lru``.
- Every fallback is counted by reason; the breaker opens and retries at the decisions derived by
  hand.
- A model whose weights prefer the largest object (hand-set, preference = log1p(size)) evicts
  the victims derived by hand from the sizes.
"""

from __future__ import annotations

import logging
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from policy_conformance import N_KEYS, PolicyConformance, Store, TickClock, VictimsChecker

from edge.cache import PagedCache
from edge.cache.policies import make_policy
from edge.cache.policies.learned import LearnedPolicy
from edge.errors import ConfigError
from edge.learned.network import EVICT, INPUT_NAMES, DuelingQNet
from edge.learned.onnx_model import export_onnx

ROOT = Path(__file__).resolve().parents[1]
NEVER_OPENS = {"breaker_overruns": 10**9, "breaker_window": 10**9}
NO_DEADLINE = 1e9  # microseconds: decisions must not depend on this machine's load


def size_loving_net(hidden: int = 4) -> DuelingQNet:
    """Preference = log1p(size): h1[0] = log_size (>= 0, through the ReLU), h2[0] = h1[0],
    value 0, advantage (keep 0, evict h2[0]); so Q(evict) - Q(keep) = log1p(size)."""
    net = DuelingQNet.initialise(hidden)
    for array in net.parameters().values():
        array[...] = 0
    net.w1[INPUT_NAMES.index("log_size"), 0] = 1.0
    net.w2[0, 0] = 1.0
    net.wa[0, EVICT] = 1.0
    return net


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    paths = {"random": folder / "random.onnx", "largest": folder / "largest.onnx"}
    export_onnx(DuelingQNet.initialise(16, seed=5), paths["random"], metadata={"seed": 5})
    export_onnx(size_loving_net(), paths["largest"], metadata={"hand_set": "log_size"})
    return paths


def learned(**params) -> LearnedPolicy:
    return make_policy("learned", {k: (str(v) if isinstance(v, Path) else v)
                                   for k, v in params.items()})


# -- the conformance suite ------------------------------------------------------------------

@pytest.mark.parametrize("candidates", [(16, 16, 0), (2, 2, 0), (0, 4, 0), (1, 0, 0), (0, 0, 3),
                                        (2, 2, 2)],
                         ids=["tail16+rand16", "tail2+rand2", "rand4", "tail1", "head3",
                              "tail2+head2+rand2"])
class TestLearnedWithAModel(PolicyConformance):
    @pytest.fixture
    def new_policy(self, models, candidates):
        k_tail, k_rand, k_head = candidates
        return lambda: learned(model=models["random"], k_tail=k_tail, k_rand=k_rand,
                               k_head=k_head, budget_us=NO_DEADLINE)


class TestLearnedWithoutAModel(PolicyConformance):
    @pytest.fixture
    def new_policy(self, tmp_path):
        return lambda: learned(model=tmp_path / "absent.onnx")


def test_the_model_decides_in_the_conformance_workload(models):
    # The suite above ran the model, not the fallback: the same workload, counted.
    suite = PolicyConformance()
    cache, _ = suite.make_cache(lambda: learned(model=models["random"], budget_us=NO_DEADLINE))
    rng = random.Random(1)
    for _ in range(800):
        with cache.acquire(min(int(rng.paretovariate(0.7)) - 1, N_KEYS - 1)):
            pass
    stats = cache.policy.stats()
    assert stats["model_decisions"] == stats["decisions"] > 50
    assert stats["model_error"] is None


# -- fallbacks: exactly LRU, and counted -----------------------------------------------------

def replay(policy, seed: int = 8, steps: int = 2500) -> tuple[PagedCache, list]:
    """A seeded workload with pins and big objects; returns the cache and its unload order."""
    store = Store(seed, big=True)
    cache = PagedCache(3000, policy, loader=store.load, unloader=store.unload,
                       load_workers=0, clock=TickClock())
    rng = random.Random(seed)
    held = []
    for _ in range(steps):
        key = min(int(rng.paretovariate(0.7)) - 1, N_KEYS - 1)
        cm = cache.acquire(key)
        cm.__enter__()
        if len(held) < 3 and store.sizes[key] <= 400 and rng.random() < 0.2:
            held.append(cm)
        else:
            cm.__exit__(None, None, None)
        if held and rng.random() < 0.2:
            held.pop(0).__exit__(None, None, None)
    for cm in held:
        cm.__exit__(None, None, None)
    return cache, store.unloaded


@pytest.fixture(scope="module")
def lru_unloads() -> list:
    unloaded = replay("lru")[1]
    assert len(unloaded) > 300  # the workload evicts a lot, so equality below means something
    return unloaded


def assert_all_fallbacks(stats: dict, reason: str) -> None:
    assert stats["decisions"] > 200
    assert stats["fallback_decisions"][reason] == stats["decisions"]
    assert stats["model_decisions"] == 0
    assert sum(stats["fallback_decisions"].values()) == stats["decisions"]


def test_without_a_model_it_evicts_as_lru(tmp_path, lru_unloads):
    cache, unloaded = replay(learned(model=tmp_path / "absent.onnx"))
    assert unloaded == lru_unloads
    stats = cache.policy.stats()
    assert_all_fallbacks(stats, "no_model")
    assert str(tmp_path / "absent.onnx") in stats["model_error"]
    assert "no such file" in stats["model_error"] and stats["model_sha256"] is None


def test_the_model_alone_evicts_differently(models, lru_unloads):
    # The equalities with LRU in these tests can fail: with the model in charge they differ.
    cache, unloaded = replay(learned(model=models["largest"], budget_us=NO_DEADLINE))
    assert unloaded != lru_unloads
    assert cache.policy.stats()["model_decisions"] == cache.policy.stats()["decisions"]


def test_a_decision_over_budget_is_lru_and_counted(models, lru_unloads):
    # 0.001 us = 1 ns: candidate selection alone takes longer, so every decision is late.
    cache, unloaded = replay(learned(model=models["largest"], budget_us=0.001, **NEVER_OPENS))
    assert unloaded == lru_unloads
    stats = cache.policy.stats()
    assert_all_fallbacks(stats, "timeout")
    assert stats["overruns"] == stats["decisions"] and stats["breaker_opens"] == 0
    assert stats["model_error"] is None  # the model loaded: it was only late


def corrupt_file(folder: Path, source: Path) -> tuple[Path, str]:
    path = folder / "corrupt.onnx"
    path.write_bytes(b"\x08\x07garbage, not a protobuf" * 40)
    return path, "not a valid ONNX model"


def wrong_schema(folder: Path, source: Path) -> tuple[Path, str]:
    model = onnx.load(source)
    for prop in model.metadata_props:
        if prop.key == "feature_schema_version":
            prop.value = "99"
    path = folder / "schema99.onnx"
    onnx.save(model, path)
    return path, "feature schema version is 99, expected 2"


@pytest.mark.parametrize("make_bad", [corrupt_file, wrong_schema])
def test_an_unusable_model_file_is_lru_with_the_reason_shown(models, tmp_path, lru_unloads,
                                                             make_bad):
    path, reason = make_bad(tmp_path, models["largest"])
    cache, unloaded = replay(learned(model=path))
    assert unloaded == lru_unloads
    stats = cache.policy.stats()
    assert_all_fallbacks(stats, "no_model")
    assert reason in stats["model_error"] and str(path) in stats["model_error"]


def test_a_model_that_is_not_the_configured_sha256_is_not_served(models, lru_unloads):
    cache, unloaded = replay(learned(model=models["largest"], sha256="ab" * 32))
    assert unloaded == lru_unloads
    stats = cache.policy.stats()
    assert_all_fallbacks(stats, "no_model")
    assert f"expected {'ab' * 32}" in stats["model_error"]


def test_the_right_sha256_is_served(models):
    import hashlib

    sha = hashlib.sha256(models["largest"].read_bytes()).hexdigest()
    cache, _ = replay(learned(model=models["largest"], sha256=sha, budget_us=NO_DEADLINE),
                      steps=300)
    stats = cache.policy.stats()
    assert stats["model_decisions"] == stats["decisions"] > 0
    assert stats["model_sha256"] == sha


def test_an_unusable_model_is_logged_once_per_file(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="edge.cache.policies.learned")
    path = tmp_path / "never-there.onnx"
    for _ in range(3):
        PagedCache(1000, learned(model=path), load_workers=0)
    warnings = [r for r in caplog.records if str(path) in r.getMessage()]
    assert len(warnings) == 1 and "serves LRU" in warnings[0].getMessage()


def test_no_model_setting_means_the_shipped_model(tmp_path):
    cache = PagedCache(1000, "learned", load_workers=0, loader=lambda k: (k, 100))
    for key in range(12):
        with cache.acquire(key):
            pass
    policy = cache.policy
    shipped = ROOT / "models" / "eviction.onnx"
    assert policy.model_path == str(shipped)
    stats = policy.stats()
    if shipped.exists():
        assert stats["model_error"] is None
    else:
        assert stats["fallback_decisions"]["no_model"] == stats["decisions"] > 0


def test_candidates_default_to_the_rule_the_model_was_trained_with(models, tmp_path):
    def rule(**params):
        cache = PagedCache(1000, learned(**params), load_workers=0)
        stats = cache.policy.stats()
        cache.close()
        return stats["k_tail"], stats["k_rand"], stats["k_head"]

    trained = tmp_path / "trained-4-12.onnx"  # trained before k_head existed: none recorded
    export_onnx(DuelingQNet.initialise(8, seed=1), trained,
                metadata={"train_config": {"k_tail": 4, "k_rand": 12, "episodes": 1}})
    with_head = tmp_path / "trained-4-12-2.onnx"
    export_onnx(DuelingQNet.initialise(8, seed=1), with_head,
                metadata={"train_config": {"k_tail": 4, "k_rand": 12, "k_head": 2}})
    assert rule(model=trained) == (4, 12, 0)
    assert rule(model=with_head) == (4, 12, 2)
    assert rule(model=with_head, k_rand=3) == (4, 3, 2)  # a configured value wins, each alone
    assert rule(model=with_head, k_head=0) == (4, 12, 0)
    assert rule(model=models["random"]) == (16, 16, 0)  # no train_config: the defaults
    assert rule(model=tmp_path / "absent.onnx") == (16, 16, 0)  # no model: LRU, defaults shown
    # The shipped model was trained on 8 LRU-tail + 104 drawn + 16 MRU-head candidates
    # (models/MANIFEST).
    assert rule() == (8, 104, 16)


# -- the breaker, driven decision by decision -----------------------------------------------

def test_the_breaker_opens_after_overruns_and_retries_after_the_cooldown(models):
    cache = PagedCache(1000, learned(model=models["largest"], budget_us=0.001,
                                     breaker_overruns=3, breaker_window=3, breaker_cooldown=4),
                       load_workers=0, loader=lambda k: (k, 100))
    for key in range(10):
        with cache.acquire(key):
            pass
    policy = cache.policy
    seen = []
    with cache._lock:  # a policy is only asked under its cache's lock
        lru = cache.view.key_of_slot(cache.view.lru_victim_slot())
        for _ in range(13):
            assert policy.victim() == lru  # every fallback is LRU's answer
            s = policy.stats()
            seen.append((s["fallback_decisions"]["timeout"],
                         s["fallback_decisions"]["breaker_open"], s["breaker_opens"]))
    # Decisions 1-3 late (the third opens it); 4-7 refused (cooldown 4); 8 is the trial, late
    # again: open at once; 9-12 refused; 13 the next trial, late: open a third time.
    assert seen == [(1, 0, 0), (2, 0, 0), (3, 0, 1),
                    (3, 1, 1), (3, 2, 1), (3, 3, 1), (3, 4, 1),
                    (4, 4, 2),
                    (4, 5, 2), (4, 6, 2), (4, 7, 2), (4, 8, 2),
                    (5, 8, 3)]
    assert policy.stats()["overruns"] == 5 and policy.stats()["decisions"] == 13


# -- the model's own choice, derived by hand ------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


SIZES = {"a": 40, "b": 15, "c": 30, "d": 15, "e": 50}


def run_trace(policy, pin_a: bool = False) -> tuple[list, list]:
    """Budget 100; requests a b c d a e at t = 0..5 (a held pinned from t=4 if ``pin_a``).
    Returns the unload order and the keys of each victims() call."""
    clock = Clock()
    unloaded: list = []
    cache = PagedCache(100, policy, clock=clock, load_workers=0,
                       loader=lambda k: (k, SIZES[k]), unloader=lambda k, v: unloaded.append(k))
    checker = VictimsChecker(cache)
    held = None
    for t, key in enumerate("abcdae"):
        clock.t = float(t)
        cm = cache.acquire(key)
        cm.__enter__()
        if key == "a" and t == 4 and pin_a:
            held = cm
        else:
            cm.__exit__(None, None, None)
    assert not checker.problems
    cache.verify()
    if held is not None:
        held.__exit__(None, None, None)
    assert cache.policy.stats()["model_decisions"] == cache.policy.stats()["decisions"]
    return unloaded, [r for r in checker.rounds if r]


# At t=5 a40 b15 c30 d15 fill the budget (LRU order b c d a) and e needs 50 bytes.
# - All four are candidates: largest first, a (40) then c (70 >= 50): [a, c]. LRU: b c d.
# - a pinned: c (30), then the 15s tie, broken by candidate order (LRU first): b (45), d (60).
# - Only the two LRU-tail candidates b, c: c (30), b (45 < 50); both evicted, the cache asks
#   for more and a second decision sees the new tail d, a: a (85). LRU would take d.
# - Only the two MRU-head candidates a, d: a (40), d (55).
@pytest.mark.parametrize(("params", "pin_a", "expected", "decisions"), [
    ({}, False, ["a", "c"], 1),
    ({}, True, ["c", "b", "d"], 1),
    ({"k_tail": 2, "k_rand": 0}, False, ["c", "b", "a"], 2),
    ({"k_tail": 0, "k_rand": 16}, False, ["a", "c"], 1),
    ({"k_tail": 0, "k_rand": 0, "k_head": 2}, False, ["a", "d"], 1),
], ids=["all-candidates", "largest-pinned", "tail2-two-rounds", "sampled-only", "head2-only"])
def test_a_model_preferring_size_evicts_the_largest_candidates_first(models, params, pin_a,
                                                                     expected, decisions):
    policy = learned(model=models["largest"], budget_us=NO_DEADLINE, **params)
    unloaded, rounds = run_trace(policy, pin_a)
    assert unloaded == expected
    assert rounds == [expected]  # one victims() answer covers the whole need
    assert policy.stats()["decisions"] == decisions


def test_an_answer_read_without_evicting_ends_without_repeating(models):
    # Outside an eviction nothing leaves, so the second round finds only keys already given.
    cache = PagedCache(1000, learned(model=models["largest"], k_tail=2, k_rand=0,
                                     budget_us=NO_DEADLINE),
                       load_workers=0, loader=lambda k: (k, 10 * (k + 1)))
    for key in range(9):
        with cache.acquire(key):
            pass
    with cache._lock:
        # LRU tail 0 (10 bytes), 1 (20): the larger first.
        assert list(cache.policy.victims(10**6)) == [1, 0]


def test_the_lru_answer_on_the_same_trace_differs():
    clock = Clock()
    unloaded: list = []
    cache = PagedCache(100, "lru", clock=clock, load_workers=0,
                       loader=lambda k: (k, SIZES[k]), unloader=lambda k, v: unloaded.append(k))
    for t, key in enumerate("abcdae"):
        clock.t = float(t)
        with cache.acquire(key):
            pass
    assert unloaded == ["b", "c", "d"]


# -- a small trace under a budget -----------------------------------------------------------

def test_a_cache_run_by_the_model_serves_a_trace_within_its_budget(models):
    rng = np.random.default_rng(4)
    sizes = {k: int(s) for k, s in enumerate(rng.lognormal(9, 1.5, 300).clip(1_000, 2_000_000))}
    trace = [int(k) for k in rng.zipf(1.3, 4000) % 300]
    budget = 3_000_000
    cache = PagedCache(budget, "learned", policy_params={"model": str(models["random"])},
                       load_workers=0, loader=lambda k: (k, sizes[k], 0.001 * sizes[k] / 1e4))
    hits = 0
    for step, key in enumerate(trace):
        hits += key in cache
        with cache.acquire(key) as value:
            assert value == key
        stats = cache.stats()
        assert stats.resident_bytes + stats.reserved_bytes <= budget, f"over budget at {step}"
    cache.verify()
    stats, policy = cache.stats(), cache.policy.stats()
    assert (stats.hits, stats.misses) == (hits, len(trace) - hits)
    assert stats.evictions > 500
    assert policy["decisions"] == policy["model_decisions"] + sum(
        policy["fallback_decisions"].values())
    assert policy["model_decisions"] > 0  # at the default 500 us budget, the model served
    assert policy["fallback_decisions"]["no_model"] == 0


# -- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "message"), [
    ({"k_tail": 0, "k_rand": 0}, "k_tail + k_head + k_rand must be at least 1"),
    ({"k_rand": -1}, "k_rand must be an int >= 0 or null"),
    ({"k_head": -1}, "k_head must be an int >= 0 or null"),
    ({"budget_us": 0}, "budget_us must be a finite number"),
    ({"sha256": "abc"}, "sha256 must be 64 hex digits"),
    ({"breaker_overruns": 5, "breaker_window": 4}, "breaker_window (4) must be at least"),
    ({"breaker_cooldown": 0}, "breaker_cooldown must be an int >= 1"),
    ({"model": " "}, "model must be a path"),
    ({"modle": "x.onnx"}, "unknown key"),
])
def test_bad_settings_are_config_errors_naming_the_setting(params, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_policy("learned", params)


def test_validating_the_policy_loads_neither_numpy_nor_onnx_runtime():
    code = ("from edge.cache.policies import validate_policy\n"
            "validate_policy('learned', {'budget_us': 200, 'k_rand': 8})\n"
            "import sys\nprint('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = out.stdout.split()
    assert "edge.cache.policies.learned" in loaded  # the probe saw the policy module
    assert [m for m in loaded if m.startswith(("numpy", "onnxruntime", "onnx", "edge.learned"))] \
        == []
