#!/usr/bin/env python3
"""Public-path speed of the learner-routes configuration beside the default one.

Times ``Router.route`` + ``Router.update`` per step exactly as ``bench_router.py``'s speed part
does (``time_public_router``: d = 32, the epoch controller on, refactorisation included), for
the router's default POLAR+ settings and for the learner-routes ones (charge 0, plans every 64
requests over 512 contexts that only hand over demand: ``bench_router.LEARNER_ROUTES``), at
the default alpha and at alpha 0 (where the plan's scores skip the quadratic forms), and, with
``--from-json RUN``, POLAR+ at the settings a benchmark run chose at each N given (the
configuration its quality table reports, Thompson draws included where chosen; only the
contexts differ: d = 32 vectors here, as the speed targets are stated). Prints one JSON
object: median, mean and p99 microseconds per step for each.

    python scripts/probe_learner_routes_speed.py --arms 16 256
    python scripts/probe_learner_routes_speed.py --arms 64 256 \
        --from-json docs/results/bench_router-linear-64-256-learner-routes.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as bench_router.py

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_router as bench  # noqa: E402

from edge.config import EdgeConfig  # noqa: E402
from edge.paging_cost import PagingCostModel  # noqa: E402


def configurations():
    """(name, RouterConfig): the default, and the learner-routes settings at the default alpha
    and at alpha 0."""
    base = EdgeConfig().router
    polar = {k.removeprefix("router.polar."): v for k, v in bench.LEARNER_ROUTES.items()
             if k.startswith("router.polar.")}
    routes = replace(base, polar=replace(base.polar, **polar))
    return [("default", base), (f"learner-routes, alpha {base.linucb.alpha:g}", routes),
            ("learner-routes, alpha 0", replace(routes, linucb=replace(base.linucb, alpha=0.0)))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", type=int, nargs="+", default=[16, 256])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--from-json", metavar="RUN",
                   help="also time POLAR+ at the settings this bench_router.py run chose")
    args = p.parse_args(argv)
    run = None
    if args.from_json:
        try:
            run = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            p.error(f"--from-json {args.from_json}: cannot be read as JSON ({exc!r})")
        if not isinstance(run, dict) or not isinstance(run.get("quality"), dict):
            p.error(f"--from-json {args.from_json}: not a bench_router.py result (no quality "
                    "section)")
        missing = [n for n in args.arms if str(n) not in run["quality"]]
        if missing:
            p.error(f"--from-json {args.from_json}: no quality run at N = {missing} "
                    f"(it has {sorted(run['quality'], key=int)})")
    bench_args = bench.parse_args(["--skip-quality", "--repeats", str(args.repeats),
                                   "--speed-steps", str(args.steps)])
    out = {"steps": args.steps, "repeats": args.repeats, "us_per_step": {}}
    for n in args.arms:
        timed = configurations()
        if run is not None:
            timed.append((f"POLAR+ as chosen in {Path(args.from_json).name}",
                          bench.chosen_router_config(run, n, EdgeConfig())))
        for name, config in timed:
            r = bench.time_public_router(n, bench_args, PagingCostModel(), config)
            out["us_per_step"][f"N={n}, {name}"] = {k: r[k] for k in
                                                   ("median_us", "mean_us", "p99_us")}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
