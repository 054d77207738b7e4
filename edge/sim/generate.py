"""Seeded workload generators; each returns a ``Trace`` (or a small result holding one).

Every generator takes ``seed`` (an int or a ``numpy.random.Generator``) and draws only from the
``Generator`` made from it, never from global state, so a seed reproduces a trace bit for bit.
Everything is vectorised: a million requests take well under a second.

Times are seconds. Unless a generator says otherwise, arrivals are a Poisson process of ``rate``
requests per second, and each object's size is drawn once (an object keeps its size).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge.errors import TraceError
from edge.schema import parse_bytes
from edge.sim.trace import Trace

Seed = int | np.random.Generator
_LARGEST_FLOAT_BELOW_2_64 = float(np.nextafter(2.0**64, 0))


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def _non_negative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def _byte_size(name: str, value: int) -> None:
    """A whole number of bytes the uint64 size arrays can hold (``parse_bytes``'s bounds)."""
    if isinstance(value, str):
        raise ValueError(f"{name} must be a number of bytes, not the string {value!r}")
    parse_bytes(value, name)


# ---------------------------------------------------------------------------------------------
# Object sizes


class SizeModel(Protocol):
    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` sizes in bytes (uint64, each >= 1)."""


@dataclass(frozen=True)
class FixedSize:
    nbytes: int = 4096

    def __post_init__(self) -> None:
        _byte_size("nbytes", self.nbytes)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.nbytes, dtype=np.uint64)


@dataclass(frozen=True)
class LognormalSize:
    """Sizes whose logarithm is normal: median ``median_bytes``, log-space spread ``sigma``."""

    median_bytes: float = 64 * 2**10
    sigma: float = 1.0
    min_bytes: int = 1
    max_bytes: int = 2**32 - 1  # oracleGeneral stores uint32 sizes

    def __post_init__(self) -> None:
        _positive("median_bytes", self.median_bytes)
        _non_negative("sigma", self.sigma)
        _byte_size("min_bytes", self.min_bytes)
        _byte_size("max_bytes", self.max_bytes)
        # Sizes are clipped to [min_bytes, max_bytes]; a median outside would clip most of them.
        if not self.min_bytes <= self.median_bytes <= self.max_bytes:
            raise ValueError(f"need min_bytes <= median_bytes <= max_bytes, got "
                             f"{self.min_bytes}, {self.median_bytes}, {self.max_bytes}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        s = rng.lognormal(np.log(self.median_bytes), self.sigma, n)
        # float64 cannot hold every uint64: clip below 2**64 in floats, then exactly in uint64.
        high = min(float(self.max_bytes), _LARGEST_FLOAT_BELOW_2_64)
        sizes = np.clip(np.rint(s), self.min_bytes, high).astype(np.uint64)
        return np.clip(sizes, np.uint64(self.min_bytes), np.uint64(self.max_bytes))


@dataclass(frozen=True)
class SmallHugeMix:
    """Mostly small objects plus a fraction of huge ones: the mix that separates size-aware
    policies from recency-only ones (one huge object can push out hundreds of small ones)."""

    small_bytes: int = 16 * 2**10
    huge_bytes: int = 16 * 2**20
    huge_fraction: float = 0.05

    def __post_init__(self) -> None:
        _byte_size("small_bytes", self.small_bytes)
        _byte_size("huge_bytes", self.huge_bytes)
        if not 0 <= self.huge_fraction <= 1:
            raise ValueError(f"huge_fraction must be in [0, 1], got {self.huge_fraction}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        huge = rng.random(n) < self.huge_fraction
        return np.where(huge, self.huge_bytes, self.small_bytes).astype(np.uint64)


# ---------------------------------------------------------------------------------------------
# Building blocks


def zipf_probabilities(n_objects: int, alpha: float) -> np.ndarray:
    """p(rank r) proportional to r**-alpha for r = 1..n_objects (alpha = 0 is uniform)."""
    if n_objects < 1:
        raise ValueError(f"n_objects must be >= 1, got {n_objects}")
    _non_negative("alpha", alpha)
    w = np.arange(1, n_objects + 1, dtype=np.float64) ** -alpha
    return w / w.sum()


def _draw_ranks(rng: np.random.Generator, probabilities: np.ndarray, n: int) -> np.ndarray:
    """0-based ranks drawn from ``probabilities`` (inverse CDF: one searchsorted, no loop)."""
    cdf = np.cumsum(probabilities)
    cdf[-1] = 1.0  # float round-off must not leave a gap above the last rank
    return np.searchsorted(cdf, rng.random(n), side="right")


def _poisson_times(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    _positive("rate", rate)
    return np.cumsum(rng.exponential(1.0 / rate, n))


# ---------------------------------------------------------------------------------------------
# Generators


def zipf_trace(n_requests: int, n_objects: int, alpha: float, seed: Seed,
               sizes: SizeModel = FixedSize(), rate: float = 1000.0) -> Trace:
    """Independent requests with Zipf(alpha) popularity over ``n_objects`` objects.

    Keys are 0..n_objects-1 in a random order of popularity, so a key's id says nothing about
    its rank (a policy cannot cheat on ids).
    """
    rng = _rng(seed)
    rank_to_key = rng.permutation(n_objects).astype(np.uint64)
    object_sizes = sizes.draw(rng, n_objects)
    keys = rank_to_key[_draw_ranks(rng, zipf_probabilities(n_objects, alpha), n_requests)]
    return Trace(_poisson_times(rng, n_requests, rate), keys, object_sizes[keys])


def scan_burst_mask(n_requests: int, period: int, burst_length: int) -> np.ndarray:
    """True where ``scan_bursts`` puts a scan request: the last ``burst_length`` requests of every
    ``period``."""
    if not 0 < burst_length < period:
        raise ValueError(f"need 0 < burst_length < period, got {burst_length}, {period}")
    return np.arange(n_requests) % period >= period - burst_length


def scan_bursts(n_requests: int, n_objects: int, alpha: float, seed: Seed, period: int,
                burst_length: int, sizes: SizeModel = FixedSize(), fresh_scan_keys: bool = True,
                rate: float = 1000.0) -> Trace:
    """A Zipf workload interrupted by periodic sequential scans (Cold-RL's adversarial case).

    The last ``burst_length`` requests of every ``period`` (``scan_burst_mask``) read keys
    ``n_objects, n_objects+1, ...`` once each, in order. A burst longer than the cache flushes
    LRU's hot set, while a policy that recognises one-hit objects keeps it. With
    ``fresh_scan_keys`` every burst scans new keys; without, every burst rescans the same range
    (a loop, LRU's other worst case when the range exceeds the cache).
    """
    rng = _rng(seed)
    base = zipf_trace(n_requests, n_objects, alpha, rng, sizes, rate)
    mask = scan_burst_mask(n_requests, period, burst_length)
    burst_index, offset = np.divmod(np.arange(n_requests)[mask], period)
    offset -= period - burst_length
    scan_offsets = burst_index * burst_length + offset if fresh_scan_keys else offset
    scan_keys = np.uint64(n_objects) + scan_offsets.astype(np.uint64)
    n_scan_objects = int(scan_offsets.max()) + 1 if len(scan_offsets) else 0
    scan_sizes = sizes.draw(rng, n_scan_objects)
    keys = base.keys.copy()
    obj_sizes = base.sizes.copy()
    keys[mask] = scan_keys
    obj_sizes[mask] = scan_sizes[scan_offsets]
    return Trace(base.times, keys, obj_sizes)


def drifting_zipf(n_requests: int, n_objects: int, alpha: float, seed: Seed, phase_length: int,
                  shift: int, sizes: SizeModel = FixedSize(), rate: float = 1000.0) -> Trace:
    """Zipf popularity whose ranking moves every ``phase_length`` requests.

    In phase p (request i is in phase i // phase_length) the object of rank r is key
    ``(r + p * shift) % n_objects``: the hot set slides by ``shift`` keys per phase, so what was
    popular cools down gradually and new objects warm up, the drift that frequency-only policies
    handle badly.
    """
    if phase_length < 1:
        raise ValueError(f"phase_length must be >= 1, got {phase_length}")
    rng = _rng(seed)
    object_sizes = sizes.draw(rng, n_objects)
    ranks = _draw_ranks(rng, zipf_probabilities(n_objects, alpha), n_requests)
    phase = np.arange(n_requests) // phase_length
    keys = ((ranks + phase * shift) % n_objects).astype(np.uint64)
    return Trace(_poisson_times(rng, n_requests, rate), keys, object_sizes[keys])


@dataclass(frozen=True)
class TenantWorkload:
    """A multi-tenant adapter stream and the hidden truth behind it.

    ``preferences[t]`` is tenant t's adapter ranking (index 0 = favourite). With contexts, the
    utility of adapter a for request i is linear: ``trace.contexts[i] @ adapter_weights[a]``,
    and the requested adapter has the highest utility up to the context noise.
    """

    trace: Trace
    preferences: np.ndarray
    adapter_weights: np.ndarray | None

    def utilities(self) -> np.ndarray:
        """(n_requests, n_adapters) linear utilities; needs contexts."""
        if self.adapter_weights is None:
            raise ValueError("this workload was generated without contexts (context_dim=0)")
        return self.trace.contexts @ self.adapter_weights.T


def tenant_adapter_stream(n_requests: int, n_tenants: int, n_adapters: int, seed: Seed,
                          alpha: float = 1.0, tenant_alpha: float = 0.5, context_dim: int = 0,
                          context_noise: float = 0.3, sizes: SizeModel = FixedSize(16 * 2**20),
                          rate: float = 10.0) -> TenantWorkload:
    """Adapter requests from tenants with their own Zipf(alpha) preferences.

    Tenants send Zipf(tenant_alpha) shares of the traffic; each ranks the adapters in its own
    random order. With ``context_dim > 0`` each adapter a gets a random unit weight vector w_a and
    each request a context x = normalise(w_k + context_noise * g), g standard normal, for its
    adapter k, so utilities x . w_a are linear in the context and favour k: a router can learn
    the choice from contexts alone.
    """
    if n_tenants < 1 or n_adapters < 1:
        raise ValueError("need at least one tenant and one adapter")
    _non_negative("alpha", alpha)
    _non_negative("tenant_alpha", tenant_alpha)
    if context_dim < 0:
        raise ValueError(f"context_dim must be >= 0, got {context_dim}")
    _non_negative("context_noise", context_noise)
    rng = _rng(seed)
    adapter_sizes = sizes.draw(rng, n_adapters)
    preferences = np.argsort(rng.random((n_tenants, n_adapters)), axis=1)
    tenants = _draw_ranks(rng, zipf_probabilities(n_tenants, tenant_alpha), n_requests)
    ranks = _draw_ranks(rng, zipf_probabilities(n_adapters, alpha), n_requests)
    keys = preferences[tenants, ranks].astype(np.uint64)
    weights = contexts = None
    if context_dim:
        weights = rng.standard_normal((n_adapters, context_dim))
        weights /= np.linalg.norm(weights, axis=1, keepdims=True)
        x = weights[keys.astype(np.intp)] + context_noise * rng.standard_normal(
            (n_requests, context_dim))
        contexts = x / np.linalg.norm(x, axis=1, keepdims=True)
    trace = Trace(_poisson_times(rng, n_requests, rate), keys, adapter_sizes[keys.astype(np.intp)],
                  tenants=tenants, tenant_names=tuple(f"tenant-{t}" for t in range(n_tenants)),
                  contexts=contexts)
    return TenantWorkload(trace, preferences, weights)


def moe_expert_key(layer: np.ndarray | int, expert: np.ndarray | int) -> np.ndarray | int:
    """The cache key of one expert slice: layer in the high 32 bits, expert in the low."""
    return (np.uint64(layer) << np.uint64(32)) | np.uint64(expert)


@dataclass(frozen=True)
class MoERouting:
    """An MoE routing trace: ``experts[t, l]`` holds token t's top-k experts in layer l (sorted);
    ``trace`` requests them token by token, layer by layer (keys from ``moe_expert_key``)."""

    trace: Trace
    experts: np.ndarray


def moe_routing(n_tokens: int, n_layers: int, n_experts: int, top_k: int, locality: float,
                seed: Seed, alpha: float = 1.0, expert_bytes: int = 4 * 2**20,
                tokens_per_second: float = 20.0) -> MoERouting:
    """Expert activations of a top-k MoE with tunable temporal locality.

    For each token and layer, with probability ``locality`` the token reuses the previous token's
    expert set in that layer; otherwise it draws ``top_k`` distinct experts from the layer's own
    skewed popularity (Zipf(alpha) over a per-layer random order of experts), by Gumbel-top-k
    sampling (which samples without replacement in proportion to popularity). Token t's requests
    all have time t / tokens_per_second.
    """
    if not 1 <= top_k <= n_experts:
        raise ValueError(f"need 1 <= top_k <= n_experts, got top_k={top_k}, "
                         f"n_experts={n_experts}")
    if not 0 <= locality <= 1:
        raise ValueError(f"locality must be in [0, 1], got {locality}")
    if n_tokens < 1 or n_layers < 1:
        raise ValueError("need n_tokens >= 1 and n_layers >= 1")
    _positive("tokens_per_second", tokens_per_second)
    _byte_size("expert_bytes", expert_bytes)
    rng = _rng(seed)
    layer_order = np.argsort(rng.random((n_layers, n_experts)), axis=1)
    log_p = np.empty((n_layers, n_experts))
    np.put_along_axis(log_p, layer_order, np.log(zipf_probabilities(n_experts, alpha)), axis=1)
    fresh_sets = np.empty((n_tokens, n_layers, top_k), dtype=np.int64)
    step = max(1, 2**22 // (n_layers * n_experts))  # bound the Gumbel matrix to ~32 MiB
    for start in range(0, n_tokens, step):
        stop = min(start + step, n_tokens)
        scores = log_p + rng.gumbel(size=(stop - start, n_layers, n_experts))
        fresh_sets[start:stop] = np.argpartition(-scores, top_k - 1, axis=2)[..., :top_k]
    fresh_sets.sort(axis=2)
    # Token t copies the set of the last token <= t that drew afresh (token 0 always does):
    # a running maximum of "fresh" token indices, per layer.
    fresh = rng.random((n_tokens, n_layers)) >= locality
    fresh[0] = True
    source = np.maximum.accumulate(np.where(fresh, np.arange(n_tokens)[:, None], 0), axis=0)
    experts = fresh_sets[source, np.arange(n_layers)[None, :]]
    layers = np.broadcast_to(np.arange(n_layers)[None, :, None], experts.shape)
    keys = moe_expert_key(layers.ravel().astype(np.uint64), experts.ravel().astype(np.uint64))
    per_token = n_layers * top_k
    times = np.repeat(np.arange(n_tokens, dtype=np.float64) / tokens_per_second, per_token)
    trace = Trace(times, keys, np.full(len(keys), expert_bytes, dtype=np.uint64))
    return MoERouting(trace, experts)


def moe_reuse_fraction(experts: np.ndarray) -> float:
    """Fraction of (token, layer) pairs, token > 0, whose expert set equals the previous
    token's: the measured counterpart of ``moe_routing``'s locality."""
    if len(experts) < 2:
        return 0.0
    same = (experts[1:] == experts[:-1]).all(axis=2)
    return float(same.mean())


# ---------------------------------------------------------------------------------------------
# Real arrival processes


@dataclass(frozen=True)
class Arrivals:
    """Request arrival times (seconds from the first) and token counts of a real LLM trace."""

    times: np.ndarray
    context_tokens: np.ndarray
    generated_tokens: np.ndarray


def read_azure_llm_arrivals(path: str | os.PathLike[str]) -> Arrivals:
    """Read an Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``)."""
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip()
            rows = [line.rstrip("\r\n").split(",") for line in f if line.strip()]
    except OSError as exc:
        raise TraceError(f"{path}: cannot read arrivals: {exc.strerror}") from None
    if header != "TIMESTAMP,ContextTokens,GeneratedTokens":
        raise TraceError(f"{path}:1: header {header!r} is not "
                         "'TIMESTAMP,ContextTokens,GeneratedTokens'")
    for lineno, row in enumerate(rows, 2):
        if len(row) != 3 or not row[1].isdigit() or not row[2].isdigit():
            raise TraceError(f"{path}:{lineno}: expected 'timestamp,int,int', got "
                             f"{','.join(row)!r}")
    if not rows:
        raise TraceError(f"{path}: no requests after the header")
    try:
        stamps = np.array([r[0].strip().replace(" ", "T") for r in rows], dtype="datetime64[ns]")
    except ValueError as exc:
        raise TraceError(f"{path}: unreadable TIMESTAMP: {exc}") from None
    times = (stamps - stamps.min()).astype(np.int64) / 1e9
    return Arrivals(times, np.array([int(r[1]) for r in rows]),
                    np.array([int(r[2]) for r in rows]))


def adapters_on_arrivals(arrivals: Arrivals | np.ndarray, n_adapters: int, alpha: float,
                         seed: Seed, sizes: SizeModel = FixedSize(16 * 2**20),
                         phase_seconds: float | None = None, shift: int = 1) -> Trace:
    """Lay Zipf(alpha) adapter choices onto real arrival times.

    Real traces give the arrival process (bursts, diurnal shape) but no adapter; this draws one
    per request. With ``phase_seconds``, popularity drifts as in ``drifting_zipf``, by ``shift``
    ranks every ``phase_seconds`` of trace time. Requests are sorted by time.
    """
    times = arrivals.times if isinstance(arrivals, Arrivals) else np.asarray(arrivals, float)
    times = np.sort(times)
    rng = _rng(seed)
    adapter_sizes = sizes.draw(rng, n_adapters)
    rank_to_key = rng.permutation(n_adapters)
    ranks = _draw_ranks(rng, zipf_probabilities(n_adapters, alpha), len(times))
    if phase_seconds is not None:
        _positive("phase_seconds", phase_seconds)
        phase = ((times - times[0]) // phase_seconds).astype(np.int64) if len(times) else 0
        ranks = (ranks + phase * shift) % n_adapters
    keys = rank_to_key[ranks]
    return Trace(times, keys.astype(np.uint64), adapter_sizes[keys])
