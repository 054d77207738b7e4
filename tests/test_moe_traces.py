"""Routing traces (edge.moe.traces): the .npy interchange format, its validation, and the
simulator trace form both ways, through real files."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import TraceError
from edge.moe.traces import (
    load_routing,
    read_routing,
    routing_from_trace,
    routing_to_trace,
    save_routing,
    write_routing_trace,
)
from edge.sim.generate import moe_routing
from edge.sim.trace import Trace, read_trace

ROUTING = np.array([[[3, 1], [0, 2]],
                    [[1, 3], [2, 5]],
                    [[4, 0], [2, 0]]])  # 3 tokens, 2 layers, top-2


def test_npy_round_trip(tmp_path):
    path = tmp_path / "r.npy"
    save_routing(ROUTING.astype(np.uint8), path)
    back = load_routing(path)
    assert back.dtype == np.int64 and np.array_equal(back, ROUTING)


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((2, 2, 2)), "integer expert ids, got dtype float64"),
    (np.zeros((4, 2), dtype=np.int64), "must be 3-D"),
    (np.zeros((0, 2, 2), dtype=np.int64), "empty axis"),
    (np.array([[[0, 1]], [[2, -1]]]), "negative expert id -1 at token 1, layer 0, position 1"),
    (np.array([[[0, 1]], [[2, 2]]]), "expert 2 appears twice in the top-k of token 1, layer 0"),
])
def test_npy_validation_names_the_file_and_the_fault(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(TraceError, match=message) as err:
        load_routing(path)
    assert str(path) in str(err.value)


def test_npy_that_is_not_an_array_file(tmp_path):
    path = tmp_path / "text.npy"
    path.write_text("not numpy")
    with pytest.raises(TraceError, match=f"{path}: not a .npy routing array"):
        load_routing(path)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TraceError, match=str(objects)):  # never unpickled
        load_routing(objects)


def test_simulator_trace_has_one_request_per_use_in_executor_order():
    trace = routing_to_trace(ROUTING, expert_bytes=[100, 200])
    # Token 0: layer 0 experts 3, 1 then layer 1 experts 0, 2; keys layer << 32 | expert.
    assert trace.keys[:4].tolist() == [3, 1, (1 << 32) | 0, (1 << 32) | 2]
    assert trace.sizes[:4].tolist() == [100, 100, 200, 200]
    assert trace.times.tolist() == [0.0] * 4 + [1.0] * 4 + [2.0] * 4


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".oracleGeneral.bin"])
def test_round_trip_through_every_simulator_format(tmp_path, suffix):
    routing = moe_routing(50, 3, 16, 4, 0.5, seed=7).experts
    path = tmp_path / f"r{suffix}"
    write_routing_trace(routing, path, expert_bytes=4096)
    trace = read_trace(path)
    # Every (layer, expert) use survives: key = layer << 32 | expert, size, token order.
    layers = np.broadcast_to(np.arange(3)[None, :, None], routing.shape)
    expected = (layers.ravel().astype(np.uint64) << np.uint64(32)) | routing.ravel().astype(
        np.uint64)
    assert np.array_equal(trace.keys, expected)
    assert (trace.sizes == 4096).all()
    assert np.array_equal(read_routing(path), routing)


def test_reads_the_simulators_own_moe_traces():
    # edge trace gen moe writes token t at time t / rate, all layers at once: equal times are
    # one token, so its experts come back.
    generated = moe_routing(40, 2, 8, 2, 0.3, seed=1, tokens_per_second=20.0)
    assert np.array_equal(routing_from_trace(generated.trace), generated.experts)


def test_simulator_trace_faults_are_named():
    keys = np.array([0, 1, (1 << 32) | 0], dtype=np.uint64)
    uneven = Trace(np.zeros(3), keys, np.ones(3, dtype=np.uint64))
    with pytest.raises(TraceError, match="t.csv: 3 requests do not split"):
        routing_from_trace(uneven, "t.csv")
    backwards = Trace(np.array([1.0, 0.0]), np.array([0, 1], dtype=np.uint64),
                      np.ones(2, dtype=np.uint64))
    with pytest.raises(TraceError, match="time goes back at request 2"):
        routing_from_trace(backwards, "t.csv")
    gap = Trace(np.zeros(2), np.array([0, 2 << 32], dtype=np.uint64), np.ones(2, dtype=np.uint64))
    with pytest.raises(TraceError, match="layers must be numbered 0..1"):
        routing_from_trace(gap, "t.csv")


def test_expert_bytes_per_layer_must_match_the_layers():
    with pytest.raises(ValueError, match="one per layer \\(2\\)"):
        routing_to_trace(ROUTING, expert_bytes=[1, 2, 3])
    with pytest.raises(ValueError, match="layer 1 must be a positive integer"):
        routing_to_trace(ROUTING, expert_bytes=[1, 0])
