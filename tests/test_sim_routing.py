import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge.device import DeviceProfile
from edge.router.commands import route_bench
from edge.router.config import LinUCBConfig, PolarConfig
from edge.router.replay import replay
from edge.router.strategies import make_strategy
from edge.router.synthetic import make_problem


@pytest.fixture(scope="module")
def runs():
    problem = make_problem(16, 12, 3000, np.random.default_rng(0))
    budget = int(problem.sizes.sum() * 0.25)
    device = DeviceProfile()
    out = {}
    for name in ("random", "linucb+lru", "polar+", "oracle"):
        strategy = make_strategy(name, arm_ids=problem.arm_ids, sizes=problem.sizes, dim=12,
                                 budget_bytes=budget, device=device, linucb=LinUCBConfig(),
                                 polar=PolarConfig(epoch_length=128), rng=np.random.default_rng(1))
        out[name] = replay(strategy, problem.contexts, problem.utilities, problem.sizes,
                           budget_bytes=budget, device=device, paging_weight=1.0,
                           rng=np.random.default_rng(2), arm_ids=problem.arm_ids)
    return out


def test_metrics_are_consistent(runs):
    for r in runs.values():
        assert 0.0 <= r["hit_ratio"] <= 1.0
        assert r["total_paging_s"] == pytest.approx(r["blocking_paging_s"] + r["prefetch_paging_s"])
        assert r["objective"] == pytest.approx(r["reward"] - 1.0 * r["blocking_paging_s"])
        curve = r["regret_curve"]["regret"]
        assert curve == sorted(curve) and curve[-1] == pytest.approx(r["regret"])
    assert runs["random"]["prefetch_paging_s"] == 0.0


def test_learning_and_cache_awareness_show_in_the_metrics(runs):
    assert runs["oracle"]["objective"] >= max(r["objective"] for r in runs.values()) - 1e-9
    assert runs["linucb+lru"]["regret"] < 0.5 * runs["random"]["regret"]
    assert runs["polar+"]["hit_ratio"] > runs["linucb+lru"]["hit_ratio"]
    assert runs["polar+"]["arms_tried"] == 16


def test_replay_refuses_mismatched_inputs():
    strategy = make_strategy("random", arm_ids=("a", "b"), sizes=np.array([1, 1]), dim=3,
                             budget_bytes=10, device=DeviceProfile(), linucb=LinUCBConfig(),
                             polar=PolarConfig(), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="disagree"):
        replay(strategy, np.zeros((3, 3)), np.zeros((4, 2)), np.array([1, 1]), budget_bytes=10,
               device=DeviceProfile(), paging_weight=1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"sizes must have shape \(2,\)"):
        replay(strategy, np.zeros((3, 3)), np.zeros((3, 2)), np.array([1]), budget_bytes=10,
               device=DeviceProfile(), paging_weight=1.0, rng=np.random.default_rng(0))


def test_route_bench_command_prints_json():
    result = CliRunner().invoke(route_bench, ["--arms", "8", "--dim", "8", "--steps", "300",
                                              "--strategy", "polar+", "--strategy", "random"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["results"]) == {"polar+", "random"}
