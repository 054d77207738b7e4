"""The router: picks the adapter for a ``model: auto`` request (LinUCB, cache-aware POLAR).

Modules, one job each: ``config`` (settings), ``features`` (request -> vector), ``linucb``
(the bandit), ``planner`` (resident-set choice), ``schedule`` (epochs, forced rounds), ``polar``
(cache-aware routing + controller), ``feedback`` (late rewards), ``state`` (file format),
``router`` (the request-facing object), ``synthetic`` / ``strategies`` / ``replay`` (offline
evaluation), ``commands`` (CLI).
"""

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

__all__ = [
    "Decision", "FeatureConfig", "FeedbackConfig", "LinUCB", "LinUCBConfig", "PolarConfig",
    "PolarRouter", "RewardError", "Router", "RouterConfig", "RouterError", "StateConfig",
    "StateCorruptError", "StateError", "StateMismatchError", "UnknownArmError",
    "UnknownRequestError", "apply_resident_set",
]
