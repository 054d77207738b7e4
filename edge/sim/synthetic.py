"""Seeded synthetic routing problems with context-dependent, exactly linear utilities.

Requests come from topics with Zipf popularity; each adapter specialises in one topic, so a few
adapters matter at a time (the locality that makes caching worth it). Utilities are linear in
the context, including a bias coordinate, so LinUCB's model is well specified:

    x = [s, sqrt(1 - s^2) * z],   |z| = 1
    u(x, a) = 0.5 + q_a + 0.4 * (z . w_a)   in [0.05, 0.95]

where w_a (unit) leans toward its topic's direction and q_a in [-0.05, 0.05] is the adapter's
overall quality. Sizes are log-uniform in [16, 128] MiB, like rank-8..64 LoRA adapters of a 7B
model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RoutingProblem:
    contexts: np.ndarray  # (T, d) float64, unit rows
    utilities: np.ndarray  # (T, N) float64 in [0, 1]
    sizes: np.ndarray  # (N,) int64 bytes
    topics: np.ndarray  # (T,) int: the topic each request came from

    @property
    def arm_ids(self) -> tuple[str, ...]:
        return tuple(f"adapter-{i:03d}" for i in range(self.utilities.shape[1]))


def make_problem(n_arms: int, dim: int, horizon: int, rng: np.random.Generator, *,
                 n_topics: int | None = None, zipf: float = 1.0, topic_spread: float = 0.35,
                 min_mib: float = 16.0, max_mib: float = 128.0) -> RoutingProblem:
    if n_arms < 1 or dim < 3 or horizon < 1:
        raise ValueError(f"need n_arms >= 1, dim >= 3, horizon >= 1; got {n_arms}, {dim}, "
                         f"{horizon}")
    topics = n_topics or max(2, n_arms // 4)
    k = dim - 1
    centres = _unit(rng.normal(size=(topics, k)))
    popularity = 1.0 / np.arange(1, topics + 1) ** zipf
    popularity /= popularity.sum()
    request_topic = rng.choice(topics, size=horizon, p=popularity)
    z = _unit(centres[request_topic] + topic_spread * rng.normal(size=(horizon, k)) / np.sqrt(k))
    arm_topic = np.arange(n_arms) % topics
    w = _unit(centres[arm_topic] + 0.8 * rng.normal(size=(n_arms, k)) / np.sqrt(k))
    quality = rng.uniform(-0.05, 0.05, size=n_arms)
    s = 0.5
    contexts = np.hstack([np.full((horizon, 1), s), np.sqrt(1 - s * s) * z])
    utilities = 0.5 + quality[None, :] + 0.4 * (z @ w.T)
    sizes = np.exp(rng.uniform(np.log(min_mib), np.log(max_mib), size=n_arms)) * 2**20
    return RoutingProblem(contexts, utilities, sizes.astype(np.int64), request_topic)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)
