"""``/metrics``: Prometheus text built from each request's ``Outcome`` and the runtime's
``stats()``.

Each app has its own ``CollectorRegistry`` (two daemons in one process, as in the tests, never
share counters). What each request tells is counted as it is served (requests by adapter and
cache outcome, routing decisions, page-in and request seconds, HTTP errors); what the runtime
already counts (resident bytes, budget, evictions, feedback, router updates) is read from
``Runtime.stats()`` at scrape time, so the two can never drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

PAGE_IN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0)

# (stats section, key, metric name, help); counters get Prometheus' _total suffix.
_STATS_GAUGES = (
    ("cache", "resident_bytes", "edge_cache_resident_bytes", "Bytes of adapters resident now."),
    ("cache", "resident_count", "edge_cache_resident_objects", "Adapters resident now."),
    ("cache", "pinned_bytes", "edge_cache_pinned_bytes", "Resident bytes in use by requests."),
    ("cache", "reserved_bytes", "edge_cache_reserved_bytes", "Declared bytes of loads in flight."),
    ("cache", "budget", "edge_cache_budget_bytes", "The cache's byte budget."),
    ("router", "pending", "edge_router_pending_decisions",
     "Routed requests awaiting their reward."),
    ("catalogue", "objects", "edge_catalogue_adapters", "Adapters in the catalogue."),
    ("catalogue", "bytes", "edge_catalogue_bytes", "Bytes of every adapter in the catalogue."),
)
_STATS_COUNTERS = (
    ("cache", "hits", "edge_cache_hits", "Acquisitions that found the adapter resident."),
    ("cache", "misses", "edge_cache_misses", "Acquisitions that had to page the adapter in."),
    ("cache", "loads", "edge_cache_loads", "Adapter loads (page-ins) completed."),
    ("cache", "load_failures", "edge_cache_load_failures", "Adapter loads that failed."),
    ("cache", "bytes_loaded", "edge_cache_loaded_bytes", "Bytes paged in."),
    ("cache", "load_seconds", "edge_cache_load_seconds", "Seconds spent paging in."),
    ("cache", "bytes_evicted", "edge_cache_evicted_bytes", "Bytes evicted."),
    ("cache", "room_waits", "edge_cache_room_waits",
     "Misses that waited for in-use adapters to be released."),
    ("cache", "room_timeouts", "edge_cache_room_timeouts",
     "Misses that gave up waiting for room (503)."),
    ("requests", "failed", "edge_runtime_failed_requests", "Requests the runtime failed."),
    ("requests", "feedback", "edge_feedback", "Rewards accepted (POST /v1/feedback)."),
    ("router", "updates", "edge_router_updates", "Router updates from rewards."),
    ("router", "expired", "edge_router_expired_decisions",
     "Routed requests whose reward never came in time."),
    ("router", "stale_feedback", "edge_router_stale_feedback",
     "Rewards for adapters no longer in the catalogue."),
    ("scheduler", "waited", "edge_scheduler_waited",
     "Requests that waited in the queue for a serving slot."),
    ("scheduler", "reordered", "edge_scheduler_reordered",
     "Requests served ahead of an older waiting one (adapter affinity)."),
    ("scheduler", "forced", "edge_scheduler_forced",
     "Requests served next because they had been bypassed serving.max_bypass times."),
    ("scheduler", "refused", "edge_scheduler_refused",
     "Requests refused because the queue was full (429)."),
    ("scheduler", "cancelled", "edge_scheduler_cancelled",
     "Waiting requests cancelled (their client went away)."),
)
_SCHEDULER_GAUGES = (
    ("waiting", "edge_scheduler_waiting", "Requests waiting for a serving slot now."),
    ("running", "edge_scheduler_running", "Requests holding a serving slot now."),
    ("slots", "edge_scheduler_slots", "Requests the backend serves at once."),
)


class _RuntimeCollector:
    """Reads ``Runtime.stats()`` at each scrape."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self.runtime.stats()
        except Exception:  # a scrape must not fail because the runtime is going away
            logging.getLogger("edge.daemon").warning("runtime stats unavailable", exc_info=True)
            return
        for section, key, name, doc in _STATS_GAUGES:
            yield GaugeMetricFamily(name, doc, value=stats[section][key])
        for section, key, name, doc in _STATS_COUNTERS:
            yield CounterMetricFamily(name, doc, value=stats[section][key])
        for key, name, doc in _SCHEDULER_GAUGES:
            yield GaugeMetricFamily(name, doc, value=stats["scheduler"][key])
        # By policy, so dashboards comparing policies (or a learned one against its fallback,
        # later) keep their series apart.
        evictions = CounterMetricFamily("edge_cache_evictions", "Adapters evicted to make room, "
                                        "by eviction policy.", labels=["policy"])
        evictions.add_metric([self.runtime.config.cache.policy_label],
                             stats["cache"]["evictions"])
        yield evictions


class DaemonMetrics:
    """The registry of one app and what it records per request."""

    def __init__(self, runtime: Any) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("edge_requests", "Completions served, by the model that served "
                                "them and whether its adapter was resident (hit), paged in "
                                "(page_in), or none was needed (base).", ["model", "cache"],
                                registry=r)
        self.routing = Counter("edge_routing_decisions", 'Adapters the router chose for '
                               '"model": "auto", and why: ucb (the best score), forced (POLAR+ '
                               'forced exploration) or epsilon (a uniformly random arm).',
                               ["adapter", "reason"], registry=r)
        self.queue = Histogram("edge_queue_seconds", "Seconds a request waited for a serving "
                               "slot.", buckets=PAGE_IN_BUCKETS, registry=r)
        self.page_in = Histogram("edge_page_in_seconds", "Seconds to acquire an adapter that was "
                                 "not resident (waiting for room included).",
                                 buckets=PAGE_IN_BUCKETS, registry=r)
        self.latency = Histogram("edge_request_seconds", "Seconds from routing to the last token "
                                 "(Outcome.timings total), by endpoint.", ["endpoint"],
                                 buckets=REQUEST_BUCKETS, registry=r)
        self.in_flight = Gauge("edge_requests_in_flight", "Completions being served now.",
                               registry=r)
        self.errors = Counter("edge_http_errors", "Requests answered with an error, by status "
                              "and OpenAI error type.", ["status", "type"], registry=r)
        r.register(_RuntimeCollector(runtime))

    def observe(self, outcome: Any, endpoint: str, model: str) -> None:
        if not outcome.adapters:
            cache = "base"
        else:
            cache = "hit" if outcome.hit else "page_in"
            if not outcome.hit:
                self.page_in.observe(outcome.timings["acquire"])
        self.requests.labels(model=model, cache=cache).inc()
        if outcome.routed:
            self.routing.labels(adapter=model, reason=outcome.decision.reason).inc()
        self.queue.observe(outcome.timings.get("queue", 0.0))
        self.latency.labels(endpoint=endpoint).observe(outcome.timings["total"])

    def error(self, status: int, kind: str) -> None:
        self.errors.labels(status=str(status), type=kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
