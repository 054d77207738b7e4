"""``edge route-bench``: a seeded synthetic routing problem through every strategy, JSON out.

Each strategy runs through ``Runtime.handle`` over the simulated backend
(``edge.sim.routing.replay_routing``), as ``scripts/bench_router.py`` does with more repeats
and its peers.
"""

from __future__ import annotations

import json

import click
import numpy as np

from edge.config import EdgeConfig
from edge.paging_cost import PagingCostModel, load_paging_cost
from edge.router.config import PolarConfig, RouterConfig
from edge.schema import from_mapping
from edge.sim.cliutil import FiniteFloat
from edge.sim.routing import replay_routing
from edge.sim.strategies import STRATEGY_NAMES
from edge.sim.synthetic import make_problem


@click.command("route-bench")
@click.option("--arms", "n_arms", type=click.IntRange(1), default=16, show_default=True,
              help="adapters (arms) in the synthetic problem")
@click.option("--dim", type=click.IntRange(3), default=32, show_default=True,
              help="dimension of the request context vectors")
@click.option("--steps", type=click.IntRange(1), default=5000, show_default=True,
              help="requests replayed through each strategy")
@click.option("--budget-fraction", type=FiniteFloat(0, 1, min_open=True), default=0.25,
              show_default=True, help="cache budget as a share of all adapters' bytes")
@click.option("--paging-weight", type=FiniteFloat(0), default=None,
              help="lambda (reward per second of paging); default from PolarConfig")
@click.option("--paging-cost", "paging_cost_path",
              type=click.Path(exists=True, dir_okay=False), default=None,
              help="paging-cost profile YAML (edge calibrate)")
@click.option("--strategy", "strategies", type=click.Choice(STRATEGY_NAMES), multiple=True,
              help="repeat to pick several; default all")
@click.option("--seed", type=int, default=0, show_default=True,
              help="seed of the problem, the router and the replay")
def route_bench(n_arms, dim, steps, budget_fraction, paging_weight, paging_cost_path,
                strategies, seed):
    """Replay a synthetic routing problem through each strategy's Runtime; print JSON."""
    paging_cost = load_paging_cost(paging_cost_path) if paging_cost_path else PagingCostModel()
    polar = PolarConfig() if paging_weight is None else from_mapping(
        PolarConfig, {"paging_weight": paging_weight}, "polar")
    config = EdgeConfig(router=RouterConfig(polar=polar, seed=seed + 1))
    problem = make_problem(n_arms, dim, steps, np.random.default_rng(seed))
    budget = max(int(problem.sizes.max()), int(problem.sizes.sum() * budget_fraction))
    results = {}
    for name in strategies or STRATEGY_NAMES:
        result = replay_routing(name, problem.contexts, problem.utilities, problem.sizes,
                                config=config, budget_bytes=budget,
                                paging_cost=paging_cost, rng=np.random.default_rng(seed + 2),
                                arm_ids=problem.arm_ids)
        result.pop("regret_curve")
        results[name] = result
    click.echo(json.dumps({"arms": n_arms, "dim": dim, "steps": steps, "budget_bytes": budget,
                           "results": results}, indent=2))
