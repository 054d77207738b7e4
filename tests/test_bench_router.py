"""scripts/bench_router.py: tunables are chosen on instances held out from the reported ones,
and the chosen values are in the JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_router.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_router", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # Registered, so that --jobs can pickle the script's functions for its worker processes.
    sys.modules["bench_router"] = module
    spec.loader.exec_module(module)
    return module


def test_default_tuning_and_reported_seeds_are_disjoint(bench):
    args = bench.parse_args([])
    for n in (16, 64, 256, 1024):
        tuning = bench.instance_seeds(args.tune_seed, n, args.tune_instances)
        reported = bench.instance_seeds(args.seed, n, args.quality_repeats)
        assert len(reported) == 5 and len(tuning) == 8
        assert not set(tuning) & set(reported)
    # The reported family is the earlier benchmark's (seed + N + 7919 r), by hand:
    assert bench.instance_seeds(20260, 16, 3) == [20276, 28195, 36114]


def test_a_reported_seed_in_the_tuning_set_stops_the_benchmark(bench, tmp_path):
    with pytest.raises(ValueError, match=r"reported instance seed\(s\) \[28195\]"):
        bench.check_seed_split([28195, 1], [20276, 28195])
    # Through the script: tuning seeds 20276 + 7919 r overlap the reported ones at r = 1.
    with pytest.raises(ValueError, match="are also tuning seeds"):
        bench.main(["--arms", "16", "--quality-repeats", "2", "--tune-instances", "2",
                    "--tune-seed", str(20260 + 7919), "--skip-speed", "--horizon", "50"])


def test_the_json_names_the_seed_split_and_every_chosen_value(bench, tmp_path, capsys):
    out = tmp_path / "b.json"
    bench.main(["--arms", "8", "--dim", "8", "--horizon", "200", "--quality-repeats", "1",
                "--tune-instances", "1", "--routes-instances", "2", "--skip-speed",
                "--out", str(out)])
    data = json.loads(out.read_text())
    q = data["quality"]["8"]
    assert not set(q["tuning_seeds"]) & set(q["reported_seeds"])
    assert set(q["strategies"]) == {"random", "greedy+lru", "linucb+lru",
                                    "linucb+best-eviction", "lints+lru", "polar", "polar+",
                                    "oracle"}
    defaults = bench.parse_args([])
    for label in bench.STRATEGIES:
        chosen = q["tuning"][label]["chosen"]
        if label == "polar+" and q["tuning"][label]["learner_routes"]["taken"]:
            continue  # the learner-routes stage's settings: test_learner_routes_stage
        stages = bench.strategy_stages(label, defaults)  # POLAR+'s joint epoch stage included
        offered: dict[str, set] = {}  # each setting's values over every stage that sets it
        for path, choices in stages:
            if isinstance(path, tuple):  # a joint stage: one choice sets all its paths
                for i, p in enumerate(path):
                    offered.setdefault(p, set()).update(c[i] for c in choices if c[i] is not None)
            else:
                offered.setdefault(path, set()).update(choices)
        assert set(chosen) == set(offered)
        for p, value in chosen.items():
            assert value in offered[p], (label, p, value)
    assert q["tuning"]["linucb+best-eviction"]["chosen"]["cache.policy"] in bench.EVICTION
    # The objective charges all paging, for every strategy.
    for s in q["strategies"].values():
        assert s["total_paging_s"] >= s["blocking_paging_s"]
    assert q["checks"]["best_baseline"] not in ("polar", "polar+", "random", "oracle")
    # POLAR+ was tuned within the issue's criterion, measured on the tuning instances: the
    # bounds are the best cache-unaware baseline's there.
    bounds = q["tuning"]["polar+"]["bounds"]
    reference = q["tuning"][bounds["reference"]]
    assert bounds["reference"] in bench.CACHE_UNAWARE
    assert reference["tuning_objective"] == max(q["tuning"][b]["tuning_objective"]
                                                for b in bench.CACHE_UNAWARE)
    assert bounds["regret_cap"] == pytest.approx(1.1 * reference["tuning_median_regret"])
    assert bounds["paging_cap_s"] == reference["tuning_median_paging_s"]
    tried = q["tuning"]["polar+"]["tried"]
    for t in tried:
        assert t["within_bounds"] == (t["median_regret"] <= bounds["regret_cap"]
                                      and t["median_paging_s"] <= bounds["paging_cap_s"])
    # Each stage's choices hold the value chosen so far, so a setting within the bounds, once
    # tried, is never given up for one outside them.
    assert bounds["chosen_within"] == any(t["within_bounds"] for t in tried)
    # The README/docs rows come from the JSON: POLAR+'s row carries its median objective.
    row = next(line for line in bench.markdown_tables(data).splitlines()
               if line.startswith("| 8 | polar+ |"))
    assert f"| {q['strategies']['polar+']['objective']:.1f} |" in row
    # POLAR+ against every baseline, per instance, beside the best one; the table names the
    # baseline it beats least.
    checks, strategies = q["checks"], q["strategies"]
    plus = strategies["polar+"]["per_instance"]["objective"]
    counts = {b: sum(p >= r for p, r in zip(plus, strategies[b]["per_instance"]["objective"],
                                            strict=True))
              for b in ("greedy+lru", "linucb+lru", "linucb+best-eviction", "lints+lru")}
    assert checks["polar+_objective_at_least_each_baseline"] == {
        b: f"{k}/{len(plus)}" for b, k in counts.items()}
    assert (checks["polar+_objective_at_least_each_baseline"][checks["best_baseline"]]
            == checks["polar+_objective_at_least_best_per_instance"])
    verdict = [line for line in bench.markdown_tables(data).splitlines()
               if line.startswith(f"| 8 | {checks['best_baseline']} | ")][-1]  # the checks row
    fewest = min(counts.values())
    assert f"| {fewest}/{len(plus)} (" in verdict
    # --table puts several runs' JSONs together by N, and refuses an N found in two of them.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"quality": {"9": q}, "speed": {}}))
    capsys.readouterr()
    assert bench.main(["--table", str(out), str(other)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in lines if " | polar+ | " in line] == ["| 8", "| 9"]
    with pytest.raises(SystemExit, match=r"quality at N = 8 is in both .*b\.json and .*b\.json"):
        bench.main(["--table", str(out), str(out)])
    # PATH:N takes only those sizes of a run, so a later run of some sizes tables with the
    # earlier run's others; a size the file lacks is refused, naming what it has.
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"quality": {"8": q, "9": q}, "speed": {}}))
    capsys.readouterr()
    assert bench.main(["--table", f"{both}:9", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in lines if " | polar+ | " in line] == ["| 9", "| 8"]
    with pytest.raises(SystemExit, match=r"both\.json has no N = 7 \(it has 8, 9\)"):
        bench.main(["--table", f"{both}:7,8", str(out)])


def test_text_workload_and_parallel_instances(bench, tmp_path):
    """--workload text replays the text problem (contexts from the feature extractor, real
    LoRA sizes); --jobs 2 gives the same figures as one process."""
    small = ["--arms", "8", "--horizon", "150", "--quality-repeats", "1", "--tune-instances",
             "1", "--routes-instances", "2", "--skip-speed", "--workload", "text"]
    figures = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"text-{jobs}.json"
        bench.main([*small, "--jobs", jobs, "--out", str(out)])
        data = json.loads(out.read_text())
        assert data["inputs"]["workload"] == "text"
        q = data["quality"]["8"]
        figures[jobs] = (q["tuning"], {label: {k: v for k, v in s.items() if k != "wall_s"}
                                       for label, s in q["strategies"].items()})
    assert figures["1"] == figures["2"]
    # The instance is the text problem's: its adapters are real LoRA file sizes.
    from edge.sim.text_problem import lora_combos

    problem = bench.make_instance("text", 8, q["reported_seeds"][0], 150, 32)
    assert set(problem.sizes.tolist()) <= {size for *_, size in lora_combos()}
    assert problem.contexts.shape == (150, 64)  # the default extractor's dimension


def test_text_workload_needs_skip_speed(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--workload", "text"])


@pytest.fixture(scope="module")
def variants(bench):
    path = SCRIPT.parent / "router_variants.py"
    spec = importlib.util.spec_from_file_location("router_variants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_router_variants_replays_the_tuning_family_as_the_benchmark_does(bench, variants,
                                                                         tmp_path, capsys):
    out = tmp_path / "v.json"
    settings = {"router.linucb.alpha": 0.0, "cache.policy": "lfu"}
    variants.main(["--arms", "8", "--instances", "2", "--horizon", "150", "--out", str(out),
                   "--variant", "greedy=greedy+lru",
                   "--variant", f"ours=polar+:{json.dumps(settings)}"])
    data = json.loads(out.read_text())
    args = bench.parse_args(["--arms", "8", "--horizon", "150"])
    assert data["family"] == "tuning"
    assert data["seeds"] == bench.instance_seeds(args.tune_seed, 8, 2)
    # The same figures as the benchmark's own run_instance on those seeds.
    from edge.config import EdgeConfig
    from edge.paging_cost import PagingCostModel
    for i, seed in enumerate(data["seeds"]):
        direct = bench.run_instance("polar+", settings, seed, 8, args, PagingCostModel(),
                                    EdgeConfig(), 10_000 + i)
        assert data["variants"]["ours"]["per_instance"][i]["objective"] == direct["objective"]
    first = data["variants"]["greedy"]["versus_first"]
    assert first == {"mean_objective_difference": 0.0, "at_least_as_good": 2}
    assert "against greedy:" in capsys.readouterr().out


def test_router_variants_replays_the_text_workload(bench, variants, tmp_path):
    """--workload text runs (the benchmark refuses its speed part there, so the variants script
    asks for quality alone) and gives the benchmark's own figures for those instances."""
    out = tmp_path / "t.json"
    variants.main(["--arms", "8", "--instances", "1", "--horizon", "120", "--workload", "text",
                   "--out", str(out), "--variant", "lints=lints+lru"])
    data = json.loads(out.read_text())
    args = bench.parse_args(["--arms", "8", "--horizon", "120", "--workload", "text",
                             "--skip-speed"])
    from edge.config import EdgeConfig
    from edge.paging_cost import PagingCostModel
    direct = bench.run_instance("lints+lru", {}, data["seeds"][0], 8, args,
                                PagingCostModel(), EdgeConfig(), 10_000)
    assert data["variants"]["lints"]["per_instance"][0]["objective"] == direct["objective"]


def assert_rescore_gives_back(variants, out, data):
    """--rescore of the result at ``out`` with its criterion erased writes ``data`` back."""
    saved = json.loads(out.read_text())
    saved["criterion"] = None
    out.write_text(json.dumps(saved))
    assert variants.main(["--rescore", str(out)]) == 0
    assert json.loads(out.read_text()) == data


def printed_row(variants, capsys, option, out):
    """The cells of the last row ``option`` (a table printer) prints for the result ``out``."""
    capsys.readouterr()
    assert variants.main([option, str(out)]) == 0
    return capsys.readouterr().out.splitlines()[-1].split(" | ")


def test_router_variants_from_json_repeats_the_runs_tuning_objectives(bench, variants,
                                                                       tmp_path, capsys):
    """--from-json replays every learner at the run's chosen settings, with the run's horizon
    and dim: on the tuning family each mean objective is the run's tuning objective exactly
    (the same instances, router seeds and noise); the run's best baseline comes first, and the
    criterion block compares POLAR+ with it."""
    run = tmp_path / "b.json"
    bench.main(["--arms", "8", "--dim", "8", "--horizon", "200", "--quality-repeats", "1",
                "--tune-instances", "2", "--routes-instances", "3", "--skip-speed",
                "--out", str(run)])
    out = tmp_path / "v.json"
    variants.main(["--arms", "8", "--instances", "2", "--from-json", str(run),
                   "--out", str(out)])
    data, q = json.loads(out.read_text()), json.loads(run.read_text())["quality"]["8"]
    assert data["horizon"] == 200 and data["seeds"] == q["tuning_seeds"]
    assert list(data["variants"])[0] == q["checks"]["best_baseline"]
    for label, tuned in q["tuning"].items():
        if label in ("random", "oracle"):
            assert label not in data["variants"]
        elif tuned["tuning_objective"] is not None:
            assert data["variants"][label]["settings"] == tuned["chosen"]
            assert data["variants"][label]["mean"]["objective"] == tuned["tuning_objective"]
    verdict = data["criterion"]
    assert verdict["best_baseline"] == q["checks"]["best_baseline"]
    wins = int(verdict["polar+_objective_at_least_best"].split("/")[0])
    assert verdict["chance_of_4_of_5_at_this_rate"] == variants.at_least_four_of_five(wins / 2)
    assert "the issue's criterion on these 2 instances" in capsys.readouterr().out
    # --rescore recomputes the same criterion from the saved per-instance figures.
    assert_rescore_gives_back(variants, out, data)
    # --table prints the criterion as the docs' row: against the run's best, the best here,
    # the baseline beaten least, the paging-free ceiling, POLAR's own count and the strongest
    # baseline against the other baselines.
    row = printed_row(variants, capsys, "--table", out)
    here, least = verdict["on_these_instances"], verdict["baseline_beaten_least"]
    assert row[0] == "| linear 8"
    assert row[1] == f"{verdict['best_baseline']} {verdict['polar+_objective_at_least_best']}"
    assert row[2:5] == [here["best_baseline"], here["polar+_objective_at_least_best"],
                        here["polar+_paging_no_higher"]]
    assert row[7] == f"{least['baseline']} {least['polar+_objective_at_least']}"
    assert row[9].startswith(verdict["paging_free_ceiling"]["polar+_reward_at_least"] + " (")
    rivals = verdict["baselines_against_each_other"]
    assert row[11].startswith(f"{rivals['strongest']} {rivals['strongest_at_least']} (")
    assert row[11].endswith("%) |")
    polar = verdict["polar_baseline_beaten_least"]
    assert row[10] == f"{polar['baseline']} {polar['polar_objective_at_least']}"
    # --summary prints the README's row: the run's reported figures beside the fresh counts.
    row = printed_row(variants, capsys, "--summary", out)
    checks, strategies = q["checks"], q["strategies"]
    best = checks["best_baseline"]
    assert row[0] == "| linear 8"
    assert row[1].startswith(best) and row[1].endswith(
        f"({q['tuning'][best]['chosen'].get('router.linucb.prior_reward', 1.0)})")
    assert row[2] == checks["polar+_objective_at_least_best_per_instance"]
    plus = strategies["polar+"]["per_instance"]["objective"]
    fewest = min(sum(p >= o for p, o in zip(plus, strategies[b]["per_instance"]["objective"],
                                            strict=True))
                 for b in ("greedy+lru", "linucb+lru", "linucb+best-eviction", "lints+lru"))
    assert row[3] == f"{fewest}/1"
    assert row[4] == (f"{strategies['polar+']['total_paging_s']:.1f} / "
                      f"{strategies[best]['total_paging_s']:.1f}")
    assert row[6].startswith(f"{checks['decomposition_vs_best_baseline']['objective']:+.1f} = ")
    assert row[7] == (f"{least['polar+_objective_at_least']} / "
                      f"{verdict['paging_free_ceiling']['polar+_reward_at_least']} / "
                      f"{polar['polar_objective_at_least']}")
    assert row[8] == f"{rivals['strongest']} {rivals['strongest_at_least']} |"
    with pytest.raises(SystemExit, match="not a router_variants.py result"):
        variants.main(["--summary", str(run)])
    with pytest.raises(SystemExit):  # alone
        variants.parse_args(["--summary", str(out), "--table", str(out)])
    with pytest.raises(SystemExit, match="not a router_variants.py result"):
        variants.main(["--table", str(run)])
    with pytest.raises(SystemExit):  # alone
        variants.parse_args(["--table", str(out), "--arms", "8"])
    with pytest.raises(SystemExit):  # only a --from-json result can be rescored
        variants.main(["--rescore", str(run)])
    with pytest.raises(SystemExit):  # the run's horizon, not another
        variants.parse_args(["--arms", "8", "--from-json", str(run), "--horizon", "300"])
    with pytest.raises(SystemExit):  # an N the run does not have
        variants.parse_args(["--arms", "16", "--from-json", str(run)])


def test_router_variants_fresh_family_is_neither_tuned_nor_reported(bench, variants, tmp_path):
    out = tmp_path / "f.json"
    variants.main(["--arms", "8", "--instances", "3", "--horizon", "150", "--family", "fresh",
                   "--variant", "greedy=greedy+lru", "--out", str(out)])
    data = json.loads(out.read_text())
    seeds = data["seeds"]
    args = bench.parse_args([])
    # By hand: base 20260 + 2000006, then + N + 7919 r.
    assert seeds == [2020274, 2028193, 2036112]
    assert not set(seeds) & set(bench.instance_seeds(args.tune_seed, 8, 1000))
    assert not set(seeds) & set(bench.instance_seeds(args.seed, 8, 1000))
    # Router seeds and reward noise of their own too (index 20000 + r, not the tuning
    # family's 10000 + r): the benchmark's run_instance at those indices gives the same figures.
    from edge.config import EdgeConfig
    from edge.paging_cost import PagingCostModel
    fresh_args = bench.parse_args(["--arms", "8", "--horizon", "150", "--skip-speed"])
    for r, seed in enumerate(seeds):
        direct = bench.run_instance("greedy+lru", {}, seed, 8, fresh_args, PagingCostModel(),
                                    EdgeConfig(), 20_000 + r)
        assert data["variants"]["greedy"]["per_instance"][r]["objective"] == direct["objective"]
    shared = bench.run_instance("greedy+lru", {}, seeds[0], 8, fresh_args, PagingCostModel(),
                                EdgeConfig(), 10_000)
    assert shared["objective"] != data["variants"]["greedy"]["per_instance"][0]["objective"]


def test_chance_of_four_of_five_by_hand(variants):
    # 5 p^4 (1 - p) + p^5: p = 0.8 -> 0.4096 + 0.32768; p = 0.5 -> 6 / 32; the ends exact.
    assert variants.at_least_four_of_five(0.8) == pytest.approx(0.73728)
    assert variants.at_least_four_of_five(0.5) == pytest.approx(0.1875)
    assert variants.at_least_four_of_five(0.0) == 0.0
    assert variants.at_least_four_of_five(1.0) == 1.0


def test_criterion_names_the_best_baseline_on_these_instances_too(variants):
    """The run's best baseline (chosen on its five reported instances) need not be the
    strongest on other instances: the criterion is also computed against the baseline with
    the highest median objective here, and POLAR+ is counted against each. Figures by hand."""
    def runs_of(objectives, regrets, paging):
        return [{"objective": o, "regret": r, "total_paging_s": s}
                for o, r, s in zip(objectives, regrets, paging, strict=True)]
    runs = {
        "polar+": runs_of([10, 20, 30], [5, 6, 7], [1, 0.5, 1]),
        "lints+lru": runs_of([9, 19, 29], [6, 6, 6], [2, 2, 2]),      # median 19
        "linucb+lru": runs_of([11, 21, 29], [4, 5, 9], [0.5, 2, 2]),  # median 21: best here
        "polar": runs_of([99, 99, 99], [0, 0, 0], [0, 0, 0]),         # ours: never a baseline
        "random": runs_of([50, 50, 50], [0, 0, 0], [0, 0, 0]),        # a reference: never
    }
    run = {"best_baseline": "lints+lru", "best_cache_unaware_baseline": "lints+lru"}
    verdict = variants.criterion(runs, run)
    assert verdict["best_baseline"] == "lints+lru"
    assert verdict["polar+_objective_at_least_best"] == "3/3"
    assert verdict["median_objective_difference"] == 1
    assert verdict["regret_ratio_vs_best_cache_unaware"] == 1.0  # 6 / 6
    here = verdict["on_these_instances"]
    assert here["best_baseline"] == here["best_cache_unaware_baseline"] == "linucb+lru"
    assert here["polar+_objective_at_least_best"] == "1/3"  # 10 < 11, 20 < 21, 30 >= 29
    assert here["polar+_paging_no_higher"] == "2/3"         # 1 > 0.5, 0.5 <= 2, 1 <= 2
    assert here["median_objective_difference"] == -1
    assert here["regret_ratio_vs_best_cache_unaware"] == 6 / 5
    assert here["chance_of_4_of_5_at_this_rate"] == variants.at_least_four_of_five(1 / 3)
    assert verdict["polar+_objective_at_least_each_baseline"] == {
        "linucb+lru": "1/3", "lints+lru": "3/3"}
    assert verdict["baseline_beaten_least"] == {
        "baseline": "linucb+lru", "polar+_objective_at_least": "1/3",
        "chance_of_4_of_5_at_this_rate": variants.at_least_four_of_five(1 / 3)}
    # With its paging free (lambda 1, the benchmark's): POLAR+'s reward 11, 20.5, 31 against
    # linucb+lru's 11, 21, 29 (2 of 3) and lints+lru's 9, 19, 29 (3 of 3).
    assert verdict["paging_free_ceiling"] == {
        "polar+_reward_at_least_each_baseline_objective": {"linucb+lru": "2/3",
                                                           "lints+lru": "3/3"},
        "baseline": "linucb+lru", "polar+_reward_at_least": "2/3",
        "chance_of_4_of_5_at_this_rate": variants.at_least_four_of_five(2 / 3)}
    # POLAR+ minus each baseline: -1, -1, +1 and +1, +1, +1; three instances, so [min, max],
    # covering 1 - 2 / 8.
    assert verdict["objective_difference_vs_each_baseline"] == {
        "linucb+lru": {"median": -1, "low": -1, "high": 1, "coverage": 0.75},
        "lints+lru": {"median": 1, "low": 1, "high": 1, "coverage": 0.75}}
    # POLAR (99 every instance) counted the same way, never a baseline itself.
    assert verdict["polar_objective_at_least_each_baseline"] == {"linucb+lru": "3/3",
                                                                 "lints+lru": "3/3"}
    assert verdict["polar_baseline_beaten_least"]["polar_objective_at_least"] == "3/3"
    # Each baseline against the others: linucb+lru's 11, 21, 29 >= lints+lru's 9, 19, 29 in 3 of
    # 3 (the tie counts, as POLAR+'s do), lints+lru's in 1 of 3 (29 >= 29 only).
    assert verdict["baselines_against_each_other"] == {
        "at_least_every_other_baseline": {"linucb+lru": "3/3", "lints+lru": "1/3"},
        "strongest": "linucb+lru", "strongest_at_least": "3/3",
        "chance_of_4_of_5_at_this_rate": 1.0}
    del runs["polar"]
    assert "polar_baseline_beaten_least" not in variants.criterion(runs, run)
    # A lone baseline has no rival: nothing to count.
    del runs["lints+lru"]
    assert variants.criterion(runs, {"best_baseline": "linucb+lru",
                                     "best_cache_unaware_baseline": "linucb+lru"}
                              )["baselines_against_each_other"] == {}


def test_median_difference_interval_is_the_sign_tests_by_hand(variants):
    # n = 20: P(Binomial(20, 1/2) <= 5) = (1 + 20 + 190 + 1140 + 4845 + 15504) / 2^20
    # = 21700 / 1048576 = 0.0207 <= 0.025 and P(<= 6) = 0.0577 > 0.025, so the 6th and 15th
    # smallest, covering 1 - 2 x 0.0207.
    differences = [float(d) for d in range(20, 0, -1)]  # order must not matter
    assert variants.median_difference_interval(differences) == {
        "median": 10.5, "low": 6.0, "high": 15.0, "coverage": 1 - 2 * 21700 / 2 ** 20}
    # n = 5: even [min, max] misses with 2 / 32 > 0.05: the widest, with the coverage it has.
    assert variants.median_difference_interval([3, -1, 4, 1, 5]) == {
        "median": 3, "low": -1, "high": 5, "coverage": 1 - 2 / 32}
    with pytest.raises(ValueError, match="at least one"):
        variants.median_difference_interval([])


def test_differences_table_says_which_baselines_polar_plus_is_ahead_of_or_behind(
        variants, tmp_path, capsys):
    """--differences: POLAR+ minus each cache-unaware baseline per instance, the median and its
    interval, from a saved result's per-instance figures. Five instances, so each interval is
    [min, max] (by hand below)."""
    def variant(objectives):
        return {"per_instance": [{"objective": o, "regret": 0.0, "total_paging_s": 0.0}
                                 for o in objectives]}
    plus = [10, 20, 30, 40, 50]
    result = {"workload": "text", "arms": 64, "criterion": None, "variants": {
        "polar+": variant(plus),
        "greedy+lru": variant([p - d for p, d in zip(plus, [1, 2, 3, 4, 5], strict=True)]),
        "linucb+lru": variant([p - d for p, d in zip(plus, [-1, -2, -3, -4, -5], strict=True)]),
        "lints+lru": variant([p - d for p, d in zip(plus, [-1, 0, 1, 2, 0], strict=True)]),
    }}
    out = tmp_path / "r.json"
    out.write_text(json.dumps(result))
    row = printed_row(variants, capsys, "--differences", out)
    assert row == ["| text 64", "+3.0 [+1.0, +5.0]", "-3.0 [-5.0, -1.0]", "-",
                   "+0.0 [-1.0, +2.0]", "greedy+lru", "linucb+lru |"]
    with pytest.raises(SystemExit, match="--differences .*: not a router_variants.py result"):
        variants.main(["--differences", str(tmp_path / "missing.json")])


@pytest.mark.parametrize("bad, message", [
    ("nameonly", "expected NAME=STRATEGY"),
    ("x=nosuch", "unknown strategy 'nosuch'"),
    ("x=polar+:{alpha", "settings are not JSON"),
    ("x=polar+:[1]", "must be a JSON object"),
])
def test_router_variants_names_a_malformed_variant(variants, bad, message, capsys):
    with pytest.raises(SystemExit):
        variants.parse_args(["--arms", "8", "--variant", bad])
    assert message in capsys.readouterr().err


def test_epoch_stage_is_polar_plus_default_and_can_be_left_out(bench, tmp_path):
    left_out = bench.parse_args(["--no-tune-epochs"])
    assert bench.EPOCH_STAGE not in bench.strategy_stages("polar+", left_out)
    asked = bench.parse_args([])
    stages = bench.strategy_stages("polar+", asked)
    paths = [path for path, _ in stages]
    assert paths.index(bench.EPOCH_STAGE[0]) == paths.index("cache.policy") + 1
    # Its first choice keeps doubling epochs at the alpha chosen so far; the others are
    # POLAR's form, all three settings at once, at each alpha of the alpha stage.
    paths, choices = bench.EPOCH_STAGE
    assert bench._with({"router.linucb.alpha": 0.35}, paths, choices[0]) == {
        "router.polar.max_epoch_length": 16384, "router.polar.forced_exploration_scale": 0.25,
        "router.polar.charge_eviction": True, "router.linucb.alpha": 0.35}
    polar_form = [dict(zip(paths, c, strict=True)) for c in choices[1:]]
    assert [f.pop("router.linucb.alpha") for f in polar_form] == bench.ALPHAS
    assert all(f == {"router.polar.max_epoch_length": 256,
                     "router.polar.forced_exploration_scale": 0.0,
                     "router.polar.charge_eviction": False} for f in polar_form)
    assert bench.strategy_stages("polar", bench.parse_args(
        ["--no-tune-ridge", "--no-tune-prior"])) == bench.STRATEGIES["polar"][1]
    out = tmp_path / "e.json"
    bench.main(["--arms", "8", "--dim", "8", "--horizon", "200", "--quality-repeats", "1",
                "--tune-instances", "1", "--skip-speed", "--no-learner-routes", "--out", str(out)])
    data = json.loads(out.read_text())  # (the learner-routes stage: test_learner_routes_stage)
    assert data["inputs"]["tune_epochs"] is True
    chosen = data["quality"]["8"]["tuning"]["polar+"]["chosen"]
    assert chosen["router.polar.max_epoch_length"] in (16384, 256)
    tried = [t["settings"] for t in data["quality"]["8"]["tuning"]["polar+"]["tried"]]
    assert {t["router.polar.max_epoch_length"] for t in tried} == {16384, 256}
    # The joint stage tried POLAR's corner at every alpha (under the tuned eviction policy).
    corner_alphas = {t["router.linucb.alpha"] for t in tried
                     if t["router.polar.max_epoch_length"] == 256
                     and t["router.polar.forced_exploration_scale"] == 0.0
                     and t["router.polar.charge_eviction"] is False}
    assert corner_alphas == set(bench.ALPHAS)


def test_ridge_stage_follows_every_learners_first_alpha_and_ends_its_search(bench, tmp_path):
    assert bench.parse_args([]).tune_ridge
    # The ridge's rule alone (the prior stage, which follows the early ridge, has its own test).
    default = bench.parse_args(["--no-tune-prior"])
    without = bench.parse_args(["--no-tune-ridge", "--no-tune-prior"])
    assert all(bench.RIDGE_STAGE not in bench.strategy_stages(label, without)
               for label in bench.STRATEGIES)
    alpha = ("router.linucb.alpha", bench.ALPHAS)
    expected = {  # written out by hand from STRATEGIES and the rule in strategy_stages
        "greedy+lru": [bench.RIDGE_STAGE],
        "linucb+lru": [alpha, bench.RIDGE_STAGE, alpha, bench.RIDGE_STAGE],
        "linucb+best-eviction": [alpha, bench.RIDGE_STAGE, ("cache.policy", bench.EVICTION),
                                 alpha, bench.RIDGE_STAGE]}
    for label, stages in expected.items():
        assert bench.strategy_stages(label, default) == stages
    for label in bench.STRATEGIES:
        stages = bench.strategy_stages(label, default)
        if label in bench.REFERENCES:  # random and the oracle learn nothing
            assert bench.RIDGE_STAGE not in stages
            continue
        assert stages[-1] == bench.RIDGE_STAGE
        plain = bench.strategy_stages(label, without)
        if plain:  # the ridge right after the first alpha, and that alpha searched after it
            assert stages[:2] == [plain[0], bench.RIDGE_STAGE]
            retuned = len(plain) > 1 and plain[-1] == plain[0]
            assert stages[2:-1] == plain[1:] + ([] if retuned else [plain[0]])
    # POLAR+'s epoch stage comes after the early ridge, so the regimes are judged at a tuned one.
    polar_plus = bench.strategy_stages("polar+", default)
    assert polar_plus.index(bench.RIDGE_STAGE) < polar_plus.index(bench.EPOCH_STAGE)
    # A run with it tunes greedy + LRU's ridge too and writes the choice in the JSON.
    out = tmp_path / "r.json"
    bench.main(["--arms", "8", "--dim", "8", "--horizon", "200", "--quality-repeats", "1",
                "--tune-instances", "1", "--routes-instances", "2", "--skip-speed",
                "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["inputs"]["tune_ridge"] is True
    tuning = data["quality"]["8"]["tuning"]
    for label in ("greedy+lru", "lints+lru", "polar+"):
        assert tuning[label]["chosen"]["router.linucb.ridge_lambda"] in bench.RIDGE_STAGE[1]
        ridges = {t["settings"]["router.linucb.ridge_lambda"] for t in tuning[label]["tried"]
                  if "router.linucb.ridge_lambda" in t["settings"]}
        assert ridges == set(bench.RIDGE_STAGE[1])
    assert tuning["random"]["chosen"] == {} and tuning["oracle"]["chosen"] == {}


def test_prior_stage_follows_every_learners_early_ridge(bench, tmp_path):
    assert bench.parse_args([]).tune_prior  # the default since 2026-12-05
    assert not bench.parse_args(["--no-tune-prior"]).tune_prior
    with_prior = bench.parse_args(["--tune-prior"])
    alpha = ("router.linucb.alpha", bench.ALPHAS)
    ridge, prior = bench.RIDGE_STAGE, ("router.linucb.prior_reward", list(bench.PRIOR_GRID))
    expected = {  # written out by hand from STRATEGIES and the rule in strategy_stages
        "greedy+lru": [ridge, prior],
        "linucb+lru": [alpha, ridge, prior, alpha, ridge],
        "linucb+best-eviction": [alpha, ridge, prior, ("cache.policy", bench.EVICTION),
                                 alpha, ridge]}
    for label, stages in expected.items():
        assert bench.strategy_stages(label, with_prior) == stages
    no_ridge = bench.parse_args(["--tune-prior", "--no-tune-ridge"])
    assert bench.strategy_stages("greedy+lru", no_ridge) == [prior]
    assert bench.strategy_stages("linucb+lru", no_ridge) == [alpha, prior]
    for label in bench.STRATEGIES:
        stages = bench.strategy_stages(label, with_prior)
        assert (prior in stages) == (label not in bench.REFERENCES)
    out = tmp_path / "p.json"
    bench.main(["--arms", "8", "--dim", "8", "--horizon", "200", "--quality-repeats", "1",
                "--tune-instances", "1", "--routes-instances", "2", "--skip-speed", "--tune-prior",
                "--prior-grid", "1,0.5",
                "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["inputs"]["tune_prior"] is True
    assert data["inputs"]["prior_grid"] == [1.0, 0.5]
    tuning = data["quality"]["8"]["tuning"]
    for label in ("greedy+lru", "lints+lru", "polar+"):
        assert tuning[label]["chosen"]["router.linucb.prior_reward"] in (1.0, 0.5)
        priors = {t["settings"]["router.linucb.prior_reward"] for t in tuning[label]["tried"]
                  if "router.linucb.prior_reward" in t["settings"]}
        assert priors == {1.0, 0.5}


def test_prior_grid_reaches_below_the_old_edge_and_keeps_the_old_one_reproducible(bench, capsys):
    # Every learner chose the old grid's lowest value (0.8) at both N = 1024 runs.
    assert min(bench.PRIOR_GRID) < 0.8 and bench.PRIOR_GRID[0] == 1.0
    old = bench.parse_args(["--prior-grid", "1,0.95,0.9,0.8"])
    assert bench.prior_stage(old) == ("router.linucb.prior_reward", [1.0, 0.95, 0.9, 0.8])
    for bad, why in (("1,x", "not a comma-separated list"), ("1,1", "distinct"),
                     ("0.5,nan", "finite"), ("", "not a comma-separated list")):
        with pytest.raises(SystemExit):
            bench.parse_args(["--prior-grid", bad])
        err = capsys.readouterr().err
        assert "--prior-grid" in err and why in err, err


def test_polar_plus_search_prefers_settings_within_the_bounds(bench, monkeypatch):
    # Made-up measurements (run_many stands in for the replays): the higher the paging weight,
    # the higher the objective and the regret. Within a regret cap of 100, the best objective
    # is weight 0.25's; without bounds it is weight 1.0's.
    def fake_run_many(tasks, args):
        settings = tasks[0][1]
        weight = settings.get("router.polar.paging_weight", 1.0)
        return [{"objective": 1000 * weight + settings.get("router.linucb.alpha", 0.0),
                 "regret": 400 * weight, "total_paging_s": 10.0} for _ in tasks]

    monkeypatch.setattr(bench, "run_many", fake_run_many)
    args = bench.parse_args(["--no-learner-routes"])  # the search alone
    bounded = bench.tune_strategy("polar+", 8, [1, 2], args, None, None,
                                  {"regret_cap": 100.0, "paging_cap_s": 10.0})
    assert bounded["chosen"]["router.polar.paging_weight"] == 0.25
    assert bounded["bounds"]["chosen_within"] is True
    free = bench.tune_strategy("polar+", 8, [1, 2], args, None, None)
    assert free["chosen"]["router.polar.paging_weight"] == 1.0
    # No setting within: the search falls back to the objective.
    none_within = bench.tune_strategy("polar+", 8, [1, 2], args, None, None,
                                      {"regret_cap": 1.0, "paging_cap_s": 10.0})
    assert none_within["chosen"] == free["chosen"]
    assert none_within["bounds"]["chosen_within"] is False


def test_polar_plus_bounds_stage_searches_weight_alpha_and_forced_rounds_together(
        bench, monkeypatch):
    # Made-up measurements: regret rises with the weight, and at any weight below 1 it is
    # low only with alpha 0 and no forced rounds together, a corner the coordinate search does
    # not reach (it fixes alpha and the forced scale at weight 1, where both help).
    def fake_run_many(tasks, args):
        s = tasks[0][1]
        weight = s.get("router.polar.paging_weight", 1.0)
        alpha = s.get("router.linucb.alpha", 0.0)
        forced = s.get("router.polar.forced_exploration_scale", 0.25)
        corner = weight < 1.0 and alpha == 0.0 and forced == 0.0
        regret = 50.0 if corner else 400 * weight + 100 * (weight < 1.0)
        objective = 1000 * weight + 10 * alpha + forced
        return [{"objective": objective, "regret": regret, "total_paging_s": 10.0}
                for _ in tasks]

    monkeypatch.setattr(bench, "run_many", fake_run_many)
    args = bench.parse_args(["--no-learner-routes"])  # the search alone
    tuned = bench.tune_strategy("polar+", 8, [1, 2], args, None, None,
                                {"regret_cap": 100.0, "paging_cap_s": 10.0})
    # The corner within the cap with the best objective: weight 0.5, alpha 0, no forced rounds.
    assert (tuned["chosen"]["router.polar.paging_weight"], tuned["chosen"]["router.linucb.alpha"],
            tuned["chosen"]["router.polar.forced_exploration_scale"]) == (0.5, 0.0, 0.0)
    assert tuned["bounds"]["chosen_within"] is True
    assert tuned["bounds"]["bounds_stage_found"] is True
    # Nothing within anywhere: the coordinate search's choice stays, and the JSON says the
    # stage was tried and found nothing.
    none = bench.tune_strategy("polar+", 8, [1, 2], args, None, None,
                               {"regret_cap": 1.0, "paging_cap_s": 10.0})
    free = bench.tune_strategy("polar+", 8, [1, 2], args, None, None)
    assert none["chosen"] == free["chosen"]
    assert none["bounds"]["bounds_stage_found"] is False
    # Within after the coordinate search: the stage is not run.
    easy = bench.tune_strategy("polar+", 8, [1, 2], args, None, None,
                               {"regret_cap": 1000.0, "paging_cap_s": 10.0})
    assert easy["bounds"]["bounds_stage_found"] is None
    assert easy["chosen"] == free["chosen"]


def test_every_strategy_is_scored_at_the_benchmarks_lambda(bench):
    # A POLAR+ whose router charges paging at 0.05 still has every paging second counted at
    # the base file's lambda (1.0) in its objective.
    from edge.config import EdgeConfig
    from edge.paging_cost import PagingCostModel

    args = bench.parse_args(["--arms", "8", "--dim", "8", "--horizon", "200"])
    seed = bench.instance_seeds(args.tune_seed, 8, 1)[0]
    r = bench.run_instance("polar+", {"router.polar.paging_weight": 0.05}, seed, 8, args,
                           PagingCostModel(), EdgeConfig(), 0)
    assert r["total_paging_s"] > 0
    assert r["objective"] == pytest.approx(r["reward"] - 1.0 * r["total_paging_s"])


def test_learner_routes_settings_copy_the_reference_learner_and_add_polar_plus_cache_side(bench):
    chosen = {"router.linucb.alpha": 0.02, "router.linucb.ridge_lambda": 0.5,
              "router.linucb.prior_reward": 0.9}
    lints = bench.learner_routes_settings("lints+lru", chosen)
    assert lints == {**chosen, "router.linucb.exploration": "thompson", **bench.LEARNER_ROUTES}
    # Greedy's alpha is its label's (0), not a tuned one; the baseline's eviction policy is
    # replaced by the demand policy.
    greedy = bench.learner_routes_settings("greedy+lru", {"router.linucb.ridge_lambda": 0.1})
    assert greedy == {"router.linucb.ridge_lambda": 0.1, "router.linucb.alpha": 0.0,
                      **bench.LEARNER_ROUTES}
    best = bench.learner_routes_settings("linucb+best-eviction",
                                         {**chosen, "cache.policy": "s3fifo"})
    assert best == {**chosen, **bench.LEARNER_ROUTES}
    assert bench.LEARNER_ROUTES["cache.policy"] == "demand"
    assert bench.LEARNER_ROUTES["cache.policy_params.one_hit_first"] is True
    assert bench.LEARNER_ROUTES["router.polar.paging_weight"] == 0.0
    assert bench.LEARNER_ROUTES["router.polar.prefetch_plan"] is False


def test_learner_routes_stage(bench, tmp_path):
    assert bench.parse_args([]).learner_routes
    assert bench.parse_args([]).routes_instances == 24
    out = tmp_path / "l.json"
    bench.main(["--arms", "8", "--dim", "8", "--horizon", "300", "--quality-repeats", "1",
                "--tune-instances", "3", "--routes-instances", "5", "--skip-speed",
                "--no-tune-prior", "--no-tune-ridge", "--out", str(out)])
    q = json.loads(out.read_text())["quality"]["8"]
    tuning = q["tuning"]
    plus = tuning["polar+"]
    stage = plus["learner_routes"]
    # The tuning family's first 5 instances replayed: the 3 tuning ones (a check) and 2 more,
    # the only ones scored; none reported.
    replayed = bench.instance_seeds(bench.parse_args([]).tune_seed, 8, 5)
    assert stage["replayed_seeds"] == replayed and stage["seeds"] == replayed[3:]
    assert replayed[:3] == q["tuning_seeds"] and stage["instances"] == 2
    assert not set(replayed) & set(q["reported_seeds"])
    # Each baseline replayed at its chosen settings: the tuning's objectives on the tuning ones.
    for b in bench.CACHE_UNAWARE:
        assert stage["baselines"][b]["tuning_objectives"] == tuning[b]["tuning_objectives"]
        assert len(stage["baselines"][b]["objectives"]) == 2
    # The search's choice and every distinct baseline's routes, each once.
    candidates = stage["candidates"]
    assert candidates[0]["name"] == "search" and candidates[0]["routes_of"] is None
    named = [c["routes_of"] for c in candidates[1:]]
    for c in candidates[1:]:
        named += c.get("also_routes_of", [])
        assert c["settings"] == bench.learner_routes_settings(c["routes_of"],
                                                              tuning[c["routes_of"]]["chosen"])
    assert sorted(named) == sorted(bench.CACHE_UNAWARE)
    # Each key recomputed from the per-instance figures: within the bounds of the baseline with
    # the best mean here, the instances at least the baseline it beats least, the mean.
    ref = max(bench.CACHE_UNAWARE, key=lambda b: stage["baselines"][b]["mean_objective"])
    assert stage["reference"] == ref
    for c in candidates:
        counts = {b: sum(o >= r for o, r in zip(c["objectives"], stage["baselines"][b][
            "objectives"], strict=True)) for b in bench.CACHE_UNAWARE}
        within = (c["median_regret"] <= 1.10 * stage["baselines"][ref]["median_regret"]
                  and c["median_paging_s"] <= stage["baselines"][ref]["median_paging_s"])
        assert c["at_least_each_baseline"] == counts
        assert c["key"] == [within, min(counts.values()), c["mean_objective"]]
    best = max(range(len(candidates)), key=lambda i: (*candidates[i]["key"], -i))
    assert stage["routes_of"] == candidates[best]["routes_of"]
    assert stage["taken"] == (best != 0)
    assert plus["chosen"] == candidates[best]["settings"] == stage["settings"]
    assert plus["tuning_objectives"] == candidates[best]["tuning_objectives"]
    # --table shows the stage: a row per candidate, the taken one marked.
    rows = [line for line in bench.markdown_tables(json.loads(out.read_text())).splitlines()
            if "(2) |" in line]
    assert len(rows) == len(candidates)
    assert [row.endswith("| yes |") for row in rows] == [i == best for i in range(len(rows))]
    assert rows[0].startswith(f"| 8 | search (2) | {'yes' if candidates[0]['key'][0] else 'no'}"
                              f" | ") and f"| {candidates[0]['key'][1]} |" in rows[0]
    bench.main(["--arms", "8", "--dim", "8", "--horizon", "300", "--quality-repeats", "1",
                "--tune-instances", "1", "--skip-speed", "--no-tune-prior", "--no-tune-ridge",
                "--no-learner-routes", "--out", str(out)])
    assert "learner_routes" not in json.loads(out.read_text())["quality"]["8"]["tuning"]["polar+"]
    for few in ("4", "8"):  # the stage scores instances the tuning did not use
        with pytest.raises(SystemExit):
            bench.parse_args(["--tune-instances", "8", "--routes-instances", few])
    assert bench.parse_args(["--tune-instances", "30", "--no-learner-routes"]).tune_instances == 30
    # Its further instances are held out from the reported ones too: tuning seeds 12357 +
    # 7919 r meet the reported 20276 at r = 1, a seed only the stage uses.
    argv = ["--arms", "16", "--quality-repeats", "1", "--tune-instances", "1",
            "--routes-instances", "2", "--tune-seed", str(20260 - 7919), "--skip-speed",
            "--horizon", "50"]
    with pytest.raises(ValueError, match=r"reported instance seed\(s\) \[20276\]"):
        bench.main(argv)
    bench.main(argv[:-5] + ["--no-learner-routes"] + argv[-5:])  # without the stage: held out


def _stage_inputs(bench, objectives):
    """Made-up tuning results and a run_many that replays ``objectives`` (per strategy, per
    instance: label, or 'routes of' + label, or 'search'), regret 10 and paging 1 for all."""
    chosen = {"greedy+lru": {}, "linucb+lru": {"router.linucb.alpha": 0.0},
              "linucb+best-eviction": {"router.linucb.alpha": 0.1, "cache.policy": "s3fifo"},
              "lints+lru": {"router.linucb.alpha": 0.02}}
    search = {"router.linucb.alpha": 0.35, "cache.policy": "lfu"}
    routes = {json.dumps(bench.learner_routes_settings(b, chosen[b]), sort_keys=True): b
              for b in reversed(bench.CACHE_UNAWARE)}  # greedy's = LinUCB + LRU's: greedy

    def name_of(label, settings):
        if label != "polar+":
            return label
        if settings == search:
            return "search"
        return "routes of " + routes[json.dumps(settings, sort_keys=True)]

    def fake_run_many(tasks, args):
        return [{"objective": objectives[name_of(t[0], t[1])][t[-1] - 10_000], "regret": 10.0,
                 "total_paging_s": 1.0} for t in tasks]

    tuning = {b: {"chosen": chosen[b], "tuning_objectives": objectives[b][:2]}
              for b in bench.CACHE_UNAWARE}
    tuning["polar+"] = {"chosen": search, "tuning_objectives": objectives["search"][:2]}
    args = bench.parse_args(["--tune-instances", "2", "--routes-instances", "5"])
    return tuning, args, fake_run_many


def test_learner_routes_stage_takes_the_routes_of_the_baseline_beaten_least_often(
        bench, monkeypatch):
    # Two tuning instances, then three scored. On the scored ones LinTS has the best mean
    # (105): the stage before 2026-12-06 took its routes. But POLAR+ on LinTS's routes (+1
    # each: the paging it saves) is at least LinUCB + S3-FIFO in 1 of 3, on LinUCB + S3-FIFO's
    # routes at least every baseline in 2 of 3: it takes those. The search, tuned on the first
    # two, is far ahead there (500): counted, it would be at least every baseline in 3 of 5 and
    # win; the tuning instances are not counted.
    objectives = {"greedy+lru": [100, 100, 100, 100, 100],
                  "linucb+lru": [100, 100, 100, 100, 100],
                  "linucb+best-eviction": [100, 100, 110, 90, 110],
                  "lints+lru": [100, 100, 130, 80, 105],
                  "routes of greedy+lru": [0, 0, 101, 101, 101],
                  "routes of linucb+best-eviction": [0, 0, 111, 91, 111],
                  "routes of lints+lru": [0, 0, 131, 81, 106],
                  "search": [500, 500, 120, 85, 100]}
    tuning, args, fake = _stage_inputs(bench, objectives)
    monkeypatch.setattr(bench, "run_many", fake)
    stage = bench.learner_routes_stage(tuning, 8, args, None, None)
    keys = {c["name"]: c["key"] for c in stage["candidates"]}
    assert keys == {"search": [True, 1, 305 / 3], "routes of greedy+lru": [True, 1, 101.0],
                    "routes of linucb+best-eviction": [True, 2, 313 / 3],
                    "routes of lints+lru": [True, 1, 106.0]}
    assert stage["reference"] == "lints+lru" and stage["instances"] == 3
    assert stage["candidates"][1]["also_routes_of"] == ["linucb+lru"]
    assert stage["taken"] and stage["routes_of"] == "linucb+best-eviction"
    assert tuning["polar+"]["chosen"] == bench.learner_routes_settings(
        "linucb+best-eviction", tuning["linucb+best-eviction"]["chosen"])
    assert tuning["polar+"]["tuning_objectives"] == [0, 0]  # the 2 tuning instances'
    assert tuning["polar+"]["tuning_objective"] == 0.0


def test_learner_routes_stage_keeps_the_search_on_a_tie_and_checks_the_tuning_replay(
        bench, monkeypatch):
    objectives = {"greedy+lru": [1, 2, 100, 100, 100], "linucb+lru": [1, 2, 100, 100, 100],
                  "linucb+best-eviction": [1, 2, 110, 90, 110],
                  "lints+lru": [1, 2, 130, 80, 105],
                  "routes of greedy+lru": [1, 2, 101, 101, 101],
                  "routes of linucb+best-eviction": [1, 2, 111, 91, 111],
                  "routes of lints+lru": [1, 2, 131, 81, 106], "search": [1, 2, 111, 91, 111]}
    tuning, args, fake = _stage_inputs(bench, objectives)
    monkeypatch.setattr(bench, "run_many", fake)
    search = dict(tuning["polar+"]["chosen"])
    stage = bench.learner_routes_stage(tuning, 8, args, None, None)
    assert stage["taken"] is False and stage["routes_of"] is None
    assert tuning["polar+"]["chosen"] == search
    # A replay of the tuning instances that differs from the tuning's is refused.
    tuning["lints+lru"]["tuning_objectives"] = [1, 3]
    with pytest.raises(RuntimeError, match="lints\\+lru: the learner-routes stage's replay"):
        bench.learner_routes_stage(tuning, 8, args, None, None)


def test_reuse_tuning_replays_nothing_measured_and_gives_the_same_run(bench, tmp_path,
                                                                       monkeypatch):
    first, again = tmp_path / "a.json", tmp_path / "b.json"
    argv = ["--arms", "8", "--dim", "8", "--horizon", "200", "--quality-repeats", "1",
            "--tune-instances", "2", "--routes-instances", "3", "--skip-speed",
            "--no-tune-prior", "--no-tune-ridge"]
    bench.main(argv + ["--out", str(first)])
    replayed = []
    run_many = bench.run_many

    def counting(tasks, args):
        replayed.extend(tasks)
        return run_many(tasks, args)

    monkeypatch.setattr(bench, "run_many", counting)
    bench.main(argv + ["--reuse-tuning", str(first), "--out", str(again)])
    a, b = (json.loads(p.read_text())["quality"]["8"] for p in (first, again))
    for label in bench.STRATEGIES:
        assert a["tuning"][label]["chosen"] == b["tuning"][label]["chosen"]
        assert all(t["reused"] for t in b["tuning"][label]["tried"])
        drop = ("wall_s",)
        assert ({k: v for k, v in a["strategies"][label].items() if k not in drop}
                == {k: v for k, v in b["strategies"][label].items() if k not in drop})
    assert a["tuning"]["polar+"]["learner_routes"] == b["tuning"]["polar+"]["learner_routes"]
    # Only the stage (3 instances per baseline and candidate) and the reported instance ran.
    stage = b["tuning"]["polar+"]["learner_routes"]
    assert len(replayed) == 3 * (4 + len(stage["candidates"])) + len(bench.STRATEGIES)
    with pytest.raises(SystemExit, match="horizon \\(200 there, 300 here\\)"):
        bench.main(argv[:5] + ["300"] + argv[6:] + ["--reuse-tuning", str(first)])


def test_router_variants_learner_routes_replays_polar_plus_on_the_references_routes(
        bench, variants, tmp_path, capsys):
    run = tmp_path / "b.json"
    bench.main(["--arms", "8", "--dim", "8", "--horizon", "200", "--quality-repeats", "1",
                "--tune-instances", "2", "--skip-speed", "--no-tune-prior", "--no-tune-ridge",
                "--no-learner-routes", "--out", str(run)])
    q = json.loads(run.read_text())["quality"]["8"]
    reference = q["tuning"]["polar+"]["bounds"]["reference"]
    out = tmp_path / "v.json"
    variants.main(["--arms", "8", "--instances", "2", "--from-json", str(run),
                   "--learner-routes", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["learner_routes"] is True
    plus = data["variants"]["polar+"]
    assert plus["settings"] == bench.learner_routes_settings(reference,
                                                             q["tuning"][reference]["chosen"])
    assert plus["settings"] != q["tuning"]["polar+"]["chosen"]
    # The reference's routes: its regret on each instance, to the digit.
    ref = data["variants"][reference]["per_instance"]
    assert [r["regret"] for r in plus["per_instance"]] == [r["regret"] for r in ref]
    # Against that baseline each instance is decided by the paging alone: counted by hand.
    pairs = list(zip(plus["per_instance"], ref, strict=True))
    verdict = data["criterion"]
    assert verdict["routes_reference"] == {
        "baseline": reference, "instances": 2, "same_regret": 2,
        "above": sum(p["objective"] > r["objective"] for p, r in pairs),
        "equal": sum(p["objective"] == r["objective"] for p, r in pairs),
        "below": sum(p["objective"] < r["objective"] for p, r in pairs),
        "paging_lower": sum(p["total_paging_s"] < r["total_paging_s"] for p, r in pairs)}
    for b, equal in verdict["polar+_objective_equal_each_baseline"].items():
        others = data["variants"][b]["per_instance"]
        ties = sum(p["objective"] == o["objective"]
                   for p, o in zip(plus["per_instance"], others, strict=True))
        assert equal == f"{ties}/2"
    # --rescore keeps the reference (read back from the run), --routes-table prints it.
    assert_rescore_gives_back(variants, out, data)
    row = printed_row(variants, capsys, "--routes-table", out)
    routes, least = verdict["routes_reference"], verdict["baseline_beaten_least"]
    assert row[0] == "| linear 8" and row[1] == reference and row[2] == "2/2"
    assert row[3] == f"{routes['above']} / {routes['equal']} / {routes['below']}"
    equal = verdict["polar+_objective_equal_each_baseline"][least["baseline"]].split("/")[0]
    assert row[6] == f"{least['baseline']} {least['polar+_objective_at_least']} ({equal})"
    with pytest.raises(SystemExit, match="not a router_variants.py result"):
        variants.main(["--routes-table", str(run)])
    with pytest.raises(SystemExit):
        variants.parse_args(["--arms", "8", "--learner-routes", "--variant", "g=greedy+lru"])


def test_router_variants_counts_polar_plus_against_the_routes_its_run_took(
        bench, variants, tmp_path, capsys):
    """A run whose own learner-routes stage took a baseline's routes is replayed without
    --learner-routes, and still counted against that baseline (--routes-table works on it); a
    run whose stage did not take them has no such count."""
    run = tmp_path / "b.json"
    bench.main(["--arms", "8", "--dim", "8", "--horizon", "200", "--quality-repeats", "1",
                "--tune-instances", "2", "--skip-speed", "--no-tune-prior", "--no-tune-ridge",
                "--no-learner-routes", "--out", str(run)])
    result = json.loads(run.read_text())
    plus = result["quality"]["8"]["tuning"]["polar+"]
    reference = plus["bounds"]["reference"]
    out = tmp_path / "v.json"
    variants.main(["--arms", "8", "--instances", "2", "--from-json", str(run), "--out", str(out)])
    assert "routes_reference" not in json.loads(out.read_text())["criterion"]
    # As the stage writes it when it takes the routes (test_learner_routes_stage).
    settings = bench.learner_routes_settings(
        reference, result["quality"]["8"]["tuning"][reference]["chosen"])
    plus["chosen"] = settings
    plus["learner_routes"] = {"settings": settings, "taken": True}
    run.write_text(json.dumps(result))
    variants.main(["--arms", "8", "--instances", "2", "--from-json", str(run), "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["learner_routes"] is False
    assert data["criterion"]["routes_reference"]["baseline"] == reference
    assert data["criterion"]["routes_reference"]["same_regret"] == 2
    assert_rescore_gives_back(variants, out, data)
    assert printed_row(variants, capsys, "--routes-table", out)[1] == reference
    # Since 2026-12-06 the stage weighs every baseline's routes and names the one it took.
    other = "lints+lru" if reference != "lints+lru" else "linucb+best-eviction"
    settings = bench.learner_routes_settings(
        other, result["quality"]["8"]["tuning"][other]["chosen"])
    plus["chosen"] = settings
    plus["learner_routes"] = {"settings": settings, "taken": True, "routes_of": other}
    run.write_text(json.dumps(result))
    variants.main(["--arms", "8", "--instances", "2", "--from-json", str(run), "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["criterion"]["routes_reference"]["baseline"] == other
    assert data["criterion"]["routes_reference"]["same_regret"] == 2


@pytest.fixture(scope="module")
def probe(bench):
    spec = importlib.util.spec_from_file_location(
        "probe_learner_routes_speed", SCRIPT.parent / "probe_learner_routes_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learner_routes_speed_probe_times_the_three_configurations(probe, capsys):
    configs = dict(probe.configurations())
    routes = configs["learner-routes, alpha 0"]
    assert routes.polar.paging_weight == 0.0 and routes.polar.prefetch_plan is False
    assert routes.polar.epoch_length == routes.polar.max_epoch_length == 64
    assert routes.linucb.alpha == 0.0
    assert configs["learner-routes, alpha 0.5"].polar == routes.polar
    assert configs["default"].polar.prefetch_plan is True
    assert probe.main(["--arms", "8", "--steps", "100", "--repeats", "1"]) == 0
    figures = json.loads(capsys.readouterr().out)["us_per_step"]
    assert set(figures) == {f"N=8, {name}" for name in configs}
    assert all(0 < f["median_us"] <= f["p99_us"] for f in figures.values())


def test_speed_probe_times_the_configuration_a_run_chose(bench, probe, tmp_path, capsys):
    """--from-json RUN adds POLAR+ at the settings RUN chose at each N (the configuration its
    quality table reports), Thompson draws included; a run without that N is refused."""
    from edge.config import EdgeConfig

    chosen = {"router.linucb.alpha": 0.01, "router.linucb.exploration": "thompson",
              "router.linucb.prior_reward": 0.6, "router.polar.epoch_length": 64,
              "router.polar.max_epoch_length": 64, "router.polar.prefetch_plan": False}
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"quality": {"8": {"tuning": {"polar+": {"chosen": chosen}}}}}))
    config = bench.chosen_router_config(json.loads(run.read_text()), 8, EdgeConfig())
    assert (config.linucb.alpha, config.linucb.exploration, config.linucb.prior_reward) == (
        0.01, "thompson", 0.6)
    assert (config.polar.epoch_length, config.polar.prefetch_plan) == (64, False)
    # Where the run chose nothing at N, the defaults.
    assert bench.chosen_router_config({"quality": {}}, 8, EdgeConfig()) == EdgeConfig().router
    assert probe.main(["--arms", "8", "--steps", "100", "--repeats", "1",
                       "--from-json", str(run)]) == 0
    figures = json.loads(capsys.readouterr().out)["us_per_step"]
    assert 0 < figures["N=8, POLAR+ as chosen in run.json"]["median_us"]
    with pytest.raises(SystemExit):
        probe.main(["--arms", "16", "--from-json", str(run)])
    assert "no quality run at N = [16] (it has ['8'])" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(SystemExit):
        probe.main(["--arms", "8", "--from-json", str(tmp_path / "bad.json")])
    assert "not a bench_router.py result" in capsys.readouterr().err


def test_first_of_a_result_equals_a_replay_of_that_many_instances(bench, variants, tmp_path):
    run = tmp_path / "b.json"
    bench.main(["--arms", "8", "--dim", "8", "--horizon", "150", "--quality-repeats", "1",
                "--tune-instances", "1", "--routes-instances", "2", "--skip-speed",
                "--no-tune-prior", "--no-tune-ridge", "--out", str(run)])
    three, two, cut = tmp_path / "3.json", tmp_path / "2.json", tmp_path / "cut.json"
    for n, out in (("3", three), ("2", two)):
        variants.main(["--arms", "8", "--instances", n, "--family", "fresh", "--from-json",
                       str(run), "--out", str(out)])
    assert variants.main(["--first-of", str(three), "--instances", "2", "--out", str(cut)]) == 0
    replayed, derived = json.loads(two.read_text()), json.loads(cut.read_text())
    assert derived.pop("first_of") == {"result": str(three), "instances": 2}
    assert derived == replayed
    with pytest.raises(SystemExit, match="it has 3 instances, --instances 4"):
        variants.main(["--first-of", str(three), "--instances", "4", "--out", str(cut)])
    with pytest.raises(SystemExit):  # it needs --instances and --out, and nothing else
        variants.parse_args(["--first-of", str(three), "--out", str(cut)])
