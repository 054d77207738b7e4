"""A bounded reader of GGUF headers: metadata and tensor infos, never tensor data.

Adapter files come from wherever the operator copied them, and llama.cpp aborts the whole process
on some malformed inputs (a metadata value of the wrong type trips a ``GGML_ASSERT``), while
``gguf.GGUFReader`` on hostile input raises arbitrary exceptions or allocates whatever a crafted
count asks for. This reader checks every count and length against the bytes left in the file
*before* acting on it, keeps only small values, reads through a bounded window (no ``mmap``: a
file truncated while mapped would kill the process with SIGBUS), stops after a fixed number of
header items, and reports every problem as ``GGUFFormatError`` with a precise reason.

It accepts what ggml's own loader (``gguf_init_from_file``) accepts, checked the same way:
version 2 or 3 (little-endian), unique non-empty keys, no nested arrays, ``general.alignment`` a
power-of-two UINT32, tensor names under 64 bytes and unique, at most 4 dimensions, known tensor
types whose rows are whole blocks, and tensors packed in order at aligned offsets inside the file.

    header = read_header("adapter.gguf")
    header.kv["general.architecture"].value        # 'llama'
    header.tensors[0].shape, header.tensors[0].nbytes
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # v1 is gone from ggml; v2 and v3 share this layout
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME = 63  # GGML_MAX_NAME is 64 bytes including the terminating NUL
MAX_STRING = 1 << 30  # GGUF_MAX_STRING_LENGTH
MAX_ARRAY = 1 << 30  # GGUF_MAX_ARRAY_ELEMENTS
MAX_KEY = 1 << 16  # far above any real key; ggml allows more, nothing legitimate needs it
KEPT_STRING = 1 << 16  # string values longer than this are skipped, not kept
INT64_MAX = (1 << 63) - 1

# Smallest encodings, to bound the counts a header claims by the bytes that are left:
# a KV is key length (8) + a key of at least 1 byte + type (4) + a value of at least 1 byte;
# a tensor info is name length (8) + n_dims (4) + type (4) + offset (8).
MIN_KV_BYTES = 14
MIN_TENSOR_INFO_BYTES = 24

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.FLOAT64: "<d",
    GGUFValueType.BOOL: "<B",
}
_SCALAR_STRUCTS = {t: struct.Struct(f) for t, f in _SCALAR_FORMATS.items()}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class GGUFFormatError(ValueError):
    """The file is not a well-formed GGUF file; the message is the precise reason (no path)."""


@dataclass(frozen=True)
class KeyValue:
    """One metadata entry. ``type`` is the element type for arrays. ``value`` is the Python
    value of a scalar (str, int, float or bool); it is None for arrays, whose elements are
    skipped, and for strings longer than ``KEPT_STRING`` bytes. ``count`` is the number of
    elements of an array, or the byte length of a string, else 1."""

    key: str
    type: GGUFValueType
    is_array: bool
    count: int
    value: Any = None

    def describe(self) -> str:
        kind = self.type.name
        if self.is_array:
            return f"an array of {self.count} {kind}"
        return f"a {kind}"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it. ``shape`` is in numpy (row-major) order, the
    reverse of ggml's ``ne``; ``offset`` is the absolute byte offset of its data in the file;
    ``nbytes`` is the size of its data (ggml_nbytes), None for a type this reader does not know
    (then its extent cannot be checked either)."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int
    nbytes: int | None

    @property
    def ne(self) -> tuple[int, ...]:
        """ggml order: ne[0] is the length of a row."""
        return tuple(reversed(self.shape))

    @property
    def dtype(self) -> str:
        try:
            return GGMLQuantizationType(self.type_id).name
        except ValueError:
            return f"type{self.type_id}"

    @property
    def end(self) -> int:
        return self.offset + (self.nbytes or 0)


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    file_size: int
    alignment: int
    data_offset: int  # where the data section starts (absolute)
    kv: Mapping[str, KeyValue]
    tensors: tuple[TensorInfo, ...]


def ggml_nbytes(type_id: int, shape: tuple[int, ...]) -> int | None:
    """Bytes of a tensor's data, as ggml counts them; None for an unknown type."""
    sizes = _type_sizes(type_id)
    if sizes is None:
        return None
    block, type_size = sizes
    elements = 1
    for dim in shape:
        elements *= dim
    return elements // block * type_size


def _type_sizes(type_id: int) -> tuple[int, int] | None:
    try:
        return GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
    except (ValueError, KeyError):
        return None


class _Cursor:
    """Sequential reads through a bounded window of a file descriptor; every read is checked
    against the file size first, so a claimed length never turns into an allocation."""

    WINDOW = 1 << 20

    def __init__(self, fd: int, size: int, max_items: int) -> None:
        self.fd = fd
        self.size = size
        self.pos = 0
        self.items_left = max_items
        self._buf = b""
        self._buf_start = 0

    def remaining(self) -> int:
        return self.size - self.pos

    def count_items(self, n: int, what: str) -> None:
        self.items_left -= n
        if self.items_left < 0:
            raise GGUFFormatError(f"header has too many items ({what}); this reader stops "
                                  "after a fixed number to bound the time it takes")

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise GGUFFormatError(f"file ends inside {what} (needs {n} bytes at offset "
                                  f"{self.pos}, {self.remaining()} left)")
        start = self.pos - self._buf_start
        if start < 0 or start + n > len(self._buf):
            want = min(max(n, self.WINDOW), self.remaining())
            data = os.pread(self.fd, want, self.pos)
            if len(data) < n:  # the file shrank under us
                raise GGUFFormatError(f"file ends inside {what} (offset {self.pos}): it was "
                                      "truncated while being read")
            self._buf, self._buf_start, start = data, self.pos, 0
        self.pos += n
        return self._buf[start:start + n]

    def skip(self, n: int, what: str) -> None:
        if n > self.remaining():
            raise GGUFFormatError(f"file ends inside {what} (needs {n} bytes at offset "
                                  f"{self.pos}, {self.remaining()} left)")
        self.pos += n

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack(self.take(8, what))[0]

    def string(self, what: str, limit: int, keep: bool = True) -> tuple[int, bytes | None]:
        """(length, bytes): bytes only when ``keep`` and the length is at most ``limit``."""
        length = self.u64(f"the length of {what}")
        if length > MAX_STRING:
            raise GGUFFormatError(f"{what} claims {length} bytes (at most {MAX_STRING})")
        if length > self.remaining():
            raise GGUFFormatError(f"{what} claims {length} bytes but only {self.remaining()} "
                                  "are left in the file")
        if keep and length <= limit:
            return length, self.take(length, what)
        self.skip(length, what)
        return length, None


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GGUFFormatError(f"{what} is not valid UTF-8: {raw[:40]!r}") from None


def _value_type(code: int, what: str) -> GGUFValueType:
    try:
        return GGUFValueType(code)
    except ValueError:
        raise GGUFFormatError(f"{what} has invalid value type {code}") from None


def _read_kv(cur: _Cursor, index: int) -> KeyValue:
    length, raw = cur.string(f"key {index}", MAX_KEY)
    if length == 0:
        raise GGUFFormatError(f"key {index} is empty")
    if raw is None:
        raise GGUFFormatError(f"key {index} is {length} bytes long (at most {MAX_KEY})")
    key = _decode(raw, f"key {index}")
    what = f"the value of {key!r}"
    vtype = _value_type(cur.u32(f"the type of {key!r}"), f"key {key!r}")
    if vtype is GGUFValueType.ARRAY:
        etype = _value_type(cur.u32(f"the element type of {key!r}"), f"the array {key!r}")
        if etype is GGUFValueType.ARRAY:
            raise GGUFFormatError(f"key {key!r} is an array of arrays, which GGUF does not allow")
        count = cur.u64(f"the element count of {key!r}")
        if count > MAX_ARRAY:
            raise GGUFFormatError(f"the array {key!r} claims {count} elements "
                                  f"(at most {MAX_ARRAY})")
        if etype is GGUFValueType.STRING:
            if count * 8 > cur.remaining():
                raise GGUFFormatError(f"the array {key!r} claims {count} strings but only "
                                      f"{cur.remaining()} bytes are left")
            cur.count_items(count, f"the array {key!r} has {count} strings")
            for i in range(count):
                cur.string(f"element {i} of {key!r}", 0, keep=False)
        else:
            cur.skip(count * _SCALAR_STRUCTS[etype].size, what)
        return KeyValue(key, etype, True, count)
    if vtype is GGUFValueType.STRING:
        length, raw = cur.string(what, KEPT_STRING)
        value = None if raw is None else raw.decode("utf-8", errors="replace")
        return KeyValue(key, vtype, False, length, value)
    fmt = _SCALAR_STRUCTS[vtype]
    value = fmt.unpack(cur.take(fmt.size, what))[0]
    if vtype is GGUFValueType.BOOL:
        value = value != 0
    return KeyValue(key, vtype, False, 1, value)


def _read_tensor_info(cur: _Cursor, index: int) -> tuple[str, tuple[int, ...], int, int]:
    length, raw = cur.string(f"the name of tensor {index}", MAX_TENSOR_NAME)
    if raw is None:
        raise GGUFFormatError(f"the name of tensor {index} is {length} bytes long "
                              f"(ggml allows at most {MAX_TENSOR_NAME})")
    name = _decode(raw, f"the name of tensor {index}")
    n_dims = cur.u32(f"the dimension count of tensor {name!r}")
    if n_dims > MAX_DIMS:
        raise GGUFFormatError(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
    ne = [cur.u64(f"the dimensions of tensor {name!r}") for _ in range(n_dims)]
    elements = 1
    for dim in ne:
        if dim > INT64_MAX:
            raise GGUFFormatError(f"tensor {name!r} has a negative dimension ({ne})")
        elements *= dim
    if elements > INT64_MAX:
        raise GGUFFormatError(f"tensor {name!r} has {elements} elements, more than ggml can "
                              f"index (dimensions {ne})")
    type_id = cur.u32(f"the type of tensor {name!r}")
    sizes = _type_sizes(type_id)
    if sizes is not None and ne and ne[0] % sizes[0] != 0:
        raise GGUFFormatError(f"tensor {name!r} of type {GGMLQuantizationType(type_id).name} "
                              f"has rows of {ne[0]} elements, not a multiple of its block size "
                              f"{sizes[0]}")
    offset = cur.u64(f"the data offset of tensor {name!r}")
    return name, tuple(reversed(ne)), type_id, offset


def read_header(path: str | os.PathLike[str], *, max_items: int = 1 << 18,
                fd: int | None = None) -> GGUFHeader:
    """Read and check a GGUF file's header. ``max_items`` bounds the metadata entries, string
    array elements and tensor infos read (the default fits any adapter and small models; a base
    model's tokenizer arrays need more). Raises ``GGUFFormatError`` for a malformed file and
    ``OSError`` for one that cannot be opened; a path that is not a regular file (a FIFO, a
    device) is refused without reading, so it cannot block. ``fd``: read through this open
    descriptor of ``path`` (left open) rather than a new one, e.g. one advised not to read
    ahead."""
    path = Path(path)
    own = fd is None
    if own:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise GGUFFormatError("not a regular file")
        return _parse(path, _Cursor(fd, info.st_size, max_items))
    finally:
        if own:
            os.close(fd)


def _parse(path: Path, cur: _Cursor) -> GGUFHeader:
    if cur.size < 4 or cur.take(4, "the magic") != MAGIC:
        raise GGUFFormatError("not a GGUF file (no 'GGUF' magic at the start)")
    version = cur.u32("the version")
    if version not in SUPPORTED_VERSIONS:
        hint = " (a big-endian file?)" if version & 0xFFFF == 0 else ""
        raise GGUFFormatError(f"unsupported GGUF version {version}{hint}; "
                              f"supported: {', '.join(map(str, SUPPORTED_VERSIONS))}")
    n_tensors = cur.u64("the tensor count")
    n_kv = cur.u64("the metadata count")
    for count, minimum, what in ((n_kv, MIN_KV_BYTES, "metadata entries"),
                                 (n_tensors, MIN_TENSOR_INFO_BYTES, "tensors")):
        if count * minimum > cur.remaining():
            raise GGUFFormatError(f"header claims {count} {what}, more than the "
                                  f"{cur.remaining()} bytes left in the file can hold")
    cur.count_items(n_kv + n_tensors, f"{n_kv} metadata entries and {n_tensors} tensors")

    kv: dict[str, KeyValue] = {}
    for i in range(n_kv):
        entry = _read_kv(cur, i)
        if entry.key in kv:
            raise GGUFFormatError(f"key {entry.key!r} appears twice")
        kv[entry.key] = entry

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in kv:
        entry = kv["general.alignment"]
        if entry.is_array or entry.type is not GGUFValueType.UINT32:
            raise GGUFFormatError(f"general.alignment must be a UINT32, not {entry.describe()}")
        alignment = entry.value
        if alignment == 0 or alignment & (alignment - 1):
            raise GGUFFormatError(f"general.alignment {alignment} is not a power of two")

    raw_tensors = []
    names: set[str] = set()
    for i in range(n_tensors):
        name, shape, type_id, offset = _read_tensor_info(cur, i)
        if name in names:
            raise GGUFFormatError(f"tensor name {name!r} appears twice")
        names.add(name)
        raw_tensors.append((name, shape, type_id, offset))

    data_offset = -(-cur.pos // alignment) * alignment
    if n_tensors and data_offset > cur.size:
        raise GGUFFormatError(f"the data section would start at {data_offset}, past the end of "
                              f"the file ({cur.size} bytes)")

    tensors = []
    expected: int | None = 0  # ggml packs tensors in order, each padded to the alignment
    for name, shape, type_id, offset in raw_tensors:
        nbytes = ggml_nbytes(type_id, shape)
        if expected is not None and offset != expected:
            raise GGUFFormatError(f"tensor {name!r} has data offset {offset}, expected "
                                  f"{expected} (tensors are packed in order, aligned to "
                                  f"{alignment})")
        start = data_offset + offset
        end = start + (nbytes or 0)
        if end > cur.size:
            size = "its data" if nbytes is None else f"its {nbytes} bytes"
            raise GGUFFormatError(f"tensor {name!r} extends past the end of the file: "
                                  f"{size} at offset {start}, file is {cur.size} bytes")
        if nbytes is None:
            expected = None  # an unknown type: later offsets cannot be predicted
        elif expected is not None:
            expected += -(-nbytes // alignment) * alignment
        tensors.append(TensorInfo(name, shape, type_id, start, nbytes))

    return GGUFHeader(path=path, version=version, file_size=cur.size, alignment=alignment,
                      data_offset=data_offset, kv=kv, tensors=tuple(tensors))
