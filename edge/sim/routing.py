"""``edge sim --router``: replay a trace with request contexts through routing strategies.

A trace says, per request, its context (a feature vector, or text that the router's feature
extractor turns into one) and the adapter it was labelled with (``key``). Offline there is no
user to ask whether another adapter would have served better, so the label is the ground truth:
an adapter earns utility 1 on a request if it is the labelled one and 0 otherwise (the standard
conversion of a labelled log into a contextual-bandit problem). Regret then counts misrouted
requests. Every strategy runs against a real ``PagedCache`` through ``edge.router.replay``, with
the device profile's paging cost, exactly as ``scripts/bench_router.py`` does on synthetic
problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.device import DeviceProfile
from edge.router.config import FeatureConfig, LinUCBConfig, PolarConfig
from edge.router.features import make_extractor
from edge.router.replay import replay
from edge.router.strategies import STRATEGY_NAMES, make_strategy
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


def run_routing(events: RoutingEvents, strategies: tuple[str, ...], budget: int,
                profile: DeviceProfile, *, linucb: LinUCBConfig | None = None,
                polar: PolarConfig | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Each strategy replayed once, seeded; the metrics of ``edge.router.replay.replay``."""
    linucb = linucb or LinUCBConfig()
    polar = polar or PolarConfig()
    unknown = [s for s in strategies if s not in STRATEGY_NAMES]
    if unknown:
        raise ValueError(f"unknown strategy {unknown[0]!r} (known: {', '.join(STRATEGY_NAMES)})")
    if budget < int(events.sizes.max()):
        raise ValueError(f"budget {budget} bytes cannot hold the largest adapter "
                         f"({int(events.sizes.max())} bytes)")
    dim = events.contexts.shape[1]
    results = []
    for name in strategies:
        strategy = make_strategy(name, arm_ids=events.arm_ids, sizes=events.sizes, dim=dim,
                                 budget_bytes=budget, device=profile, linucb=linucb,
                                 polar=polar, rng=np.random.default_rng(seed))
        result = replay(strategy, events.contexts, events.utilities, events.sizes,
                        budget_bytes=budget, device=profile, paging_weight=polar.paging_weight,
                        rng=np.random.default_rng(seed + 1), reward_noise=0.0,
                        arm_ids=events.arm_ids)
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
