"""The routing strategies an offline evaluation compares, as what they change in a runtime.

Learning strategies are router settings: each is the policy file's ``router`` section with one
thing changed, and runs through ``Runtime.handle`` exactly as the daemon would route. The two
references that do not learn are clients that name the adapter themselves (a request with
``adapter=`` set): ``random`` picks uniformly, ``oracle`` knows the true utilities and the
paging charge (myopic, per request), an upper reference no router can reach.

- ``linucb+lru``: LinUCB, cache-unaware (``polar.mode: off``); the cache policy evicts.
- ``greedy``: the same with ``alpha: 0`` (exploration by the optimistic prior only).
- ``epsilon-greedy``: greedy plus ``epsilon: 0.05`` uniformly random routes.
- ``polar``, ``polar+``: cache-aware routing with the epoch controller (docs/router.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Protocol

import numpy as np

from edge.router.config import FeatureConfig, RouterConfig, StateConfig

STRATEGY_NAMES = ("random", "greedy", "epsilon-greedy", "linucb+lru", "polar", "polar+",
                  "oracle")
EPSILON = 0.05


def check_strategies(names: tuple[str, ...] | list[str]) -> None:
    unknown = [s for s in names if s not in STRATEGY_NAMES]
    if unknown:
        raise ValueError(f"unknown strategy {unknown[0]!r} (known: {', '.join(STRATEGY_NAMES)})")


def router_config_for(name: str, base: RouterConfig, context_dim: int) -> RouterConfig:
    """``base`` changed as strategy ``name`` says; contexts arrive as vectors of
    ``context_dim``, and nothing is saved (an evaluation must not touch a daemon's state)."""
    check_strategies([name])
    linucb, polar = base.linucb, base.polar
    if name in ("greedy", "epsilon-greedy"):
        linucb = replace(linucb, alpha=0.0, epsilon=EPSILON if name == "epsilon-greedy" else 0.0)
    mode = name if name in ("polar", "polar+") else "off"
    return replace(base, linucb=linucb, polar=replace(polar, mode=mode),
                   features=FeatureConfig(extractor="vector", dim=context_dim),
                   state=StateConfig(path=None))


class Client(Protocol):
    """A reference strategy that names the adapter itself (arm indices)."""

    def choose(self, x: np.ndarray, utilities: np.ndarray, resident: np.ndarray) -> int: ...


class RandomClient:
    def __init__(self, n_arms: int, rng: np.random.Generator) -> None:
        self.n_arms, self.rng = n_arms, rng

    def choose(self, x, utilities, resident) -> int:
        return int(self.rng.integers(self.n_arms))


class OracleClient:
    """Knows the true utilities; cache-aware with the objective's lambda, myopic."""

    def __init__(self, paging_penalty: np.ndarray) -> None:
        self.paging_penalty = paging_penalty

    def choose(self, x, utilities, resident) -> int:
        return int(np.argmax(utilities - np.where(resident, 0.0, self.paging_penalty)))


def make_client(name: str, n_arms: int, paging_penalty: np.ndarray,
                rng: np.random.Generator) -> Optional[Client]:
    """The client of a reference strategy, or None for a strategy the router carries out."""
    if name == "random":
        return RandomClient(n_arms, rng)
    if name == "oracle":
        return OracleClient(paging_penalty)
    return None
