"""`edge tune`: the written winner loads unchanged and replays to exactly the reported figure;
spaces are validated, de-duplicated and expanded deterministically whatever --jobs is."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from edge.cli import main
from edge.config import EdgeConfig, from_mapping, load_config
from edge.errors import ConfigError
from edge.paging_cost import PagingCostModel
from edge.sim.generate import scan_bursts
from edge.sim.replay import replay_arrays
from edge.sim.trace import read_trace
from edge.sim.tune import (
    ProgressLines,
    build_candidates,
    evaluate,
    measure_first,
    parse_space,
    rank,
    space_size,
)

BASE = {"version": 1, "description": "base", "cache": {"budget": "160KiB", "policy": "lru"}}
NESTED = {
    "cache.policy": {
        "lru": None,
        "arc": {"cache.policy_params.initial_p_fraction": [0.0, 0.5]},
        "s3fifo": {"cache.policy_params.small_fraction": [0.05, 0.1, 0.3],
                   "cache.policy_params.move_to_main_threshold": [1, 2]},
    },
}


def base_config() -> EdgeConfig:
    return from_mapping(EdgeConfig, BASE)


@pytest.fixture(scope="module")
def trace():
    return scan_bursts(6000, 300, 0.9, seed=5, period=2000, burst_length=500)


def test_tune_writes_a_config_that_replays_to_the_reported_hit_ratio(tmp_path):
    trace_path = tmp_path / "scan.csv"
    gen = CliRunner().invoke(main, ["trace", "gen", "scan", "--requests", "6000", "--objects",
                                    "300", "--period", "2000", "--burst", "500", "--seed", "5",
                                    "--out", str(trace_path)])
    assert gen.exit_code == 0, gen.output
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"space": NESTED}))
    out, report = tmp_path / "best.yaml", tmp_path / "tune.json"
    result = CliRunner().invoke(main, [
        "tune", "--trace", str(trace_path), "--config", str(tmp_path / "base.yaml"),
        "--space", str(tmp_path / "space.yaml"), "--out", str(out), "--json", str(report),
        "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "9 candidates (grid)" in result.output

    best = load_config(out)  # the daemon's loader takes it as written
    data = json.loads(report.read_text())
    top = data["ranking"][0]
    assert best.cache.policy == top["config"]["cache"]["policy"]
    assert dict(best.cache.policy_params) == top["config"]["cache"]["policy_params"]
    trace = read_trace(trace_path)
    replayed = replay_arrays(trace.keys, trace.sizes, best.cache, best.cache.budget_bytes,
                             times=trace.times)
    assert replayed.hit_ratio == top["hit_ratio"] == top["objective"]
    assert replayed.hits == top["per_budget"][0]["hits"]
    row = re.search(r"^\s+1\s+(\S+)\s+(\S+)\s+(\S+)\s+(.*)$", result.output, re.M)
    assert row and row.group(1) == f"{replayed.hit_ratio:.4f}"
    assert "policy=" + best.cache.policy in row.group(4)
    # Ranked best first, and the winner really beats LRU on this scan-heavy trace.
    scores = [r["objective"] for r in data["ranking"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 9
    lru = next(r for r in data["ranking"] if r["config"]["cache"]["policy"] == "lru")
    assert top["hit_ratio"] > lru["hit_ratio"]


def test_results_do_not_depend_on_jobs(trace):
    space = parse_space({"space": NESTED, "budgets": ["3%", "10%"]})
    candidates = build_candidates(base_config(), space)
    one = rank(evaluate(trace, candidates, space, jobs=1), space.objective)
    two = rank(evaluate(trace, candidates, space, jobs=2), space.objective)
    assert [(e.candidate.index, [r.hits for r in e.results]) for e in one] == \
           [(e.candidate.index, [r.hits for r in e.results]) for e in two]
    for e in one:  # the objective is the mean over the budgets
        assert len(e.results) == 2
        assert e.hit_ratio == pytest.approx(sum(r.hit_ratio for r in e.results) / 2)


def test_paging_seconds_is_minimised(trace):
    space = parse_space({"objective": "paging_seconds",
                         "space": {"cache.policy": ["lru", "fifo", "s3fifo"]}})
    ranked = rank(evaluate(trace, build_candidates(base_config(), space), space),
                  "paging_seconds")
    seconds = [e.paging_seconds for e in ranked]
    assert seconds == sorted(seconds) and seconds[0] < seconds[-1]


def test_identical_configurations_run_once():
    # 160KiB and 163840 are one budget written two ways: 3 policies x 2 spellings -> 3.
    space = parse_space({"space": {
        "cache.policy": {"s3fifo": {"cache.policy_params.small_fraction": [0.1, 0.2]},
                         "lru": None},
        "cache.budget": ["160KiB", 163840]}})
    candidates = build_candidates(base_config(), space)
    assert [c.label() for c in candidates] == [
        "cache.policy=s3fifo cache.policy_params.small_fraction=0.1 cache.budget=160KiB",
        "cache.policy=s3fifo cache.policy_params.small_fraction=0.2 cache.budget=160KiB",
        "cache.policy=lru cache.budget=160KiB"]
    # small_fraction 0.1 is s3fifo's default: the same policy as no params at all.
    base = from_mapping(EdgeConfig, {"cache": {"budget": "160KiB", "policy": "s3fifo"}})
    space = parse_space({"space": {"cache.policy_params": [
        {}, {"small_fraction": 0.1}, {"small_fraction": 0.2}]}})
    assert [dict(c.config.cache.policy_params) for c in build_candidates(base, space)] == [
        {}, {"small_fraction": 0.2}]


def test_choosing_another_policy_drops_the_base_policys_params():
    base = from_mapping(EdgeConfig, {"cache": {"budget": "1MiB", "policy": "s3fifo",
                                               "policy_params": {"small_fraction": 0.3}}})
    space = parse_space({"space": {"cache.policy": ["s3fifo", "lru"]}})
    candidates = build_candidates(base, space)
    assert [(c.config.cache.policy, dict(c.config.cache.policy_params)) for c in candidates] == \
           [("s3fifo", {"small_fraction": 0.3}), ("lru", {})]


@pytest.mark.parametrize("space, message", [
    ({"space": {"cache.policy": ["lru", "s3fifo"],
                "cache.policy_params.small_fraction": [0.1]}},
     "cache.policy_params.small_fraction: unknown key"),
    ({"space": {"cache.policy": {"s3fifo": {"cache.policy_params.small_fraction": [1.5]}}}},
     "small_fraction must be between 0 and 1"),
    ({"space": {"cache.polcy": ["lru"]}}, "cache.polcy: unknown key"),
    ({"space": {"cache.budget.x": [1]}}, "cache.budget is a str, not a section"),
    ({"space": {"cache.policy": ["lru", "nope"]}}, "unknown eviction policy 'nope'"),
    ({"space": {"router.seed": [-1]}}, "router: seed must be >= 0"),
    ({"space": {"cache.budget": [2**64]}}, "budget 18446744073709551616 is too large"),
    ({"space": {"cache.budget": ["1.5"]}}, "budget '1.5' is not a whole number of bytes"),
])
def test_invalid_candidates_are_errors_naming_the_entry(space, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_candidates(base_config(), parse_space(space))


@pytest.mark.parametrize("data, message", [
    ({}, "space: missing"),
    ({"space": {}}, "space: empty"),
    ({"space": {"cache.policy": "lru"}}, "expected a list of choices"),
    ({"space": {"cache.policy": []}}, "no choices"),
    ({"space": {"cache..policy": [1]}}, "a path is dotted keys"),
    ({"method": "anneal", "space": {"cache.policy": ["lru"]}}, "method: 'anneal'"),
    ({"objective": "speed", "space": {"cache.policy": ["lru"]}}, "objective: 'speed'"),
    ({"samples": 0, "space": {"cache.policy": ["lru"]}}, "samples: expected an integer >= 1"),
    ({"sapce": {}}, "sapce: unknown key"),
    # Checked with the space, before any trace is read or candidate replayed.
    ({"budgets": [2**64], "space": {"cache.policy": ["lru"]}},
     "budgets: budget '18446744073709551616' is too large"),
    ({"budgets": ["64MiB", "1.5"], "space": {"cache.policy": ["lru"]}},
     "budgets: budget '1.5' is not a whole number of bytes"),
    ({"budgets": ["nan%"], "space": {"cache.policy": ["lru"]}},
     "budgets: budget 'nan%' is not a percentage"),
])
def test_malformed_space_files(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_space(data)


def test_random_search_is_seeded_and_distinct():
    grid = {"cache.policy": {"s3fifo": {
        "cache.policy_params.small_fraction": [0.02, 0.05, 0.1, 0.2, 0.3],
        "cache.policy_params.ghost_fraction": [0.5, 0.9, 2.0],
        "cache.policy_params.move_to_main_threshold": [1, 2, 3]}, "lru": None}}
    space = parse_space({"method": "random", "samples": 8, "seed": 1, "space": grid})
    first = [c.label() for c in build_candidates(base_config(), space)]
    again = [c.label() for c in build_candidates(base_config(), space)]
    other = [c.label() for c in build_candidates(
        base_config(), parse_space({"method": "random", "samples": 8, "seed": 2,
                                    "space": grid}))]
    assert first == again and len(set(first)) == 8 and first != other
    # Asking for more samples than the space holds gives the whole (deduplicated) grid.
    small = parse_space({"method": "random", "samples": 50,
                         "space": {"cache.policy": ["lru", "fifo", "arc"]}})
    assert len(build_candidates(base_config(), small)) == 3


def test_router_paths_validate_and_warn(tmp_path, trace):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(
        {"space": {"cache.policy": ["lru"], "router.seed": [0, 1]}}))
    trace_path = tmp_path / "t.csv"
    from edge.sim.trace import write_trace
    write_trace(trace, trace_path)
    result = CliRunner().invoke(main, [
        "tune", "--trace", str(trace_path), "--config", str(tmp_path / "base.yaml"),
        "--space", str(tmp_path / "space.yaml"), "--out", str(tmp_path / "b.yaml"),
        "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "warning: router.seed is not read by the cache replay" in result.stderr
    assert "(the objective routing_objective or regret replays the router)" in result.stderr
    assert "2 candidates" in result.stdout


def test_tune_cli_errors(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "space.yaml").write_text("space:\n  cache.policy: [lru, s3fifo]\n"
                                         "  cache.policy_params.small_fraction: [0.2]\n")
    (tmp_path / "t.csv").write_text("time,key,size\n0,1,10\n")
    result = CliRunner().invoke(main, [
        "tune", "--trace", str(tmp_path / "t.csv"), "--config", str(tmp_path / "base.yaml"),
        "--space", str(tmp_path / "space.yaml"), "--out", str(tmp_path / "b.yaml")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "space.yaml: candidate {cache.policy=lru" in result.output
    assert "nest it under that choice" in result.output
    assert not (tmp_path / "b.yaml").exists()


def test_tune_cli_rejects_a_budget_past_uint64(tmp_path):
    # Was an OverflowError from the native replay, after the trace was read.
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(
        {"space": {"cache.policy": ["lru"], "cache.budget": ["1MiB", 2**64]}}))
    (tmp_path / "t.csv").write_text("time,key,size\n0,1,10\n")
    result = CliRunner().invoke(main, [
        "tune", "--trace", str(tmp_path / "t.csv"), "--config", str(tmp_path / "base.yaml"),
        "--space", str(tmp_path / "space.yaml"), "--out", str(tmp_path / "b.yaml")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "space.yaml" in result.output
    assert "budget 18446744073709551616 is too large" in result.output
    assert not (tmp_path / "b.yaml").exists()


def test_evaluate_refuses_a_trace_whose_bytes_total_2_64():
    from edge.errors import TraceError
    from edge.sim.trace import Trace

    big = Trace(np.arange(3.0), np.array([1, 2, 1], np.uint64), np.full(3, 2**63, np.uint64))
    space = parse_space({"space": {"cache.budget": [str(2**64 - 1)]}})
    with pytest.raises(TraceError, match=r"2\*\*64 or more"):
        evaluate(big, build_candidates(base_config(), space), space)



def test_validation_reports_progress_over_the_whole_space():
    # 3 policies' worth of assignments: lru 1, arc 2, s3fifo 3 x 2 = 9 (hand count).
    space = parse_space({"space": NESTED})
    assert space_size(space) == 9
    seen = []
    candidates = build_candidates(base_config(), space,
                                  on_progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 9) for i in range(1, 10)]
    assert len(candidates) == 9
    sampled = parse_space({"method": "random", "samples": 4, "seed": 1, "space": NESTED})
    assert space_size(sampled) == 4
    seen.clear()
    build_candidates(base_config(), sampled, on_progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (4, 4) and all(d <= 4 and t == 4 for d, t in seen)


class SteppingClock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_progress_lines_say_rate_and_time_left_every_interval():
    import io

    out = io.StringIO()
    # The clock advances 1 s per reading: constructed at t=1, reports read t=2, 3, ...
    lines = ProgressLines("validating", out, interval=2.0, clock=SteppingClock(1.0))
    for done in range(1, 11):
        lines(done, 10)
    lines(10, 10)  # a repeated final report prints nothing more
    text = out.getvalue().splitlines()
    # Reports at t=2..11; a line once 2 s have passed since the start or the last line: t=3
    # (done 2), t=5 (4), t=7 (6), t=9 (8), and the final one at t=11 (10 in 10 s).
    assert [t.split(":")[1].split("(")[0].strip() for t in text] == \
        ["2/10", "4/10", "6/10", "8/10", "10/10"]
    # At t=3, 2 done in 2 s: 1.0/s, 8 left -> 8 s.
    assert text[0] == "validating: 2/10 (20 %), 1.0/s, about 8.0 s left"
    assert text[-1] == "validating: 10/10 (100 %), 1.0/s, 10.0 s in total"


def test_first_candidates_timed_for_an_estimate_are_not_replayed_twice(trace):
    space = parse_space({"space": NESTED})
    candidates = build_candidates(base_config(), space)
    clock = SteppingClock(0.5)  # one reading before and one after: 0.5 s for 2 candidates
    first, estimate = measure_first(trace, candidates, space, sample=2, jobs=3, clock=clock)
    assert [e.candidate.index for e in first] == [0, 1]
    assert estimate.seconds_per_candidate == pytest.approx(0.25)
    # 7 candidates left x 0.25 s over 3 workers.
    assert estimate.seconds == pytest.approx(7 * 0.25 / 3)
    assert "7 candidates left x 0.25 s each (measured on the first 2) / 3 worker(s)" \
        in estimate.describe()
    counted = []
    resumed = evaluate(trace, candidates, space, done=first, on_result=counted.append)
    assert counted == list(range(3, 10))
    whole = evaluate(trace, candidates, space)
    assert [e.hit_ratio for e in resumed] == [e.hit_ratio for e in whole]
    with pytest.raises(ValueError, match=r"done\[0\] is not an evaluation of candidate 0"):
        evaluate(trace, candidates, space, done=first[1:])


# ---- routing objectives: router.* settings replayed through the router --------------------

ROUTING_SPACE = {"objective": "routing_objective", "budgets": ["30%"],
                 "space": {"router.polar.mode": ["off", "polar+"],
                           "router.linucb.alpha": [0.0, 0.5]}}


@pytest.fixture(scope="module")
def routing_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune-routing") / "tenants.csv"
    gen = CliRunner().invoke(main, ["trace", "gen", "tenants", "--requests", "1500",
                                    "--objects", "12", "--tenants", "4", "--context-dim", "8",
                                    "--seed", "3", "--out", str(path)])
    assert gen.exit_code == 0, gen.output
    return path


def test_routing_objective_tunes_router_settings_and_the_winner_replays_to_its_figure(
        tmp_path, routing_trace):
    from edge.sim.routing import routing_events, run_routing
    from edge.sim.specs import working_set_bytes

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(ROUTING_SPACE))
    out, report = tmp_path / "best.yaml", tmp_path / "tune.json"
    result = CliRunner().invoke(main, [
        "tune", "--trace", str(routing_trace), "--config", str(tmp_path / "base.yaml"),
        "--space", str(tmp_path / "space.yaml"), "--out", str(out), "--json", str(report),
        "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr  # every varied path is replayed
    assert "4 candidates" in result.stdout and "objective" in result.stdout
    ranking = json.loads(report.read_text())["ranking"]
    objectives = [row["routing_objective"] for row in ranking]
    assert objectives == sorted(objectives, reverse=True) and len(set(objectives)) > 1
    # The candidates differ where the router reads them: mode and alpha change the routes.
    assert len({(row["regret"], row["paging_seconds"]) for row in ranking}) == 4
    # Each candidate is its configuration as written: a polar+ candidate at alpha a is the
    # polar+ strategy of `edge sim --router` (run_routing) over a file with that alpha.
    trace = read_trace(routing_trace)
    budget = int(0.3 * working_set_bytes(trace.keys, trace.sizes))
    events = routing_events(trace)
    for row in ranking:
        config = from_mapping(EdgeConfig, row["config"])
        strategy = {"polar+": "polar+", "off": "linucb"}[config.router.polar.mode]
        [peer] = run_routing(events, (strategy,), budget, PagingCostModel(), config=config)
        assert row["routing_objective"] == pytest.approx(peer["objective"], abs=1e-9)
        assert row["regret"] == pytest.approx(peer["regret"], abs=1e-9)
    best = load_config(out)
    assert best.router.polar.mode == ranking[0]["config"]["router"]["polar"]["mode"]
    assert best.router.linucb.alpha == ranking[0]["config"]["router"]["linucb"]["alpha"]


def test_a_candidate_that_lowers_its_routers_paging_weight_is_scored_at_the_bases(
        tmp_path, routing_trace):
    # The routing objective is reward - lambda x paging seconds with the base file's lambda for
    # every candidate: one whose router charges paging at 0.01 would otherwise be scored at
    # 0.01 too, and win for what it was charged, not for what it did.
    base = {**BASE, "router": {"polar": {"paging_weight": 2.0}}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(
        {"objective": "routing_objective", "budgets": ["30%"],
         "space": {"router.polar.paging_weight": [2.0, 0.01]}}))
    report = tmp_path / "tune.json"
    result = CliRunner().invoke(main, [
        "tune", "--trace", str(routing_trace), "--config", str(tmp_path / "base.yaml"),
        "--space", str(tmp_path / "space.yaml"), "--out", str(tmp_path / "best.yaml"),
        "--json", str(report), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    ranking = json.loads(report.read_text())["ranking"]
    assert {row["config"]["router"]["polar"]["paging_weight"] for row in ranking} == {2.0, 0.01}
    assert len({row["paging_seconds"] for row in ranking}) == 2  # the weight changed the routes
    for row in ranking:
        assert row["routing_objective"] == pytest.approx(
            row["reward"] - 2.0 * row["paging_seconds"], abs=1e-9)


def test_routing_results_do_not_depend_on_jobs(routing_trace):
    trace = read_trace(routing_trace)
    space = parse_space(ROUTING_SPACE)
    candidates = build_candidates(base_config(), space)
    one = evaluate(trace, candidates, space, jobs=1)
    two = evaluate(trace, candidates, space, jobs=2)
    def figures(evaluations):  # all but the wall time
        return [[{k: v for k, v in r.items() if k != "wall_s"} for r in e.results]
                for e in evaluations]

    assert figures(one) == figures(two)
    assert [e.candidate.index for e in rank(one, "regret")] == \
        [e.candidate.index for e in rank(two, "regret")]


def test_routing_objective_needs_contexts_and_warns_about_router_state(tmp_path, trace,
                                                                        routing_trace):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    from edge.sim.trace import write_trace
    write_trace(trace, tmp_path / "plain.csv")  # no context column
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(ROUTING_SPACE))
    result = CliRunner().invoke(main, [
        "tune", "--trace", str(tmp_path / "plain.csv"), "--config", str(tmp_path / "base.yaml"),
        "--space", str(tmp_path / "space.yaml"), "--out", str(tmp_path / "b.yaml")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "a routing objective replays the router: the trace has no context column" \
        in result.output
    assert not (tmp_path / "b.yaml").exists()
    # A budget that cannot hold the largest adapter is a one-line error, not a traceback.
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**ROUTING_SPACE, "budgets": ["1KiB"]}))
    result = CliRunner().invoke(main, [
        "tune", "--trace", str(routing_trace), "--config", str(tmp_path / "base.yaml"),
        "--space", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "b.yaml"),
        "--jobs", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "budget 1024 bytes: budget 1024 bytes cannot hold the largest adapter" in result.output
    space = parse_space({"objective": "regret",
                         "space": {"router.state.save_interval_seconds": [10, 20],
                                   "router.seed": [0]}})
    assert space.unreplayed_paths() == ["router.state.save_interval_seconds"]
