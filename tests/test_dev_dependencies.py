"""Declared dev dependencies are imported plainly by the tests, never skipped over.

A module-level importorskip of libcachesim once dropped 16 Belady/PFOO-L tests that do
not use libCacheSim at all, silently, on any install without it. What pyproject.toml's ``dev``
extra lists is part of a test install: if one is missing the install is broken and the tests
must say so by failing. ``importorskip`` stays for dependencies that are truly optional, per test.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dev_dependencies() -> set[str]:
    """Import names of the ``dev`` extra (read with a regex: tomllib is 3.11+)."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dev = \[(.*?)^\]", text, re.MULTILINE | re.DOTALL)
    assert block, "no dev extra in pyproject.toml"
    names = re.findall(r'^\s*"([A-Za-z0-9_.\-]+)', block.group(1), re.MULTILINE)
    return {name.lower().replace("-", "_") for name in names}


def test_the_dev_extra_is_read():
    assert {"pytest", "hypothesis", "libcachesim"} <= dev_dependencies()


def test_no_test_skips_over_a_declared_dev_dependency():
    declared = dev_dependencies()
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for match in re.finditer(r"importorskip\(\s*['\"]([\w.]+)['\"]", path.read_text()):
            if match.group(1).split(".")[0].lower() in declared:
                offenders.append(f"{path.name}: importorskip({match.group(1)!r})")
    assert not offenders, ("import these plainly, they are declared dev dependencies: "
                           + "; ".join(offenders))
