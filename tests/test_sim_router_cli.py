"""`edge sim --router`: a trace's labelled contexts replayed through routing strategies."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from edge.cli import main
from edge.sim.generate import FixedSize, tenant_adapter_stream
from edge.sim.routing import routing_events
from edge.sim.trace import Trace, write_jsonl


def test_router_replay_on_a_generated_tenant_trace(tmp_path):
    workload = tenant_adapter_stream(3000, n_tenants=3, n_adapters=8, seed=5, context_dim=12,
                                     context_noise=0.1, sizes=FixedSize(8 * 2**20))
    path = tmp_path / "t.jsonl"
    write_jsonl(workload.trace, path)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["sim", "--trace", str(path), "--router", "--budget",
                                       "25%", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = {r["strategy"]: r for r in report["budgets"][0]["results"]}
    assert set(rows) == {"random", "linucb+lru", "polar", "polar+", "oracle"}
    assert rows["oracle"]["regret"] == 0 and rows["oracle"]["reward"] == 3000
    assert rows["random"]["reward"] / 3000 < 0.25  # about 1/8 by chance
    # Contexts carry the label here (low noise): a learner must beat chance by far.
    assert rows["linucb+lru"]["reward"] > 3 * rows["random"]["reward"]
    assert rows["polar+"]["hit_ratio"] > rows["linucb+lru"]["hit_ratio"]
    assert all(r["arms_tried"] <= 8 for r in rows.values())
    for name in rows:
        assert name in result.output


def test_text_contexts_go_through_the_feature_extractor():
    texts = np.array(["translate this to french", "write sql for the orders table",
                      "translate to german", "sql join users and orders"] * 5, dtype=object)
    keys = np.array([1, 2, 1, 2] * 5, dtype=np.uint64)
    trace = Trace(np.arange(20.0), keys, np.full(20, 1000, np.uint64), contexts=texts)
    events = routing_events(trace)
    assert events.contexts.shape == (20, 64)
    assert np.allclose(np.linalg.norm(events.contexts, axis=1), 1.0)
    assert events.utilities.sum(axis=1).tolist() == [1.0] * 20
    assert events.arm_ids == ("1", "2")


def test_router_needs_contexts(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("time,key,size\n0,1,10\n1,2,10\n")
    result = CliRunner().invoke(main, ["sim", "--trace", str(path), "--router"])
    assert result.exit_code != 0 and "no context column" in result.output
    result = CliRunner().invoke(main, ["sim", "--trace", str(path), "--strategy", "polar+"])
    assert result.exit_code != 0 and "only applies with --router" in result.output


def test_router_refuses_sizes_past_int64(tmp_path):
    # The router keeps sizes as int64: a 2**63-byte adapter turned negative, and the adapters'
    # total (the base of "25%") wrapped.
    path = tmp_path / "big.jsonl"
    write_jsonl(Trace([0.0, 1.0], np.array([1, 2], np.uint64), np.full(2, 2**63, np.uint64),
                      contexts=np.eye(2)), path)
    result = CliRunner().invoke(main, ["sim", "--trace", str(path), "--router"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"adapter size {2**63} is too large for the router" in result.output


def test_route_bench_rejects_non_finite_floats():
    for option, value in (("--budget-fraction", "nan"), ("--paging-weight", "inf")):
        result = CliRunner().invoke(main, ["route-bench", option, value])
        assert result.exit_code == 2, result.output
        assert f"'{option}': '{value}' is not a finite number" in result.output
