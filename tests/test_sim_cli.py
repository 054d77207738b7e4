"""`edge sim`, `edge trace gen/info` and `edge calibrate` end to end, on traces made in tmp_path.

The figures `edge sim` prints and writes are checked against direct calls of the library
(replay_arrays, belady_hits, pfoo_l_hits), so a wrong number cannot hide behind a nice table.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge.cli import main
from edge.config import CacheConfig
from edge.paging_cost import load_paging_cost
from edge.sim.generate import zipf_probabilities
from edge.sim.oracle import belady_hits, gap_closed, pfoo_l_hits
from edge.sim.replay import replay_arrays
from edge.sim.specs import parse_budget_list, parse_policy_list, working_set_bytes
from edge.sim.trace import read_trace

SCAN = ["trace", "gen", "scan", "--requests", "12000", "--objects", "400", "--alpha", "0.9",
        "--period", "3000", "--burst", "600", "--seed", "7"]


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def ok(*args: str):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def failed(*args: str, exit_code: int | None = None):
    """A clean failure: non-zero exit, an error message, and no traceback."""
    result = run(*args)
    assert result.exit_code != 0, result.output
    if exit_code is not None:
        assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception,
                                                               (AttributeError, TypeError))
    assert "Error" in result.output
    return result.output


@pytest.fixture(scope="module")
def scan_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "scan.csv"
    ok(*SCAN, "--out", str(path))
    return path


# ---------------------------------------------------------------------------------------------
# edge sim


def test_sim_table_png_and_json_match_direct_replay(scan_trace, tmp_path):
    png, out = tmp_path / "sim.png", tmp_path / "sim.json"
    result = ok("sim", "--trace", str(scan_trace), "--policy", "lru,arc,s3fifo,gdsf",
                "--budget", "3%,10%", "--json", str(out), "--plot", str(png))
    text = result.output
    assert "optimal: Belady MIN" in text
    for policy in ("lru", "arc", "s3fifo", "gdsf", "belady"):
        assert len([ln for ln in text.splitlines() if ln.startswith(policy + " ")]) == 2, text

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 400 and len(data) > 20_000

    report = json.loads(out.read_text())
    trace = read_trace(scan_trace)
    assert report["trace"]["requests"] == len(trace) == 12000
    assert report["trace"]["uniform_size"] == 4096
    assert report["optimal"]["kind"] == "belady"
    ws = working_set_bytes(trace.keys, trace.sizes)
    assert [b["bytes"] for b in report["budgets"]] == [int(ws * 0.03), int(ws * 0.10)]
    rows = {(r["policy"], r["budget_label"]): r for r in report["results"]}
    assert len(rows) == 8
    for (policy, _label), row in rows.items():
        direct = replay_arrays(trace.keys, trace.sizes, policy, row["budget"], times=trace.times)
        lru = replay_arrays(trace.keys, trace.sizes, "lru", row["budget"], times=trace.times)
        optimal = belady_hits(trace.keys, row["budget"] // 4096)
        assert row["hits"] == direct.hits and row["bytes_hit"] == direct.bytes_hit
        assert row["hit_ratio"] == direct.hit_ratio
        assert row["byte_hit_ratio"] == direct.byte_hit_ratio
        assert row["paging_seconds"] == pytest.approx(direct.paging_seconds, rel=1e-12)
        assert row["optimal_hits"] == optimal
        assert row["gap_closed"] == gap_closed(direct.hits, lru.hits, optimal)
        assert f"{direct.hit_ratio:.4f}" in text
    # The workload is adversarial for LRU: the scan-resistant policies close part of the gap.
    assert rows["s3fifo", "3%"]["gap_closed"] > 0.1
    assert rows["lru", "3%"]["gap_closed"] == 0.0


def test_sim_variable_sizes_uses_the_pfoo_l_bound(tmp_path):
    path = tmp_path / "var.oracleGeneral.bin"
    ok("trace", "gen", "zipf", "--requests", "5000", "--objects", "300", "--size", "8KiB",
       "--size-sigma", "1.0", "--out", str(path))
    out = tmp_path / "var.json"
    result = ok("sim", "--trace", str(path), "--policy", "lru,s3fifo", "--budget", "64KiB,10%",
                "--json", str(out))
    assert "PFOO-L upper bound" in result.output and "pfoo-l bound" in result.output
    report = json.loads(out.read_text())
    trace = read_trace(path)
    assert report["optimal"]["kind"] == "pfoo_l" and report["trace"]["uniform_size"] is None
    for row in report["results"]:
        assert row["optimal_hits"] == pfoo_l_hits(trace.keys, trace.sizes, row["budget"])
        assert row["hits"] <= row["optimal_hits"]  # a bound no policy beats
    assert {r["budget_label"] for r in report["results"]} == {"64KiB", "10%"}


def test_sim_takes_policy_and_budget_from_a_config(scan_trace, tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text("version: 1\ncache:\n  budget: 256KiB\n  policy: s3fifo\n"
                      "  policy_params:\n    small_fraction: 0.2\n")
    out = tmp_path / "c.json"
    ok("sim", "--trace", str(scan_trace), "--config", str(config), "--json", str(out),
       "--no-optimal")
    report = json.loads(out.read_text())
    assert report["policies"] == ["lru", "s3fifo(small_fraction=0.2)"]  # LRU always joins
    assert report["budgets"] == [{"label": "256KiB", "bytes": 256 * 1024}]
    assert all(r["gap_closed"] is None for r in report["results"]) and report["optimal"] is None


def test_progress_bar_only_when_asked(scan_trace):
    args = ("sim", "--trace", str(scan_trace), "--policy", "lru", "--budget", "5%")
    quiet = ok(*args)
    assert "replaying" not in quiet.stderr and quiet.stderr == ""
    loud = ok(*args, "--progress")
    assert "replaying" in loud.stderr and "replaying" not in loud.stdout


@pytest.mark.parametrize("args, message", [
    (["--policy", "lru,nope"], "unknown eviction policy 'nope'"),
    (["--policy", "s3fifo:small_fraction=2"], "small_fraction must be between 0 and 1"),
    (["--policy", "s3fifo:bogus=1"], "policy_params.bogus: unknown key"),
    (["--policy", "small_fraction=0.1"], "comes before any policy name"),
    (["--budget", "64XB"], "budget '64XB' is not a size"),
    (["--budget", "150%"], "must be a percentage in (0, 100]"),
    (["--budget", "5%,,1MiB"], "empty entry"),
    # The C core's budgets are uint64: 2**64 was an OverflowError from the native replay.
    (["--budget", "18446744073709551616"], "budget '18446744073709551616' is too large"),
    (["--budget", "1.5"], "budget '1.5' is not a whole number of bytes"),  # was 1 byte
    (["--budget", "0.5B"], "budget '0.5B' is not a whole number of bytes"),
    (["--budget", "nan%"], "budget 'nan%' is not a percentage like '5%'"),
    (["--format", "lcs_csv"], "lcs_csv needs --columns"),
])
def test_sim_rejects_bad_options_naming_them(scan_trace, args, message):
    output = failed("sim", "--trace", str(scan_trace), *args, exit_code=2)
    assert message in output


def test_sim_skip_bad_and_other_file_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,key,size\n0,1,4096\n1,2,many\n2,1,4096\n")
    output = failed("sim", "--trace", str(bad), "--budget", "1MiB", exit_code=1)
    assert f"{bad}:3" in output and "size 'many'" in output
    result = ok("sim", "--trace", str(bad), "--budget", "1MiB", "--policy", "lru", "--skip-bad")
    assert "1 bad lines skipped" in result.output and "2 requests" in result.output

    truncated = tmp_path / "t.oracleGeneral.bin"
    truncated.write_bytes(b"\0" * 30)
    assert "truncated oracleGeneral" in failed("sim", "--trace", str(truncated))
    unnamed = tmp_path / "trace.dat"
    unnamed.write_text("x")
    assert "cannot tell the trace format" in failed("sim", "--trace", str(unnamed))
    assert "does not exist" in failed("sim", "--trace", str(tmp_path / "missing.csv"))
    empty = tmp_path / "empty.csv"
    empty.write_text("time,key,size\n")
    assert "no requests" in failed("sim", "--trace", str(empty))
    config = tmp_path / "broken.yaml"
    config.write_text("cache:\n  polcy: lru\n")
    out = failed("sim", "--trace", str(empty), "--config", str(config))
    assert "cache.polcy: unknown key" in out


def test_sizes_summing_past_2_64_do_not_wrap(tmp_path):
    # Two 2**63-byte objects: numpy's uint64 sum made the working set 0 ("0B", and "50%" an
    # empty trace); the replay's uint64 byte counts would wrap the same way.
    big = tmp_path / "big.csv"
    big.write_text(f"time,key,size\n0,1,{2**63}\n1,2,{2**63}\n2,1,{2**63}\n")
    assert "working set 17179869184.0GiB" in ok("trace", "info", "--trace", str(big)).output
    assert working_set_bytes(np.array([1, 2, 1], np.uint64),
                             np.full(3, 2**63, np.uint64)) == 2**64
    output = failed("sim", "--trace", str(big), "--budget", "50%", exit_code=1)
    assert "requests total 27670116110564327424 bytes, 2**64 or more" in output
    output = failed("sim", "--trace", str(big), "--budget", "100%", exit_code=2)
    assert "budget '100%' of the 18446744073709551616-byte working set" in output


def test_plot_without_matplotlib_says_how_to_install(scan_trace, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now raises ImportError
    output = failed("sim", "--trace", str(scan_trace), "--plot", str(tmp_path / "x.png"))
    assert "pip install 'edge[plot]'" in output
    assert "policy" not in output  # it failed before replaying anything
    assert not (tmp_path / "x.png").exists()


def test_policy_and_budget_languages():
    specs = parse_policy_list("lru, s3fifo:small_fraction=0.2,move_to_main_threshold=2,"
                              "gdsf:cost=size,arc")
    assert specs == [CacheConfig(policy="lru"),
                     CacheConfig(policy="s3fifo", policy_params={"small_fraction": 0.2,
                                                                 "move_to_main_threshold": 2}),
                     CacheConfig(policy="gdsf", policy_params={"cost": "size"}),
                     CacheConfig(policy="arc")]
    with pytest.raises(ValueError, match="given twice"):
        parse_policy_list("s3fifo:small_fraction=0.2,small_fraction=0.3")
    budgets = parse_budget_list("1MiB,50%,1048576", 10_000_000)
    assert [(b.nbytes, b.label) for b in budgets] == [(2**20, "1MiB"), (5_000_000, "50%")]


# ---------------------------------------------------------------------------------------------
# edge trace gen / info


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "oracleGeneral.bin"])
def test_zipf_gen_round_trips_with_the_requested_statistics(tmp_path, suffix):
    path = tmp_path / f"z.{suffix}"
    ok("trace", "gen", "zipf", "--requests", "20000", "--objects", "200", "--alpha", "1.0",
       "--size", "64KiB", "--seed", "3", "--out", str(path))
    trace = read_trace(path)
    assert len(trace) == 20000
    assert (trace.sizes == 64 * 1024).all()
    keys, counts = np.unique(trace.keys, return_counts=True)
    assert len(keys) <= 200 and keys.max() < 200
    # The most popular key gets about p(rank 1) of the requests (binomial sd ~ 0.003).
    assert abs(counts.max() / len(trace) - zipf_probabilities(200, 1.0)[0]) < 0.015
    assert np.all(np.diff(trace.times) >= 0)
    again = tmp_path / f"again.{suffix}"
    ok("trace", "gen", "zipf", "--requests", "20000", "--objects", "200", "--alpha", "1.0",
       "--size", "64KiB", "--seed", "3", "--out", str(again))
    assert again.read_bytes() == path.read_bytes()  # the seed reproduces the file


def test_scan_moe_tenants_azure_gen(tmp_path, scan_trace):
    scan = read_trace(scan_trace)
    scanned = scan.keys >= 400
    assert scanned.sum() == (12000 // 3000) * 600 and len(np.unique(scan.keys[scanned])) == 2400

    moe = tmp_path / "moe.csv"
    ok("trace", "gen", "moe", "--tokens", "50", "--layers", "4", "--experts", "8", "--top-k",
       "2", "--locality", "0.5", "--size", "1MiB", "--out", str(moe))
    t = read_trace(moe)
    assert len(t) == 50 * 4 * 2 and (t.sizes == 2**20).all()
    assert set((t.keys >> np.uint64(32)).tolist()) == {0, 1, 2, 3}

    tenants = tmp_path / "tenants.jsonl"
    ok("trace", "gen", "tenants", "--requests", "500", "--objects", "20", "--tenants", "3",
       "--context-dim", "4", "--out", str(tenants))
    t = read_trace(tenants)
    assert len(t) == 500 and t.contexts.shape == (500, 4) and len(t.tenant_names) <= 3

    arrivals = Path(__file__).parent / "data" / "azure_llm_conv_head.csv"
    n_rows = len(arrivals.read_text().strip().splitlines()) - 1
    azure = tmp_path / "azure.csv"
    ok("trace", "gen", "azure", "--arrivals", str(arrivals), "--objects", "50",
       "--out", str(azure))
    t = read_trace(azure)
    assert len(t) == n_rows and t.keys.max() < 50 and t.times[0] == 0.0


@pytest.mark.parametrize("args, message", [
    # click's FloatRange lets nan and inf through; the generators wrote degenerate traces.
    (["zipf", "--alpha", "nan"], "Invalid value for '--alpha': 'nan' is not a finite number"),
    (["zipf", "--alpha", "inf"], "Invalid value for '--alpha': 'inf' is not a finite number"),
    (["zipf", "--size-sigma", "nan"], "'--size-sigma': 'nan' is not a finite number"),
    (["zipf", "--rate", "inf"], "'--rate': 'inf' is not a finite number"),
    (["scan", "--alpha", "nan"], "'--alpha': 'nan' is not a finite number"),
    (["drift", "--size-sigma", "inf"], "'--size-sigma': 'inf' is not a finite number"),
    (["tenants", "--tenant-alpha", "nan"], "'--tenant-alpha': 'nan' is not a finite number"),
    (["moe", "--locality", "nan"], "'--locality': 'nan' is not a finite number"),
    (["moe", "--alpha", "inf"], "'--alpha': 'inf' is not a finite number"),
    # Sizes: an OverflowError past uint64, 1 byte for "1.5", silent clipping above uint32.
    (["zipf", "--size", "99999999999999999999"], "'--size': size '99999999999999999999' is "
                                                 "too large"),
    (["moe", "--size", "18446744073709551616"], "'--size': size '18446744073709551616' is too"),
    (["zipf", "--size", "1.5"], "'--size': size '1.5' is not a whole number of bytes"),
    (["zipf", "--size", "8GiB", "--size-sigma", "1"], "Invalid value for --size: with "
                                                      "--size-sigma, sizes are drawn up to"),
])
def test_trace_gen_rejects_bad_numbers_naming_the_option(tmp_path, args, message):
    out = tmp_path / "t.csv"
    output = failed("trace", "gen", *args, "--out", str(out), exit_code=2)
    assert message in output
    assert not out.exists()


def test_trace_gen_azure_rejects_an_infinite_phase(tmp_path):
    arrivals = Path(__file__).parent / "data" / "azure_llm_conv_head.csv"
    output = failed("trace", "gen", "azure", "--arrivals", str(arrivals), "--phase-seconds",
                    "inf", "--out", str(tmp_path / "a.csv"), exit_code=2)
    assert "'--phase-seconds': 'inf' is not a finite number" in output


def test_trace_gen_and_info_errors(tmp_path, scan_trace):
    assert "need 0 < burst_length < period" in failed(
        "trace", "gen", "scan", "--period", "100", "--burst", "100", "--out",
        str(tmp_path / "s.csv"))
    assert "cannot tell the trace format" in failed(
        "trace", "gen", "zipf", "--out", str(tmp_path / "s.txt"))
    assert "No such option '--period'" in failed(
        "trace", "gen", "zipf", "--period", "5", "--out", str(tmp_path / "s.csv"))
    assert "is not a size" in failed("trace", "gen", "zipf", "--size", "lots", "--out",
                                     str(tmp_path / "s.csv"))
    info = ok("trace", "info", "--trace", str(scan_trace)).output
    assert "12,000 requests" in info and "2,800 objects" in info and "one-hit objects" in info


# ---------------------------------------------------------------------------------------------
# edge calibrate


def test_calibrate_writes_a_loadable_profile(tmp_path):
    data = tmp_path / "adapters"
    data.mkdir()
    for i in range(3):
        (data / f"a{i}.bin").write_bytes(np.random.default_rng(i).bytes(256 * 1024))
    out = tmp_path / "device.yaml"
    result = ok("calibrate", "--dir", str(data), "--out", str(out), "--repeats", "1")
    profile = load_paging_cost(out)
    assert profile.name == "calibrated" and profile.cold_bandwidth_bytes_per_s > 0
    assert "GB/s" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no non-empty regular files" in failed("calibrate", "--dir", str(empty), "--out",
                                                  str(out))
