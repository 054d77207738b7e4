"""edge.access_log: a real Runtime (simulated backend) writes its log; the trace reader and
`edge sim` read it back.

Every expected record is derived by hand from the requests sent, the catalogue sizes and the
byte budget (LRU), never from the log itself. The backend makes the n-th page-in take n seconds
of virtual time, so a record's load cost tells which page-in it came from: a hit repeats the
cost of that adapter's last page-in, a page-in brings a new one.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from threads import run_threads

from edge.access_log import NO_TENANT, AccessLog, access_log_files
from edge.catalogue import Catalogue
from edge.cli import main
from edge.config import CacheConfig, EdgeConfig
from edge.errors import ConfigError, EdgeError
from edge.paging_cost import PagingCostModel
from edge.router.config import FeatureConfig, RouterConfig
from edge.runtime import InferenceRequest, Runtime
from edge.sim.backend import SimulatedBackend
from edge.sim.trace import read_trace

MiB = 2**20
SIZES = {"sql": 40 * MiB, "poetry": 30 * MiB, "legal": 50 * MiB}


class NumberedPageIns(SimulatedBackend):
    """The n-th page-in takes n seconds of virtual time (and reports n as its cost)."""

    def load(self, entry):
        with self._lock:
            self.loads += 1
            seconds = float(self.loads)
            self.held_bytes += entry.size
        self.clock.advance(seconds)
        return entry.name, entry.size, seconds


def make_runtime(budget: int) -> Runtime:
    config = EdgeConfig(cache=CacheConfig(budget=budget, policy="lru", load_workers=0,
                                          wait_timeout=0.0),
                        router=RouterConfig(features=FeatureConfig(dim=32)))
    return Runtime.from_config(config, backend=NumberedPageIns(),
                               catalogue=Catalogue.from_sizes(SIZES))


def counting_clock(start: float = 0.0):
    """Wall-clock stand-in: start, start + 1, ... one tick per call."""
    return itertools.count(start).__next__


def records(path) -> list[tuple]:
    """(time, name, size, load_cost, tenant) of every record, through the trace reader."""
    trace = read_trace(path)
    assert trace.skipped == 0
    return [(r.time, trace.key_names[r.key], r.size, r.load_cost, r.tenant)
            for r in trace.requests()]


def send(rt: Runtime, adapter, tenant=None, prompt="hello"):
    return rt.handle(InferenceRequest(prompt=prompt, adapter=adapter, tenant=tenant))


# ---------------------------------------------------------------------------------------------
# What a record holds


def test_every_field_of_every_record_matches_what_was_served(tmp_path):
    path = tmp_path / "access.jsonl"
    with make_runtime(100 * MiB) as rt:
        log = AccessLog.attach(rt, path, clock=counting_clock(1000.0))
        hits = [send(rt, "sql", "alice").hit,      # page-in 1: {sql}
                send(rt, "poetry", "bob").hit,     # page-in 2: {sql, poetry} 70 MiB
                send(rt, "sql", "alice").hit,      # hit; LRU order now poetry, sql
                send(rt, "legal").hit,             # page-in 3, 120 > 100: poetry goes
                send(rt, "poetry", "carol").hit]   # page-in 4, 120 > 100: sql goes
        base = send(rt, [], "dave")                # the base model alone: not logged
        pair = send(rt, ["legal", "poetry"], "bob")  # both resident: a hit, one record each
        routed = send(rt, None, "", prompt="SELECT name FROM users")
        chosen = routed.adapter
        assert hits == [False, False, True, False, False] and pair.hit
        assert base.adapters == () and routed.routed and chosen in SIZES
        assert routed.hit == (chosen in ("legal", "poetry"))  # resident: {legal, poetry}
        assert rt.backend.loads == 4 + (not routed.hit)
        log.close()

    # The routed request's adapter is the router's choice; its cost follows from where it was.
    routed_cost = {"legal": 3.0, "poetry": 4.0}.get(chosen, 5.0)
    assert records(path) == [
        (1000.0, "sql", 40 * MiB, 1.0, "alice"),
        (1001.0, "poetry", 30 * MiB, 2.0, "bob"),
        (1002.0, "sql", 40 * MiB, 1.0, "alice"),     # a hit: sql's last page-in cost
        (1003.0, "legal", 50 * MiB, 3.0, NO_TENANT),  # no tenant given
        (1004.0, "poetry", 30 * MiB, 4.0, "carol"),   # paged in again: the new cost
        (1005.0, "legal", 50 * MiB, 3.0, "bob"),      # a set: one record per adapter, one time
        (1005.0, "poetry", 30 * MiB, 4.0, "bob"),
        (1006.0, chosen, SIZES[chosen], routed_cost, NO_TENANT),  # "" is no tenant either
    ]
    # What the device saw: hit or page-in, and the router's features for the routed request.
    trace = read_trace(path)
    assert trace.hits.tolist() == [False, False, True, False, False, True, True, routed.hit]
    assert [r.context for r in trace.requests()][:7] == [None] * 7
    np.testing.assert_allclose(trace.contexts[7], routed.context.astype(np.float64))
    assert len(routed.context) == 32  # FeatureConfig(dim=32)
    # Every line is one compact JSON object with exactly the fields the reader knows.
    lines = path.read_text().splitlines()
    assert len(lines) == 8
    assert {tuple(json.loads(line)) for line in lines} == {
        ("time", "key", "size", "load_cost", "tenant", "hit"),
        ("time", "key", "size", "load_cost", "tenant", "hit", "context")}


def test_an_adapter_never_measured_alone_gets_the_models_load_cost(tmp_path):
    path = tmp_path / "access.jsonl"
    # 0.5 s + 1 s per MiB: sql 40.5 s, poetry 30.5 s, far from the backend's 1, 2, 3 ...
    model = PagingCostModel(cold_latency_s=0.5, cold_bandwidth_bytes_per_s=MiB)
    with make_runtime(100 * MiB) as rt:
        log = AccessLog.attach(rt, path, clock=counting_clock(), paging_cost=model)
        outcomes = [send(rt, ["sql", "poetry"], "a"),  # page-ins 1 and 2 as one acquire
                    send(rt, "sql", "a"),              # hit, still never measured alone
                    send(rt, "legal", "a"),            # page-in 3; poetry (LRU) goes
                    send(rt, "poetry", "a"),           # page-in 4; sql goes
                    send(rt, "legal", "a")]            # hit: its page-in measured 3 s
        assert [o.hit for o in outcomes] == [False, True, False, False, True]
        log.close()
    assert [(name, cost) for _, name, _, cost, _ in records(path)] == [
        ("sql", 40.5), ("poetry", 30.5), ("sql", 40.5), ("legal", 3.0), ("poetry", 4.0),
        ("legal", 3.0)]


# ---------------------------------------------------------------------------------------------
# Rotation, replay, concurrency


def test_rotation_keeps_backups_whose_concatenation_edge_sim_replays_in_order(tmp_path):
    path = tmp_path / "access.jsonl"
    # By hand, LRU at 100 MiB (sizes 40, 30, 50):
    sequence = ["sql", "poetry", "sql", "legal", "poetry", "legal", "poetry", "sql", "legal",
                "sql"]
    expected_hits = [False, False, True,   # {sql, poetry}
                     False,                # legal: poetry goes -> {sql, legal}
                     False,                # poetry: sql goes -> {legal, poetry}
                     True, True,
                     False,                # sql: legal (used before poetry) goes
                     False,                # legal: poetry goes -> {sql, legal}
                     True]
    with make_runtime(100 * MiB) as rt:
        # About 3 records of ~70 bytes per 250-byte file: 4 files, nothing dropped.
        log = AccessLog.attach(rt, path, clock=counting_clock(), max_bytes=250, backups=10)
        assert [send(rt, name, "t").hit for name in sequence] == expected_hits
        log.close()

    files = access_log_files(path)
    assert [f.name for f in files] == ["access.3.jsonl", "access.2.jsonl", "access.1.jsonl",
                                       "access.jsonl"]
    lines = [f.read_bytes().splitlines(keepends=True) for f in files]
    for i, file_lines in enumerate(lines):
        assert 0 < sum(map(len, file_lines)) < 250
        if i + 1 < len(lines):  # a file rotated only when the next line would not fit
            assert sum(map(len, file_lines)) + len(lines[i + 1][0]) >= 250
    joined = tmp_path / "all.jsonl"
    joined.write_bytes(b"".join(f.read_bytes() for f in files))
    assert [(t, name) for t, name, *_ in records(joined)] == list(
        zip(map(float, range(10)), sequence, strict=True))

    out = tmp_path / "sim.json"
    result = CliRunner().invoke(main, ["sim", "--trace", str(joined), "--policy", "lru",
                                       "--budget", "100MiB", "--no-optimal", "--json", str(out)])
    assert result.exit_code == 0, result.output
    (lru,) = json.loads(out.read_text())["results"]
    assert (lru["policy"], lru["budget"], lru["requests"], lru["hits"]) == (
        "lru", 100 * MiB, 10, sum(expected_hits))


def test_the_oldest_files_go_beyond_the_backups_kept(tmp_path):
    path = tmp_path / "access.jsonl"
    with make_runtime(200 * MiB) as rt:
        log = AccessLog.attach(rt, path, clock=counting_clock(), max_bytes=250, backups=2)
        for _ in range(20):
            send(rt, "sql", "t")
        log.close()
    files = access_log_files(path)
    assert [f.name for f in files] == ["access.2.jsonl", "access.1.jsonl", "access.jsonl"]
    assert not (tmp_path / "access.3.jsonl").exists()
    kept = [t for f in files for t, *_ in records(f)]
    assert kept == [float(t) for t in range(20 - len(kept), 20)] and len(kept) < 20


def test_no_backups_starts_a_full_file_again(tmp_path):
    path = tmp_path / "access.jsonl"
    with make_runtime(200 * MiB) as rt:
        log = AccessLog.attach(rt, path, clock=counting_clock(), max_bytes=250, backups=0)
        for _ in range(10):
            send(rt, "sql", "t")
        log.close()
    assert access_log_files(path) == [path] and path.stat().st_size < 250
    times = [t for t, *_ in records(path)]
    assert times and times == [float(t) for t in range(10 - len(times), 10)]


def test_a_record_larger_than_max_bytes_gets_a_file_of_its_own(tmp_path):
    path = tmp_path / "access.jsonl"
    with make_runtime(200 * MiB) as rt:
        log = AccessLog.attach(rt, path, clock=counting_clock(), max_bytes=10, backups=5)
        for name in ("sql", "poetry", "legal"):
            send(rt, name, "t")
        log.close()
    files = access_log_files(path)
    assert [[name for _, name, *_ in records(f)] for f in files] == [
        ["sql"], ["poetry"], ["legal"]]  # no empty backups pushed the real ones out


def test_eight_threads_write_whole_lines_in_time_order(tmp_path):
    path = tmp_path / "access.jsonl"
    threads, per_thread, names = 8, 40, list(SIZES)
    with make_runtime(200 * MiB) as rt:  # everything fits: no request waits for room
        log = AccessLog.attach(rt, path, clock=counting_clock(), max_bytes=2048, backups=1000)

        def worker(i: int):
            def run():
                for _ in range(per_thread):
                    send(rt, names[i % 3], f"t{i}")
            return run

        run_threads([worker(i) for i in range(threads)])
        log.close()
        assert log.records == threads * per_thread
    files = access_log_files(path)
    assert len(files) > 5  # rotation happened while the threads wrote
    rows = [row for f in files for row in records(f)]  # the reader refuses any torn line
    assert [t for t, *_ in rows] == [float(t) for t in range(threads * per_thread)]
    for i in range(threads):
        mine = [name for _, name, _, _, tenant in rows if tenant == f"t{i}"]
        assert mine == [names[i % 3]] * per_thread


# ---------------------------------------------------------------------------------------------
# Crashes, closing, bad settings


def test_a_torn_last_line_is_cut_off_when_the_log_is_opened_again(tmp_path, caplog):
    path = tmp_path / "access.jsonl"
    with make_runtime(100 * MiB) as rt:
        log = AccessLog.attach(rt, path, clock=counting_clock())
        send(rt, "sql", "t")
        send(rt, "sql", "t")
        log.close()
    with open(path, "ab") as f:  # a crash in the middle of the third line
        f.write(b'{"time":2.0,"key":"sq')
    with caplog.at_level(logging.WARNING, logger="edge.access_log"):
        log = AccessLog(path, size_of=SIZES.__getitem__, clock=counting_clock(2.0))
    assert "torn line (21 bytes" in caplog.text
    with make_runtime(100 * MiB) as rt:
        rt.add_observer(log)
        send(rt, "legal", "t")
        log.close()
    assert [(t, name) for t, name, *_ in records(path)] == [
        (0.0, "sql"), (1.0, "sql"), (2.0, "legal")]


def test_a_closed_log_refuses_records_and_the_runtime_still_serves(tmp_path, caplog):
    path = tmp_path / "access.jsonl"
    with make_runtime(100 * MiB) as rt:
        log = AccessLog.attach(rt, path, clock=counting_clock())
        send(rt, "sql", "t")
        log.close()
        log.close()  # idempotent
        assert log.closed
        with pytest.raises(EdgeError, match=r"access\.jsonl is closed"):
            log(InferenceRequest(adapter="sql"), send(rt, "sql"))
        with caplog.at_level(logging.ERROR, logger="edge.runtime"):
            assert send(rt, "poetry").adapter == "poetry"  # served; the failure only logged
        assert "observer" in caplog.text and "is closed" in caplog.text
    assert [name for _, name, *_ in records(path)] == ["sql"]


@pytest.mark.parametrize("settings, message", [
    ({"max_bytes": 0}, r"access log max_bytes must be positive, got 0"),
    ({"max_bytes": -5}, r"max_bytes must be positive, got -5"),
    ({"max_bytes": "lots"}, r"max_bytes 'lots' is not a size"),
    ({"max_bytes": True}, r"max_bytes must be a byte count"),
    ({"backups": -1}, r"backups must be an integer >= 0, got -1"),
    ({"backups": 1.5}, r"backups must be an integer >= 0, got 1\.5"),
])
def test_bad_settings_name_the_setting(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        AccessLog(tmp_path / "access.jsonl", size_of=SIZES.__getitem__, **settings)
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_a_path_that_cannot_be_written_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"missing/access\.jsonl.*directory .*missing' does "
                                          r"not exist"):
        AccessLog(tmp_path / "missing" / "access.jsonl", size_of=SIZES.__getitem__)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"file/access\.jsonl.*does not exist"):
        AccessLog(tmp_path / "file" / "access.jsonl", size_of=SIZES.__getitem__)
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(ConfigError, match=r"dir\.jsonl' cannot be opened for appending"):
        AccessLog(tmp_path / "dir.jsonl", size_of=SIZES.__getitem__)
    with pytest.raises(ConfigError, match=r"access\.log' must name a \.jsonl file"):
        AccessLog(tmp_path / "access.log", size_of=SIZES.__getitem__)


def test_access_log_files_lists_only_this_logs_backups_oldest_first(tmp_path):
    for name in ("access.jsonl", "access.1.jsonl", "access.10.jsonl", "access.2.jsonl",
                 "other.1.jsonl", "access.x.jsonl", "access.1.jsonl.tmp", "access.jsonl.3"):
        (tmp_path / name).write_text("")
    assert [f.name for f in access_log_files(tmp_path / "access.jsonl")] == [
        "access.10.jsonl", "access.2.jsonl", "access.1.jsonl", "access.jsonl"]
    assert access_log_files(tmp_path / "none.jsonl") == []


def test_records_of_one_request_are_written_together(tmp_path):
    """A set's records are adjacent even when other requests finish at the same moment."""
    path = tmp_path / "access.jsonl"
    start = threading.Barrier(4)
    with make_runtime(200 * MiB) as rt:
        log = AccessLog.attach(rt, path, clock=counting_clock())

        def worker():
            start.wait(10)
            for _ in range(25):
                send(rt, ["sql", "poetry", "legal"], "t")

        run_threads([worker] * 4)
        log.close()
    rows = records(path)
    assert len(rows) == 4 * 25 * 3
    for i in range(0, len(rows), 3):
        assert [(t, name) for t, name, *_ in rows[i:i + 3]] == [
            (float(i // 3), "sql"), (float(i // 3), "poetry"), (float(i // 3), "legal")]


def test_any_tenant_text_stays_on_one_line_and_reads_back_unchanged(tmp_path):
    path = tmp_path / "access.jsonl"
    tenants = ["zoë", "two\nlines", "100%s %(message)s", '"quoted", {json}', "12345"]
    with make_runtime(100 * MiB) as rt:
        log = AccessLog.attach(rt, path, clock=counting_clock())
        for tenant in tenants:
            send(rt, "sql", tenant)
        log.close()
    assert path.read_bytes().isascii() and len(path.read_bytes().splitlines()) == len(tenants)
    assert [tenant for *_, tenant in records(path)] == tenants


def test_the_routed_records_are_the_routing_problem_edge_sim_router_replays(tmp_path):
    from edge.sim.routing import routing_events

    path = tmp_path / "access.jsonl"
    with make_runtime(200 * MiB) as rt:
        log = AccessLog.attach(rt, path, clock=counting_clock())
        routed = []
        for i, prompt in enumerate(["SELECT 1", "a sonnet", "the contract", "SELECT 2"]):
            send(rt, "sql", "named")  # no context: not part of the routing problem
            routed.append(send(rt, None, f"t{i}", prompt=prompt))
        log.close()
    events = routing_events(read_trace(path))
    assert events.contexts.shape == (4, 32)
    for row, outcome in zip(events.contexts, routed, strict=True):
        np.testing.assert_allclose(row, outcome.context.astype(np.float64))
    chosen = [events.arm_ids[i] for i in events.utilities.argmax(axis=1)]
    assert chosen == [o.adapter for o in routed]
