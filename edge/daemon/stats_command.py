"""``edge stats``: a table of a running daemon's counters, read over its own HTTP API.

It asks the daemon for ``GET /v1/models`` (the adapters: size, resident) and ``GET /metrics``
(Prometheus text, parsed with ``prometheus_client.parser``) and reduces them to one summary:
requests by cache outcome, the hit ratio, page-ins, resident bytes against the budget,
evictions, per-adapter hits and routing decisions, and latency quantiles estimated from the
histograms' buckets the way PromQL's ``histogram_quantile`` does (linear within a bucket, so
"approx from buckets"). HTTP goes through ``urllib.request`` so the command needs nothing beyond
edge's own dependencies. Errors are one line naming the URL and what went wrong.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import click

DEFAULT_URL = "http://127.0.0.1:8000"
QUANTILES = (0.5, 0.99)
APPROX = "approx from buckets"

Labels = tuple[tuple[str, str], ...]


# ---- reading the daemon ---------------------------------------------------------------------

def fetch(url: str, path: str, api_key: Optional[str], timeout: float) -> bytes:
    """The body of ``GET url + path``; a one-line ``ClickException`` naming the URL and the
    HTTP status (with the daemon's own message) or why it could not be reached."""
    target = url.rstrip("/") + path
    headers = {"Accept": "application/json, text/plain"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        with urllib.request.urlopen(urllib.request.Request(target, headers=headers),
                                    timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        detail = _error_detail(exc)
        hint = " (give the daemon's key with --api-key-env NAME)" if exc.code == 401 else ""
        raise click.ClickException(f"{target}: HTTP {exc.code} {exc.reason}{detail}{hint}") \
            from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach the daemon at {target}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # a timeout mid-body, a URL urllib cannot use
        raise click.ClickException(f"cannot read {target}: {exc}") from None


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(exc.read())["error"]["message"]
    except Exception:  # not the daemon's error body: the status says enough
        return ""
    return f": {message}" if isinstance(message, str) and message else ""


def metric_samples(text: str) -> dict[str, dict[Labels, float]]:
    """Prometheus text -> sample name -> labels (sorted pairs) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, dict[Labels, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


# ---- reducing them --------------------------------------------------------------------------

def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> Optional[float]:
    """The ``q`` quantile of a histogram given as (upper bound, cumulative count) pairs, as
    PromQL's ``histogram_quantile`` estimates it: linear within the bucket the rank falls in
    (from 0 for the first bucket); the highest finite bound when it falls in the +Inf bucket.
    None for an empty histogram."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank and count > below:
            if math.isinf(bound):  # no upper bound to interpolate to
                return lower if len(ordered) > 1 else None
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _histogram(samples: Mapping[str, Mapping[Labels, float]], name: str) -> dict[str, Any]:
    """One histogram, its label sets summed: count and the QUANTILES."""
    by_bound: dict[float, float] = defaultdict(float)
    for labels, value in samples.get(f"{name}_bucket", {}).items():
        by_bound[float(dict(labels)["le"])] += value
    count = sum(samples.get(f"{name}_count", {}).values())
    quantiles = {f"p{round(q * 100)}": histogram_quantile(q, by_bound.items())
                 for q in QUANTILES}
    return {"count": int(count), **quantiles, "method": APPROX}


def _value(samples: Mapping[str, Mapping[Labels, float]], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(v for key, v in samples.get(name, {}).items() if wanted <= set(key))


def daemon_stats(url: str, models: Mapping[str, Any], metrics_text: str) -> dict[str, Any]:
    """The summary ``edge stats`` prints, from the daemon's /v1/models answer and /metrics."""
    samples = metric_samples(metrics_text)

    def count(name: str, **labels: str) -> int:
        return int(_value(samples, name, **labels))

    rows = models.get("data")
    if not isinstance(rows, list):
        raise click.ClickException(f"{url}/v1/models: not a model list (no 'data' array)")
    base = next((r["id"] for r in rows if r.get("edge", {}).get("kind") == "base"), None)
    hits, page_ins = count("edge_requests_total", cache="hit"), \
        count("edge_requests_total", cache="page_in")
    adapters = [{
        "name": row["id"],
        "size_bytes": row["edge"].get("size_bytes"),
        "resident": bool(row["edge"].get("resident")),
        "hits": count("edge_requests_total", model=row["id"], cache="hit"),
        "page_ins": count("edge_requests_total", model=row["id"], cache="page_in"),
        "routed": count("edge_routing_decisions_total", adapter=row["id"]),
    } for row in rows if row.get("edge", {}).get("kind") == "adapter"]
    return {
        "url": url,
        "base_model": base,
        "requests": {"total": count("edge_requests_total"), "hit": hits, "page_in": page_ins,
                     "base": count("edge_requests_total", cache="base"),
                     "failed": count("edge_runtime_failed_requests_total"),
                     "http_errors": count("edge_http_errors_total"),
                     "in_flight": count("edge_requests_in_flight")},
        # Of the requests served with adapters, the share whose adapters were all resident.
        "hit_ratio": hits / (hits + page_ins) if hits + page_ins else None,
        "cache": {"page_ins": count("edge_cache_loads_total"),
                  "loaded_bytes": count("edge_cache_loaded_bytes_total"),
                  "load_failures": count("edge_cache_load_failures_total"),
                  "evictions": count("edge_cache_evictions_total"),
                  "evicted_bytes": count("edge_cache_evicted_bytes_total"),
                  "resident_bytes": count("edge_cache_resident_bytes"),
                  "resident_adapters": count("edge_cache_resident_objects"),
                  "budget_bytes": count("edge_cache_budget_bytes")},
        "router": {"feedback": count("edge_feedback_total"),
                   "updates": count("edge_router_updates_total"),
                   "pending": count("edge_router_pending_decisions")},
        "latency_seconds": {"request": _histogram(samples, "edge_request_seconds"),
                            "page_in": _histogram(samples, "edge_page_in_seconds")},
        "adapters": adapters,
    }


# ---- printing them --------------------------------------------------------------------------

def _bytes(n: Optional[int]) -> str:
    from edge.schema import approx_bytes

    return "?" if n is None else approx_bytes(int(n))


def _ms(seconds: Optional[float]) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def _latency(histogram: Mapping[str, Any], what: str) -> str:
    if not histogram["count"]:
        return f"no {what} yet"
    return (f"p50 {_ms(histogram['p50'])}, p99 {_ms(histogram['p99'])} over "
            f"{histogram['count']} {what} ({APPROX})")


def table_lines(stats: Mapping[str, Any]) -> list[str]:
    """The summary as aligned text: one line per figure, then one row per adapter."""
    req, cache, router = stats["requests"], stats["cache"], stats["router"]
    ratio = stats["hit_ratio"]
    with_adapter = req["hit"] + req["page_in"]
    budget = cache["budget_bytes"]
    share = f" ({100 * cache['resident_bytes'] / budget:.1f}%)" if budget else ""
    figures = [
        ("requests", f"{req['total']} (hit {req['hit']}, page-in {req['page_in']}, base "
                     f"{req['base']}); failed {req['failed']}, HTTP errors {req['http_errors']}, "
                     f"in flight {req['in_flight']}"),
        ("hit ratio", "n/a (no request with an adapter yet)" if ratio is None else
         f"{100 * ratio:.1f}% ({req['hit']} of {with_adapter} requests with an adapter found "
         "it resident)"),
        ("page-ins", f"{cache['page_ins']} ({_bytes(cache['loaded_bytes'])} loaded), "
                     f"{cache['load_failures']} failed"),
        ("resident", f"{_bytes(cache['resident_bytes'])} / {_bytes(budget)} budget{share}, "
                     f"{cache['resident_adapters']} adapters"),
        ("evictions", f"{cache['evictions']} ({_bytes(cache['evicted_bytes'])})"),
        ("feedback", f"{router['feedback']} rewards, {router['updates']} router updates, "
                     f"{router['pending']} decisions awaiting a reward"),
        ("latency", _latency(stats["latency_seconds"]["request"], "requests")),
        ("page-in time", _latency(stats["latency_seconds"]["page_in"], "page-ins")),
    ]
    lines = [f"edge daemon at {stats['url']} (base model {stats['base_model']})"]
    lines += [f"  {label:<13} {text}" for label, text in figures]
    header = ("adapter", "size", "resident", "hits", "page-ins", "routed")
    rows = [(a["name"], _bytes(a["size_bytes"]), "yes" if a["resident"] else "no",
             str(a["hits"]), str(a["page_ins"]), str(a["routed"])) for a in stats["adapters"]]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines.append("")
    for row in [header, *rows]:
        # Names left-aligned, figures right-aligned.
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


@click.command("stats")
@click.option("--url", default=DEFAULT_URL, show_default=True,
              help="The running daemon's base URL (what `edge serve` printed).")
@click.option("--api-key-env", default=None, metavar="NAME",
              help="Send 'Authorization: Bearer <key>', the key read from this environment "
                   "variable (the daemon's --api-key-env).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the same figures as one JSON object instead of a table.")
@click.option("--timeout", default=10.0, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="Seconds to wait for each answer from the daemon.")
def stats(url: str, api_key_env: Optional[str], as_json: bool, timeout: float) -> None:
    """Show a running daemon's requests, hit ratio, page-ins, resident bytes against the
    budget, evictions, per-adapter hits and routing decisions, and latency (p50/p99,
    approximated from the /metrics histogram buckets).

    Reads GET /v1/models and GET /metrics of the daemon at --url: the counts are its /metrics
    counters."""
    from edge.daemon.commands import api_key_from

    api_key = api_key_from(api_key_env)
    url = url.rstrip("/")
    try:
        models = json.loads(fetch(url, "/v1/models", api_key, timeout))
    except ValueError:
        raise click.ClickException(f"{url}/v1/models: the answer is not JSON (is this an edge "
                                   "daemon?)") from None
    metrics_text = fetch(url, "/metrics", api_key, timeout).decode("utf-8", errors="replace")
    try:
        summary = daemon_stats(url, models, metrics_text)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise click.ClickException(f"{url}: not an edge daemon's answer ({type(exc).__name__}: "
                                   f"{exc})") from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        for line in table_lines(summary):
            click.echo(line)
