"""The router's on-disk state format (version 1): a JSON header and an npz payload, no pickle.

Layout::

    b"EDGE-ROUTER\\n"                   12-byte magic
    <u32 format version> <u64 header length>   little-endian
    header (UTF-8 JSON)                 settings, arm ids, payload length and SHA-256
    payload (npz, uncompressed)         float64 / int64 arrays

A reader checks the magic, version, lengths and the payload's SHA-256 before parsing anything, so
a truncated or damaged file is refused with ``StateCorruptError`` instead of loading half a model.
Files are written with ``edge.fileio.write_atomic`` (temp file, fsync, rename, dir fsync).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zipfile
from typing import Any

import numpy as np

from edge.fileio import write_atomic
from edge.router.errors import StateCorruptError

MAGIC = b"EDGE-ROUTER\n"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<IQ")
_MAX_HEADER = 64 * 2**20


def encode_state(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    full = dict(header, payload_bytes=len(payload),
                payload_sha256=hashlib.sha256(payload).hexdigest())
    head = json.dumps(full, sort_keys=True).encode()
    return MAGIC + _PREFIX.pack(FORMAT_VERSION, len(head)) + head + payload


def decode_state(data: bytes, source: str = "<bytes>"
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    fixed = len(MAGIC) + _PREFIX.size
    if len(data) < fixed or not data.startswith(MAGIC):
        raise StateCorruptError(f"{source}: not an edge router state file (bad magic or "
                                f"{len(data)} bytes is too short)")
    version, head_len = _PREFIX.unpack_from(data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise StateCorruptError(f"{source}: state format version {version} is not supported "
                                f"(this edge reads version {FORMAT_VERSION})")
    if head_len > _MAX_HEADER or fixed + head_len > len(data):
        raise StateCorruptError(f"{source}: truncated: the header claims {head_len} bytes but "
                                f"the file has {len(data) - fixed} after the prefix")
    try:
        header = json.loads(data[fixed:fixed + head_len])
        expected_len = int(header["payload_bytes"])
        expected_sha = str(header["payload_sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StateCorruptError(f"{source}: damaged header: {exc}") from None
    payload = data[fixed + head_len:]
    if len(payload) != expected_len:
        raise StateCorruptError(f"{source}: truncated or padded: payload is {len(payload)} bytes, "
                                f"the header says {expected_len}")
    if hashlib.sha256(payload).hexdigest() != expected_sha:
        raise StateCorruptError(f"{source}: payload checksum mismatch: the file is damaged")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise StateCorruptError(f"{source}: payload is not a readable npz: {exc}") from None
    return header, arrays


def write_state(path: str | os.PathLike[str], header: dict[str, Any],
                arrays: dict[str, np.ndarray]) -> None:
    write_atomic(path, encode_state(header, arrays))


def read_state(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise StateCorruptError(f"{path}: cannot read router state: {exc.strerror}") from None
    return decode_state(data, str(path))
