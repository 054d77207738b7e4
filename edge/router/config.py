"""Settings of the router: frozen dataclasses, validated on construction.

They are read from YAML by ``edge.schema.from_mapping(RouterConfig, data, "router")``; every
``__post_init__`` raises ``ValueError`` naming the field and what is wrong, which the loader turns
into a ``ConfigError`` with the key path.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Literal, Optional

from edge.schema import to_mapping


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class FeatureConfig:
    """Request -> vector. ``extractor`` names an entry of ``edge.router.features.EXTRACTORS``."""

    extractor: str = "hashing"
    dim: int = 64
    word_ngrams: tuple[int, ...] = (1, 2)
    char_ngrams: tuple[int, ...] = (3, 4)
    lowercase: bool = True
    # Salt of the hash: a different salt is a different feature space (and a different fingerprint).
    hash_seed: int = 0
    # Long prompts are cut here before hashing so extraction cost stays bounded.
    max_chars: int = 4096

    def __post_init__(self) -> None:
        if not self.extractor:
            raise ValueError("extractor must name a feature extractor, got an empty string")
        if not 1 <= self.dim <= 65536:
            raise ValueError(f"dim must be between 1 and 65536, got {self.dim}")
        for name in ("word_ngrams", "char_ngrams"):
            sizes = getattr(self, name)
            bad = [n for n in sizes if not 1 <= n <= 16]
            if bad:
                raise ValueError(f"{name} sizes must be between 1 and 16, got {list(sizes)}")
            if len(set(sizes)) != len(sizes):
                raise ValueError(f"{name} lists a size twice: {list(sizes)}")
        if not self.word_ngrams and not self.char_ngrams:
            raise ValueError("word_ngrams and char_ngrams are both empty: nothing to hash")
        if not 0 <= self.hash_seed < 2**32:
            raise ValueError(f"hash_seed must be in [0, 2**32), got {self.hash_seed}")
        if self.max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {self.max_chars}")

    def fingerprint(self) -> str:
        """Stable hash of every setting that changes the feature space (saved with the state)."""
        canonical = json.dumps(to_mapping(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LinUCBConfig:
    """Disjoint-arm LinUCB: score = prior_reward + theta_a.x + alpha * sqrt(x' A_a^-1 x)."""

    alpha: float = 0.5
    ridge_lambda: float = 1.0
    # Rewards are learned as (reward - prior_reward): an untried arm predicts prior_reward. With
    # rewards in [0, 1] the default 1.0 is optimistic, so every arm gets tried (see docs/router.md).
    prior_reward: float = 1.0
    # Forgetting factor for drifting utilities: 1.0 keeps everything; 0.999 halves a sample's
    # weight after ~700 updates of its arm.
    discount: float = 1.0
    # Exact re-inversion of A every this many updates of an arm, bounding Sherman-Morrison drift.
    refactor_every: int = 512
    # Share of requests routed to a uniformly random arm instead (epsilon-greedy on top of the
    # scores; 0 leaves exploration to the confidence bonus and the optimistic prior).
    epsilon: float = 0.0
    # "ucb": score = mean + alpha * sqrt(x'A^-1 x). "thompson": linear Thompson sampling, score
    # = mean + alpha * sqrt(x'A^-1 x) * z_a with z_a ~ N(0, 1) drawn per arm and decision (the
    # score of theta_a ~ N(theta_a, alpha^2 A_a^-1) at x; alpha is the posterior scale). The
    # epoch planner still plans on the optimistic mean + bonus either way.
    exploration: Literal["ucb", "thompson"] = "ucb"
    # Exploration that shrinks with evidence: with alpha_initial set, the scale in use after t
    # updates (all arms together) is alpha + (alpha_initial - alpha) * n0 / (n0 + t), n0 =
    # alpha_decay_updates: wide early, while a greedy learner would lock onto an arm, alpha
    # once the evidence is in. None: alpha throughout.
    alpha_initial: Optional[float] = None
    alpha_decay_updates: float = 1000.0

    def __post_init__(self) -> None:
        for name in ("alpha", "ridge_lambda", "prior_reward", "discount", "epsilon",
                     "alpha_decay_updates"):
            _check_finite(name, getattr(self, name))
        if self.alpha_initial is not None:
            _check_finite("alpha_initial", self.alpha_initial)
            if self.alpha_initial < 0:
                raise ValueError(f"alpha_initial must be >= 0 (or null), got "
                                 f"{self.alpha_initial}")
        if self.alpha_decay_updates <= 0:
            raise ValueError(f"alpha_decay_updates must be > 0, got {self.alpha_decay_updates}")
        if self.exploration not in ("ucb", "thompson"):
            raise ValueError(f"exploration must be 'ucb' or 'thompson', got {self.exploration!r}")
        if not 0 <= self.epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.ridge_lambda <= 0:
            raise ValueError(f"ridge_lambda must be > 0 (it keeps A invertible), got "
                             f"{self.ridge_lambda}")
        if not 0 < self.discount <= 1:
            raise ValueError(f"discount must be in (0, 1], got {self.discount}")
        if self.refactor_every < 1:
            raise ValueError(f"refactor_every must be at least 1, got {self.refactor_every}")


@dataclass(frozen=True)
class PolarConfig:
    """Cache awareness. ``mode``: ``off`` (plain LinUCB), ``polar`` (fixed epochs) or
    ``polar+`` (doubling epochs and forced exploration)."""

    mode: Literal["off", "polar", "polar+"] = "polar+"
    # lambda: reward units per second of paging. score -= paging_weight * paging_seconds(size)
    # for an adapter that is not resident.
    paging_weight: float = 1.0
    # Fixed epoch length (polar), first epoch length L0 (polar+).
    epoch_length: int = 256
    # polar+: epochs double up to this length, so a long-running daemon still re-plans.
    max_epoch_length: int = 16384
    # polar+: ceil(scale * sqrt(L_e)) forced-exploration rounds in an epoch of length L_e.
    forced_exploration_scale: float = 0.25
    # polar+: an arm with fewer decisions than this is always eligible for a forced round (its
    # confidence bound rests on the prior alone); past it, only an arm that lost to its paging
    # charge is (docs/router.md).
    forced_min_decisions: int = 4
    # Recent contexts the epoch controller plans the resident set for.
    context_window: int = 1024
    # Charge a page-in lambda * c_a / k_a, k_a = 1 + share_a * (requests left in the epoch):
    # the requests the adapter is expected to serve while resident (docs/router.md). False
    # charges the whole lambda * c_a to the one request that triggers it.
    amortise_paging: bool = True
    # polar+: a non-resident adapter that does not fit in the free bytes is also charged the
    # expected re-paging cost of the residents it would evict, cheapest first (docs/router.md).
    # Needs a budget; False charges only its own page-in.
    charge_eviction: bool = True
    # What an epoch's plan does in Runtime. True: the planned resident set is prefetched and
    # residents outside it are discarded as far as the planned ones need room. False: the plan
    # only hands its demand estimate to the cache (PagedCache.set_demand), whose eviction
    # policy decides; the `demand` policy evicts by it. Prefetched bytes are paging too: with
    # the charge at 0 the plan's prefetches cost more than they saved (docs/router.md).
    prefetch_plan: bool = True

    def __post_init__(self) -> None:
        _check_finite("paging_weight", self.paging_weight)
        _check_finite("forced_exploration_scale", self.forced_exploration_scale)
        if self.paging_weight < 0:
            raise ValueError(f"paging_weight must be >= 0, got {self.paging_weight}")
        if self.epoch_length < 1:
            raise ValueError(f"epoch_length must be at least 1, got {self.epoch_length}")
        if self.max_epoch_length < self.epoch_length:
            raise ValueError(f"max_epoch_length ({self.max_epoch_length}) must be >= "
                             f"epoch_length ({self.epoch_length})")
        if self.forced_exploration_scale < 0:
            raise ValueError("forced_exploration_scale must be >= 0, got "
                             f"{self.forced_exploration_scale}")
        if self.forced_min_decisions < 0:
            raise ValueError("forced_min_decisions must be >= 0, got "
                             f"{self.forced_min_decisions}")
        if self.context_window < 1:
            raise ValueError(f"context_window must be at least 1, got {self.context_window}")


@dataclass(frozen=True)
class FeedbackConfig:
    """Late rewards: decisions wait in a bounded table until their reward arrives or expires."""

    reward_source: str = "explicit"
    max_pending: int = 100_000
    expiry_seconds: float = 3600.0
    reward_min: float = 0.0
    reward_max: float = 1.0

    def __post_init__(self) -> None:
        if not self.reward_source:
            raise ValueError("reward_source must name a reward source, got an empty string")
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {self.max_pending}")
        for name in ("expiry_seconds", "reward_min", "reward_max"):
            _check_finite(name, getattr(self, name))
        if self.expiry_seconds <= 0:
            raise ValueError(f"expiry_seconds must be > 0, got {self.expiry_seconds}")
        if self.reward_min >= self.reward_max:
            raise ValueError(f"reward_min ({self.reward_min}) must be below reward_max "
                             f"({self.reward_max})")


@dataclass(frozen=True)
class StateConfig:
    """Where the router's learned state lives; None keeps it in memory only."""

    path: Optional[str] = None
    save_interval_seconds: float = 60.0

    def __post_init__(self) -> None:
        _check_finite("save_interval_seconds", self.save_interval_seconds)
        if self.save_interval_seconds <= 0:
            raise ValueError(
                f"save_interval_seconds must be > 0, got {self.save_interval_seconds}")
        if self.path is not None and not self.path.strip():
            raise ValueError("path must be a file path or null, got an empty string")


@dataclass(frozen=True)
class RouterConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    linucb: LinUCBConfig = field(default_factory=LinUCBConfig)
    polar: PolarConfig = field(default_factory=PolarConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    state: StateConfig = field(default_factory=StateConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
