"""scripts/bench_eviction.py, a smoke run on tiny inputs: the JSON has every policy's figures at
every budget, the libCacheSim peers on the real trace, the targets and the decision latency."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from edge.learned.network import DuelingQNet

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_eviction.py"
POLICIES = {"learned", "lru", "lfu", "gdsf", "arc", "s3fifo"}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_eviction", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from edge.learned.onnx_model import export_onnx  # onnx: the train and dev extras

    path = tmp_path_factory.mktemp("model") / "m.onnx"
    export_onnx(DuelingQNet.initialise(8, seed=3), path)
    return path


def _check_budgets(budgets):
    assert set(budgets) == {"small", "medium", "large"}
    sizes = [budgets[b]["budget_bytes"] for b in ("small", "medium", "large")]
    assert sizes == sorted(sizes) and sizes[0] < sizes[2]
    for row in budgets.values():
        assert POLICIES <= set(row)
        for policy in POLICIES:
            assert 0 <= row[policy]["hit_ratio"] <= 1
            assert 0 <= row[policy]["byte_hit_ratio"] <= 1
        # The oracle bounds every policy's hits.
        assert all(row["oracle"]["hit_ratio"] >= row[p]["hit_ratio"] - 1e-12 for p in POLICIES)


def test_quick_run_reports_every_peer(bench, model, tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--model", str(model), "--requests", "2000", "--decisions", "50",
                "--k-tail", "4", "--k-rand", "12", "--k-head", "2", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["benchmark"] == "bench_eviction" and data["machine"]["cores"] >= 1
    assert data["model"]["path"] == str(model)
    assert len(data["generated"]) == 3
    for workload in data["generated"].values():
        assert workload["requests"] == 2000
        _check_budgets(workload["budgets"])
        targets = workload["targets"]
        small = workload["budgets"]["small"]
        assert targets["small_over_lru_met"] == (
            small["learned"]["hit_ratio"] >= 1.5 * small["lru"]["hit_ratio"])
        assert targets["small_over_lru_attainable"] == (
            small["oracle"]["hit_ratio"] >= 1.5 * small["lru"]["hit_ratio"])
        assert targets["small_over_lru_attainable"] or not targets["small_over_lru_met"]
    assert data["candidates"] == {"k_tail": 4, "k_rand": 12, "k_head": 2}
    # The K = 16 + 16 always, and the benchmarked rule beside it (tail + head + drawn).
    assert set(data["decision_latency"]) == {"16+16", "4+2+12"}
    for rule, latency in data["decision_latency"].items():
        kt, kh, kr = latency["k_tail"], latency["k_head"], latency["k_rand"]
        assert rule == (f"{kt}+{kh}+{kr}" if kh else f"{kt}+{kr}")
        assert 0 < latency["p50_us"] <= latency["p99_us"]
        assert latency["model_decisions"] == 2 * 50 and latency["fallback_decisions"] == 0
    if bench.REAL_TRACE.exists():
        real = data["real"]
        _check_budgets(real["budgets"])
        if real["libcachesim_available"]:
            for row in real["budgets"].values():
                lcs = row["libcachesim"]
                assert set(lcs) == POLICIES - {"learned"}
                # LRU is LRU: libCacheSim's and ours count the same hits.
                assert lcs["lru"]["hit_ratio"] == pytest.approx(row["lru"]["hit_ratio"],
                                                                abs=1e-9)


def test_selection_workloads_are_disjoint_from_the_reported_ones(bench, model, tmp_path):
    out = tmp_path / "selection.json"
    bench.main(["--quick", "--model", str(model), "--requests", "1500", "--workloads",
                "selection", "--no-real", "--skip-latency", "--k-tail", "4", "--k-rand", "12",
                "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["workloads"] == "selection" and data["decision_latency"] == {}
    assert data["real"] is None
    assert sorted(data["generated"]) == ["scan-71", "scan-72", "tenants-74", "tenants-75",
                                         "tenants-76"]
    for workload in data["generated"].values():
        _check_budgets(workload["budgets"])
    reported = {p["seed"] for _, p in bench.HELD_OUT}
    chosen = {p["seed"] for _, p in bench.SELECTION}
    assert reported == {101, 102, 103} and not reported & chosen
    with pytest.raises(SystemExit):
        bench.main(["--latency-only", "--skip-latency", "--model", str(model)])
