#!/usr/bin/env python3
"""Routing benchmark: POLAR / POLAR+ against cache-unaware LinUCB + LRU, baselines and peers.

Part 1 (quality): for N in --arms, a seeded synthetic problem (edge.sim.synthetic) is replayed
through every strategy's Runtime.handle over the simulated backend (edge.sim.routing): the real
PagedCache and Router, modelled paging time; cumulative reward-only regret,
hit ratio, paging time (blocking, prefetch, total) and the reward-latency objective.
Part 2 (speed): microseconds per decision+update of edge's LinUCB (cache-aware scoring, d=32)
beside MABWiser LinUCB and Vowpal Wabbit cb_explore_adf on the same contexts and noise, with the
regret each reaches on them. Prints one JSON object; --out writes it too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine  # noqa: E402

from edge.config import EdgeConfig  # noqa: E402
from edge.paging_cost import PagingCostModel  # noqa: E402
from edge.router.config import LinUCBConfig, PolarConfig, RouterConfig  # noqa: E402
from edge.router.linucb import LinUCB  # noqa: E402
from edge.router.polar import PolarRouter  # noqa: E402
from edge.sim.routing import replay_routing  # noqa: E402
from edge.sim.strategies import STRATEGY_NAMES  # noqa: E402
from edge.sim.synthetic import make_problem  # noqa: E402


def quality(n_arms, args, device, lin_cfg, polar_cfg):
    """Every strategy on --quality-repeats seeded problem instances (a new problem, new noise and
    a new strategy RNG per repeat); medians over the instances, and the POLAR+ checks both on the
    medians and per instance."""
    per_rep = []
    for rep in range(args.quality_repeats):
        problem = make_problem(n_arms, args.dim, args.horizon,
                               np.random.default_rng(args.seed + n_arms + 7919 * rep))
        budget = int(problem.sizes.sum() * args.budget_fraction)
        runs = {}
        config = EdgeConfig(router=RouterConfig(linucb=lin_cfg, polar=polar_cfg, seed=1000 + rep))
        for name in STRATEGY_NAMES:
            runs[name] = replay_routing(name, problem.contexts, problem.utilities, problem.sizes,
                                        config=config, budget_bytes=budget, paging_cost=device,
                                        rng=np.random.default_rng(2000 + rep),
                                        arm_ids=problem.arm_ids, reward_noise=args.noise)
            r = runs[name]
            print(f"  N={n_arms} rep {rep} {name:15s} regret {r['regret']:9.1f} objective "
                  f"{r['objective']:9.1f} hit {r['hit_ratio']:.3f} paging "
                  f"{r['total_paging_s']:8.2f}s ({r['wall_s']:.1f}s)", file=sys.stderr)
        per_rep.append((budget, int(problem.sizes.sum()), runs))

    keys = ("regret", "objective", "hit_ratio", "blocking_paging_s", "prefetch_paging_s",
            "total_paging_s", "reward", "arms_tried", "wall_s")
    out = {"instances": args.quality_repeats,
           "budget_bytes": [b for b, _, _ in per_rep],
           "total_bytes": [t for _, t, _ in per_rep], "strategies": {}}
    for name in STRATEGY_NAMES:
        summary = {k: statistics.median(runs[name][k] for _, _, runs in per_rep) for k in keys}
        summary["regret_curve"] = per_rep[0][2][name]["regret_curve"]
        out["strategies"][name] = summary
    ratios = [runs["polar+"]["regret"] / runs["linucb+lru"]["regret"] for _, _, runs in per_rep]
    wins_objective = sum(runs["polar+"]["objective"] > runs["linucb+lru"]["objective"]
                         for _, _, runs in per_rep)
    wins_paging = sum(runs["polar+"]["total_paging_s"] < runs["linucb+lru"]["total_paging_s"]
                      for _, _, runs in per_rep)
    s = out["strategies"]
    ref, plus = s["linucb+lru"], s["polar+"]
    out["checks"] = {
        "polar+_objective_beats_linucb_lru": plus["objective"] > ref["objective"],
        "polar+_objective_wins_per_instance": f"{wins_objective}/{len(per_rep)}",
        "polar+_total_paging_below_linucb_lru": plus["total_paging_s"] < ref["total_paging_s"],
        "polar+_paging_wins_per_instance": f"{wins_paging}/{len(per_rep)}",
        "polar+_regret_ratio_vs_linucb_lru": statistics.median(ratios),
        "polar+_regret_ratio_per_instance": ratios,
        "polar+_regret_within_10pct": statistics.median(ratios) <= 1.10,
    }
    return out


def _speed_inputs(n_arms, args):
    problem = make_problem(n_arms, args.dim, args.speed_steps,
                           np.random.default_rng(args.seed + 7 * n_arms))
    noise = args.noise * np.random.default_rng(args.seed + 1).standard_normal(args.speed_steps)
    return problem, noise


def _regret(U, arms):
    return float((U.max(axis=1) - U[np.arange(len(arms)), arms]).sum())


def time_edge(n_arms, args, device, lin_cfg, polar_cfg):
    """Our LinUCB with cache-aware scoring: decide (penalty on) + Sherman-Morrison update."""
    problem, noise = _speed_inputs(n_arms, args)
    X, U = problem.contexts, problem.utilities
    resident = np.zeros(n_arms, dtype=bool)
    resident[: n_arms // 4] = True
    per_repeat, per_step, regrets, regrets_peer = [], [], [], []
    peer_steps = min(args.peer_steps, len(X))
    for rep in range(args.repeats):
        router = PolarRouter(LinUCB(args.dim, lin_cfg, np.random.default_rng(rep)),
                             polar_cfg.__class__(**{**asdict(polar_cfg), "mode": "polar"}),
                             device, None)  # no budget: no epoch planning inside the timing
        for arm_id, size in zip(problem.arm_ids, problem.sizes, strict=True):
            router.add_arm(arm_id, int(size))
        lin = router.linucb
        arms = np.empty(len(X), dtype=np.int64)
        steps = np.empty(len(X))
        clock = time.perf_counter_ns
        start = clock()
        for t in range(len(X)):
            t0 = clock()
            x = X[t]
            a = router.decide(x, resident).arm_index
            lin.update_index(a, x, min(1.0, max(0.0, U[t, a] + noise[t])))
            steps[t] = clock() - t0
            arms[t] = a
        per_repeat.append((clock() - start) / 1e3 / len(X))
        per_step.append(float(np.median(steps)) / 1e3)
        regrets.append(_regret(U, arms))
        regrets_peer.append(_regret(U[:peer_steps], arms[:peer_steps]))
    return {"us_per_decision_update_median_of_repeats": statistics.median(per_repeat),
            "us_per_step_median": statistics.median(per_step),
            "repeat_means_us": per_repeat, "regret": statistics.median(regrets),
            # Over the first peer_steps events: the horizon the peers ran, for a like comparison.
            "regret_over_peer_steps": statistics.median(regrets_peer),
            "steps": len(X), "repeats": args.repeats}


def time_mabwiser(n_arms, args, lin_cfg):
    from mabwiser.mab import MAB, LearningPolicy
    problem, noise = _speed_inputs(n_arms, args)
    steps = min(args.peer_steps, len(problem.contexts))
    X, U = problem.contexts[:steps], problem.utilities[:steps]
    arms_list = list(range(n_arms))
    mab = MAB(arms_list, LearningPolicy.LinUCB(alpha=lin_cfg.alpha, l2_lambda=lin_cfg.ridge_lambda),
              seed=args.seed)
    # A zero context adds nothing to A or b: this only initialises every arm.
    mab.fit(arms_list, [0.0] * n_arms, np.zeros((n_arms, args.dim)))
    arms = np.empty(steps, dtype=np.int64)
    times = np.empty(steps)
    for t in range(steps):
        t0 = time.perf_counter_ns()
        a = int(mab.predict(X[t:t + 1]))
        r = min(1.0, max(0.0, U[t, a] + noise[t]))
        # Same centring as edge (prior_reward), so both run the same LinUCB.
        mab.partial_fit([a], [r - lin_cfg.prior_reward], X[t:t + 1])
        times[t] = time.perf_counter_ns() - t0
        arms[t] = a
    return {"us_per_step_median": float(np.median(times)) / 1e3,
            "us_per_step_mean": float(times.mean()) / 1e3, "regret": _regret(U, arms),
            "steps": steps}


def time_vw(n_arms, args):
    import vowpalwabbit
    problem, noise = _speed_inputs(n_arms, args)
    steps = min(args.peer_steps, len(problem.contexts))
    X, U = problem.contexts[:steps], problem.utilities[:steps]
    vw = vowpalwabbit.Workspace(
        f"--cb_explore_adf --squarecb -q sa --quiet --random_seed {args.seed}")
    rng = np.random.default_rng(args.seed)
    actions = [f"|a arm{i}" for i in range(n_arms)]
    arms = np.empty(steps, dtype=np.int64)
    times = np.empty(steps)
    try:
        for t in range(steps):
            t0 = time.perf_counter_ns()
            shared = "shared |s " + " ".join(f"{i}:{v:.6f}" for i, v in enumerate(X[t]))
            pmf = np.asarray(vw.predict([shared] + actions), dtype=np.float64)
            pmf /= pmf.sum()
            a = int(rng.choice(n_arms, p=pmf))
            r = min(1.0, max(0.0, U[t, a] + noise[t]))
            labelled = [shared] + actions
            labelled[1 + a] = f"0:{-r:.6f}:{pmf[a]:.6f} {actions[a]}"
            vw.learn(labelled)
            times[t] = time.perf_counter_ns() - t0
            arms[t] = a
    finally:
        vw.finish()
    return {"us_per_step_median": float(np.median(times)) / 1e3,
            "us_per_step_mean": float(times.mean()) / 1e3, "regret": _regret(U, arms),
            "steps": steps, "args": "--cb_explore_adf --squarecb -q sa"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: finishes in seconds")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--arms", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--horizon", type=int, default=20000)
    p.add_argument("--budget-fraction", type=float, default=0.25)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--quality-repeats", type=int, default=5,
                   help="problem instances per N (medians are reported)")
    p.add_argument("--speed-steps", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peer-steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=20260)
    args = p.parse_args(argv)
    if args.quick:
        args.arms = [16, 64]
        args.horizon, args.speed_steps, args.repeats, args.peer_steps = 2000, 1000, 3, 200
        args.quality_repeats = min(args.quality_repeats, 2)
    device = PagingCostModel()
    lin_cfg, polar_cfg = LinUCBConfig(), PolarConfig()
    result = {
        "benchmark": "router",
        "inputs": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {**machine(), "numpy": np.__version__},
        "device_profile": asdict(device),
        "linucb": asdict(lin_cfg),
        "polar": asdict(polar_cfg),
        "quality": {},
        "speed": {},
    }
    for n in args.arms:
        result["quality"][str(n)] = quality(n, args, device, lin_cfg, polar_cfg)
    for n in args.arms:
        entry = {"edge": time_edge(n, args, device, lin_cfg, polar_cfg)}
        for name, fn, fn_args in (("mabwiser", time_mabwiser, (n, args, lin_cfg)),
                                  ("vowpalwabbit", time_vw, (n, args))):
            try:
                entry[name] = fn(*fn_args)
            except ImportError as exc:
                entry[name] = {"error": f"not installed: {exc}"}
        edge_us = entry["edge"]["us_per_step_median"]
        for name in ("mabwiser", "vowpalwabbit"):
            if "us_per_step_median" in entry[name]:
                entry[f"speedup_vs_{name}"] = entry[name]["us_per_step_median"] / edge_us
        target = 30.0 if n <= 16 else 150.0 if n >= 256 else None
        if target is not None:
            entry["target_us"] = target
            entry["meets_target"] = edge_us < target
        result["speed"][str(n)] = entry
        print(f"  speed N={n}: edge {edge_us:.1f} us/step; " + ", ".join(
            f"{k} {entry[k].get('us_per_step_median', float('nan')):.1f} us"
            for k in ("mabwiser", "vowpalwabbit")), file=sys.stderr)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from edge.fileio import write_atomic
        write_atomic(args.out, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
