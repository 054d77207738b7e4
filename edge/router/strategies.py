"""Routing strategies the replay compares: POLAR, POLAR+, LinUCB + LRU and simple baselines.

A strategy works on arm indices: ``choose(x, resident_mask, utilities)`` (only the oracle may
read the true utilities), ``observe(x, arm, reward)``, and ``take_plan()`` for a resident set
to hand the cache (None when it has no controller or no epoch closed).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Protocol

import numpy as np

from edge.device import DeviceProfile
from edge.router.config import LinUCBConfig, PolarConfig
from edge.router.linucb import LinUCB
from edge.router.polar import PolarRouter


class Strategy(Protocol):
    name: str

    def choose(self, x: np.ndarray, resident: np.ndarray, utilities: np.ndarray) -> int: ...

    def observe(self, x: np.ndarray, arm: int, reward: float) -> None: ...

    def take_plan(self) -> Optional[list[int]]: ...


class RandomStrategy:
    name = "random"

    def __init__(self, n_arms: int, rng: np.random.Generator) -> None:
        self.n_arms, self.rng = n_arms, rng

    def choose(self, x, resident, utilities) -> int:
        return int(self.rng.integers(self.n_arms))

    def observe(self, x, arm, reward) -> None:
        pass

    def take_plan(self):
        return None


class OracleStrategy:
    """Knows the true utilities; cache-aware with the objective's lambda, myopic (per request)."""

    name = "oracle"

    def __init__(self, paging_penalty: np.ndarray) -> None:
        self.paging_penalty = paging_penalty

    def choose(self, x, resident, utilities) -> int:
        return int(np.argmax(utilities - np.where(resident, 0.0, self.paging_penalty)))

    def observe(self, x, arm, reward) -> None:
        pass

    def take_plan(self):
        return None


class BanditStrategy:
    """A ``PolarRouter`` (any mode), optionally epsilon-greedy on top."""

    def __init__(self, name: str, router: PolarRouter, epsilon: float = 0.0,
                 rng: Optional[np.random.Generator] = None) -> None:
        self.name, self.router, self.epsilon = name, router, epsilon
        self.rng = rng if rng is not None else router.linucb.rng

    def choose(self, x, resident, utilities) -> int:
        decision = self.router.decide(x, resident)
        if self.epsilon and self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.router.linucb.n_arms))
        return decision.arm_index

    def observe(self, x, arm, reward) -> None:
        self.router.linucb.update_index(arm, x, reward)

    def take_plan(self) -> Optional[list[int]]:
        plan = self.router.take_plan()
        if plan is None:
            return None
        return [self.router.linucb.index_of(a) for a in plan]


STRATEGY_NAMES = ("random", "greedy", "epsilon-greedy", "linucb+lru", "polar", "polar+",
                  "oracle")


def make_strategy(name: str, *, arm_ids: tuple[str, ...], sizes: np.ndarray, dim: int,
                  budget_bytes: int, device: DeviceProfile, linucb: LinUCBConfig,
                  polar: PolarConfig, rng: np.random.Generator, epsilon: float = 0.05
                  ) -> Strategy:
    """One of ``STRATEGY_NAMES``, built from the same LinUCB and POLAR settings."""
    if name == "random":
        return RandomStrategy(len(arm_ids), rng)
    if name == "oracle":
        penalty = np.array([polar.paging_weight * device.paging_seconds(int(s)) for s in sizes])
        return OracleStrategy(penalty)
    if name not in STRATEGY_NAMES:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGY_NAMES)})")
    mode = {"polar": "polar", "polar+": "polar+"}.get(name, "off")
    lin = replace(linucb, alpha=0.0) if name in ("greedy", "epsilon-greedy") else linucb
    router = PolarRouter(LinUCB(dim, lin, rng), replace(polar, mode=mode), device, budget_bytes)
    for arm_id, size in zip(arm_ids, sizes, strict=True):
        router.add_arm(arm_id, int(size))
    return BanditStrategy(name, router, epsilon if name == "epsilon-greedy" else 0.0, rng)
