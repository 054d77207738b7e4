"""Local routing consistency of a routing trace: SRP, SCH, hit-rate curves and a cache size.

The metrics are those of "Not All Models Suit Expert Offloading" (code: ljcleo/moe-lrc), as
``shared/FIELD-NOTES.md`` ("Local routing consistency") spells them out. An expert is *active*
for a token in a layer if it is among the token's top-k there.

SRP(m), segment routing best performance
    For every sliding window w of m consecutive tokens (stride 1) and every expert e of the layer,
    c(w, e) = the number of tokens of w that activate e. For a threshold tau in 0..m, predict "e
    is active on all m tokens of w" when c(w, e) >= tau: matches M(tau) = sum of c over the pairs
    with c >= tau, predictions P(tau) = m * #{(w, e): c >= tau}, actual activations A = M(0);
    F1(tau) = 2M / (P + A) (denominator at least 1); SRP = max over tau. Overall: M, P and A
    summed over the layers before the F1 (the paper's model-level number).
SCH(m, C), segment cache best hit rate
    The hit rate of a cache of C experts that sees m tokens ahead: on a miss with the cache full
    it evicts the expert with the fewest uses in the next m tokens (ties: least recently used).
    As in the paper's code, the window counts the uses in tokens t .. t+m-1 not yet made when
    the eviction happens (token t's own later experts still count, its earlier ones no longer),
    a token's experts are looked up in the cache as it stood when the token began, and the cache
    is then updated expert by expert in top-k order. C is given as a multiple of top_k.
LRU, LFU, Belady curves
    Hit rate per capacity of a per-layer cache replaying the layer's expert uses one by one
    (token-major, top-k order within a token: the order of ``edge.moe.traces.routing_to_trace``,
    hence of ``edge sim`` and libCacheSim). LFU counts every use since the trace began
    ("perfect" LFU, as the paper's code) and breaks ties by recency; Belady evicts the expert
    used again furthest in the future (demand paging: the requested expert is always loaded).

First-use convention (FIELD-NOTES, for SCH and every curve): the first use of an expert is not a
miss while the cache still has a free slot, i.e. at capacity C when fewer than C distinct
experts were used before it. So every curve reaches 1.0 at C = n_experts. libCacheSim and
``edge sim`` count every first use as a miss instead: their hits = ours - the first uses that
found a free slot.

Recommended cache size: the knee of the layer's LRU curve, in the sense of Kneedle (Satopaa et
al., ICDCS-W 2011) on the curve's own scale: the capacity C in 1..n_experts that maximises
``h(C) - C / n_experts``, the hit rate's height above the straight line from (0, 0) to
(n_experts, 1) (the curve's two ends under the first-use convention); the smallest such C on
ties. For a concave curve that is where one more expert starts to add less than the average
1 / n_experts. A curve with no locality (random routing) lies near the line and its knee gain
(the maximised height) is near 0: the knee then means little, and the report shows the gain.
The LRU curve is used because it is exact over every capacity and what an online cache gets;
the paper finds the knee near 2x the active experts.

SRP and the LRU curve are vectorised (numpy over whole layers); LFU, Belady and SCH are
stack algorithms (Mattson et al. 1970: the cache of every capacity C is the top C of one
priority stack), simulated once per layer for all capacities up to the largest asked, in the C
core (native/src/stacks.c: the Python loops took minutes on a 1e5-token, 32-layer trace). The
tests hold each against a plain simulation of one cache per capacity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge._native.stacks import lookahead_stack_hist, priority_stack_hist
from edge.moe.traces import validate_routing

WINDOWS = (4, 16, 64, 256)
CAPACITY_MULTIPLES = (1, 2, 4, 8)
_TS_BITS = 40  # priorities pack (count, timestamp); 2**40 uses is far beyond any trace


# ---------------------------------------------------------------------------------------------
# SRP


def _activation_prefix_sums(layer_routing: np.ndarray, n_experts: int) -> np.ndarray:
    """``(T + 1, E)`` running counts of activations: row t counts tokens 0..t-1."""
    n_tokens = len(layer_routing)
    active = np.zeros((n_tokens + 1, n_experts), dtype=np.int32)
    active[1 + np.arange(n_tokens)[:, None], layer_routing] = 1
    return np.cumsum(active, axis=0, dtype=np.int32, out=active)


def srp_counts(prefix: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(M(tau), P(tau)) for tau = 0..m, and A, of windows of m tokens (FIELD-NOTES' SRP)."""
    window_counts = prefix[m:] - prefix[:-m]
    hist = np.bincount(window_counts.ravel(), minlength=m + 1).astype(np.int64)
    # Sums over c >= tau: reversed cumulative sums.
    matches = np.cumsum((np.arange(m + 1) * hist)[::-1])[::-1]
    predictions = m * np.cumsum(hist[::-1])[::-1]
    return matches, predictions, int(matches[0])


def best_f1(matches: np.ndarray, predictions: np.ndarray, actual: int) -> tuple[float, int]:
    """(max over tau of 2M / (P + A), the smallest tau reaching it)."""
    f1 = 2 * matches / np.maximum(predictions + actual, 1)
    tau = int(np.argmax(f1))
    return float(f1[tau]), tau


# ---------------------------------------------------------------------------------------------
# Hit curves. A "depth histogram" ``hist[d]`` counts uses whose depth was d: the use hits at
# every capacity C > d. A first use's depth is the number of distinct experts used before it
# (the first-use convention); a depth of ``cap`` (the last bin) means a miss at every capacity
# computed. ``hits(C) = hist[:C].sum()``.


def lru_depths(layer_routing: np.ndarray, n_experts: int) -> np.ndarray:
    """LRU stack distance of every use of one layer, in request order, vectorised.

    The distance of a use of x is the number of distinct experts used since x's previous use
    (for a first use: since the start). With B[t, e] the request index of e's last use before
    token t, the use at token t, position q has distance
    ``#{e: B[t, e] > p} + #{q' < q: B[t, x_q'] <= p}`` where p = B[t, x]: experts used after x
    in earlier tokens, plus the token's own earlier experts not already counted.
    """
    n_tokens, top_k = layer_routing.shape
    rows = np.arange(n_tokens)[:, None]
    last = np.full((n_tokens + 1, n_experts), -1, dtype=np.int64)
    last[1 + rows, layer_routing] = rows * top_k + np.arange(top_k)[None, :]
    np.maximum.accumulate(last, axis=0, out=last)
    depths = np.empty((n_tokens, top_k), dtype=np.int64)
    step = max(1, 2**22 // max(1, n_experts * top_k))  # bound the (step, k, E) comparison
    for start in range(0, n_tokens, step):
        stop = min(start + step, n_tokens)
        before = last[start:stop]  # B[t] = last use before token t (row t of the shifted array)
        chosen = layer_routing[start:stop]
        p = np.take_along_axis(before, chosen, axis=1)  # (t, k)
        newer = np.count_nonzero(before[:, None, :] > p[:, :, None], axis=2)
        # earlier[t, q, q'] = q' < q and the token's q'-th expert was not already counted.
        earlier = (p[:, None, :] <= p[:, :, None]) & np.tri(top_k, k=-1, dtype=bool)[None]
        depths[start:stop] = newer + earlier.sum(axis=2)
    return depths.ravel()


def belady_hist(layer_routing: np.ndarray, cap: int) -> list[int]:
    """Belady's MIN (furthest next use evicted) at every capacity up to ``cap``."""
    uses = layer_routing.ravel()
    n = len(uses)
    order = np.argsort(uses, kind="stable")
    next_use = np.full(n, -1, dtype=np.int64)
    same = uses[order[:-1]] == uses[order[1:]]
    next_use[order[:-1][same]] = order[1:][same]
    # Sooner next use = higher priority; never used again: below all of those (which of them
    # goes first changes no hit; distinct values keep the order strict).
    after = np.where(next_use >= 0, -next_use, -(n + np.arange(n)))
    return priority_stack_hist(uses, after, int(uses.max()) + 1, cap)


def lfu_hist(layer_routing: np.ndarray, cap: int) -> list[int]:
    """Perfect LFU (uses since the start; ties: least recently used evicted) up to ``cap``."""
    uses = layer_routing.ravel()
    n = len(uses)
    order = np.argsort(uses, kind="stable")
    sorted_uses = uses[order]
    group_start = np.flatnonzero(np.r_[True, sorted_uses[1:] != sorted_uses[:-1]])
    rank = np.arange(n) - np.repeat(group_start, np.diff(np.r_[group_start, n]))
    count = np.empty(n, dtype=np.int64)
    count[order] = rank + 1  # uses of this expert so far, this one included
    after = (count << _TS_BITS) | (np.arange(n) + 1)
    return priority_stack_hist(uses, after, int(uses.max()) + 1, cap)


def sch_hist(layer_routing: np.ndarray, m: int, cap: int) -> list[int]:
    """Depth histogram of the m-token-lookahead cache (SCH) at every capacity up to ``cap``.

    Priority = (uses ahead, last use) packed in one int; the uses ahead change as the window
    slides, but only for the experts of the token entering or leaving it, so the priorities
    stay a plain array updated k times per token (the C core's loop).
    """
    return lookahead_stack_hist(layer_routing, m, int(layer_routing.max()) + 1, cap)


def hit_rates(hist: Sequence[int], capacities: Sequence[int], total: int) -> list[float | None]:
    """Hit rate at each capacity from a depth histogram; None beyond what it covers."""
    hits = np.concatenate([[0], np.cumsum(np.asarray(hist[:-1], dtype=np.int64))])
    return [float(hits[c] / total) if c < len(hits) else None for c in capacities]


def knee(curve: Sequence[float]) -> tuple[int, float]:
    """(knee capacity, its gain) of a hit curve ``curve[C]`` for C = 0..E (see the module doc).

    The knee maximises ``curve[C] - C / E`` over C = 1..E, the smallest C on ties.
    """
    h = np.asarray(curve, dtype=np.float64)
    n_experts = len(h) - 1
    if n_experts < 1:
        raise ValueError("a hit curve needs capacities 0..E with E >= 1")
    gain = h[1:] - np.arange(1, n_experts + 1) / n_experts
    best = int(np.argmax(gain))
    return best + 1, float(gain[best])


# ---------------------------------------------------------------------------------------------
# The whole analysis


@dataclass(frozen=True)
class LayerAnalysis:
    """One layer's (or, with ``layer`` None, the whole model's) metrics."""

    layer: int | None
    srp: dict[int, float]  # m -> SRP(m)
    srp_threshold: dict[int, int]  # m -> the tau reaching it
    sch: dict[int, dict[int, float]]  # m -> capacity multiple -> SCH(m, multiple * top_k)
    curves: dict[str, list[float]]  # policy -> hit rate at capacity 0..n_experts
    knee: int | None  # recommended cache size in experts (None overall)
    knee_gain: float | None

    def as_dict(self) -> dict:
        return {"layer": self.layer, "srp": {str(m): v for m, v in self.srp.items()},
                "srp_threshold": {str(m): v for m, v in self.srp_threshold.items()},
                "sch": {str(m): {str(c): v for c, v in row.items()}
                        for m, row in self.sch.items()},
                "curves": self.curves, "knee": self.knee, "knee_gain": self.knee_gain}


@dataclass(frozen=True)
class RoutingAnalysis:
    n_tokens: int
    n_layers: int
    top_k: int
    n_experts: int
    windows: tuple[int, ...]
    capacity_multiples: tuple[int, ...]
    max_capacity: int  # LFU and Belady curves stop here (None beyond)
    layers: tuple[LayerAnalysis, ...]
    overall: LayerAnalysis

    def as_dict(self) -> dict:
        return {"n_tokens": self.n_tokens, "n_layers": self.n_layers, "top_k": self.top_k,
                "n_experts": self.n_experts, "windows": list(self.windows),
                "capacity_multiples": list(self.capacity_multiples),
                "curve_capacities": list(range(self.n_experts + 1)),
                "max_capacity": self.max_capacity,
                "conventions": "FIELD-NOTES 'Local routing consistency': a first use is a hit "
                               "while the cache has a free slot",
                "layers": [layer.as_dict() for layer in self.layers],
                "overall": self.overall.as_dict()}


def _check_options(windows: Sequence[int], multiples: Sequence[int]) -> None:
    for name, values in (("window", windows), ("capacity multiple", multiples)):
        if not values:
            raise ValueError(f"give at least one {name}")
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer))
               or v < 1]
        if bad:
            raise ValueError(f"each {name} must be an integer >= 1, got {bad[0]!r}")


def analyze(routing, windows: Sequence[int] = WINDOWS,
            capacity_multiples: Sequence[int] = CAPACITY_MULTIPLES,
            n_experts: int | None = None) -> RoutingAnalysis:
    """SRP, SCH, LRU/LFU/Belady curves and the knee of every layer and overall.

    Windows longer than the trace are left out. ``n_experts`` (experts per layer) defaults to
    the largest id used + 1; give it when some experts were never chosen (it changes SRP's
    tau = 0 term and the curves' far end).
    """
    a = validate_routing(routing, "routing")
    _check_options(windows, capacity_multiples)
    n_tokens, n_layers, top_k = a.shape
    used = int(a.max()) + 1
    if n_experts is None:
        n_experts = used
    elif n_experts < used:
        raise ValueError(f"n_experts={n_experts} but the trace uses expert {used - 1}")
    windows = tuple(sorted({int(m) for m in windows if m <= n_tokens}))
    multiples = tuple(sorted({int(c) for c in capacity_multiples}))
    max_capacity = min(n_experts, max(multiples) * top_k)
    total = n_tokens * top_k
    capacities = list(range(n_experts + 1))

    layers = []
    srp_sums = {m: None for m in windows}
    sch_hits = {m: np.zeros(len(multiples)) for m in windows}
    curve_sums = {name: np.zeros(n_experts + 1) for name in ("lru", "lfu", "belady")}
    for layer in range(n_layers):
        routes = a[:, layer, :]
        prefix = _activation_prefix_sums(routes, n_experts)
        srp, srp_tau, sch = {}, {}, {}
        for m in windows:
            matches, predictions, actual = srp_counts(prefix, m)
            srp[m], srp_tau[m] = best_f1(matches, predictions, actual)
            prev = srp_sums[m]
            srp_sums[m] = ((matches, predictions, actual) if prev is None else
                           (prev[0] + matches, prev[1] + predictions, prev[2] + actual))
            # Beyond max_capacity every expert fits (max_capacity is then n_experts).
            rates = hit_rates(sch_hist(routes, m, max_capacity),
                              [min(c * top_k, max_capacity) for c in multiples], total)
            sch[m] = dict(zip(multiples, rates, strict=True))
            sch_hits[m] += rates
        lru = np.bincount(lru_depths(routes, n_experts), minlength=n_experts + 1)
        curves = {"lru": hit_rates(lru.tolist(), capacities, total),
                  "lfu": hit_rates(lfu_hist(routes, max_capacity), capacities, total),
                  "belady": hit_rates(belady_hist(routes, max_capacity), capacities, total)}
        for name, curve in curves.items():
            curve_sums[name] += np.array(curve, dtype=np.float64)  # None -> nan
        knee_at, gain = knee(curves["lru"])
        layers.append(LayerAnalysis(layer, srp, srp_tau, sch, curves, knee_at, gain))

    overall_srp, overall_tau = {}, {}
    for m in windows:
        overall_srp[m], overall_tau[m] = best_f1(*srp_sums[m])
    # Every layer serves the same number of uses, so the pooled hit rate is the layers' mean.
    overall = LayerAnalysis(
        None, overall_srp, overall_tau,
        {m: dict(zip(multiples, (sch_hits[m] / n_layers).tolist(), strict=True))
         for m in windows},
        {name: [None if np.isnan(v) else float(v) for v in s / n_layers]
         for name, s in curve_sums.items()}, None, None)
    return RoutingAnalysis(n_tokens, n_layers, top_k, n_experts, windows, multiples,
                           max_capacity, tuple(layers), overall)
