"""Late, out-of-order rewards: pending decisions and the sources rewards come from.

Every routed request leaves a ``PendingDecision`` (arm, context, time) keyed by request id. A
reward may arrive seconds or minutes later and in any order; it is matched by id. The table is
bounded twice: entries older than ``expiry_seconds`` are dropped, and when ``max_pending`` is
reached the oldest entry is dropped to make room (a reward that never comes must not grow memory
for ever). Both are counted, so an operator can see feedback being lost.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import numpy as np

from edge.errors import ConfigError
from edge.router.config import FeedbackConfig
from edge.router.errors import RewardError, UnknownRequestError


@dataclass(frozen=True)
class PendingDecision:
    request_id: Hashable
    arm_id: str
    context: np.ndarray
    routed_at: float


class PendingTable:
    def __init__(self, config: FeedbackConfig, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.config = config
        self._clock = clock
        self._pending: OrderedDict[Hashable, PendingDecision] = OrderedDict()
        self.expired = 0  # dropped because no reward came within expiry_seconds
        self.overflowed = 0  # dropped to keep the table under max_pending

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._pending

    def add(self, request_id: Hashable, arm_id: str, context: np.ndarray) -> None:
        if request_id in self._pending:
            raise RewardError(f"request id {request_id!r} was already routed and is still "
                              "waiting for its reward; request ids must be unique")
        now = self._clock()
        self._expire(now)
        while len(self._pending) >= self.config.max_pending:
            self._pending.popitem(last=False)
            self.overflowed += 1
        self._pending[request_id] = PendingDecision(request_id, arm_id, context, now)

    def pop(self, request_id: Hashable) -> PendingDecision:
        self._expire(self._clock())
        try:
            return self._pending.pop(request_id)
        except KeyError:
            raise UnknownRequestError(
                f"no pending decision for request id {request_id!r}: it was never routed, its "
                f"reward was already given, or it expired (older than "
                f"{self.config.expiry_seconds:g} s or pushed out of the {self.config.max_pending}"
                "-entry table)") from None

    def discard(self, request_id: Hashable) -> bool:
        """Forget one pending decision (its request failed); False if there was none."""
        return self._pending.pop(request_id, None) is not None

    def drop_arm(self, arm_id: str) -> int:
        """Forget decisions routed to a deleted adapter; returns how many."""
        stale = [rid for rid, p in self._pending.items() if p.arm_id == arm_id]
        for rid in stale:
            del self._pending[rid]
        return len(stale)

    def _expire(self, now: float) -> None:
        horizon = now - self.config.expiry_seconds
        # Insertion order is routing order, so expired entries are all at the front.
        while self._pending:
            first = next(iter(self._pending.values()))
            if first.routed_at >= horizon:
                break
            self._pending.popitem(last=False)
            self.expired += 1


def check_reward(reward: Any, config: FeedbackConfig, request_id: Hashable) -> float:
    if isinstance(reward, bool) or not isinstance(reward, (int, float, np.floating, np.integer)):
        raise RewardError(f"reward for request {request_id!r} must be a number, got {reward!r}")
    value = float(reward)
    if not math.isfinite(value) or not config.reward_min <= value <= config.reward_max:
        raise RewardError(f"reward for request {request_id!r} is {value!r}; rewards must lie in "
                          f"[{config.reward_min:g}, {config.reward_max:g}]")
    return value


class RewardSource(Protocol):
    """Turns a finished request into a reward, or None to wait for explicit feedback."""

    name: str

    def reward_for(self, request_id: Hashable, prompt: Optional[str], response: Any
                   ) -> Optional[float]: ...


class ExplicitFeedback:
    """Rewards come only from ``Router.update(request_id, reward)`` (a client's thumbs-up)."""

    name = "explicit"

    def reward_for(self, request_id: Hashable, prompt: Optional[str], response: Any
                   ) -> Optional[float]:
        return None


class ResponseLikelihood:
    """The reward is the response's normalised likelihood under the adapter that produced it:
    exp(mean log-probability of its tokens) = exp(-NLL / n), in (0, 1]. A backend reports the
    mean in ``response.mean_logprob`` (the llama.cpp backend computes it on first read, from
    the logits it generated with; a request nobody reads it for pays nothing). A response
    without it, or without tokens, gets no automatic reward (None: explicit feedback can still
    come). It measures how sure the adapter is of its own answer, not whether the answer is
    right: a proxy for when no user rates the answers."""

    name = "response-likelihood"
    # The backend must compute log-probabilities (Runtime turns the llama backend's
    # track_logprobs on for this source; they cost a pass over the vocabulary per token).
    needs_logprobs = True

    def reward_for(self, request_id: Hashable, prompt: Optional[str], response: Any
                   ) -> Optional[float]:
        mean = getattr(response, "mean_logprob", None)
        if mean is None or not math.isfinite(mean):
            return None
        return math.exp(min(0.0, float(mean)))


REWARD_SOURCES: dict[str, Callable[[], RewardSource]] = {
    "explicit": ExplicitFeedback, "response-likelihood": ResponseLikelihood}


def make_reward_source(name: str) -> RewardSource:
    try:
        return REWARD_SOURCES[name]()
    except KeyError:
        raise ConfigError(f"feedback.reward_source: unknown reward source {name!r} "
                          f"(known: {', '.join(sorted(REWARD_SOURCES))})") from None
