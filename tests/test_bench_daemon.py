"""Smoke test of scripts/bench_daemon.py: one run on the tiny models with three timed requests
per case, against llama-cpp-python's server when its extras are installed; the JSON must hold
every figure, and the figures must agree with how the servers work (a repeat reuses the prompt's
KV, every page-in request misses the cache, llama-cpp-python's server reloads on a switch).
The speed targets themselves are the benchmark's to report, never this test's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 3
EDGE_CASES = ("repeat", "switch", "page_in", "auto")
PEER_CASES = ("repeat", "switch")
SUMMARY_KEYS = {"p50", "p99", "min", "max", "n"}
EXTRAS = ("sse_starlette", "starlette_context", "pydantic_settings")


def check_summary(figure: dict, what: str, n: int = REPEATS, positive: bool = True) -> None:
    assert set(figure) == SUMMARY_KEYS, (what, figure)
    assert figure["n"] == n, (what, figure)
    assert figure["min"] <= figure["p50"] <= figure["p99"] <= figure["max"], (what, figure)
    assert figure["min"] > 0 if positive else figure["min"] >= 0, (what, figure)


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench-daemon") / "bench_daemon.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_daemon.py"), "--model", "tiny",
         "--repeats", str(REPEATS), "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)
    written = json.loads(out.read_text())
    assert printed == written
    return written


def test_inputs_and_machine_are_recorded(result):
    assert result["benchmark"] == "daemon"
    assert result["machine"]["cores"] >= 1 and result["machine"]["cpu"]
    inputs = result["inputs"]
    assert inputs["model"] == "tiny" and inputs["repeats"] == REPEATS
    assert inputs["max_tokens"] == 1 and inputs["temperature"] == 0
    assert len(inputs["adapter_bytes"]) == 3
    assert inputs["n_threads"] == inputs["n_threads_batch"] == 1
    assert inputs["versions"]["llama_cpp_python"]
    for key in ("latency_ms", "llama_ms", "runtime_overhead_ms", "http_ms"):
        assert result["definitions"][key]


def test_edge_cases_have_every_figure_and_the_expected_cache_outcomes(result):
    edge = result["edge"]
    assert edge["n_threads"] == edge["n_threads_batch"] == 1  # --threads reached llama.cpp
    assert set(edge["cases"]) == set(EDGE_CASES)
    check_summary({k: v for k, v in edge["http_floor_ms"].items() if k != "path"}, "floor")
    # The three adapters do not fit (the page-in cycle misses); two do (the switch hits).
    assert edge["budget_bytes"] < sum(result["inputs"]["adapter_bytes"].values())
    for name, case in edge["cases"].items():
        check_summary(case["latency_ms"], name)
        check_summary(case["llama_ms"], name)  # every request decodes at least one token
        check_summary(case["runtime_overhead_ms"], name)
        check_summary(case["http_ms"], name)
        check_summary(case["llama_graph_reserve_ms"], name, positive=False)
        assert {"route", "acquire", "serve", "total"} <= set(case["edge_timings_ms"]), name
        assert case["requests_per_s"] > 0, name
        # The client waits for the whole answer, so it sees at least the runtime's total.
        assert case["latency_ms"]["min"] >= case["edge_timings_ms"]["total"]["min"], name
        assert sum(case["cache"].values()) == REPEATS, name
        assert case["unexpected_cache_outcomes"] == 0, (name, case["cache"])
    cases = edge["cases"]
    assert cases["repeat"]["cache"] == {"hit": REPEATS}
    assert cases["switch"]["cache"] == {"hit": REPEATS}
    assert cases["page_in"]["cache"] == {"page_in": REPEATS}
    # A repeat keeps the prompt's KV but its last token; a switch recomputes all of it.
    assert cases["repeat"]["reused_prompt_tokens_p50"] > 0
    assert cases["switch"]["reused_prompt_tokens_p50"] == 0
    assert cases["repeat"]["llama_graph_reserve_ms"]["max"] == 0  # no adapter set change
    assert len(cases["switch"]["adapters"]) == 2 and len(cases["page_in"]["adapters"]) == 3


def test_peers_are_measured_or_skipped_with_a_reason(result):
    peers = result["peers"]
    assert "--llama-server" in peers["llama_server"]["skipped"]
    lcs = peers["llama_cpp_server"]
    # Its extras are in the dev extra, so the peer must have run here.
    assert all(importlib.util.find_spec(m) is not None for m in EXTRAS), EXTRAS
    assert "skipped" not in lcs, lcs.get("skipped")
    assert lcs["version"] == result["inputs"]["versions"]["llama_cpp_python"]
    assert [m["model_alias"] for m in lcs["config_models"]] == \
        result["edge"]["adapters"]["repeat_switch"]
    assert all(m["lora_path"] for m in lcs["config_models"])
    for name in PEER_CASES:
        check_summary(lcs["cases"][name]["latency_ms"], name)
        assert lcs["cases"][name]["requests_per_s"] > 0
    # (That its switch, a model reload, is far slower than a repeat is the benchmark's to
    # measure: a timed assertion here would fail on a loaded machine.)


def test_ratios_and_targets_follow_from_the_figures(result):
    edge = result["edge"]["cases"]
    targets = result["targets"]
    overhead = {name: edge[name]["runtime_overhead_ms"]["p50"] for name in EDGE_CASES}
    assert targets["runtime_overhead_p50_ms_found"] == {
        name: overhead[name] for name in ("repeat", "switch", "auto")}
    assert targets["runtime_overhead_met"] == all(
        overhead[name] < 1.0 for name in ("repeat", "switch", "auto"))
    added = targets["page_in_added_p50_ms_found"]
    assert added == pytest.approx(overhead["page_in"] - overhead["switch"], abs=1e-3)
    assert targets["page_in_met"] == (added < 20.0)
    lcs = result["peers"]["llama_cpp_server"]
    if "cases" not in lcs:
        assert result["ratios"] == {}
        return
    peer_switch = lcs["cases"]["switch"]["latency_ms"]["p50"]
    found = result["ratios"]["llama_cpp_server"]
    assert found["switch_ours_over_peer_switch"] == pytest.approx(
        edge["switch"]["latency_ms"]["p50"] / peer_switch, rel=1e-3)
    assert found["page_in_ours_over_peer_switch"] == pytest.approx(
        edge["page_in"]["latency_ms"]["p50"] / peer_switch, rel=1e-3)
