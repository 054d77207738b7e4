"""Shared plumbing of scripts/bench_*.py: machine description, repeated timing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform()}


def repeat(fn: Callable[[], float], repeats: int) -> dict:
    """Run ``fn`` (which returns one measurement) ``repeats`` times; median and spread."""
    values = [fn() for _ in range(repeats)]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "repeats": repeats}


def per_op_ns(fn: Callable[[int], None], n: int) -> float:
    """Nanoseconds per operation of ``fn(n)``, which performs ``n`` operations."""
    start = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - start) / n


def emit(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2, sort_keys=False)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
        print(f"wrote {out}", file=sys.stderr)
