"""The ``edge demo`` workload: tenants with their own kinds of prompt, a known utility model, and
the summary of what was measured.

The tiny demo models generate noise, so no scorer could say which adapter served a tenant well;
instead every tenant has a known best adapter and a known utility for each adapter, and the
reward of a request is ``utility(tenant, adapter)`` plus a little seeded Gaussian noise (the
stand-in for a user's rating). The router never sees the table: it learns it from the rewards,
through the prompts' features alone, and the summary scores its choices against the table.

    utility = UtilityModel.seeded(len(TENANTS), n_adapters=6, seed=0)
    for request in make_workload(1000, TENANTS, seed=0): ...
    summary = summarise(records, windows=5)

Nothing here does I/O: ``edge.demo`` serves the workload over HTTP and prints the summary.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tenant:
    """One tenant: a kind of prompt. ``templates`` are ``str.format`` strings whose fields are
    filled from ``words`` (field -> choices) and ``n`` (a number), so two prompts of a tenant
    share most of their words and two tenants share almost none: what the router's hashed
    n-gram features can tell apart."""

    name: str
    templates: tuple[str, ...]
    words: Mapping[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        if not self.templates:
            raise ValueError(f"tenant {self.name!r}: no templates")
        for template in self.templates:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
            missing = fields - set(self.words) - {"n"}
            if missing:
                raise ValueError(f"tenant {self.name!r}: template {template!r} uses "
                                 f"{sorted(missing)}, which have no words")

    def prompt(self, rng: np.random.Generator) -> str:
        template = self.templates[rng.integers(len(self.templates))]
        fields = {key: choices[rng.integers(len(choices))] for key, choices in self.words.items()}
        return template.format(n=int(rng.integers(1, 1000)), **fields)


TENANTS: tuple[Tenant, ...] = (
    Tenant("analytics", (
        "SELECT {col}, COUNT(*) FROM {table} WHERE {col} > {n} GROUP BY {col};",
        "SELECT * FROM {table} JOIN {other} ON {table}.id = {other}.{col}_id LIMIT {n};",
        "UPDATE {table} SET {col} = {n} WHERE id IN (SELECT id FROM {other});",
    ), {"col": ("region", "price", "user_id", "status", "created_at"),
        "table": ("orders", "users", "events", "invoices"),
        "other": ("payments", "sessions", "products")}),
    Tenant("support", (
        "Hi, my order {n} has not arrived yet. Could you help me track the parcel to {city}?",
        "Hello, I was charged twice for order {n}. Please refund me, I live in {city}.",
        "My {item} stopped working after {n} days. How do I return it? Thanks, {city} store.",
    ), {"city": ("Lyon", "Leeds", "Porto", "Graz", "Turin"),
        "item": ("kettle", "headset", "router", "blender")}),
    Tenant("code", (
        "def {fn}(items):\n    return [x * {n} for x in items if x]\n# fix the bug in {fn}",
        "class {cls}:\n    def {fn}(self):\n        return self.{fn}_cache[{n}]\n# add type hints",
        "for i in range({n}):\n    {fn}(i)\n# why is {fn} slow? rewrite it with numpy",
    ), {"fn": ("parse_rows", "load_config", "merge_dicts", "flatten"),
        "cls": ("Parser", "Loader", "Buffer")}),
    Tenant("french", (
        "Bonjour, pouvez-vous traduire cette phrase : « le {noun} est sur la table » ?",
        "Merci de corriger ce texte : je suis allé à {town} avec le {noun} de mon frère.",
        "Comment dit-on « {noun} » en anglais ? J'habite à {town} depuis {n} jours.",
    ), {"noun": ("chat", "livre", "fromage", "vélo", "jardin"),
        "town": ("Marseille", "Nantes", "Rouen", "Dijon")}),
    Tenant("math", (
        "Solve for x: {a}x + {n} = {b}. Show each step of the algebra.",
        "Compute the derivative of {a}x^3 - {b}x + {n} and evaluate it at x = 2.",
        "What is the integral of {a}/x from 1 to {n}? Give an exact answer.",
    ), {"a": ("3", "7", "12", "25"), "b": ("41", "98", "150", "7")}),
)


@dataclass(frozen=True)
class DemoRequest:
    index: int
    tenant: int  # index into the tenant tuple
    prompt: str


def make_workload(n_requests: int, tenants: Sequence[Tenant], seed: int) -> list[DemoRequest]:
    """``n_requests`` prompts; each from a tenant drawn uniformly (seeded), so every tenant
    keeps arriving, interleaved, for the whole run."""
    if n_requests < 1:
        raise ValueError(f"n_requests must be at least 1, got {n_requests}")
    if not tenants:
        raise ValueError("no tenants")
    rng = np.random.default_rng([seed, 1])
    who = rng.integers(len(tenants), size=n_requests)
    return [DemoRequest(i, int(t), tenants[t].prompt(rng)) for i, t in enumerate(who)]


@dataclass(frozen=True)
class UtilityModel:
    """``table[t, a]``: how well adapter ``a`` serves tenant ``t``, in [0, 1]; a reward is the
    table's value plus N(0, ``noise_std``²), clipped to [0, 1] (the router's reward range)."""

    table: np.ndarray
    noise_std: float

    @classmethod
    def seeded(cls, n_tenants: int, n_adapters: int, seed: int, *, best: float = 0.9,
               others: tuple[float, float] = (0.1, 0.6), noise_std: float = 0.05
               ) -> UtilityModel:
        """Each tenant gets its own best adapter (a seeded draw without replacement, so no
        adapter is best for two tenants) worth ``best``; every other pair draws uniformly from
        ``others``, which stays below ``best``: the best adapter is unique."""
        if not 1 <= n_tenants <= n_adapters:
            raise ValueError(f"need 1 <= tenants <= adapters, got {n_tenants} tenants and "
                             f"{n_adapters} adapters")
        if not 0 <= others[0] <= others[1] < best <= 1:
            raise ValueError(f"need 0 <= others[0] <= others[1] < best <= 1, got others "
                             f"{others} and best {best}")
        rng = np.random.default_rng([seed, 2])
        table = rng.uniform(others[0], others[1], size=(n_tenants, n_adapters))
        table[np.arange(n_tenants), rng.permutation(n_adapters)[:n_tenants]] = best
        return cls(table, noise_std)

    def best(self, tenant: int) -> int:
        return int(np.argmax(self.table[tenant]))

    def reward(self, tenant: int, adapter: int, rng: np.random.Generator) -> float:
        noisy = self.table[tenant, adapter] + rng.normal(0.0, self.noise_std)
        return float(np.clip(noisy, 0.0, 1.0))


@dataclass(frozen=True)
class Record:
    """One request as measured: who sent it, what served it, what the best was."""

    index: int
    tenant: str
    adapter: str
    best: str
    cache: str  # the daemon's edge.cache: "hit" or "page_in"
    reward: float
    latency_s: float  # client side: the HTTP request, sent to answer read
    server_s: float  # the daemon's edge.timings_ms total: routing, acquiring and serving
    overhead_s: float  # the daemon's edge.timings_ms total - serve: routing + acquiring


@dataclass(frozen=True)
class Window:
    first: int  # request numbers, 1-based, inclusive
    last: int
    accuracy: float
    hit_ratio: float


@dataclass(frozen=True)
class Summary:
    requests: int
    windows: tuple[Window, ...]
    accuracy: float
    hit_ratio: float
    page_ins: int  # requests that waited for their adapter to be paged in
    mean_reward: float
    latency_p50_s: float
    latency_p99_s: float
    overhead_p50_s: float
    overhead_p99_s: float


def summarise(records: Sequence[Record], windows: int = 5) -> Summary:
    """Accuracy (served by the tenant's best adapter) and hit ratio per window of consecutive
    requests, and the run's totals and latency percentiles."""
    if not records:
        raise ValueError("no requests to summarise")
    if windows < 1:
        raise ValueError(f"windows must be at least 1, got {windows}")
    correct = np.array([r.adapter == r.best for r in records])
    hits = np.array([r.cache == "hit" for r in records])
    rows = []
    for part in np.array_split(np.arange(len(records)), min(windows, len(records))):
        rows.append(Window(int(part[0]) + 1, int(part[-1]) + 1, float(correct[part].mean()),
                           float(hits[part].mean())))
    latency = np.array([r.latency_s for r in records])
    overhead = np.array([r.overhead_s for r in records])
    return Summary(
        requests=len(records), windows=tuple(rows), accuracy=float(correct.mean()),
        hit_ratio=float(hits.mean()), page_ins=int((~hits).sum()),
        mean_reward=float(np.mean([r.reward for r in records])),
        latency_p50_s=float(np.percentile(latency, 50)),
        latency_p99_s=float(np.percentile(latency, 99)),
        overhead_p50_s=float(np.percentile(overhead, 50)),
        overhead_p99_s=float(np.percentile(overhead, 99)))
