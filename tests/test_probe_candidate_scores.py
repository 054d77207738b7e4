"""scripts/probe_candidate_scores.py: the hand score ranks as its formula says, the ghost
history carries a re-inserted key's earlier accesses, and the probe's table prints."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from edge.cache import PagedCache
from edge.cache.policies import POLICIES, register_policy

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "probe_candidate_scores.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("probe_candidate_scores", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["probe_candidate_scores"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def hand(probe):
    register_policy(probe.HandScore)
    yield probe.HandScore.name
    del POLICIES[probe.HandScore.name]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_hand_score_evicts_the_highest_score(hand):
    # a: 100 B, 3 accesses; b: 100 B, 1 access; c: 400 B, 1 access; all idle 1 s. Scores
    # log1p(size) - log1p(accesses) + log1p(age)/2: a 4.615 - 1.386, b 4.615 - 0.693,
    # c 5.994 - 0.693 (+ the same age term): c first, then b; a is kept, although it is the
    # least recently used (ignoring its accesses, the LRU-first candidate order would take a).
    clock = Clock()
    cache = PagedCache(600, hand, load_workers=0, clock=clock,
                       loader=lambda k: (k, {"a": 100, "b": 100, "c": 400}[k]))
    for key in ("a", "a", "a", "b", "c"):
        with cache.acquire(key):
            pass
    clock.t = 1.0
    policy = cache.policy
    assert math.log1p(400) - math.log1p(1) > math.log1p(100) - math.log1p(1) \
        > math.log1p(100) - math.log1p(3)
    assert policy.victims(1) == ["c"]
    assert policy.victims(450) == ["c", "b"]
    cache.close()


def test_ghost_history_keeps_a_returning_key_over_a_one_hit_key(probe, hand):
    # x is used 4 times, evicted, then comes back: with history it counts 5 accesses, so a
    # one-hit key of the same size and age is evicted before it; without, they tie and the
    # candidate order (LRU first: x) decides.
    for ghost, expected in ((16, "y"), (0, "x")):
        clock = Clock()
        cache = PagedCache(300, hand, load_workers=0, clock=clock,
                           policy_params={"ghost": ghost},
                           loader=lambda k: (k, {"x": 100, "y": 100, "z": 300}[k]))
        for _ in range(4):
            with cache.acquire("x"):
                pass
        with cache.acquire("z"):  # evicts x (the only resident)
            pass
        clock.t = 1.0
        with cache.acquire("x"):  # evicts z; x returns with its history
            pass
        with cache.acquire("y"):
            pass
        clock.t = 2.0
        assert cache.policy.victims(1) == [expected], ghost
        cache.close()


def test_probe_prints_the_table_and_leaves_the_registry_as_it_was(probe, capsys, tmp_path):
    out = tmp_path / "probe.json"
    assert probe.main(["--requests", "3000", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == ("| trace, budget | lru | arc | s3fifo | gdsf | hand | hand+ghost | "
                        "hindsight |")
    assert len(lines) == 2 + 3 * 2  # three traces at 5 % and 20 %
    assert probe.HandScore.name not in POLICIES
    assert out.exists()
    assert probe.main(["--requests", "3000", "--skip-hand", "--k-head", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| trace, budget | lru | arc | s3fifo | gdsf | hindsight |"
    assert len(lines) == 2 + 3 * 2
