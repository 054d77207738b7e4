"""The router: picks the adapter for a ``model: auto`` request (LinUCB, cache-aware POLAR).

Modules, one job each: ``config`` (settings), ``features`` (request -> vector), ``linucb``
(the bandit), ``planner`` (resident-set choice), ``schedule`` (epochs, forced rounds), ``polar``
(cache-aware routing + controller), ``feedback`` (late rewards), ``state`` (file format),
``router`` (the request-facing object). Offline evaluation lives in ``edge.sim``.

The names below are handed on lazily, so ``import edge.router.config`` (which the policy file
needs) does not load the bandit and numpy's linear algebra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOME = {
    "FeatureConfig": "config", "FeedbackConfig": "config", "LinUCBConfig": "config",
    "PolarConfig": "config", "RouterConfig": "config", "StateConfig": "config",
    "RewardError": "errors", "RouterError": "errors", "StateCorruptError": "errors",
    "StateError": "errors", "StateMismatchError": "errors", "UnknownArmError": "errors",
    "UnknownRequestError": "errors",
    "Decision": "linucb", "LinUCB": "linucb",
    "PolarRouter": "polar", "apply_resident_set": "polar",
    "Router": "router",
}

__all__ = [
    "Decision", "FeatureConfig", "FeedbackConfig", "LinUCB", "LinUCBConfig", "PolarConfig",
    "PolarRouter", "RewardError", "Router", "RouterConfig", "RouterError", "StateConfig",
    "StateCorruptError", "StateError", "StateMismatchError", "UnknownArmError",
    "UnknownRequestError", "apply_resident_set",
]
assert sorted(__all__) == sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from edge.router.config import (
        FeatureConfig,
        FeedbackConfig,
        LinUCBConfig,
        PolarConfig,
        RouterConfig,
        StateConfig,
    )
    from edge.router.errors import (
        RewardError,
        RouterError,
        StateCorruptError,
        StateError,
        StateMismatchError,
        UnknownArmError,
        UnknownRequestError,
    )
    from edge.router.linucb import Decision, LinUCB
    from edge.router.polar import PolarRouter, apply_resident_set
    from edge.router.router import Router
