"""Offline routing evaluation through Runtime.handle (edge.sim.routing) and `edge route-bench`."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge.config import CacheConfig, EdgeConfig
from edge.paging_cost import PagingCostModel
from edge.router.config import PolarConfig, RouterConfig
from edge.sim.routing import replay_routing
from edge.sim.routing_commands import route_bench
from edge.sim.synthetic import make_problem

CONFIG = EdgeConfig(router=RouterConfig(polar=PolarConfig(epoch_length=128), seed=1))


@pytest.fixture(scope="module")
def problem():
    return make_problem(16, 12, 3000, np.random.default_rng(0))


@pytest.fixture(scope="module")
def runs(problem):
    budget = int(problem.sizes.sum() * 0.25)
    return {name: replay_routing(name, problem.contexts, problem.utilities, problem.sizes,
                                 config=CONFIG, budget_bytes=budget,
                                 paging_cost=PagingCostModel(), rng=np.random.default_rng(2),
                                 arm_ids=problem.arm_ids)
            for name in ("random", "linucb+lru", "polar+", "oracle")}


def test_metrics_are_consistent(runs):
    for r in runs.values():
        assert 0.0 <= r["hit_ratio"] <= 1.0
        assert r["total_paging_s"] == pytest.approx(r["blocking_paging_s"] + r["prefetch_paging_s"])
        assert r["objective"] == pytest.approx(r["reward"] - 1.0 * r["total_paging_s"])
        curve = r["regret_curve"]["regret"]
        assert curve == sorted(curve) and curve[-1] == pytest.approx(r["regret"])
    # Only a router with a controller prefetches; the references and LinUCB + LRU page on demand.
    assert runs["random"]["prefetch_paging_s"] == 0.0
    assert runs["linucb+lru"]["prefetch_paging_s"] == 0.0
    assert runs["polar+"]["prefetch_paging_s"] > 0.0


def test_blocking_paging_is_the_cost_model_of_each_miss(problem):
    # Hand derivation: with a budget of one adapter every request to another adapter than the
    # previous one misses, and each miss blocks for paging_seconds(size) of that adapter.
    cost = PagingCostModel()
    sizes = np.array([100, 300])
    utilities = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    r = replay_routing("oracle", np.ones((4, 3)), utilities, sizes, config=EdgeConfig(),
                       budget_bytes=300, paging_cost=cost, rng=np.random.default_rng(0))
    # The oracle's penalty (lambda = 1, microseconds) never outweighs a utility of 1.
    assert r["hit_ratio"] == 0.25 and r["regret"] == 0.0
    expected = cost.paging_seconds(100) * 2 + cost.paging_seconds(300)
    assert r["blocking_paging_s"] == pytest.approx(expected)
    assert r["total_paging_s"] == pytest.approx(expected)


def test_learning_and_cache_awareness_show_in_the_metrics(runs):
    assert runs["oracle"]["objective"] >= max(r["objective"] for r in runs.values()) - 1e-9
    assert runs["linucb+lru"]["regret"] < 0.5 * runs["random"]["regret"]
    assert runs["polar+"]["hit_ratio"] > runs["linucb+lru"]["hit_ratio"]
    assert runs["polar+"]["arms_tried"] == 16


def test_the_cache_section_of_the_config_is_used(problem):
    # The replay no longer hard-codes LRU: a policy file's cache policy changes the outcome.
    budget = int(problem.sizes.sum() * 0.25)
    hits = {}
    for policy in ("lru", "fifo"):
        config = EdgeConfig(cache=CacheConfig(policy=policy), router=CONFIG.router)
        hits[policy] = replay_routing("linucb", problem.contexts[:1500],
                                      problem.utilities[:1500], problem.sizes, config=config,
                                      budget_bytes=budget, rng=np.random.default_rng(2))
    assert hits["lru"]["hit_ratio"] != hits["fifo"]["hit_ratio"]
    assert hits["lru"]["regret"] == hits["fifo"]["regret"]  # routing ignores residency


def test_replay_refuses_mismatched_inputs():
    kwargs = dict(config=EdgeConfig(), budget_bytes=10, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="disagree"):
        replay_routing("random", np.zeros((3, 3)), np.zeros((4, 2)), np.array([1, 1]), **kwargs)
    with pytest.raises(ValueError, match=r"sizes must have shape \(2,\)"):
        replay_routing("random", np.zeros((3, 3)), np.zeros((3, 2)), np.array([1]), **kwargs)
    with pytest.raises(ValueError, match="cannot hold the largest adapter"):
        replay_routing("random", np.zeros((3, 3)), np.zeros((3, 2)), np.array([1, 11]), **kwargs)
    with pytest.raises(ValueError, match="unknown strategy 'best'"):
        replay_routing("best", np.zeros((3, 3)), np.zeros((3, 2)), np.array([1, 1]), **kwargs)


def test_route_bench_command_prints_json():
    result = CliRunner().invoke(route_bench, ["--arms", "8", "--dim", "8", "--steps", "300",
                                              "--strategy", "polar+", "--strategy", "random"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["results"]) == {"polar+", "random"}


def test_the_objective_charges_the_controllers_prefetches():
    # Hand-built: two adapters that fit the budget together, equal utility 0.5 everywhere,
    # polar with one-request epochs. Request 0 finds nothing resident and routes to the smaller
    # adapter (both untried, so the smaller paging charge wins): it blocks for c(100 MiB). That
    # request closes the epoch; the plan keeps both (they fit), so the larger one is prefetched:
    # c(300 MiB) of prefetch paging. Nothing pages after that. With lambda = 2:
    # objective = 0.5 * T - 2 * (c(100 MiB) + c(300 MiB)).
    cost = PagingCostModel()
    sizes = np.array([300 << 20, 100 << 20])
    T = 10
    config = EdgeConfig(router=RouterConfig(
        polar=PolarConfig(mode="polar", epoch_length=1, paging_weight=2.0), seed=0))
    r = replay_routing("polar", np.ones((T, 3)), np.full((T, 2), 0.5), sizes, config=config,
                       budget_bytes=400 << 20, paging_cost=cost, rng=np.random.default_rng(0))
    small, large = cost.paging_seconds(100 << 20), cost.paging_seconds(300 << 20)
    assert r["blocking_paging_s"] == pytest.approx(small)
    assert r["prefetch_paging_s"] == pytest.approx(large)
    assert r["reward"] == pytest.approx(0.5 * T)
    assert r["objective"] == pytest.approx(0.5 * T - 2.0 * (small + large))
    # A fixed objective lambda (a benchmark that tunes the router's weight): the same routes
    # and paging, scored at that lambda, not at the router's.
    fixed = replay_routing("polar", np.ones((T, 3)), np.full((T, 2), 0.5), sizes,
                           config=config, budget_bytes=400 << 20, paging_cost=cost,
                           rng=np.random.default_rng(0), objective_weight=0.5)
    assert fixed["total_paging_s"] == pytest.approx(small + large)
    assert fixed["objective"] == pytest.approx(0.5 * T - 0.5 * (small + large))
    with pytest.raises(ValueError, match="objective_weight must be a finite number >= 0"):
        replay_routing("polar", np.ones((T, 3)), np.full((T, 2), 0.5), sizes, config=config,
                       budget_bytes=400 << 20, objective_weight=-1.0)


def test_a_strategy_can_name_its_eviction_policy(problem):
    budget = int(problem.sizes.sum() * 0.25)
    runs = {name: replay_routing(name, problem.contexts[:1500], problem.utilities[:1500],
                                 problem.sizes, config=CONFIG, budget_bytes=budget,
                                 rng=np.random.default_rng(2))
            for name in ("linucb+lru", "linucb+arc", "lints+lru")}
    # The same LinUCB routes the same way; only the eviction (and so the paging) differs.
    assert runs["linucb+lru"]["regret"] == runs["linucb+arc"]["regret"]
    assert runs["linucb+lru"]["hit_ratio"] != runs["linucb+arc"]["hit_ratio"]
    assert runs["lints+lru"]["regret"] != runs["linucb+lru"]["regret"]
    assert runs["lints+lru"]["prefetch_paging_s"] == 0.0
    with pytest.raises(ValueError, match=r"unknown strategy 'linucb\+mru'.*POLICY one of arc"):
        replay_routing("linucb+mru", problem.contexts[:5], problem.utilities[:5],
                       problem.sizes, config=CONFIG, budget_bytes=budget)
