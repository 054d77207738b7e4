"""The README's examples run as written: the embedding example under "One request path", against
the tiny models its setup line writes, in a directory laid out as it says."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block_after(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def test_the_runtime_example_runs_as_written(tiny_models, tmp_path, monkeypatch, capsys):
    code = python_block_after("## One request path")
    # "python scripts/make_tiny_models.py models/tiny" writes exactly the fixture's files.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_models.base.parent)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    lines = capsys.readouterr().out.splitlines()
    names = {p.stem for p in tiny_models.adapters}
    chosen, hit, *_ = lines[0].split(" ")
    assert chosen in names and hit == "False"  # nothing was resident before the first request
    assert lines[1].startswith("[{'arm': ")  # the explanation
    assert lines[-2] in names  # route() names an adapter
    assert 0.0 <= float(lines[-1]) <= 1.0  # the hit ratio
