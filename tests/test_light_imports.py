"""Reading and validating a policy file loads neither the C core nor the router's machinery.

Each check runs in a fresh interpreter, so what earlier tests imported cannot hide a heavy import.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEAVY = ("edge._native", "edge.cache.paged", "edge.router.router", "edge.router.linucb",
         "edge.router.polar", "edge.sim", "edge.runtime")


def loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint('\\n'.join(m for m in sys.modules if m.startswith('edge')))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(HEAVY))


def test_import_edge_config_is_light():
    assert heavy(loaded_after("import edge.config")) == []


def test_validating_every_shipped_policy_file_is_light():
    code = ("from pathlib import Path\nfrom edge.config import load_config\n"
            "for p in sorted(Path('policies').glob('*.yaml')): load_config(p)")
    assert heavy(loaded_after(code)) == []


def test_the_probe_sees_heavy_imports():
    # The check above can fail: building a cache does load the C core.
    assert "edge._native" in heavy(loaded_after(
        "from edge.cache import PagedCache\nPagedCache(10, 'lru', load_workers=0)"))


def test_import_edge_is_light_and_hands_on_the_runtime():
    assert heavy(loaded_after("import edge")) == []
    assert "edge.runtime" in loaded_after("import edge\nedge.Runtime")
