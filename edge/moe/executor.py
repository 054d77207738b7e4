"""``ExpertExecutor``: a MoE feed-forward layer whose experts are paged through a ``PagedCache``.

For a batch of (already RMS-normed) hidden states of one layer it computes the router logits,
chooses each token's experts by the model's gating rule (``edge.moe.gating``), pins the chosen
experts with ONE ``acquire_many`` (keys ``layer << 32 | expert``, sizes declared so the cache
makes room before it reads), and sums the weighted SwiGLU outputs of the experts. The pins last
while the layer computes, so an expert in use is never evicted, and they are released before the
next layer asks, so a budget of one layer's experts is enough.

When a batch's distinct experts need more bytes than the whole budget (a long prompt under a
small budget), its tokens are split, in order, into the fewest consecutive groups whose experts
fit, one ``acquire_many`` each: the result is the same, only more reads.

With a ``prefetcher`` (``edge.moe.prefetch.Prefetcher``), each layer first tells it what it
chose (scoring the last prediction, learning transitions), and once its experts are pinned asks
it to predict and prefetch the next layer's experts, so those reads overlap this layer's compute.
Prefetching changes which reads happen and when, never a result.

``on_layer(layer, keys)`` is called inside the pinned block, after the prefetch was issued (for
tests and tracing: the cache's state is the one the layer runs under). ``counters()`` are the
cache's and the store's numbers since the executor was made (or ``reset_counters``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge.backends.experts import ExpertStore, ExpertWeights, expert_key
from edge.moe.gating import GatingRule, gating_rule
from edge.moe.prefetch import PrefetchCounters

LayerHook = Callable[[int, list[int]], None]


@dataclass(frozen=True)
class RunCounters:
    """Expert paging during a run: cache hits and misses (one per expert per acquire), bytes
    the cache admitted (resident, float32), bytes read from the file, and evictions."""

    hits: int
    misses: int
    bytes_loaded: int
    bytes_read: int
    loads: int
    evictions: int
    layer_calls: int  # acquire_many calls: one per layer per step unless a batch was split
    coalesced: int = 0  # misses that joined a load already running (a prefetch in flight)

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "hit_ratio": self.hit_ratio,
                "bytes_loaded": self.bytes_loaded, "bytes_read": self.bytes_read,
                "loads": self.loads, "evictions": self.evictions,
                "layer_calls": self.layer_calls, "coalesced": self.coalesced}


def silu(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x << 0: silu -> -0, right
        return x / (1.0 + np.exp(-x))


def expert_ffn(weights: ExpertWeights, x: np.ndarray) -> np.ndarray:
    """One expert's SwiGLU on rows of x: down @ (silu(gate @ x) * (up @ x))."""
    return (silu(x @ weights.gate.T) * (x @ weights.up.T)) @ weights.down.T


class ExpertExecutor:
    """Runs the MoE layers of ``store``'s model with experts acquired from ``cache``.

    The cache should have been made without a loader of its own, or with ``store.load_key``:
    this class passes ``store.load_key`` and the sizes on every call."""

    def __init__(self, store: ExpertStore, cache, *, rule: GatingRule | None = None,
                 on_layer: LayerHook | None = None, prefetcher=None) -> None:
        self.store = store
        self.cache = cache
        self.rule = rule or gating_rule(store.layout)
        self.on_layer = on_layer
        self.k = store.n_expert_used
        # Routers are small (n_expert x n_embd) and needed by every token: read them once.
        self.routers = {layer: store.router(layer) for layer in store.layout.moe_layers}
        self._expert_nbytes = {layer: store.nbytes(layer, 0) for layer in self.routers}
        self._layer_calls = 0
        self.last_experts: np.ndarray | None = None
        self.prefetcher = prefetcher  # an edge.moe.prefetch.Prefetcher, or None
        self.reset_counters()

    def route(self, layer: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(experts, weights) of each row of x in ``layer``, each (n_tokens, k)."""
        return self.rule.route(x @ self.routers[layer].T, self.k)

    def forward(self, layer: int, x: np.ndarray, residual: np.ndarray | None = None
                ) -> np.ndarray:
        """The MoE FFN output of block ``layer`` for hidden states x (n_tokens, n_embd).

        ``residual``: the residual stream x was normed from, for the prefetcher's router
        prediction of the next layer (x itself when None)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        experts, weights = self.route(layer, x)
        self.last_experts = experts  # (n_tokens, k), most probable first: for routing traces
        prefetcher = self.prefetcher
        if prefetcher is not None:
            prefetcher.observe(layer, experts)
        out = np.zeros_like(x)
        groups = self._token_groups(layer, experts)
        for group, tokens in enumerate(groups):
            chosen = experts[tokens]
            distinct = np.unique(chosen)
            keys = [expert_key(layer, int(e)) for e in distinct]
            size = self._expert_nbytes[layer]
            with self.cache.acquire_many(keys, self.store.load_key,
                                         nbytes=[size] * len(keys)) as values:
                self._layer_calls += 1
                if prefetcher is not None and group == len(groups) - 1:
                    # Now, with this layer's experts pinned: a prefetch cannot evict them, and
                    # its reads overlap the expert compute below.
                    prefetcher.issue(layer, x if residual is None else residual, experts)
                for expert, value in zip(distinct, values, strict=True):
                    rows, slots = np.nonzero(chosen == expert)
                    y = expert_ffn(value, x[tokens[rows]])
                    out[tokens[rows]] += y * weights[tokens[rows], slots][:, None]
                if self.on_layer is not None:
                    self.on_layer(layer, keys)
        return out

    def _token_groups(self, layer: int, experts: np.ndarray) -> list[np.ndarray]:
        """Consecutive runs of tokens whose distinct experts fit the budget together."""
        n_tokens = experts.shape[0]
        per_expert = self._expert_nbytes[layer]
        fits = max(1, self.cache.budget // per_expert)  # experts one acquire can hold
        if len(np.unique(experts)) <= fits:
            return [np.arange(n_tokens)]
        groups: list[np.ndarray] = []
        start, seen = 0, set()
        for t in range(n_tokens):
            union = seen | set(experts[t].tolist())
            if len(union) > fits and t > start:
                groups.append(np.arange(start, t))
                start, union = t, set(experts[t].tolist())
            seen = union
        groups.append(np.arange(start, n_tokens))
        return groups

    # ---- counters ----------------------------------------------------------------------------

    def reset_counters(self) -> None:
        self._base = self._snapshot()
        self._prefetch_base = (self.prefetcher.counters() if self.prefetcher is not None
                               else PrefetchCounters())

    def prefetch_counters(self) -> PrefetchCounters | None:
        """The prefetcher's ``PrefetchCounters`` since the last reset (None without one)."""
        if self.prefetcher is None:
            return None
        return self.prefetcher.counters() - self._prefetch_base

    def _snapshot(self) -> RunCounters:
        stats = self.cache.stats()
        return RunCounters(hits=stats.hits, misses=stats.misses,
                           bytes_loaded=stats.bytes_loaded, bytes_read=self.store.bytes_read,
                           loads=stats.loads, evictions=stats.evictions,
                           layer_calls=self._layer_calls, coalesced=stats.coalesced)

    def counters(self) -> RunCounters:
        now, base = self._snapshot(), self._base
        return RunCounters(*(getattr(now, f) - getattr(base, f) for f in _COUNTER_FIELDS))


_COUNTER_FIELDS: Sequence[str] = ("hits", "misses", "bytes_loaded", "bytes_read", "loads",
                                  "evictions", "layer_calls", "coalesced")
