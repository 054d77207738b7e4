"""The CLI entry point and `edge demo` (what `make demo` runs)."""

from __future__ import annotations

import re
import subprocess
import sys

from click.testing import CliRunner

from edge.cache import policy_names
from edge.cli import main


def test_demo_prints_one_line_per_policy_and_the_bound():
    result = CliRunner().invoke(main, ["demo", "--requests", "20000", "--seed", "1"])
    assert result.exit_code == 0, result.output
    for name in policy_names():
        rows = re.findall(rf"^  {name}\s+(0\.\d+)\s+(0\.\d+)\s+(\d+\.\d)", result.output, re.M)
        assert len(rows) == 2, (name, result.output)  # one row per budget
    bounds = [float(x) for x in re.findall(r"^  bound\s+(\d\.\d+)", result.output, re.M)]
    hit_ratios = [float(x) for x in re.findall(r"^  \w+\s+(0\.\d+)\s+0\.\d+", result.output, re.M)]
    assert len(bounds) == 2 and max(hit_ratios) <= max(bounds)


def test_demo_rejects_a_tiny_trace():
    result = CliRunner().invoke(main, ["demo", "--requests", "10"])
    assert result.exit_code != 0 and "at least 1000" in result.output


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "edge.cli", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "demo" in out.stdout


def test_route_bench_prints_json_per_strategy():
    import json

    result = CliRunner().invoke(main, ["route-bench", "--arms", "6", "--steps", "400",
                                       "--strategy", "random", "--strategy", "oracle"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = report["results"]
    assert set(rows) == {"random", "oracle"} and report["steps"] == 400
    assert rows["oracle"]["objective"] > rows["random"]["objective"]
