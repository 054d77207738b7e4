"""The routing strategies an offline evaluation compares, as what they change in a runtime.

Learning strategies are router settings: each is the policy file's ``router`` section with one
thing changed, and runs through ``Runtime.handle`` exactly as the daemon would route. The two
references that do not learn are clients that name the adapter themselves (a request with
``adapter=`` set): ``random`` picks uniformly, ``oracle`` knows the true utilities and the
paging charge (myopic, per request), an upper reference no router can reach.

Cache-unaware learners (``polar.mode: off``; the cache's eviction policy decides residency):

- ``linucb``: LinUCB;
- ``lints``: linear Thompson sampling (``linucb.exploration: thompson``);
- ``greedy``: LinUCB with ``alpha: 0`` (exploration by the optimistic prior only);
- ``epsilon-greedy``: greedy plus ``epsilon: 0.05`` uniformly random routes.

Each runs under the policy file's cache policy, or under the eviction policy named after a
``+``: ``linucb+lru``, ``linucb+arc``, ``lints+lru``, ``greedy+s3fifo`` (any registered cache
policy; the policy file's ``policy_params`` are kept only when the policy is the file's own).

Cache-aware: ``polar``, ``polar+`` (docs/router.md), under the policy file's cache policy.

``configured``: the policy file's router and cache exactly as written (``edge tune``'s routing
replay runs each candidate so).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Protocol

import numpy as np

from edge.config import CacheConfig
from edge.router.config import FeatureConfig, RouterConfig, StateConfig

# The strategies `edge route-bench` runs by default and offers by name.
STRATEGY_NAMES = ("random", "greedy", "epsilon-greedy", "linucb+lru", "lints+lru", "polar",
                  "polar+", "oracle")
CACHE_UNAWARE = ("linucb", "lints", "greedy", "epsilon-greedy")
_OTHERS = ("random", "polar", "polar+", "oracle", "configured")
EPSILON = 0.05


def parse_strategy(name: str) -> tuple[str, Optional[str]]:
    """(learner or reference, eviction policy or None for the policy file's); ``ValueError``
    naming the strategy and what is known otherwise."""
    from edge.cache.policies import policy_names

    learner, plus, policy = name.partition("+")
    if name in _OTHERS:
        return name, None
    if learner in CACHE_UNAWARE and (not plus or policy in policy_names()):
        return learner, (policy or None)
    raise ValueError(f"unknown strategy {name!r} (known: {', '.join(_OTHERS)}, and "
                     f"{', '.join(CACHE_UNAWARE)} optionally followed by +POLICY, POLICY one of "
                     f"{', '.join(policy_names())})")


def check_strategies(names: tuple[str, ...] | list[str]) -> None:
    for name in names:
        parse_strategy(name)


def router_config_for(name: str, base: RouterConfig, context_dim: int) -> RouterConfig:
    """``base`` changed as strategy ``name`` says; contexts arrive as vectors of
    ``context_dim``, and nothing is saved (an evaluation must not touch a daemon's state)."""
    learner, _ = parse_strategy(name)
    linucb, polar = base.linucb, base.polar
    if learner in ("greedy", "epsilon-greedy"):
        linucb = replace(linucb, alpha=0.0, epsilon=EPSILON if learner == "epsilon-greedy"
                         else 0.0)
    elif learner == "lints":
        linucb = replace(linucb, exploration="thompson")
    if learner == "configured":
        mode = polar.mode
    else:
        mode = learner if learner in ("polar", "polar+") else "off"
    return replace(base, linucb=linucb, polar=replace(polar, mode=mode),
                   features=FeatureConfig(extractor="vector", dim=context_dim),
                   state=StateConfig(path=None))


def cache_config_for(name: str, base: CacheConfig) -> CacheConfig:
    """``base`` with the eviction policy strategy ``name`` names, if it names one."""
    _, policy = parse_strategy(name)
    if policy is None or policy == base.policy:
        return base
    return replace(base, policy=policy, policy_params={})


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
