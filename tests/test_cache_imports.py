"""``edge.cache`` is a lazy facade and the policies package finds its own modules.

Validating a policy name (what ``edge.config`` does for every policy file) must not load the C
core: each import check runs in a fresh interpreter (the venv's python), so modules that other
tests imported cannot hide a heavy import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import edge.cache
from edge.cache import policies
from edge.cache.policies import POLICIES, policy_modules, policy_names

ROOT = Path(__file__).resolve().parents[1]
POLICY_DIR = ROOT / "edge" / "cache" / "policies"


def modules_after(code: str) -> list[str]:
    probe = code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_validating_a_policy_does_not_load_the_c_core():
    loaded = modules_after("from edge.cache.policies import validate_policy\n"
                           "validate_policy('arc')\nvalidate_policy('s3fifo', "
                           "{'small_fraction': 0.2})")
    assert "edge.cache.policies.arc" in loaded  # the probe saw the policies load
    assert [m for m in loaded if m.startswith(("edge._native", "edge.cache.paged", "numpy"))] \
        == []


def test_the_facade_hands_names_on_lazily():
    light = modules_after("import edge.cache\nedge.cache.policy_names()\n"
                          "from edge.cache import EvictionPolicy, make_policy, register_policy")
    assert not any(m.startswith("edge._native") for m in light)
    heavy = modules_after("from edge.cache import PagedCache")
    assert "edge._native" in heavy and "edge.cache.paged" in heavy  # the check can fail


def test_the_facade_exports_what_it_lists():
    assert sorted(edge.cache.__all__) == sorted(edge.cache._HOME)
    for name in edge.cache.__all__:
        assert getattr(edge.cache, name) is not None
        assert name in dir(edge.cache)
    namespace: dict = {}
    exec("from edge.cache import *", namespace)
    assert set(edge.cache.__all__) <= set(namespace)
    try:
        edge.cache.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("an unknown name must be an AttributeError")


def test_every_module_of_the_package_is_discovered_and_registers_a_policy():
    on_disk = sorted(path.stem for path in POLICY_DIR.glob("*.py")
                     if not path.stem.startswith("_")
                     and path.stem not in policies.NOT_POLICY_MODULES)
    assert policy_modules() == on_disk
    homes = {cls.__module__.rsplit(".", 1)[-1] for cls in POLICIES.values()
             if cls.__module__.startswith("edge.cache.policies.")}
    assert set(on_disk) <= homes, f"modules without a registered policy: {set(on_disk) - homes}"
    assert policy_names() == sorted(policy_names())


def test_no_policy_module_imports_the_c_core_or_numpy_at_module_level():
    for path in sorted(POLICY_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only; imports inside functions are fine
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            heavy = [n for n in names if n.startswith(("edge._native", "numpy", "edge.cache.paged",
                                                       "edge.cache.view"))]
            assert not heavy, f"{path.name} imports {heavy} at module level"
