"""``edge stats`` against a real daemon: uvicorn on a loopback port in a thread, over a Runtime on
real llama.cpp with the tiny models, after requests whose counts are worked out here by hand.

The cache is LRU with a budget that holds exactly the rank-16 and rank-4 adapters, so the
sequence below pages in, hits and evicts at known points; ``LruByHand`` replays the same
sequence with nothing but an ordered dict, apart from edge's cache. The quantile estimate is
checked against values computed by hand from PromQL's rule.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket

import daemons
import httpx
import pytest
from click.testing import CliRunner

from edge.backends.llama import LlamaBackend
from edge.cli import main
from edge.daemon.stats_command import histogram_quantile
from edge.runtime import Runtime

NAMES = ("lora-0-r4", "lora-1-r16", "lora-2-r8")
# The tiny adapters' tensor bytes: 3 blocks x 4 bytes x r x (128 + 96 + 192).
SIZES = {"lora-0-r4": 4 * 4992, "lora-1-r16": 16 * 4992, "lora-2-r8": 8 * 4992}
BUDGET = SIZES["lora-0-r4"] + SIZES["lora-1-r16"]
KEY_ENV = "EDGE_TEST_STATS_KEY"
KEY = "stats-test-key"
N_CTX = 256


class LruByHand:
    """What an LRU cache of BUDGET bytes does with the adapter sequence."""

    def __init__(self) -> None:
        self.resident: dict[str, int] = {}  # least recently used first
        self.loads = self.evictions = self.evicted_bytes = 0
        self.hits: dict[str, int] = dict.fromkeys(NAMES, 0)
        self.page_ins: dict[str, int] = dict.fromkeys(NAMES, 0)

    def access(self, name: str) -> str:
        if name in self.resident:
            self.resident[name] = self.resident.pop(name)
            self.hits[name] += 1
            return "hit"
        while sum(self.resident.values()) + SIZES[name] > BUDGET:
            victim = next(iter(self.resident))
            self.evicted_bytes += self.resident.pop(victim)
            self.evictions += 1
        self.resident[name] = SIZES[name]
        self.loads += 1
        self.page_ins[name] += 1
        return "page_in"


@contextlib.contextmanager
def running_daemon(tiny_models):
    policy = {"cache": {"budget": BUDGET, "policy": "lru", "load_workers": 0},
              "router": {"features": {"dim": 16}},
              "catalogue": {"directory": str(tiny_models.base.parent), "pattern": "lora-*.gguf"}}
    runtime = Runtime.from_config(policy, backend=LlamaBackend(tiny_models.base, n_ctx=N_CTX))
    with daemons.running_daemon(runtime, api_key=KEY) as (_, url):
        yield url


def edge_stats(*args, key: str | None = KEY):
    env = {KEY_ENV: key} if key is not None else {}
    return CliRunner(env=env).invoke(main, ["stats", *args])


@pytest.fixture(scope="module")
def served(tiny_models):
    """A daemon after a known sequence; yields (url, by_hand, routed_to, requests sent)."""
    by_hand = LruByHand()
    with running_daemon(tiny_models) as url, \
            httpx.Client(base_url=url, timeout=30,
                         headers={"Authorization": f"Bearer {KEY}"}) as client:
        def complete(model):
            response = client.post("/v1/completions", json={
                "model": model, "prompt": "Once upon a time", "max_tokens": 4})
            assert response.status_code == 200, response.text
            return response.json()["edge"]

        # Named adapters: hit or page-in follows from the sequence alone.
        for name in ("lora-0-r4", "lora-0-r4", "lora-1-r16", "lora-0-r4", "lora-2-r8",
                     "lora-2-r8"):
            assert complete(name)["cache"] == by_hand.access(name), name
        assert complete("base")["cache"] == "base"
        # One routed request: the router's choice is read from the answer, the rest by hand.
        edge = complete("auto")
        routed_to = edge["adapter"]
        assert edge["routed"] is True and edge["cache"] == by_hand.access(routed_to)
        # One error: an unknown model.
        assert client.post("/v1/completions", json={"model": "nope", "prompt": "x"}
                           ).status_code == 404
        yield url, by_hand, routed_to, 8


def test_the_table_shows_what_was_sent(served):
    url, by_hand, routed_to, sent = served
    result = edge_stats("--url", url, "--api-key-env", KEY_ENV)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"edge daemon at {url} (base model base)"
    figures = {line[2:15].strip(): line[16:] for line in lines[1:9]}
    hits, page_ins = sum(by_hand.hits.values()), sum(by_hand.page_ins.values())
    assert hits + page_ins + 1 == sent
    assert figures["requests"] == (f"{sent} (hit {hits}, page-in {page_ins}, base 1); failed 0, "
                                   "HTTP errors 1, in flight 0")
    assert figures["hit ratio"] == (f"{100 * hits / (hits + page_ins):.1f}% ({hits} of "
                                    f"{hits + page_ins} requests with an adapter found it "
                                    "resident)")
    loaded = sum(SIZES[name] * n for name, n in by_hand.page_ins.items())
    assert figures["page-ins"] == f"{by_hand.loads} ({loaded / 1024:.1f}KiB loaded), 0 failed"
    resident = sum(by_hand.resident.values())
    assert figures["resident"] == (f"{resident / 1024:.1f}KiB / {BUDGET / 1024:.1f}KiB budget "
                                   f"({100 * resident / BUDGET:.1f}%), "
                                   f"{len(by_hand.resident)} adapters")
    assert figures["evictions"] == (f"{by_hand.evictions} "
                                    f"({by_hand.evicted_bytes / 1024:.1f}KiB)")
    assert figures["latency"].startswith("p50 ") and figures["latency"].endswith(
        f" over {sent} requests (approx from buckets)")
    assert figures["page-in time"].endswith(f" over {page_ins} page-ins (approx from buckets)")
    # The adapter rows.
    header = lines.index("") + 1
    assert lines[header].split() == ["adapter", "size", "resident", "hits", "page-ins", "routed"]
    rows = {row.split()[0]: row.split() for row in lines[header + 1:]}
    assert set(rows) == set(NAMES)
    for name in NAMES:
        assert rows[name] == [name, f"{SIZES[name] / 1024:.1f}KiB",
                              "yes" if name in by_hand.resident else "no",
                              str(by_hand.hits[name]), str(by_hand.page_ins[name]),
                              "1" if name == routed_to else "0"]


def test_json_carries_the_same_figures(served):
    url, by_hand, routed_to, sent = served
    result = edge_stats("--url", url + "/", "--api-key-env", KEY_ENV, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    hits, page_ins = sum(by_hand.hits.values()), sum(by_hand.page_ins.values())
    assert data["url"] == url and data["base_model"] == "base"
    assert data["requests"] == {"total": sent, "hit": hits, "page_in": page_ins, "base": 1,
                                "failed": 0, "http_errors": 1, "in_flight": 0}
    assert data["hit_ratio"] == pytest.approx(hits / (hits + page_ins))
    cache = data["cache"]
    assert cache["page_ins"] == by_hand.loads
    assert cache["evictions"] == by_hand.evictions
    assert cache["evicted_bytes"] == by_hand.evicted_bytes
    assert cache["resident_bytes"] == sum(by_hand.resident.values())
    assert cache["resident_adapters"] == len(by_hand.resident)
    assert cache["budget_bytes"] == BUDGET
    assert data["router"]["pending"] == 1  # the routed request awaits its reward
    request = data["latency_seconds"]["request"]
    assert request["count"] == sent and request["method"] == "approx from buckets"
    assert 0 < request["p50"] <= request["p99"]
    assert data["latency_seconds"]["page_in"]["count"] == page_ins
    assert data["adapters"] == [
        {"name": name, "size_bytes": SIZES[name], "resident": name in by_hand.resident,
         "hits": by_hand.hits[name], "page_ins": by_hand.page_ins[name],
         "routed": int(name == routed_to)} for name in NAMES]


# ---- errors: one line naming the URL and the status ---------------------------------------------

def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    return result.output


def test_without_the_key_it_is_401_naming_the_url(served):
    url = served[0]
    error = one_line_error(edge_stats("--url", url, key=None))
    assert f"{url}/v1/models: HTTP 401" in error and "--api-key-env" in error
    os.environ.pop(KEY_ENV, None)
    result = edge_stats("--url", url, "--api-key-env", KEY_ENV, key=None)
    assert result.exit_code == 2 and KEY_ENV in result.output  # the variable is not set
    error = one_line_error(edge_stats("--url", url, "--api-key-env", KEY_ENV, key="wrong"))
    assert "HTTP 401" in error


def test_a_non_200_answer_names_the_url_and_status(served):
    url = served[0] + "/elsewhere"
    error = one_line_error(edge_stats("--url", url, "--api-key-env", KEY_ENV))
    assert f"{url}/v1/models: HTTP 404" in error


def test_an_unreachable_daemon_names_the_url():
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    error = one_line_error(edge_stats("--url", url, "--timeout", "5", key=None))
    assert f"cannot reach the daemon at {url}/v1/models" in error


def test_url_defaults_to_the_daemon_default():
    result = CliRunner().invoke(main, ["stats", "--help"])
    assert "[default: http://127.0.0.1:8000]" in result.output


# ---- the quantile estimate ----------------------------------------------------------------------

def test_histogram_quantile_matches_promql_by_hand():
    # Cumulative: 2 at or under 0.1 s, 6 under 0.5, 8 under 1, 10 in all.
    buckets = [(0.1, 2), (0.5, 6), (1.0, 8), (float("inf"), 10)]
    # Median: rank 5 falls in (0.1, 0.5], holding 4 of them, 3 of the way: 0.1 + 0.4 * 3/4.
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.4)
    # Rank 1 in the first bucket, from 0: 0.1 * 1/2.
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.05)
    # Rank 9.9 is past the last finite bound: that bound.
    assert histogram_quantile(0.99, buckets) == 1.0
    # Empty buckets before the rank are skipped: rank 1 of 2 lands in (0.5, 1.0].
    assert histogram_quantile(0.5, [(0.1, 0), (0.5, 0), (1.0, 2), (float("inf"), 2)]) \
        == pytest.approx(0.75)
    assert histogram_quantile(0.5, [(0.1, 0), (float("inf"), 0)]) is None
    assert histogram_quantile(0.5, []) is None
    with pytest.raises(ValueError, match="quantile"):
        histogram_quantile(1.5, buckets)
