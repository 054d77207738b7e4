"""Offline routing: (context, true per-adapter utility) events through ``Runtime.handle``.

Every strategy (``edge.sim.strategies``) runs through the one request path: a ``Runtime`` built
from the policy file's cache and router sections over the simulated backend (modelled paging
time on a virtual clock). Per event the request is routed (or, for the ``random`` and ``oracle``
references, names its adapter), acquired from the real ``PagedCache`` (a miss pages it in), and
served; the observed reward (the true utility plus Gaussian noise, clipped to [0, 1]) goes back
through ``Runtime.feedback``, so the router's pending table, reward checks and epochs work
exactly as online. Epoch plans reach the cache as prefetches: paging time off the request path,
IO all the same, so it counts in ``total_paging_s``.

Metrics (``lambda`` = ``objective_weight``, by default the router's ``polar.paging_weight``;
a comparison that tunes that weight passes its own fixed lambda, so lowering the router's charge
cannot lower the objective's):
- ``regret``: sum over requests of (max_a u - u_chosen), paging ignored (reward-only regret);
- ``objective``: sum of u_chosen - lambda * every second spent paging, blocking and prefetch
  alike (the reward-latency objective, the same for every strategy: a controller's prefetches
  are IO and device time too, so moving paging off the request path does not make it free);
- ``hit_ratio``: share of requests whose adapter was resident when acquired;
- ``blocking_paging_s`` / ``prefetch_paging_s`` / ``total_paging_s``.

``edge sim --router`` turns a labelled trace into such events (``routing_events``): an adapter
earns utility 1 on a request if it is the labelled one and 0 otherwise (the standard conversion
of a labelled log into a contextual-bandit problem), so regret counts misrouted requests.
``scripts/bench_router.py`` and ``edge route-bench`` replay seeded synthetic problems
(``edge.sim.synthetic``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np

from edge.catalogue import Catalogue
from edge.config import EdgeConfig
from edge.paging_cost import PagingCostModel
from edge.router.config import FeatureConfig
from edge.router.features import make_extractor
from edge.runtime import InferenceRequest, Runtime
from edge.sim.backend import SimulatedBackend
from edge.sim.strategies import (
    cache_config_for,
    check_strategies,
    make_client,
    router_config_for,
)
from edge.sim.trace import Trace

DEFAULT_STRATEGIES = ("random", "linucb+lru", "polar", "polar+", "oracle")
# Utilities are a dense (requests x adapters) matrix; keep it to a few hundred MB.
MAX_UTILITY_CELLS = 50_000_000


@dataclass(frozen=True)
class RoutingEvents:
    contexts: np.ndarray  # (T, d) float64
    utilities: np.ndarray  # (T, N) float64, one-hot on the labelled adapter
    sizes: np.ndarray  # (N,) int64 bytes, each adapter's size where it first appears
    arm_ids: tuple[str, ...]


def routing_events(trace: Trace, features: FeatureConfig | None = None) -> RoutingEvents:
    """The routing problem a trace describes; ``ValueError`` naming what the trace lacks."""
    features = features or FeatureConfig()
    if trace.contexts is None:
        raise ValueError("the trace has no context column: --router needs a context per request "
                         "(a feature vector or text), e.g. from `edge trace gen tenants "
                         "--context-dim 16`")
    # Only routed requests carry a context (an access log's named requests leave it out):
    # they are the routing problem.
    if trace.context_kind == "text":
        routed = np.array([c is not None for c in trace.contexts], dtype=bool)
    else:
        routed = ~np.isnan(trace.contexts).all(axis=1)
    if not routed.any():
        raise ValueError("no request in the trace has a context: --router needs routed "
                         "requests")
    if not routed.all():
        trace = Trace(trace.times[routed], trace.keys[routed], trace.sizes[routed],
                      contexts=trace.contexts[routed], key_names=trace.key_names)
    if trace.context_kind == "text":
        contexts = make_extractor(features).extract_batch([str(t) for t in trace.contexts])
    else:
        contexts = np.asarray(trace.contexts, dtype=np.float64)
    keys, first, labels = np.unique(trace.keys, return_index=True, return_inverse=True)
    n, arms = len(trace), len(keys)
    if n * arms > MAX_UTILITY_CELLS:
        raise ValueError(f"{n:,} requests x {arms:,} adapters is too large to replay at once; "
                         f"use --limit to replay at most {MAX_UTILITY_CELLS // arms:,} requests")
    utilities = np.zeros((n, arms))
    utilities[np.arange(n), labels] = 1.0
    names = tuple(trace.key_names.get(int(k), str(int(k))) for k in keys)
    sizes = trace.sizes[first]
    if int(sizes.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"adapter size {int(sizes.max())} is too large for the router, which "
                         "keeps sizes as int64 (at most 2**63-1 bytes)")
    return RoutingEvents(contexts, utilities, sizes.astype(np.int64), names)


def replay_routing(strategy: str, contexts: np.ndarray, utilities: np.ndarray,
                   sizes: np.ndarray, *, config: EdgeConfig, budget_bytes: int,
                   paging_cost: Optional[PagingCostModel] = None,
                   rng: Optional[np.random.Generator] = None, reward_noise: float = 0.1,
                   arm_ids: Optional[tuple[str, ...]] = None, checkpoints: int = 20,
                   objective_weight: Optional[float] = None) -> dict[str, Any]:
    """One strategy over one problem through a fresh ``Runtime``; the metrics of the module doc.

    ``config`` supplies the cache policy and the router's settings (its seed seeds the router);
    the budget and ``load_workers: 0`` (deterministic) are set here. ``rng`` draws the reward
    noise. ``objective_weight``: the objective's lambda (reward units per paging second, also
    the oracle's charge); None takes the router's ``polar.paging_weight``."""
    contexts = np.asarray(contexts, dtype=np.float64)
    utilities = np.asarray(utilities, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    T, N = utilities.shape
    if contexts.ndim != 2 or contexts.shape[0] != T:
        raise ValueError(f"contexts {contexts.shape} and utilities {utilities.shape} disagree "
                         "on the number of events")
    if sizes.shape != (N,):
        raise ValueError(f"sizes must have shape ({N},), got {sizes.shape}")
    if not np.all(np.isfinite(contexts)) or not np.all(np.isfinite(utilities)):
        raise ValueError("contexts and utilities must be finite")
    if budget_bytes < int(sizes.max()):
        raise ValueError(f"budget {budget_bytes} bytes cannot hold the largest adapter "
                         f"({int(sizes.max())} bytes)")
    rng = rng if rng is not None else np.random.default_rng(0)
    paging_cost = paging_cost or PagingCostModel()
    keys = arm_ids if arm_ids is not None else tuple(f"adapter-{i:03d}" for i in range(N))
    index = {k: i for i, k in enumerate(keys)}
    run_config = replace(
        config, cache=replace(cache_config_for(strategy, config.cache), budget=int(budget_bytes),
                              load_workers=0),
        router=router_config_for(strategy, config.router, contexts.shape[1]))
    lam = run_config.router.polar.paging_weight if objective_weight is None else objective_weight
    if not 0.0 <= lam < float("inf"):
        raise ValueError(f"objective_weight must be a finite number >= 0, got {lam!r}")
    penalty = np.array([lam * paging_cost.paging_seconds(int(s)) for s in sizes])
    # The references draw from their own generator, seeded like the router they stand in for.
    client = make_client(strategy, N, penalty, np.random.default_rng(config.router.seed))
    backend = SimulatedBackend(paging_cost)
    catalogue = Catalogue.from_sizes(dict(zip(keys, map(int, sizes), strict=True)))
    best = utilities.max(axis=1)
    regret = np.empty(T)
    blocking = reward_sum = 0.0
    hits = 0
    chosen_counts = np.zeros(N, dtype=np.int64)
    started = time.perf_counter()
    with Runtime(run_config, backend, catalogue, paging_cost=paging_cost) as runtime:
        handle, feedback = runtime.handle, runtime.feedback
        for t in range(T):
            x, u = contexts[t], utilities[t]
            if client is None:
                outcome = handle(InferenceRequest(prompt=x, request_id=t))
            else:
                named = keys[client.choose(x, u, runtime.resident_mask())]
                outcome = handle(InferenceRequest(prompt=x, adapter=named, request_id=t))
            arm = index[outcome.adapter]
            if outcome.hit:
                hits += 1
            else:
                blocking += outcome.timings["acquire"]  # the modelled page-in
            chosen_counts[arm] += 1
            reward_sum += u[arm]
            regret[t] = best[t] - u[arm]
            if outcome.routed:
                observed = float(np.clip(u[arm] + reward_noise * rng.standard_normal(), 0.0, 1.0))
                feedback(t, observed)
    cumulative = np.cumsum(regret)
    marks = np.unique(np.linspace(1, T, min(checkpoints, T)).astype(int))
    return {
        "strategy": strategy,
        "steps": T,
        "reward": float(reward_sum),
        "regret": float(cumulative[-1]),
        "regret_curve": {"t": marks.tolist(), "regret": cumulative[marks - 1].tolist()},
        "objective": float(reward_sum - lam * backend.paging_seconds),
        "hit_ratio": hits / T,
        "blocking_paging_s": float(blocking),
        "prefetch_paging_s": float(backend.paging_seconds - blocking),
        "total_paging_s": float(backend.paging_seconds),
        "arms_tried": int(np.count_nonzero(chosen_counts)),
        "wall_s": time.perf_counter() - started,
    }


def run_routing(events: RoutingEvents, strategies: tuple[str, ...], budget: int,
                paging_cost: PagingCostModel, *, config: Optional[EdgeConfig] = None
                ) -> list[dict[str, Any]]:
    """Each strategy replayed once through a Runtime built from ``config`` (default settings
    when None: LRU cache, the router's defaults); seeded by ``config.router.seed``."""
    config = config or EdgeConfig()
    check_strategies(strategies)
    results = []
    for name in strategies:
        result = replay_routing(name, events.contexts, events.utilities, events.sizes,
                                config=config, budget_bytes=budget, paging_cost=paging_cost,
                                rng=np.random.default_rng(config.router.seed + 1),
                                reward_noise=0.0, arm_ids=events.arm_ids)
        result.pop("regret_curve")
        results.append(result)
    return results


def format_routing_table(results: list[dict[str, Any]], budget: int) -> str:
    lines = [f"routing with a {budget:,}-byte cache (utility 1 for the labelled adapter)", "",
             f"{'strategy':<15} {'accuracy':>8} {'regret':>8} {'hit ratio':>9} "
             f"{'paging s':>9} {'objective':>10} {'tried':>6}", "-" * 71]
    for r in results:
        lines.append(f"{r['strategy']:<15} {r['reward'] / r['steps']:>8.3f} {r['regret']:>8.0f} "
                     f"{r['hit_ratio']:>9.3f} {r['total_paging_s']:>9.2f} "
                     f"{r['objective']:>10.1f} {r['arms_tried']:>6}")
    return "\n".join(lines)
