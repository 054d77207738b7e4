"""Device calibration: real timed reads of real files, turned into a usable PagingCostModel."""

from __future__ import annotations

import os

import pytest

from edge.errors import ConfigError
from edge.paging_cost import load_paging_cost, save_paging_cost
from edge.sim import calibrate as calibrate_module
from edge.sim.calibrate import calibrate, time_read


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "adapters"
    d.mkdir()
    for i, size in enumerate((64 * 1024, 512 * 1024, 3 * 1024 * 1024)):
        (d / f"adapter-{i}.bin").write_bytes(os.urandom(size))
    (d / "empty").write_bytes(b"")
    (d / "subdir").mkdir()
    return d


def test_profile_from_real_reads_round_trips_through_yaml(files, tmp_path):
    profile = calibrate(files, name="test-box", repeats=2)
    assert profile.name == "test-box"
    for latency in (profile.cold_latency_s, profile.warm_latency_s):
        assert 0 < latency < 1.0
    for bandwidth in (profile.cold_bandwidth_bytes_per_s, profile.warm_bandwidth_bytes_per_s):
        assert 1e6 < bandwidth < 1e13  # bytes/s: 1 MB/s .. 10 TB/s brackets any real device
    assert profile.load_seconds_per_mib == 0.0
    # the model is usable: more bytes cost more time
    assert profile.paging_seconds(2**20) > profile.paging_seconds(2**10) > 0
    save_paging_cost(profile, tmp_path / "device.yaml")
    assert load_paging_cost(tmp_path / "device.yaml") == profile


def test_cold_reads_drop_the_page_cache_first(files, monkeypatch):
    advice = []
    real = getattr(os, "posix_fadvise", None)

    def recording_fadvise(fd, offset, length, how):
        advice.append((os.fstat(fd).st_size, offset, length, how))
        if real is not None:
            real(fd, offset, length, how)

    monkeypatch.setattr(os, "posix_fadvise", recording_fadvise, raising=False)
    monkeypatch.setattr(os, "POSIX_FADV_DONTNEED", getattr(os, "POSIX_FADV_DONTNEED", 4),
                        raising=False)
    calibrate(files, repeats=2)
    # once per file per repeat, whole file, DONTNEED; warm reads never drop anything
    assert len(advice) == 3 * 2
    assert {a[1:] for a in advice} == {(0, 0, os.POSIX_FADV_DONTNEED)}
    assert sorted({a[0] for a in advice}) == [64 * 1024, 512 * 1024, 3 * 1024 * 1024]


def test_time_read_reads_every_byte(files):
    path = files / "adapter-2.bin"
    timing = time_read(path, probe_bytes=4096, buf=bytearray(1 << 16), cold=False)
    assert timing.nbytes == path.stat().st_size
    assert timing.first_block_s > 0 and timing.rest_s > 0


def test_total_byte_cap_limits_the_files_read(files):
    chosen = calibrate_module._calibration_files(files, max_files=64, max_total_bytes=600 * 1024)
    assert [p.name for p in chosen] == ["adapter-0.bin", "adapter-1.bin"]


def test_missing_or_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="nowhere: calibration needs a directory"):
        calibrate(tmp_path / "nowhere")
    (tmp_path / "only-empty").mkdir()
    (tmp_path / "only-empty" / "zero").write_bytes(b"")
    with pytest.raises(ConfigError, match="only-empty: no non-empty regular files"):
        calibrate(tmp_path / "only-empty")
    with pytest.raises(ValueError, match="repeats"):
        calibrate(tmp_path, repeats=0)
