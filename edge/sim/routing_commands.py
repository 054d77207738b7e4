"""CLI for the router: ``edge route-bench`` replays a seeded synthetic problem through every
strategy. Register it in ``edge.cli._COMMAND_MODULES`` as ``"edge.router.commands":
("route_bench",)``; ``edge sim --router`` can call ``edge.router.replay.replay`` directly."""

from __future__ import annotations

import json

import click
import numpy as np

from edge.device import DeviceProfile, load_profile
from edge.router.config import LinUCBConfig, PolarConfig
from edge.router.replay import replay
from edge.router.strategies import STRATEGY_NAMES, make_strategy
from edge.router.synthetic import make_problem
from edge.schema import from_mapping
from edge.sim.cliutil import FiniteFloat


@click.command("route-bench")
@click.option("--arms", "n_arms", type=click.IntRange(1), default=16, show_default=True)
@click.option("--dim", type=click.IntRange(3), default=32, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=5000, show_default=True)
@click.option("--budget-fraction", type=FiniteFloat(0, 1, min_open=True), default=0.25,
              show_default=True, help="cache budget as a share of all adapters' bytes")
@click.option("--paging-weight", type=FiniteFloat(0), default=None,
              help="lambda (reward per second of paging); default from PolarConfig")
@click.option("--device", "device_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="device profile YAML (edge calibrate)")
@click.option("--strategy", "strategies", type=click.Choice(STRATEGY_NAMES), multiple=True,
              help="repeat to pick several; default all")
@click.option("--seed", type=int, default=0, show_default=True)
def route_bench(n_arms, dim, steps, budget_fraction, paging_weight, device_path, strategies,
                seed):
    """Replay a synthetic routing problem through routers and a PagedCache; print JSON."""
    device = load_profile(device_path) if device_path else DeviceProfile()
    polar = PolarConfig() if paging_weight is None else from_mapping(
        PolarConfig, {"paging_weight": paging_weight}, "polar")
    problem = make_problem(n_arms, dim, steps, np.random.default_rng(seed))
    budget = max(int(problem.sizes.max()), int(problem.sizes.sum() * budget_fraction))
    results = {}
    for name in strategies or STRATEGY_NAMES:
        strategy = make_strategy(name, arm_ids=problem.arm_ids, sizes=problem.sizes, dim=dim,
                                 budget_bytes=budget, device=device, linucb=LinUCBConfig(),
                                 polar=polar, rng=np.random.default_rng(seed + 1))
        result = replay(strategy, problem.contexts, problem.utilities, problem.sizes,
                        budget_bytes=budget, device=device, paging_weight=polar.paging_weight,
                        rng=np.random.default_rng(seed + 2), arm_ids=problem.arm_ids)
        result.pop("regret_curve")
        results[name] = result
    click.echo(json.dumps({"arms": n_arms, "dim": dim, "steps": steps, "budget_bytes": budget,
                           "results": results}, indent=2))
