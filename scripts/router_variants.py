#!/usr/bin/env python3
"""Strategies at given settings on the routing benchmark's *tuning-family* instances.

How a routing rule is measured before it is kept (docs/router-results.md, "Rules measured"): the
same problems, replay, noise and objective as ``scripts/bench_router.py``, but only on instances
of its tuning family (seeds ``--tune-seed + N + 7919 r``), never on the reported ones, so a
rule chosen here does not see the instances the README reports. Each ``--variant`` is
``NAME=STRATEGY`` or ``NAME=STRATEGY:JSON`` with STRATEGY a label of bench_router's STRATEGIES
and JSON its settings (dotted policy-file paths, as in the benchmark's ``tuning.chosen``):

    python scripts/router_variants.py --arms 64 --instances 8 \\
        --variant 'lints=lints+lru:{"router.linucb.alpha": 0.02}' \\
        --variant 'polar+ lru=polar+:{"router.linucb.alpha": 0.0, "cache.policy": "lru"}' \\
        --variant 'polar+ lfu=polar+:{"router.linucb.alpha": 0.0, "cache.policy": "lfu"}'

Prints per variant the mean objective, regret and paging over the instances, then each
instance's objective / regret / paging seconds, then every variant against the first one
(mean objective difference and instances at least as good). ``--out`` writes it all as JSON.

``--family fresh`` replays instead a third family of instances (seeds ``--seed + 2000006 + N +
7919 r``, router seeds and reward noise of their own), disjoint from the tuning and the reported
ones (checked): how a benchmark run's
chosen settings do on instances neither its tuning nor its report saw. ``--from-json F`` takes
the variants from a ``bench_router.py`` JSON: every learner at its ``tuning.chosen`` settings
at N, the run's best baseline first, and the run's workload, horizon and seeds; with it the
output adds the issue's criterion on these instances (POLAR+ against that baseline: instances at
least as good, paging no higher, regret against the run's best cache-unaware baseline) and the
chance, at the per-instance rate seen, that five instances would give at least four; then the
same against the baselines best on *these* instances by the benchmark's own rule (the run's
best, chosen on five instances, need not be), POLAR+ against each baseline, and the cache
side's ceiling (``paging_free_ceiling``: POLAR+'s reward, its paging charged at 0, against each
baseline's objective), and each baseline held to the same test against the others
(``baselines_against_each_other``: what the criterion asks of any strategy). ``--table
RESULT...`` prints those as docs/router.md's rows, ``--summary RESULT...`` as README's
(beside the reported figures of the run each names), ``--differences RESULT...`` POLAR+'s
objective minus each cache-unaware baseline's with the 95 % interval of the median difference
(the criterion stated on a family of instances instead of by counts on five), ``--rescore
RESULT`` recomputes the criterion part of a saved result from its per-instance figures, and
``--first-of RESULT --instances K --out NEW`` writes a saved result cut to its first K
instances (what a replay of K gives: a 60-instance check is also the 20-instance one):

    python scripts/router_variants.py --arms 64 --instances 20 --family fresh --jobs 2 \
        --from-json docs/results/bench_router-linear-64-t8-ridge.json
    python scripts/router_variants.py --rescore docs/results/router_fresh-linear-64.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_router as bench  # noqa: E402

from edge.config import EdgeConfig  # noqa: E402
from edge.paging_cost import PagingCostModel  # noqa: E402


def parse_variant(text: str) -> tuple[str, str, dict]:
    """``NAME=STRATEGY[:JSON]`` -> (name, strategy label, settings)."""
    name, sep, spec = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME=STRATEGY[:JSON]")
    label, _, settings_text = spec.partition(":")
    if label not in bench.STRATEGIES:
        raise argparse.ArgumentTypeError(
            f"--variant {text!r}: unknown strategy {label!r} (one of "
            f"{', '.join(bench.STRATEGIES)})")
    try:
        settings = json.loads(settings_text) if settings_text.strip() else {}
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"--variant {text!r}: settings are not JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise argparse.ArgumentTypeError(f"--variant {text!r}: settings must be a JSON object")
    return name.strip(), label, settings


# The fresh family's seeds: base + N + 7919 r with base = --seed + FRESH_OFFSET. The tuning
# family's base is --seed + 1000003 and the reported one's --seed; neither difference is a
# multiple of 7919, so no r of one family meets another's (checked anyway: family_seeds).
FRESH_OFFSET = 2_000_006
FAMILIES = ("tuning", "fresh")
# Each instance's router seed and reward noise come from its index (bench_router.run_instance:
# 1000 + index, 2000 + index): the reported instances use 0-4, the tuning ones 10000 + r, the
# fresh ones FRESH_INDEX + r. Were the fresh ones to reuse the tuning indices, instance r of
# both families would share its noise and router draws, and settings tuned to those draws would
# look better on the fresh family than they are.
TUNING_INDEX = 10_000
FRESH_INDEX = 20_000


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", type=int,
                        help="catalogue size N (required, except with --rescore)")
    parser.add_argument("--instances", type=int, default=None,
                        help="instances of the family (r = 0 .. instances - 1; default 8)")
    parser.add_argument("--family", choices=FAMILIES, default="tuning",
                        help="tuning: the benchmark's tuning instances; fresh: a third family, "
                             "disjoint from the tuning and the reported ones")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[],
                        help="NAME=STRATEGY[:JSON settings]; the first is the reference")
    parser.add_argument("--from-json", metavar="FILE",
                        help="variants, workload, horizon and seeds from a bench_router.py JSON: "
                             "every learner at its chosen settings at --arms, the run's best "
                             "baseline first (before any --variant)")
    parser.add_argument("--workload", choices=bench.WORKLOADS, default=None,
                        help="default linear (or the --from-json run's)")
    parser.add_argument("--horizon", type=int, default=None,
                        help="default 20000 (or the --from-json run's)")
    parser.add_argument("--learner-routes", action="store_true",
                        help="with --from-json: POLAR+ at the benchmark's learner-routes "
                             "settings (the run's bounds reference's routes, POLAR+'s cache "
                             "side: bench_router.learner_routes_settings) instead of its chosen "
                             "ones, for runs made before that stage")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", help="write the results as JSON here too")
    parser.add_argument("--rescore", metavar="RESULT",
                        help="recompute the criterion of a saved --from-json RESULT from its "
                             "per-instance figures and write it back; replays nothing")
    parser.add_argument("--first-of", metavar="RESULT",
                        help="with --instances K and --out NEW: a saved --from-json RESULT cut "
                             "to its first K instances, its criterion recomputed (what a replay "
                             "of K instances gives); replays nothing")
    parser.add_argument("--table", metavar="RESULT", nargs="+",
                        help="only print the markdown table of saved --from-json RESULTs' "
                             "criteria, a row each (docs/router.md's fresh-instance tables)")
    parser.add_argument("--summary", metavar="RESULT", nargs="+",
                        help="only print the README's routing-quality table: a row per saved "
                             "--from-json RESULT, its run's reported figures beside its own")
    parser.add_argument("--differences", metavar="RESULT", nargs="+",
                        help="only print POLAR+'s objective minus each cache-unaware "
                             "baseline's on saved RESULTs' instances: the median difference "
                             "and its 95 %% interval, a row per RESULT")
    parser.add_argument("--routes-table", metavar="RESULT", nargs="+",
                        help="only print docs/router.md's table of saved --learner-routes "
                             "RESULTs: POLAR+ against the baseline whose routes it takes, the "
                             "run's best and the baseline it beats least, ties shown")
    args = parser.parse_args(argv)
    if args.first_of:
        if (args.instances is None or not args.out or args.arms is not None or args.variant
                or args.from_json or args.rescore or args.table or args.summary
                or args.differences or args.routes_table):
            parser.error("--first-of takes --instances and --out, and no other option")
        return args
    alone = [name for name, given in (("--rescore", args.rescore), ("--table", args.table),
                                      ("--summary", args.summary),
                                      ("--differences", args.differences),
                                      ("--routes-table", args.routes_table)) if given]
    if alone:
        if (args.arms is not None or args.variant or args.from_json or args.out
                or len(alone) > 1):
            parser.error(f"{alone[0]} takes no other option")
        return args
    if args.arms is None:
        parser.error("--arms is required")
    if args.instances is None:
        args.instances = 8
    args.run = None
    if args.learner_routes and not args.from_json:
        parser.error("--learner-routes needs --from-json (it takes the run's settings)")
    if args.from_json:
        args.run = _load_run(parser, args)
    args.workload = args.workload or "linear"
    args.horizon = args.horizon or 20000
    if not args.variant:
        parser.error("give at least one --variant, or --from-json")
    names = [name for name, _, _ in args.variant]
    if len(set(names)) != len(names):
        parser.error(f"variant names must differ, got {names}")
    if args.instances < 1:
        parser.error(f"--instances must be at least 1, got {args.instances}")
    return args


def _load_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The --from-json run at --arms: its variants go first, its inputs fill the defaults."""
    try:
        data = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        inputs, quality = data["inputs"], data["quality"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.error(f"--from-json {args.from_json}: not a bench_router.py JSON ({exc})")
    entry = quality.get(str(args.arms))
    if entry is None:
        parser.error(f"--from-json {args.from_json}: no N = {args.arms} in it (it has "
                     f"{', '.join(sorted(quality, key=int))})")
    for name in ("workload", "horizon"):
        given = getattr(args, name)
        if given is not None and given != inputs[name]:
            parser.error(f"--{name} {given} differs from the --from-json run's {inputs[name]}")
        setattr(args, name, inputs[name])
    checks = entry["checks"]
    learners = [label for label in bench.STRATEGIES
                if label not in bench.REFERENCES and label in entry["tuning"]]
    order = [checks["best_baseline"]] + [b for b in learners if b != checks["best_baseline"]]
    chosen = {label: entry["tuning"][label]["chosen"] for label in order}
    if args.learner_routes:
        reference = routes_reference(entry)
        if reference is None:
            parser.error(f"--learner-routes: the --from-json run's POLAR+ at N = {args.arms} "
                         "was tuned without bounds (--objective-only): no reference baseline")
        chosen["polar+"] = bench.learner_routes_settings(reference, chosen[reference])
    args.routes_reference = reference if args.learner_routes else routes_taken_by_run(entry)
    args.variant = [(label, label, chosen[label]) for label in order] + args.variant
    return {"path": args.from_json, "seed": inputs["seed"], "tune_seed": inputs["tune_seed"],
            "dim": inputs["dim"], "budget_fraction": inputs["budget_fraction"],
            "noise": inputs["noise"], "learner_routes": args.learner_routes,
            "routes_reference": args.routes_reference,
            "best_baseline": checks["best_baseline"],
            "best_cache_unaware_baseline": checks["best_cache_unaware_baseline"]}


def routes_reference(entry: dict) -> str | None:
    """The baseline whose routes the learner-routes rule takes in a run's ``quality.N``: the
    reference of POLAR+'s bounds (None for a run tuned by the objective alone)."""
    return entry["tuning"]["polar+"].get("bounds", {}).get("reference")


def routes_taken_by_run(entry: dict) -> str | None:
    """The baseline whose routes POLAR+ took in a run's ``quality.N`` by the benchmark's own
    learner-routes stage (``tuning.polar+.learner_routes.taken``), so that a result replaying
    that run counts POLAR+ against it as ``--learner-routes`` does; None where the stage did
    not take them (or did not run)."""
    stage = entry["tuning"]["polar+"].get("learner_routes", {})
    if not stage.get("taken"):
        return None
    # The stage names the baseline (since 2026-12-06); before, it took the bounds reference's.
    return stage.get("routes_of") or routes_reference(entry)


def family_seeds(args: argparse.Namespace, bench_args: argparse.Namespace) -> list[int]:
    """The seeds of --family, refused if one is also a tuning or a reported instance's (for
    the tuning family: a reported one's)."""
    reported = bench.instance_seeds(bench_args.seed, args.arms, bench_args.quality_repeats)
    tuning = bench.instance_seeds(bench_args.tune_seed, args.arms,
                                  max(args.instances, bench_args.tune_instances))
    if args.family == "tuning":
        seeds = tuning[:args.instances]
    else:
        seeds = bench.instance_seeds(bench_args.seed + FRESH_OFFSET, args.arms, args.instances)
        bench.check_seed_split(tuning, seeds)
    bench.check_seed_split(seeds, reported)
    return seeds


def at_least_four_of_five(rate: float) -> float:
    """P(at least 4 of 5 independent instances are wins) at a per-instance win rate."""
    return sum(math.comb(5, k) * rate ** k * (1 - rate) ** (5 - k) for k in (4, 5))


def median_difference_interval(diffs: list[float], level: float = 0.95) -> dict:
    """The median of paired differences with its distribution-free confidence interval (the
    sign test's: order statistics k and n + 1 - k, k the largest with P(Binomial(n, 1/2) < k)
    at most (1 - level) / 2, so the interval covers the true median with probability at least
    ``level`` whatever the differences' distribution). Too few pairs for ``level`` give the
    widest interval, the smallest and largest difference, with the coverage it has."""
    n = len(diffs)
    if n == 0:
        raise ValueError("median_difference_interval needs at least one difference")
    ordered = sorted(diffs)
    # [d_k, d_(n+1-k)] misses the median when fewer than k differences lie below it (or
    # fewer than k above): each side has P(Binomial(n, 1/2) < k), ``tail``. Narrow the
    # interval (raise k) while that stays within (1 - level) / 2.
    tail, k = 1 / 2 ** n, 1
    while k + 1 <= (n + 1) / 2:
        wider_tail = tail + math.comb(n, k) / 2 ** n
        if wider_tail > (1 - level) / 2:
            break
        tail, k = wider_tail, k + 1
    return {"median": statistics.median(diffs), "low": ordered[k - 1], "high": ordered[n - k],
            "coverage": 1 - 2 * tail}


def paired_differences(runs: dict[str, list[dict]], baselines: list[str]) -> dict:
    """POLAR+'s objective minus each baseline's, instance by instance: the median and its 95 %
    interval (``median_difference_interval``). An interval above 0 says POLAR+ is ahead of that
    baseline on this family of instances, below 0 behind it, across 0 that these instances
    cannot tell; unlike a count of wins it does not turn on which of several level learners
    happens to lead on five instances."""
    plus = [r["objective"] for r in runs["polar+"]]
    return {b: median_difference_interval(
        [p - r["objective"] for p, r in zip(plus, runs[b], strict=True)]) for b in baselines}


def criterion(runs: dict[str, list[dict]], run: dict) -> dict:
    """The issue's criterion for POLAR+ on these instances, against the --from-json run's best
    baseline (per instance) and best cache-unaware baseline (regret, medians), as chosen on
    the run's five reported instances; under ``on_these_instances`` the same against the
    baselines that are best on *these* instances by the benchmark's own rule (``checks``:
    the highest median objective), since the run's choice, made on five instances, need not be
    the strongest here; POLAR+ against every baseline, instance by instance; each baseline
    against the others the same way; and, where the run has it, POLAR against every
    baseline."""
    verdict = _criterion_against(runs, run["best_baseline"], run["best_cache_unaware_baseline"])
    baselines = bench.baseline_labels(runs)
    unaware = [b for b in bench.CACHE_UNAWARE if b in runs]

    def median_objective(label: str) -> float:
        return statistics.median(r["objective"] for r in runs[label])

    verdict["on_these_instances"] = _criterion_against(
        runs, max(baselines, key=median_objective), max(unaware, key=median_objective))
    verdict["polar+_objective_at_least_each_baseline"], verdict["baseline_beaten_least"] = (
        _learner_against_baselines("polar+", runs, baselines))
    # Ties count as "at least": how many are ties (a cache side that evicts what the baseline's
    # policy does gives the baseline's objective to the digit).
    plus = runs["polar+"]
    verdict["polar+_objective_equal_each_baseline"] = {
        b: f"{sum(p['objective'] == r['objective'] for p, r in zip(plus, runs[b], strict=True))}"
           f"/{len(plus)}" for b in baselines}
    if run.get("routes_reference"):
        verdict["routes_reference"] = against_routes_reference(runs, run["routes_reference"])
    verdict["paging_free_ceiling"] = paging_free_ceiling(runs, baselines)
    verdict["objective_difference_vs_each_baseline"] = paired_differences(runs, baselines)
    verdict["baselines_against_each_other"] = baselines_against_each_other(runs, baselines)
    if "polar" in runs:
        # POLAR (fixed epochs) is not the issue's strategy, but it is the cache-aware learner
        # with the smaller tuning space: counted the same way, it shows whether POLAR+'s
        # losses here are its rules or their selection on eight tuning instances.
        (verdict["polar_objective_at_least_each_baseline"],
         verdict["polar_baseline_beaten_least"]) = _learner_against_baselines(
            "polar", runs, baselines)
    return verdict


def against_routes_reference(runs: dict[str, list[dict]], reference: str) -> dict:
    """POLAR+ at the learner-routes settings against the baseline whose routes it takes
    (``--learner-routes``): the same routes, so the same reward and regret on every instance
    (``same_regret`` counts it), and each instance decided by the paging alone: above, equal
    (the demand order evicted what the baseline's own policy did) or below it."""
    pairs = list(zip(runs["polar+"], runs[reference], strict=True))
    return {"baseline": reference, "instances": len(pairs),
            "same_regret": sum(p["regret"] == r["regret"] for p, r in pairs),
            "above": sum(p["objective"] > r["objective"] for p, r in pairs),
            "equal": sum(p["objective"] == r["objective"] for p, r in pairs),
            "below": sum(p["objective"] < r["objective"] for p, r in pairs),
            "paging_lower": sum(p["total_paging_s"] < r["total_paging_s"] for p, r in pairs)}


def _learner_against_baselines(learner: str, runs: dict[str, list[dict]],
                               baselines: list[str]) -> tuple[dict[str, str], dict]:
    """``learner``'s objective against each baseline's, instance by instance: 'k/n' per
    baseline, and the baseline it beats least with its 'k/n' and the chance of four of five."""
    each, fewest, least, chance = _against_each_baseline(
        [r["objective"] for r in runs[learner]], runs, baselines)
    return each, {"baseline": fewest, f"{learner}_objective_at_least": least,
                  "chance_of_4_of_5_at_this_rate": chance}


def _against_each_baseline(plus: list[float], runs: dict[str, list[dict]],
                           baselines: list[str]) -> tuple[dict[str, str], str, str, float]:
    """POLAR+'s per-instance figures ``plus`` against each baseline's objective: 'k/n' per
    baseline, the baseline with the fewest (ties: STRATEGIES' order), its 'k/n' and the chance
    of four of five at its rate."""
    counts = bench.at_least_counts(plus, {b: [r["objective"] for r in runs[b]]
                                          for b in baselines})
    n = len(plus)
    fewest = min(counts, key=counts.get)
    return ({b: f"{k}/{n}" for b, k in counts.items()}, fewest, f"{counts[fewest]}/{n}",
            at_least_four_of_five(counts[fewest] / n))


def paging_free_ceiling(runs: dict[str, list[dict]], baselines: list[str]) -> dict:
    """What the cache side alone could still win: POLAR+'s objective with its paging charged
    at 0 (its reward: the same routes, the same rewards) against each baseline's objective, per
    instance. Where even that falls short of a baseline, no pager or controller under POLAR+'s
    routes wins there; what would is more reward (a learner with lower regret)."""
    weight = EdgeConfig().router.polar.paging_weight  # the benchmark's objective lambda
    reward = [r["objective"] + weight * r["total_paging_s"] for r in runs["polar+"]]
    each, fewest, least, chance = _against_each_baseline(reward, runs, baselines)
    return {"polar+_reward_at_least_each_baseline_objective": each,
            "baseline": fewest, "polar+_reward_at_least": least,
            "chance_of_4_of_5_at_this_rate": chance}


def baselines_against_each_other(runs: dict[str, list[dict]], baselines: list[str]) -> dict:
    """Each baseline held to POLAR+'s per-instance test against the other baselines: the
    instances where its objective is at least that of the other baseline it beats least. The
    strongest of them by that count shows what the criterion asks: where even it clears the
    others in well under 4 of 5 instances, no strategy passes 4 of 5 on five instances but by
    the draw (a baseline faces one rival fewer than POLAR+ does, which favours it)."""
    if len(baselines) < 2:
        return {}  # a lone baseline has no rival to be held against
    objectives = {b: [r["objective"] for r in runs[b]] for b in baselines}
    n = len(objectives[baselines[0]])
    least = {b: min(bench.at_least_counts(objectives[b], {c: objectives[c] for c in baselines
                                                          if c != b}).values())
             for b in baselines}
    strongest = max(least, key=least.get)  # ties: the first in STRATEGIES' order
    return {"at_least_every_other_baseline": {b: f"{k}/{n}" for b, k in least.items()},
            "strongest": strongest, "strongest_at_least": f"{least[strongest]}/{n}",
            "chance_of_4_of_5_at_this_rate": at_least_four_of_five(least[strongest] / n)}


def _criterion_against(runs: dict[str, list[dict]], best_label: str,
                       unaware_label: str) -> dict:
    plus, best, unaware = runs["polar+"], runs[best_label], runs[unaware_label]
    wins = sum(p["objective"] >= b["objective"] for p, b in zip(plus, best, strict=True))
    paging = sum(p["total_paging_s"] <= b["total_paging_s"]
                 for p, b in zip(plus, best, strict=True))
    ratio = (statistics.median(r["regret"] for r in plus)
             / statistics.median(r["regret"] for r in unaware))
    rate = wins / len(plus)
    return {"best_baseline": best_label,
            "best_cache_unaware_baseline": unaware_label,
            "polar+_objective_at_least_best": f"{wins}/{len(plus)}",
            "polar+_paging_no_higher": f"{paging}/{len(plus)}",
            "median_objective_difference": statistics.median(
                p["objective"] - b["objective"] for p, b in zip(plus, best, strict=True)),
            "regret_ratio_vs_best_cache_unaware": ratio,
            "chance_of_4_of_5_at_this_rate": at_least_four_of_five(rate)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.rescore:
        return rescore(args.rescore)
    if args.first_of:
        return first_of(args.first_of, args.instances, args.out)
    if args.table:
        print(criterion_table(args.table))
        return 0
    if args.summary:
        print(summary_table(args.summary))
        return 0
    if args.routes_table:
        print(routes_table(args.routes_table))
        return 0
    if args.differences:
        print(differences_table(args.differences))
        return 0
    # The benchmark's own defaults (dim, noise, budget fraction, seeds), with our N and horizon
    # (and, with --from-json, the run's); quality only (the benchmark refuses its speed part
    # for the text workload).
    given = ["--arms", str(args.arms), "--workload", args.workload,
             "--horizon", str(args.horizon), "--jobs", str(args.jobs), "--skip-speed"]
    if args.run:
        given += ["--seed", str(args.run["seed"]), "--tune-seed", str(args.run["tune_seed"]),
                  "--dim", str(args.run["dim"]), "--noise", str(args.run["noise"]),
                  "--budget-fraction", str(args.run["budget_fraction"])]
    bench_args = bench.parse_args(given)
    device, base = PagingCostModel(), EdgeConfig()
    seeds = family_seeds(args, bench_args)
    runs: dict[str, list[dict]] = {}
    try:
        for name, label, settings in args.variant:
            started = time.perf_counter()
            first = TUNING_INDEX if args.family == "tuning" else FRESH_INDEX
            tasks = [(label, settings, seed, args.arms, bench_args, device, base, first + i)
                     for i, seed in enumerate(seeds)]
            runs[name] = [{k: r[k] for k in ("objective", "regret", "total_paging_s")}
                          for r in bench.run_many(tasks, bench_args)]
            print(f"{name:28s} objective {_mean(runs[name], 'objective'):9.1f}  regret "
                  f"{_mean(runs[name], 'regret'):8.1f}  paging "
                  f"{_mean(runs[name], 'total_paging_s'):7.1f} s  "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    finally:
        if bench._POOL is not None:
            bench._POOL.shutdown()
    print("\nper instance: objective / regret / paging s")
    for name, rs in runs.items():
        print(f"{name:28s} " + "  ".join(f"{r['objective']:8.1f}/{r['regret']:6.1f}/"
                                         f"{r['total_paging_s']:6.1f}" for r in rs))
    reference = args.variant[0][0]
    print(f"\nagainst {reference}:")
    versus = {}
    for name, rs in runs.items():
        diffs = [r["objective"] - b["objective"] for r, b in zip(rs, runs[reference],
                                                                  strict=True)]
        versus[name] = {"mean_objective_difference": statistics.fmean(diffs),
                        "at_least_as_good": sum(d >= 0 for d in diffs)}
        print(f"{name:28s} {versus[name]['mean_objective_difference']:+9.1f}  "
              f"{versus[name]['at_least_as_good']}/{len(diffs)} instances")
    verdict = criterion(runs, args.run) if args.run and "polar+" in runs else None
    if verdict:
        print_criterion(verdict, len(seeds))
    if args.out:
        from edge.fileio import write_atomic
        result = {"benchmark": "router_variants", "arms": args.arms,
                  "workload": args.workload, "horizon": args.horizon, "family": args.family,
                  "from_json": args.run["path"] if args.run else None,
                  "learner_routes": bool(args.run and args.run["learner_routes"]),
                  "seeds": seeds,
                  "criterion": verdict,
                  "variants": {name: {"strategy": label, "settings": settings,
                                      "per_instance": runs[name],
                                      "mean": {k: _mean(runs[name], k) for k in
                                               ("objective", "regret", "total_paging_s")},
                                      "versus_first": versus[name]}
                               for name, label, settings in args.variant}}
        write_atomic(args.out, json.dumps(result, indent=2).encode())
    return 0


def print_criterion(verdict: dict, instances: int) -> None:
    for heading, v in ((f"the issue's criterion on these {instances} instances, against the "
                        "run's best baseline", verdict),
                       ("against the best baseline on these instances (the benchmark's rule: "
                        "highest median objective)", verdict["on_these_instances"])):
        print(f"\n{heading}: POLAR+ at least "
              f"{v['best_baseline']} in {v['polar+_objective_at_least_best']} "
              f"(median {v['median_objective_difference']:+.1f}), paging no higher in "
              f"{v['polar+_paging_no_higher']}, regret "
              f"{v['regret_ratio_vs_best_cache_unaware']:.2f}x "
              f"{v['best_cache_unaware_baseline']}'s (medians); at this rate five "
              f"instances give at least four {v['chance_of_4_of_5_at_this_rate']:.0%} of "
              "the time")
    print("POLAR+ at least each baseline: " + ", ".join(
        f"{b} {n}" for b, n in verdict["polar+_objective_at_least_each_baseline"].items()))
    least = verdict["baseline_beaten_least"]
    print(f"the baseline POLAR+ beats least: {least['baseline']} "
          f"({least['polar+_objective_at_least']}); at this rate five instances give at least "
          f"four {least['chance_of_4_of_5_at_this_rate']:.0%} of the time")
    if "polar_baseline_beaten_least" in verdict:
        polar = verdict["polar_baseline_beaten_least"]
        print(f"POLAR (fixed epochs) at its chosen settings, against the baseline it beats "
              f"least: {polar['baseline']} ({polar['polar_objective_at_least']})")
    rivals = verdict.get("baselines_against_each_other")
    if rivals:
        print("each baseline at least every other baseline: " + ", ".join(
            f"{b} {n}" for b, n in rivals["at_least_every_other_baseline"].items())
            + f"; the strongest, {rivals['strongest']} ({rivals['strongest_at_least']}), four "
            f"of five {rivals['chance_of_4_of_5_at_this_rate']:.0%} of the time")
    ceiling = verdict["paging_free_ceiling"]
    print("with its paging free (its reward; the cache side's ceiling), POLAR+ at least each "
          "baseline: " + ", ".join(f"{b} {n}" for b, n in ceiling[
              "polar+_reward_at_least_each_baseline_objective"].items())
          + f"; least {ceiling['baseline']} ({ceiling['polar+_reward_at_least']}), four of "
          f"five {ceiling['chance_of_4_of_5_at_this_rate']:.0%} of the time")


def _recompute_criterion(data: dict, path: str, option: str) -> dict:
    """The criterion of a saved ``--from-json`` result, from its per-instance figures (the same
    numbers a rerun gives: the replays are seeded) and the run it names."""
    if data.get("benchmark") != "router_variants" or not data.get("from_json"):
        raise SystemExit(f"{option} {path}: not a router_variants.py result made with "
                         "--from-json")
    try:
        entry = json.loads(Path(data["from_json"]).read_text(encoding="utf-8")
                           )["quality"][str(data["arms"])]
        checks = entry["checks"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"{option} {path}: its run {data['from_json']} cannot be read "
                         f"({exc!r}); run from the directory the result was made in") from None
    runs = {name: v["per_instance"] for name, v in data["variants"].items()}
    checks = {**checks, "routes_reference": (routes_reference(entry) if data.get("learner_routes")
                                             else routes_taken_by_run(entry))}
    return criterion(runs, checks)


def rescore(path: str) -> int:
    """Recompute the criterion of a saved ``--from-json`` result from its per-instance figures
    and write it back."""
    from edge.fileio import write_atomic
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    data["criterion"] = _recompute_criterion(data, path, "--rescore")
    print_criterion(data["criterion"], len(data["seeds"]))
    write_atomic(path, json.dumps(data, indent=2).encode())
    return 0


def first_of(path: str, instances: int, out: str) -> int:
    """A saved ``--from-json`` result cut to its first ``instances`` instances, written to
    ``out``: what a replay of that many gives (instance r has the same seed, router seed and
    reward noise whatever the count), its means, comparisons and criterion recomputed."""
    from edge.fileio import write_atomic
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not 1 <= instances <= len(data.get("seeds", [])):
        raise SystemExit(f"--first-of {path}: it has {len(data.get('seeds', []))} instances, "
                         f"--instances {instances} asks for more (or fewer than 1)")
    data["seeds"] = data["seeds"][:instances]
    variants = data["variants"]
    reference = next(iter(variants))
    for v in variants.values():
        rs = v["per_instance"] = v["per_instance"][:instances]
        v["mean"] = {k: _mean(rs, k) for k in ("objective", "regret", "total_paging_s")}
        diffs = [r["objective"] - b["objective"]
                 for r, b in zip(rs, variants[reference]["per_instance"][:instances],
                                 strict=True)]
        v["versus_first"] = {"mean_objective_difference": statistics.fmean(diffs),
                             "at_least_as_good": sum(d >= 0 for d in diffs)}
    data["criterion"] = _recompute_criterion(data, path, "--first-of")
    data["first_of"] = {"result": path, "instances": instances}
    print_criterion(data["criterion"], instances)
    write_atomic(out, json.dumps(data, indent=2).encode())
    return 0


TABLE_HEADER = (
    "| workload, N | run's best: POLAR+ >= it | best on these instances | POLAR+ >= it | "
    "paging <= it | median objective difference | regret vs the best cache-unaware here "
    "(medians) | the baseline POLAR+ beats least | 4 of 5 at that rate | paging free: reward >= "
    "every baseline's objective, fewest (4 of 5) | POLAR >= the baseline it beats least | the "
    "strongest baseline >= every other baseline (4 of 5) |\n"
    + "|---" * 12 + "|")


def _table(paths: list[str], option: str, made_with: str, header: str, row) -> str:
    """``header`` and a row per saved result, ``row(data, verdict)``; a result it cannot read
    (or that lacks what the row needs) is a SystemExit naming ``option``, the path and why."""
    rows = [header]
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            rows.append(row(data, data["criterion"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"{option} {path}: not a router_variants.py result made with "
                             f"{made_with} ({exc!r})") from None
    return "\n".join(rows)


def criterion_table(paths: list[str]) -> str:
    """The markdown table of saved --from-json results' criteria, one row per result, in the
    order given: POLAR+ against the run's best baseline, the best on these instances, the
    baseline it beats least and, with its paging free, every baseline; then POLAR against the
    baseline it beats least, and the strongest baseline against the other baselines ("-" in a
    result saved before either count)."""
    return _table(paths, "--table", "--from-json", TABLE_HEADER, _criterion_row)


def _criterion_row(data: dict, verdict: dict) -> str:
    here, least = verdict["on_these_instances"], verdict["baseline_beaten_least"]
    ceiling = verdict["paging_free_ceiling"]
    polar = verdict.get("polar_baseline_beaten_least")
    polar = f"{polar['baseline']} {polar['polar_objective_at_least']}" if polar else "-"
    rivals = verdict.get("baselines_against_each_other")
    rivals = (f"{rivals['strongest']} {rivals['strongest_at_least']} "
              f"({rivals['chance_of_4_of_5_at_this_rate']:.0%})" if rivals else "-")
    return (f"| {data['workload']} {data['arms']} "
            f"| {verdict['best_baseline']} {verdict['polar+_objective_at_least_best']} "
            f"| {here['best_baseline']} | {here['polar+_objective_at_least_best']} "
            f"| {here['polar+_paging_no_higher']} "
            f"| {here['median_objective_difference']:+.1f} "
            f"| {here['regret_ratio_vs_best_cache_unaware']:.2f}x "
            f"| {least['baseline']} {least['polar+_objective_at_least']} "
            f"| {least['chance_of_4_of_5_at_this_rate']:.0%} "
            f"| {ceiling['polar+_reward_at_least']} "
            f"({ceiling['chance_of_4_of_5_at_this_rate']:.0%}) | {polar} | {rivals} |")


ROUTES_HEADER = (
    "| workload, N | POLAR+ takes the routes of | same regret | POLAR+ above / equal / below it "
    "| paging lower | run's best: POLAR+ >= it | the baseline POLAR+ beats least (of which "
    "equal) | 4 of 5 at that rate |\n" + "|---" * 8 + "|")


def routes_table(paths: list[str]) -> str:
    """docs/router.md's table of saved ``--learner-routes`` results, a row each: POLAR+ against
    the baseline whose routes it takes (above, equal, below; paging lower), then against the
    run's best baseline and the baseline it beats least, ties shown (they count as "at least")."""
    return _table(paths, "--routes-table", "--from-json --learner-routes", ROUTES_HEADER,
                  _routes_row)


def _routes_row(data: dict, verdict: dict) -> str:
    ref, least = verdict["routes_reference"], verdict["baseline_beaten_least"]
    n = ref["instances"]
    equal = verdict["polar+_objective_equal_each_baseline"][least["baseline"]].split("/")[0]
    return (f"| {data['workload']} {data['arms']} | {ref['baseline']} "
            f"| {ref['same_regret']}/{n} | {ref['above']} / {ref['equal']} / {ref['below']} "
            f"| {ref['paging_lower']}/{n} "
            f"| {verdict['best_baseline']} {verdict['polar+_objective_at_least_best']} "
            f"| {least['baseline']} {least['polar+_objective_at_least']} ({equal}) "
            f"| {least['chance_of_4_of_5_at_this_rate']:.0%} |")


SUMMARY_HEADER = (
    "| workload, N | best baseline (its prior) | POLAR+ at least it | at least the baseline it "
    "beats least | paging s, POLAR+ / it | regret, POLAR+ / best cache-unaware | POLAR+ minus "
    "it: objective = reward, blocking, prefetch (s) | fresh, at least the baseline it beats "
    "least: POLAR+ / POLAR+ with paging free / POLAR | fresh: the strongest baseline at least "
    "every other |\n" + "|---" * 9 + "|")


def summary_table(paths: list[str]) -> str:
    """The README's routing-quality table: per saved --from-json RESULT, a row of its run's
    reported figures (``quality.N``: the best baseline with its tuned prior and eviction
    policy, POLAR+'s per-instance counts, median paging, regret ratio and decomposition) and of
    the RESULT's own fresh-instance counts (against the baseline beaten least: POLAR+, POLAR+
    with its paging free, POLAR; the strongest baseline against its peers). The run is read
    from the path the RESULT names, so run it from the directory the RESULT was made in."""
    return _table(paths, "--summary", "--from-json whose run can be read from here",
                  SUMMARY_HEADER, _summary_row)


def _summary_row(data: dict, verdict: dict) -> str:
    q = json.loads(Path(data["from_json"]).read_text(encoding="utf-8")
                   )["quality"][str(data["arms"])]
    checks, strategies = q["checks"], q["strategies"]
    best = checks["best_baseline"]
    chosen = q["tuning"][best]["chosen"]
    named = best + (f": {chosen['cache.policy']}" if "cache.policy" in chosen else "")
    prior = chosen.get(bench.PRIOR_PATH, EdgeConfig().router.linucb.prior_reward)
    d = checks["decomposition_vs_best_baseline"]
    polar = verdict.get("polar_baseline_beaten_least", {}).get("polar_objective_at_least", "-")
    rivals = verdict.get("baselines_against_each_other")
    rivals = f"{rivals['strongest']} {rivals['strongest_at_least']}" if rivals else "-"
    return (f"| {data['workload']} {data['arms']} | {named} ({prior}) "
            f"| {checks['polar+_objective_at_least_best_per_instance']} "
            f"| {bench.fewest_against_any_baseline(strategies)[1]} "
            f"| {strategies['polar+']['total_paging_s']:.1f} / "
            f"{strategies[best]['total_paging_s']:.1f} "
            f"| {checks['polar+_regret_ratio_vs_best_cache_unaware']:.2f}x "
            f"| {d['objective']:+.1f} = {d['reward']:+.1f}, {d['blocking_paging_s']:+.1f}, "
            f"{d['prefetch_paging_s']:+.1f} "
            f"| {verdict['baseline_beaten_least']['polar+_objective_at_least']} / "
            f"{verdict['paging_free_ceiling']['polar+_reward_at_least']} / {polar} "
            f"| {rivals} |")


DIFFERENCES_HEADER = (
    "| workload, N | " + " | ".join(f"POLAR+ minus {b}" for b in bench.CACHE_UNAWARE)
    + " | ahead of (interval above 0) | behind (interval below 0) |\n"
    + "|---" * (len(bench.CACHE_UNAWARE) + 3) + "|")


def differences_table(paths: list[str]) -> str:
    """The criterion restated on a family of instances: per saved RESULT, POLAR+'s objective
    minus each cache-unaware baseline's, the median of the per-instance differences and its 95 %
    interval (``paired_differences``), computed from the per-instance figures (so results saved
    before the criterion held it read the same), and the baselines it is ahead of or behind."""
    return _table(paths, "--differences", "per-instance figures of POLAR+ and the baselines",
                  DIFFERENCES_HEADER, _differences_row)


def _differences_row(data: dict, _verdict: dict) -> str:
    runs = {name: v["per_instance"] for name, v in data["variants"].items()}
    differences = paired_differences(runs, [b for b in bench.CACHE_UNAWARE if b in runs])
    cells = [f"{d['median']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]"
             if (d := differences.get(b)) else "-" for b in bench.CACHE_UNAWARE]
    ahead = [b for b, d in differences.items() if d["low"] > 0]
    behind = [b for b, d in differences.items() if d["high"] < 0]
    return (f"| {data['workload']} {data['arms']} | " + " | ".join(cells)
            + f" | {', '.join(ahead) or 'none'} | {', '.join(behind) or 'none'} |")


def _mean(rs: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in rs)


if __name__ == "__main__":
    sys.exit(main())
