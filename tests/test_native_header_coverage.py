"""Every function of the C core's public header is called by its sanitizer test program.

native/tests/test_index.c runs under AddressSanitizer + UBSan (tests/test_native_index.py); a
function it never calls is a function whose out-of-bounds write would pass that run. So a
function added to native/include/edge.h without a C test fails the suite here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "native" / "include" / "edge.h"
C_TEST = ROOT / "native" / "tests" / "test_index.c"

# Comments and string / character literals, scanned left to right so that whichever starts first
# wins: a name inside a comment or a failure message is not a call.
_NOT_CODE = re.compile(
    r"/\*.*?\*/|//[^\n]*|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'", re.DOTALL
)
# A function declaration: `int edge_x(`, `const char *edge_x(`, or any other return type.
_DECLARATION = re.compile(
    r"^[ \t]*(?:const\s+)?[A-Za-z_]\w*[\s*]+(edge_\w+)\s*\(", re.MULTILINE
)


def _code(path: Path) -> str:
    return _NOT_CODE.sub(" ", path.read_text())


def declared_functions() -> list[str]:
    return sorted(set(_DECLARATION.findall(_code(HEADER))))


def test_the_header_parses_into_its_functions():
    names = declared_functions()
    # Every `edge_x(` in the header's code is a declaration the pattern saw (nothing missed
    # for an unusual return type or line break).
    mentioned = set(re.findall(r"\b(edge_\w+)\s*\(", _code(HEADER)))
    assert mentioned == set(names)
    assert {
        "edge_status_str",
        "edge_index_init",
        "edge_index_free",
        "edge_index_acquire_slot",
        "edge_index_acquire_many",
        "edge_index_replay",
        "edge_index_verify",
    } <= set(names)


def test_every_header_function_is_called_by_the_sanitizer_test():
    test_code = _code(C_TEST)
    missing = [name for name in declared_functions()
               if not re.search(rf"\b{name}\s*\(", test_code)]
    assert not missing, (
        f"declared in {HEADER.name} but never called in {C_TEST.name} (so never run under the "
        f"sanitizers): {', '.join(missing)}"
    )
