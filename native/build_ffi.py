"""cffi build script for edge's C core: compiles native/src/*.c into edge._native._edge_core.

The cdef is read from the real public header (native/include/edge.h), so the Python binding and
the C library can never disagree about a signature.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

NATIVE = Path(__file__).resolve().parent
HEADER = NATIVE / "include" / "edge.h"
SOURCES = sorted((NATIVE / "src").glob("*.c"))


def cdef_from_header(text: str) -> str:
    """The header minus what cffi's parser does not take: preprocessor lines other than integer
    #defines, and the C++ guard."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = []
    skip_cplusplus = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#ifdef __cplusplus"):
            skip_cplusplus = True
            continue
        if skip_cplusplus:
            if stripped.startswith("#endif"):
                skip_cplusplus = False
            continue
        if stripped.startswith("#"):
            if re.match(r"#define\s+\w+\s+-?\d+\s*$", stripped):
                lines.append(line)
            continue
        lines.append(line)
    return "\n".join(lines)


ffibuilder = FFI()
ffibuilder.cdef(cdef_from_header(HEADER.read_text()))

# Sources are given relative to the project root: setuptools runs this from there and rejects
# absolute paths in a wheel build.
_root = NATIVE.parent
ffibuilder.set_source(
    "edge._native._edge_core",
    '#include "edge.h"',
    sources=[os.path.relpath(src, _root) for src in SOURCES],
    include_dirs=[os.path.relpath(NATIVE / "include", _root)],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra",
                        "-Werror=implicit-function-declaration"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
