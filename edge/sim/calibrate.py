"""Measure this device's read latency and bandwidth on real files: the paging cost model.

``calibrate(directory)`` reads the files in ``directory`` (ideally the adapters or expert files
that will be paged) and returns a ``PagingCostModel``; ``edge.paging_cost.save_paging_cost``
writes it as YAML for the simulator and the router.

Each read is timed in two parts: from ``open`` to the first ``probe_bytes`` (latency: what a
small object costs) and the rest of the file (bandwidth: what each further byte costs), so that
``paging_seconds(n) = latency + n / bandwidth`` fits both small and large objects.

Cold reads are best-effort: before each one the file's pages are dropped from the OS page cache
with ``posix_fadvise(POSIX_FADV_DONTNEED)``. The kernel may ignore the advice (pages mapped or
dirty elsewhere, tmpfs and some network or overlay filesystems keep them), a drive's own cache
still answers, and where ``posix_fadvise`` does not exist (macOS, Windows) nothing is dropped;
then the "cold" figures are really warm ones. Dropping caches system-wide would be more
reliable but needs root, which a calibration step should not ask for.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ConfigError
from edge.paging_cost import PagingCostModel

_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class ReadTiming:
    """One timed read of one file."""

    nbytes: int
    first_block_s: float  # open + first probe_bytes
    rest_s: float  # the remaining nbytes - probe bytes


def _calibration_files(directory: Path, max_files: int, max_total_bytes: int) -> list[Path]:
    if not directory.is_dir():
        raise ConfigError(f"{directory}: calibration needs a directory of files to read")
    files, total = [], 0
    for path in sorted(directory.iterdir()):
        try:
            if not path.is_file():
                continue
            size = path.stat().st_size
        except OSError:  # vanished or unreadable metadata: not a file we can time
            continue
        if size == 0 or (files and total + size > max_total_bytes):
            continue
        files.append(path)
        total += size
        if len(files) == max_files:
            break
    if not files:
        raise ConfigError(f"{directory}: no non-empty regular files to read for calibration")
    return files


def _drop_from_page_cache(fd: int) -> None:
    # Best-effort by design (see the module docstring): absent or refused advice is not an error.
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    try:
        advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


def time_read(path: Path, probe_bytes: int, buf: bytearray, cold: bool) -> ReadTiming:
    """Read ``path`` completely and time it; ``cold`` first drops it from the page cache."""
    if cold:
        fd = os.open(path, os.O_RDONLY)
        try:
            _drop_from_page_cache(fd)
        finally:
            os.close(fd)
    view = memoryview(buf)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        first = f.readinto(view[:probe_bytes])
        after_probe = time.perf_counter()
        rest = 0
        while True:
            n = f.readinto(view)
            if not n:
                break
            rest += n
    end = time.perf_counter()
    return ReadTiming(first + rest, after_probe - start, end - after_probe)


def _latency_and_bandwidth(timings: list[ReadTiming], probe_bytes: int) -> tuple[float, float]:
    latency = statistics.median(t.first_block_s for t in timings)
    # Bandwidth from the bytes after the probe only: their time carries no per-file latency.
    long_reads = [t for t in timings if t.nbytes > probe_bytes]
    if long_reads:
        nbytes = sum(t.nbytes - probe_bytes for t in long_reads)
        seconds = sum(t.rest_s for t in long_reads)
    else:  # only tiny files: the best available estimate includes the latency
        nbytes = sum(t.nbytes for t in timings)
        seconds = sum(t.first_block_s for t in timings)
    return latency, nbytes / max(seconds, 1e-9)


def calibrate(directory: str | os.PathLike[str], *, name: str = "calibrated", repeats: int = 3,
              probe_bytes: int = 4096, max_files: int = 64,
              max_total_bytes: int = 1 << 30) -> PagingCostModel:
    """Measure cold and warm reads of the files in ``directory`` and return the profile.

    Reads up to ``max_files`` files (in name order, at most ``max_total_bytes`` together)
    ``repeats`` times cold and ``repeats`` times warm. Latency is the median time to open a file
    and read its first ``probe_bytes``; bandwidth is bytes over seconds for the remainder.
    ``load_seconds_per_mib`` (work after the read, e.g. adapter init) is left at 0: it needs the
    backend, not the disk.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if probe_bytes < 1:
        raise ValueError(f"probe_bytes must be >= 1, got {probe_bytes}")
    files = _calibration_files(Path(directory), max_files, max_total_bytes)
    buf = bytearray(max(_READ_CHUNK, probe_bytes))
    cold: list[ReadTiming] = []
    warm: list[ReadTiming] = []
    try:
        for _ in range(repeats):
            cold.extend(time_read(p, probe_bytes, buf, cold=True) for p in files)
            for p in files:
                time_read(p, probe_bytes, buf, cold=False)  # make sure it is cached
                warm.append(time_read(p, probe_bytes, buf, cold=False))
    except OSError as exc:
        raise ConfigError(f"{exc.filename}: cannot read for calibration: {exc.strerror}") from None
    cold_latency, cold_bandwidth = _latency_and_bandwidth(cold, probe_bytes)
    warm_latency, warm_bandwidth = _latency_and_bandwidth(warm, probe_bytes)
    return PagingCostModel(name=name, cold_latency_s=cold_latency,
                         cold_bandwidth_bytes_per_s=cold_bandwidth,
                         warm_latency_s=warm_latency, warm_bandwidth_bytes_per_s=warm_bandwidth)
