"""Which pages of a file are in the OS page cache (Linux, mincore(2)): for the tests of reading
experts past the page cache."""

from __future__ import annotations

import ctypes
import os


def page_cache_residency(path, offset: int, nbytes: int) -> list[bool]:
    """Whether each page lying wholly inside [offset, offset + nbytes) of the file is in the OS
    page cache, by mincore(2) on a shared mapping (mapping faults nothing in)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    page, size = os.sysconf("SC_PAGE_SIZE"), os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vector = (ctypes.c_ubyte * -(-size // page))()
            assert libc.mincore(addr, size, vector) == 0, os.strerror(ctypes.get_errno())
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    first, end = -(-offset // page), (offset + nbytes) // page
    assert end > first, "the range holds no whole page"
    return [bool(vector[i] & 1) for i in range(first, end)]
