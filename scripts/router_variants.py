#!/usr/bin/env python3
"""Strategies at given settings on the routing benchmark's *tuning-family* instances.

How a routing rule is measured before it is kept (docs/router.md, "Rules measured"): the same
problems, replay, noise and objective as ``scripts/bench_router.py``, but only on instances
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
"""

from __future__ import annotations

import argparse
import json
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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", type=int, required=True, help="catalogue size N")
    parser.add_argument("--instances", type=int, default=8,
                        help="tuning-family instances (r = 0 .. instances - 1)")
    parser.add_argument("--variant", type=parse_variant, action="append", required=True,
                        help="NAME=STRATEGY[:JSON settings]; the first is the reference")
    parser.add_argument("--workload", choices=bench.WORKLOADS, default="linear")
    parser.add_argument("--horizon", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", help="write the results as JSON here too")
    args = parser.parse_args(argv)
    names = [name for name, _, _ in args.variant]
    if len(set(names)) != len(names):
        parser.error(f"variant names must differ, got {names}")
    if args.instances < 1:
        parser.error(f"--instances must be at least 1, got {args.instances}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # The benchmark's own defaults (dim, noise, budget fraction, seeds), with our N and horizon;
    # quality only (the benchmark refuses its speed part for the text workload).
    bench_args = bench.parse_args(["--arms", str(args.arms), "--workload", args.workload,
                                   "--horizon", str(args.horizon), "--jobs", str(args.jobs),
                                   "--skip-speed"])
    device, base = PagingCostModel(), EdgeConfig()
    seeds = bench.instance_seeds(bench_args.tune_seed, args.arms, args.instances)
    reported = bench.instance_seeds(bench_args.seed, args.arms, bench_args.quality_repeats)
    bench.check_seed_split(seeds, reported)
    runs: dict[str, list[dict]] = {}
    try:
        for name, label, settings in args.variant:
            started = time.perf_counter()
            tasks = [(label, settings, seed, args.arms, bench_args, device, base, 10_000 + i)
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
    if args.out:
        from edge.fileio import write_atomic
        result = {"benchmark": "router_variants", "arms": args.arms,
                  "workload": args.workload, "horizon": args.horizon, "tuning_seeds": seeds,
                  "variants": {name: {"strategy": label, "settings": settings,
                                      "per_instance": runs[name],
                                      "mean": {k: _mean(runs[name], k) for k in
                                               ("objective", "regret", "total_paging_s")},
                                      "versus_first": versus[name]}
                               for name, label, settings in args.variant}}
        write_atomic(args.out, json.dumps(result, indent=2).encode())
    return 0


def _mean(rs: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in rs)


if __name__ == "__main__":
    sys.exit(main())
