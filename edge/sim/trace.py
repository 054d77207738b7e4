"""Traces: the in-memory ``Trace``, streaming ``TraceReader``, ``read_trace`` and the writers.

A trace is a sequence of requests ``(time, key, size[, load_cost][, tenant][, context])``. In
memory it is one frozen ``Trace`` of numpy arrays, because the replay engine hands ``keys``,
``sizes`` and ``times`` straight to the C core (``NativeIndex.replay``) without copying. Files too
large for memory are read with ``TraceReader``, which yields one ``Request`` at a time or
``Trace`` chunks of bounded length.

Formats (``fmt``; sniffed from the file name when None):

``csv``
    edge's CSV. Header ``time,key,size`` then any of ``load_cost``, ``tenant``, ``context``. A
    context cell holding a JSON array of numbers (``"[0.1, 0.2]"``) is a feature vector, any other
    cell is text.
``jsonl``
    One object per line: ``{"time": .., "key": .., "size": .., "load_cost": .., "tenant": ..,
    "context": [floats] or "text"}``. The optional fields of the first record must appear in
    every record (a trace whose columns come and go is a bug in whatever wrote it).
``oracleGeneral``
    libCacheSim's binary format (``.oracleGeneral.bin``, ``.bin``): 24-byte little-endian records
    ``uint32 time, uint64 obj_id, uint32 obj_size, int64 next_access_vtime``.
``lcs_csv``
    libCacheSim-style CSV with 1-based column numbers, given as ``LcsCsvColumns``.

Keys are unsigned 64-bit integers. In CSV and JSONL a key written with ASCII digits only is that
integer; any other key is a name, mapped to a stable id (the first 8 bytes of its BLAKE2b digest)
and remembered in ``Trace.key_names`` so writers can write the name back.

A malformed or truncated line raises ``TraceError`` naming the file, the 1-based line (record,
for oracleGeneral) and what is wrong; with ``skip_bad=True`` such lines are skipped and counted in
``Trace.skipped`` / ``TraceReader.skipped``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np

from edge.errors import TraceError
from edge.fileio import write_atomic
from edge.sim.reuse import next_access_indices

FORMATS = ("csv", "jsonl", "oracleGeneral", "lcs_csv")
CSV_REQUIRED = ("time", "key", "size")
CSV_OPTIONAL = ("load_cost", "tenant", "context")
# JSONL only: what the device saw (the daemon's access log writes it; a replay decides hits
# for itself, the eviction trainer may compare).
JSONL_ONLY = ("hit",)
# May be present in some records and absent in others (JSONL): an access log has a context
# only for the requests the router chose an adapter for.
PER_RECORD_OPTIONAL = frozenset({"context"})

ORACLE_GENERAL_DTYPE = np.dtype([
    ("time", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"), ("next_access_vtime", "<i8"),
])
assert ORACLE_GENERAL_DTYPE.itemsize == 24

_U64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1
_COMPRESSED_SUFFIXES = (".zst", ".gz", ".xz", ".bz2", ".lz4")

Context = Union[tuple[float, ...], str, None]


class Request(NamedTuple):
    """One request, as the streaming reader yields it."""

    time: float
    key: int
    size: int
    load_cost: float | None = None
    tenant: str | None = None
    context: Context = None
    hit: bool | None = None


def key_id(name: str) -> int:
    """The stable uint64 id of a key name: the first 8 bytes of its BLAKE2b digest."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def total_bytes(sizes: np.ndarray) -> int:
    """The exact sum of byte sizes, as a Python int.

    numpy's uint64 sum wraps silently past 2**64 (two 2**63-byte objects would total 0), so the
    high and low 32-bit halves are summed apart: each half-sum fits in uint64 for up to 2**32
    values, and chunks keep it so.
    """
    sizes = np.asarray(sizes, dtype=np.uint64)
    low_mask, shift, total = np.uint64(_U32_MAX), np.uint64(32), 0
    for start in range(0, len(sizes), 1 << 31):
        chunk = sizes[start:start + (1 << 31)]
        total += (int((chunk >> shift).sum(dtype=np.uint64)) << 32) + int(
            (chunk & low_mask).sum(dtype=np.uint64))
    return total


def check_byte_total(sizes: np.ndarray) -> int:
    """The exact total of ``sizes``; ``TraceError`` when it reaches 2**64 bytes.

    The replay counts bytes (resident, requested, hit) in uint64, as the C core does. None of
    those counts exceeds the trace's total, so below 2**64 none of them can wrap.
    """
    total = total_bytes(sizes)
    if total > _U64_MAX:
        raise TraceError(f"the trace's requests total {total} bytes, 2**64 or more: the replay "
                         "counts bytes in uint64; replay fewer requests (--limit) or smaller "
                         "sizes")
    return total


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view: the Trace cannot be changed through it, the caller's flags stay."""
    view = a.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False)
class Trace:
    """A whole trace as read-only numpy arrays, one entry per request.

    ``tenants`` holds int32 codes into ``tenant_names``. ``contexts`` is either an ``(n, d)``
    float64 array of feature vectors or an ``(n,)`` object array of strings; a request without
    one (a JSONL record that left it out) is a row of NaN or None. ``hits``: whether each
    request hit where it was recorded (an access log's ``hit``), else None. Arrays of the right
    dtype are kept without copying, as read-only views: a Trace is cheap to build from arrays
    and cannot be changed through its fields.
    """

    times: np.ndarray
    keys: np.ndarray
    sizes: np.ndarray
    load_costs: np.ndarray | None = None
    tenants: np.ndarray | None = None
    tenant_names: tuple[str, ...] = ()
    contexts: np.ndarray | None = None
    key_names: Mapping[int, str] = field(default_factory=dict)
    skipped: int = 0
    hits: np.ndarray | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: coerce once here, then the arrays are read-only
        put(self, "times", _readonly(np.asarray(self.times, dtype=np.float64)))
        put(self, "keys", _readonly(np.asarray(self.keys, dtype=np.uint64)))
        put(self, "sizes", _readonly(np.asarray(self.sizes, dtype=np.uint64)))
        n = len(self.keys)
        if self.times.ndim != 1 or self.keys.ndim != 1 or self.sizes.ndim != 1:
            raise ValueError("times, keys and sizes must be 1-D")
        if len(self.times) != n or len(self.sizes) != n:
            raise ValueError(f"times, keys and sizes differ in length "
                             f"({len(self.times)}, {n}, {len(self.sizes)})")
        if n and not self.sizes.all():
            raise ValueError(f"size 0 at request {int(np.argmin(self.sizes))}; sizes must be >= 1")
        if self.load_costs is not None:
            put(self, "load_costs", _readonly(np.asarray(self.load_costs, dtype=np.float64)))
            if self.load_costs.shape != (n,):
                raise ValueError(f"load_costs has shape {self.load_costs.shape}, expected ({n},)")
        if self.tenants is not None:
            put(self, "tenants", _readonly(np.asarray(self.tenants, dtype=np.int32)))
            put(self, "tenant_names", tuple(self.tenant_names))
            if self.tenants.shape != (n,):
                raise ValueError(f"tenants has shape {self.tenants.shape}, expected ({n},)")
            if n and (self.tenants.min() < 0 or self.tenants.max() >= len(self.tenant_names)):
                raise ValueError(f"tenant codes must index tenant_names "
                                 f"({len(self.tenant_names)} names)")
        if self.contexts is not None:
            ctx = np.asarray(self.contexts)
            ctx = ctx.astype(object if ctx.dtype.kind in "OUS" else np.float64, copy=False)
            if len(ctx) != n or (ctx.dtype == object and ctx.ndim != 1) or ctx.ndim > 2:
                raise ValueError(f"contexts has shape {ctx.shape}, expected ({n},) of text "
                                 f"or ({n}, d) of floats")
            put(self, "contexts", _readonly(ctx))
        if self.hits is not None:
            put(self, "hits", _readonly(np.asarray(self.hits, dtype=bool)))
            if self.hits.shape != (n,):
                raise ValueError(f"hits has shape {self.hits.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def context_kind(self) -> str | None:
        """``"vector"``, ``"text"`` or None."""
        if self.contexts is None:
            return None
        return "text" if self.contexts.dtype == object else "vector"

    def slice(self, start: int, stop: int) -> Trace:
        """Requests ``start:stop`` (views; the key names and tenant names are shared)."""
        def cut(a):
            return None if a is None else a[start:stop]
        return Trace(self.times[start:stop], self.keys[start:stop], self.sizes[start:stop],
                     cut(self.load_costs), cut(self.tenants), self.tenant_names,
                     cut(self.contexts), self.key_names, self.skipped, cut(self.hits))

    def requests(self) -> Iterator[Request]:
        """The requests one by one (slow; for tests and small traces)."""
        for i in range(len(self)):
            yield self._request(i)

    def _request(self, i: int) -> Request:
        ctx: Context = None
        if self.contexts is not None:
            if self.context_kind == "text":
                ctx = self.contexts[i]
            elif not np.isnan(self.contexts[i]).all():
                ctx = tuple(float(v) for v in self.contexts[i])
        return Request(
            float(self.times[i]), int(self.keys[i]), int(self.sizes[i]),
            None if self.load_costs is None else float(self.load_costs[i]),
            None if self.tenants is None else self.tenant_names[self.tenants[i]], ctx,
            None if self.hits is None else bool(self.hits[i]))


# ---------------------------------------------------------------------------------------------
# Parsing one field


class _BadLine(Exception):
    """One line cannot be parsed; the reader adds the path and line number."""


def _parse_time(value) -> float:
    if isinstance(value, bool):
        raise _BadLine(f"time {value!r} is not a number")
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise _BadLine(f"time {value!r} is not a number") from None
    if not math.isfinite(t):
        raise _BadLine(f"time {value!r} is not finite")
    return t


def _parse_size(value) -> int:
    size = int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else value
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise _BadLine(f"size {value!r} is not a positive integer")
    if size > _U64_MAX:
        raise _BadLine(f"size {value!r} is too large: sizes are at most 2**64-1 bytes")
    return size


def _parse_load_cost(value) -> float:
    if isinstance(value, bool):
        raise _BadLine(f"load_cost {value!r} is not a number")
    try:
        c = float(value)
    except (TypeError, ValueError):
        raise _BadLine(f"load_cost {value!r} is not a number") from None
    if not (math.isfinite(c) and c >= 0):
        raise _BadLine(f"load_cost {value!r} must be a finite number >= 0")
    return c


def _parse_tenant(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise _BadLine(f"tenant {value!r} must be a non-empty string or an integer")
    return str(value)


def _parse_hit(value) -> bool:
    if not isinstance(value, bool):
        raise _BadLine(f"hit must be true or false, got {value!r}")
    return value


def _parse_vector(values) -> tuple[float, ...]:
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                             and math.isfinite(v) for v in values):
        raise _BadLine("context vector must be a non-empty list of finite numbers")
    return tuple(float(v) for v in values)


def _csv_context(cell: str) -> Context:
    """A CSV context cell: a JSON array of numbers is a vector, anything else is text."""
    if cell.startswith("[") and cell.endswith("]"):
        try:
            values = json.loads(cell)
        except (ValueError, RecursionError):  # not JSON, or nested too deep for a vector
            return cell
        if isinstance(values, list) and values and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return _parse_vector(values)
    return cell


def _json_context(value) -> Context:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return _parse_vector(value)
    raise _BadLine(f"context must be a list of numbers or a string, not {type(value).__name__}")


class _KeyTable:
    """Key tokens -> uint64 ids, remembering the names of non-integer keys."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}

    def parse(self, token) -> int:
        if isinstance(token, int) and not isinstance(token, bool):
            if not 0 <= token <= _U64_MAX:
                raise _BadLine(f"integer key {token} is outside 0..2**64-1")
            return token
        if not isinstance(token, str) or token == "":
            raise _BadLine(f"key {token!r} must be a non-empty string or a non-negative integer")
        if token.isascii() and token.isdigit():
            return self.parse(int(token))
        return self.parse_name(token)

    def parse_name(self, token: str) -> int:
        """Hash ``token`` as a name even when it is all digits (libCacheSim's
        ``obj_id_is_num=0``)."""
        if token == "":
            raise _BadLine("empty key")
        kid = key_id(token)
        known = self.names.setdefault(kid, token)
        if known != token:  # 2**-64 per pair: worth a check, never worth a workaround
            raise _BadLine(f"key {token!r} collides with key {known!r} (both hash to {kid})")
        return kid


class _Consistency:
    """Checks that every record carries the same optional fields and context kind/dimension."""

    def __init__(self, fields: frozenset[str] | None = None) -> None:
        self.fields = fields
        self.context_shape: tuple[str, int] | None = None

    def check(self, fields: frozenset[str], context: Context) -> None:
        if self.fields is None:
            self.fields = fields
        elif fields != self.fields:
            raise _BadLine(f"optional fields {sorted(fields)} differ from the first record's "
                           f"{sorted(self.fields)}")
        if context is None:
            return
        shape = ("text", 0) if isinstance(context, str) else ("vector", len(context))
        if self.context_shape is None:
            self.context_shape = shape
        elif shape != self.context_shape:
            raise _BadLine(f"context is a {_describe(shape)} but earlier ones are "
                           f"{_describe(self.context_shape)}s")


def _describe(shape: tuple[str, int]) -> str:
    return "text" if shape[0] == "text" else f"vector of {shape[1]}"


# ---------------------------------------------------------------------------------------------
# Record sources: each yields (line_number, Request | _BadLine) so one driver handles errors.


@dataclass(frozen=True)
class LcsCsvColumns:
    """Where a libCacheSim-style CSV keeps its fields: 1-based column numbers, 0 = absent.

    Without a time column the request index is the time; without a size column every size is 1.
    ``numeric_keys=False`` reads keys as names (hashed), like libCacheSim's ``obj_id_is_num=0``.
    """

    time: int
    key: int
    size: int = 0
    has_header: bool = True
    delimiter: str = ","
    numeric_keys: bool = True

    def __post_init__(self) -> None:
        if self.key < 1:
            raise ValueError(f"key column must be >= 1 (1-based), got {self.key}")
        if self.time < 0 or self.size < 0:
            raise ValueError("time and size columns are 1-based, or 0 for absent")
        if len(self.delimiter) != 1:
            raise ValueError(f"delimiter must be one character, got {self.delimiter!r}")


def _csv_rows(reader):
    """(line number, row) for every non-empty row; a row csv cannot parse comes as a _BadLine,
    and reading goes on after it."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, _BadLine(f"unreadable CSV: {exc}")
            continue
        if row:
            yield reader.line_num, row


def _edge_csv_records(f, keys: _KeyTable, rules: _Consistency):
    reader = csv.reader(f)
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in CSV_REQUIRED + CSV_OPTIONAL]
    missing = [h for h in CSV_REQUIRED if h not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise TraceError(
            f"{f.name}:1: header {','.join(header)!r} is not edge's CSV header "
            f"(time,key,size then any of load_cost,tenant,context; unknown {unknown}, missing "
            f"{missing}). For a libCacheSim-style CSV pass fmt='lcs_csv' and LcsCsvColumns.")
    col = {h: i for i, h in enumerate(header)}
    optional = frozenset(h for h in CSV_OPTIONAL if h in col)
    rules.fields = optional
    width = len(header)
    for line, row in _csv_rows(reader):
        if isinstance(row, _BadLine):
            yield line, row
            continue
        try:
            if len(row) != width:
                raise _BadLine(f"{len(row)} fields, header has {width}")
            ctx = _csv_context(row[col["context"]]) if "context" in col else None
            rules.check(optional, ctx)
            yield reader.line_num, Request(
                _parse_time(row[col["time"]]), keys.parse(row[col["key"]].strip()),
                _parse_size(row[col["size"]].strip()),
                _parse_load_cost(row[col["load_cost"]]) if "load_cost" in col else None,
                _parse_tenant(row[col["tenant"]]) if "tenant" in col else None, ctx)
        except _BadLine as bad:
            yield reader.line_num, bad


def _jsonl_records(f, keys: _KeyTable, rules: _Consistency):
    allowed = frozenset(CSV_REQUIRED + CSV_OPTIONAL + JSONL_ONLY)
    for lineno, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise _BadLine(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            except RecursionError:
                raise _BadLine("JSON nested too deeply (a context is a flat list of numbers "
                               "or a string)") from None
            if not isinstance(rec, dict):
                raise _BadLine(f"expected a JSON object, got {type(rec).__name__}")
            missing = [k for k in CSV_REQUIRED if k not in rec]
            unknown = sorted(set(rec) - allowed)
            if missing or unknown:
                raise _BadLine(f"missing fields {missing}" if missing else
                               f"unknown fields {unknown}")
            ctx = _json_context(rec["context"]) if "context" in rec else None
            rules.check(frozenset(rec) - set(CSV_REQUIRED) - PER_RECORD_OPTIONAL, ctx)
            yield lineno, Request(
                _parse_time(rec["time"]), keys.parse(rec["key"]), _parse_size(rec["size"]),
                _parse_load_cost(rec["load_cost"]) if "load_cost" in rec else None,
                _parse_tenant(rec["tenant"]) if "tenant" in rec else None, ctx,
                _parse_hit(rec["hit"]) if "hit" in rec else None)
        except _BadLine as bad:
            yield lineno, bad


def _lcs_csv_records(f, keys: _KeyTable, columns: LcsCsvColumns):
    reader = csv.reader(f, delimiter=columns.delimiter)
    width = max(columns.time, columns.key, columns.size)
    if columns.has_header:
        next(reader, None)
    index = 0
    for line, row in _csv_rows(reader):
        if isinstance(row, _BadLine):
            yield line, row
            continue
        try:
            if len(row) < width:
                raise _BadLine(f"{len(row)} fields, need at least {width}")
            token = row[columns.key - 1].strip()
            if columns.numeric_keys and not (token.isascii() and token.isdigit()):
                raise _BadLine(f"key {token!r} is not a non-negative integer "
                               "(numeric_keys=True)")
            kid = keys.parse(token) if columns.numeric_keys else keys.parse_name(token)
            yield reader.line_num, Request(
                _parse_time(row[columns.time - 1]) if columns.time else float(index), kid,
                _parse_size(row[columns.size - 1].strip()) if columns.size else 1)
            index += 1
        except _BadLine as bad:
            yield reader.line_num, bad




# ---------------------------------------------------------------------------------------------
# Format detection


def sniff_format(path: str | os.PathLike[str], columns: LcsCsvColumns | None = None) -> str:
    """The format a file name implies: ``.jsonl``, ``.csv`` (``lcs_csv`` when ``columns`` is
    given), ``.oracleGeneral``/``.oracleGeneral.bin``/``.bin``."""
    name = Path(path).name.lower()
    if name.endswith(_COMPRESSED_SUFFIXES):
        raise TraceError(f"{path}: compressed traces are not read directly; decompress first "
                         f"(e.g. `zstd -d {Path(path).name}`)")
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith((".oraclegeneral.bin", ".oraclegeneral", ".bin")):
        return "oracleGeneral"
    if name.endswith(".csv"):
        return "lcs_csv" if columns is not None else "csv"
    raise TraceError(f"{path}: cannot tell the trace format from the file name; name it .csv, "
                     f".jsonl or .oracleGeneral.bin, or pass fmt= one of {', '.join(FORMATS)}")


def _resolve_format(path, fmt: str | None, columns: LcsCsvColumns | None) -> str:
    fmt = sniff_format(path, columns) if fmt is None else fmt
    if fmt not in FORMATS:
        raise TraceError(f"{path}: unknown trace format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "lcs_csv" and columns is None:
        raise TraceError(f"{path}: fmt='lcs_csv' needs columns=LcsCsvColumns(time=.., key=.., "
                         "size=..) (1-based column numbers)")
    return fmt


# ---------------------------------------------------------------------------------------------
# Columns -> Trace


class _ColumnBuilder:
    """Accumulates requests as Python lists and turns them into one ``Trace``."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.keys: list[int] = []
        self.sizes: list[int] = []
        self.load_costs: list[float] = []
        self.tenants: list[int] = []
        self.contexts: list | None = None  # one per request (None: it has none) once any has
        self.hits: list[bool] = []
        self.tenant_codes: dict[str, int] = {}

    def add(self, r: Request) -> None:
        self.times.append(r.time)
        self.keys.append(r.key)
        self.sizes.append(r.size)
        if r.load_cost is not None:
            self.load_costs.append(r.load_cost)
        if r.tenant is not None:
            self.tenants.append(self.tenant_codes.setdefault(r.tenant, len(self.tenant_codes)))
        if r.context is not None and self.contexts is None:
            self.contexts = [None] * (len(self.keys) - 1)
        if self.contexts is not None:
            self.contexts.append(r.context)
        if r.hit is not None:
            self.hits.append(r.hit)

    def __len__(self) -> int:
        return len(self.keys)

    def build(self, key_names: Mapping[int, str], skipped: int) -> Trace:
        contexts = None
        if self.contexts is not None:
            first = next(c for c in self.contexts if c is not None)
            if isinstance(first, str):
                contexts = np.empty(len(self.contexts), dtype=object)
                contexts[:] = self.contexts
            else:
                contexts = np.full((len(self.contexts), len(first)), np.nan)
                for i, c in enumerate(self.contexts):
                    if c is not None:
                        contexts[i] = c
        return Trace(
            np.array(self.times, dtype=np.float64), np.array(self.keys, dtype=np.uint64),
            np.array(self.sizes, dtype=np.uint64),
            np.array(self.load_costs) if self.load_costs else None,
            np.array(self.tenants, dtype=np.int32) if self.tenants else None,
            tuple(self.tenant_codes), contexts, dict(key_names), skipped,
            np.array(self.hits, dtype=bool) if self.hits else None)


# ---------------------------------------------------------------------------------------------
# Streaming reader


class TraceReader:
    """Streams a trace file without holding it in memory.

    Iterate it for ``Request`` objects, or call ``chunks(n)`` for ``Trace`` chunks of at most
    ``n`` requests (what a replay engine wants: arrays for the C core, bounded memory). After
    (or during) reading, ``skipped`` counts the bad lines skipped and ``key_names`` holds the
    names of non-integer keys seen so far. Each iteration reads the file again from the start.
    """

    def __init__(self, path: str | os.PathLike[str], fmt: str | None = None, *,
                 skip_bad: bool = False, limit: int | None = None,
                 columns: LcsCsvColumns | None = None) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.path = Path(path)
        self.fmt = _resolve_format(path, fmt, columns)
        self.skip_bad = skip_bad
        self.limit = limit
        self.columns = columns
        self.skipped = 0
        self.key_names: dict[int, str] = {}

    def __iter__(self) -> Iterator[Request]:
        if self.fmt == "oracleGeneral":
            for chunk in self.chunks():
                yield from chunk.requests()
            return
        yield from self._text_requests()

    def chunks(self, size: int = 1 << 16) -> Iterator[Trace]:
        """``Trace`` chunks of at most ``size`` requests, in order."""
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size}")
        if self.fmt == "oracleGeneral":
            yield from self._binary_chunks(size)
            return
        builder = _ColumnBuilder()
        for r in self._text_requests():
            builder.add(r)
            if len(builder) == size:
                yield builder.build(self.key_names, self.skipped)
                builder = _ColumnBuilder()
        if len(builder):
            yield builder.build(self.key_names, self.skipped)

    # -- text formats ---------------------------------------------------------------------

    def _open_text(self):
        try:
            return open(self.path, encoding="utf-8", newline="")
        except OSError as exc:
            raise TraceError(f"{self.path}: cannot open trace: {exc.strerror}") from None

    def _text_requests(self) -> Iterator[Request]:
        self.skipped = 0
        self.key_names = {}
        if self.limit == 0:
            return
        keys = _KeyTable()
        keys.names = self.key_names
        n = 0
        with self._open_text() as f:
            if self.fmt == "csv":
                records = _edge_csv_records(f, keys, _Consistency())
            elif self.fmt == "jsonl":
                records = _jsonl_records(f, keys, _Consistency())
            else:
                records = _lcs_csv_records(f, keys, self.columns)
            try:
                for lineno, rec in records:
                    if isinstance(rec, _BadLine):
                        if not self.skip_bad:
                            raise TraceError(f"{self.path}:{lineno}: {rec}")
                        self.skipped += 1
                        continue
                    yield rec
                    n += 1
                    if n == self.limit:
                        return
            except UnicodeDecodeError as exc:
                raise TraceError(f"{self.path}: not UTF-8 text near byte {exc.start} "
                                 f"of a read block: {exc.reason}") from None

    # -- oracleGeneral --------------------------------------------------------------------

    def _binary_chunks(self, size: int) -> Iterator[Trace]:
        self.skipped = 0
        try:
            nbytes = self.path.stat().st_size
            f = open(self.path, "rb")
        except OSError as exc:
            raise TraceError(f"{self.path}: cannot open trace: {exc.strerror}") from None
        itemsize = ORACLE_GENERAL_DTYPE.itemsize
        n_records, tail = divmod(nbytes, itemsize)
        if tail:
            if not self.skip_bad:
                f.close()
                raise TraceError(
                    f"{self.path}: truncated oracleGeneral trace: {nbytes} bytes is not a "
                    f"multiple of the {itemsize}-byte record (last record has {tail} bytes)")
            self.skipped += 1
        wanted = n_records if self.limit is None else self.limit
        done = first_record = 0
        with f:
            while done < wanted and first_record < n_records:
                count = min(size, n_records - first_record)
                rec = np.fromfile(f, dtype=ORACLE_GENERAL_DTYPE, count=count)
                zero = np.flatnonzero(rec["obj_size"] == 0)
                if len(zero):
                    if not self.skip_bad:
                        raise TraceError(f"{self.path}: record {first_record + zero[0] + 1} "
                                         "has obj_size 0")
                    self.skipped += len(zero)
                    rec = rec[rec["obj_size"] != 0]
                first_record += count
                rec = rec[:wanted - done]
                done += len(rec)
                if len(rec):
                    yield Trace(rec["time"].astype(np.float64),
                                np.ascontiguousarray(rec["obj_id"]),
                                rec["obj_size"].astype(np.uint64), skipped=self.skipped)


def iter_requests(path: str | os.PathLike[str], fmt: str | None = None, *, skip_bad: bool = False,
                  limit: int | None = None,
                  columns: LcsCsvColumns | None = None) -> Iterator[Request]:
    """Stream the requests of a trace file one at a time (see ``TraceReader``)."""
    return iter(TraceReader(path, fmt, skip_bad=skip_bad, limit=limit, columns=columns))


def read_trace(path: str | os.PathLike[str], fmt: str | None = None, skip_bad: bool = False,
               limit: int | None = None, columns: LcsCsvColumns | None = None) -> Trace:
    """Read a whole trace file into one ``Trace``.

    ``fmt`` is sniffed from the extension when None (``.csv``, ``.jsonl``,
    ``.oracleGeneral.bin``/``.bin``; ``.csv`` with ``columns`` is a libCacheSim-style CSV).
    ``limit`` stops after that many good requests; ``skip_bad`` skips and counts bad lines
    (``Trace.skipped``) instead of raising ``TraceError``.
    """
    reader = TraceReader(path, fmt, skip_bad=skip_bad, limit=limit, columns=columns)
    if reader.fmt == "oracleGeneral":
        # One chunk as large as the file: numpy reads it in one call.
        chunks = list(reader.chunks(size=1 << 62))
        if not chunks:
            return Trace(np.empty(0), np.empty(0, np.uint64), np.empty(0, np.uint64),
                         skipped=reader.skipped)
        return Trace(chunks[0].times, chunks[0].keys, chunks[0].sizes, skipped=reader.skipped)
    fast = _read_numeric_csv_fast(reader)
    if fast is not None:
        return fast
    builder = _ColumnBuilder()
    for r in reader:
        builder.add(r)
    return builder.build(reader.key_names, reader.skipped)


def _read_numeric_csv_fast(reader: TraceReader) -> Trace | None:
    """numpy's C parser for the common all-numeric CSV (about 25x the line-by-line reader).

    Returns None whenever the file is not plainly numeric (names as keys, quotes, a bad line...):
    the line-by-line reader then produces the same trace, or the precise error with its line
    number, so this path never decides what is valid.
    """
    if reader.limit == 0:
        return Trace(np.empty(0), np.empty(0, np.uint64), np.empty(0, np.uint64))
    if reader.fmt == "csv":
        try:
            with open(reader.path, encoding="utf-8", newline="") as f:
                header = [h.strip() for h in f.readline().rstrip("\r\n").split(",")]
        except (OSError, UnicodeDecodeError):
            return None
        if header != list(CSV_REQUIRED):
            return None
        skiprows, delimiter, time_col, key_col, size_col = 1, ",", 1, 2, 3
    elif reader.fmt == "lcs_csv" and reader.columns.numeric_keys:
        c = reader.columns
        skiprows, delimiter, time_col, key_col, size_col = (
            int(c.has_header), c.delimiter, c.time, c.key, c.size)
    else:
        return None
    try:
        data = reader.path.read_bytes()
    except OSError:
        return None
    # numpy reads "+5" as 5 where the line reader sees the name "+5": leave such files to it.
    if b"+" in data:
        return None
    body = data.split(b"\n", skiprows)[skiprows:] if skiprows else [data]
    if not body or not body[0].strip():
        return None  # no requests: the line reader makes the empty trace (numpy would warn)
    used = [col for col in (time_col, key_col, size_col) if col]
    dtype = [(name, np.float64 if name == "time" else np.uint64)
             for name, col in (("time", time_col), ("key", key_col), ("size", size_col)) if col]
    # usecols must be increasing for a structured dtype to line up, so sort fields by column.
    order = np.argsort(used)
    try:
        rows = np.loadtxt(io.BytesIO(data), delimiter=delimiter, skiprows=skiprows,
                          comments=None, usecols=[used[i] - 1 for i in order],
                          dtype=[dtype[i] for i in order], max_rows=reader.limit, ndmin=1,
                          encoding="utf-8")
    except (ValueError, OverflowError, UnicodeDecodeError):
        return None
    del data
    n = len(rows)
    times = rows["time"] if time_col else np.arange(n, dtype=np.float64)
    sizes = rows["size"] if size_col else np.ones(n, dtype=np.uint64)
    if n and (not np.isfinite(times).all() or not sizes.all()):
        return None
    return Trace(np.ascontiguousarray(times), np.ascontiguousarray(rows["key"]),
                 np.ascontiguousarray(sizes))


# ---------------------------------------------------------------------------------------------
# Writers (whole trace in memory, written atomically: a crash never leaves a torn trace)


def _key_token(trace: Trace, key: int):
    return trace.key_names.get(key, key)


def write_csv(trace: Trace, path: str | os.PathLike[str]) -> None:
    """Write edge's CSV; vector contexts are written as JSON arrays."""
    header = list(CSV_REQUIRED)
    if trace.load_costs is not None:
        header.append("load_cost")
    if trace.tenants is not None:
        header.append("tenant")
    if trace.contexts is not None:
        header.append("context")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in trace.requests():
        row = [repr(r.time), _key_token(trace, r.key), r.size]
        if r.load_cost is not None:
            row.append(repr(r.load_cost))
        if r.tenant is not None:
            row.append(r.tenant)
        if r.context is not None:
            if isinstance(r.context, str):
                if _csv_context(r.context) != r.context:
                    raise TraceError(f"{path}: text context {r.context!r} would read back as a "
                                     "vector in CSV; write this trace as JSONL")
                row.append(r.context)
            else:
                row.append(json.dumps(list(r.context)))
        w.writerow(row)
    write_atomic(path, buf.getvalue().encode())


def write_jsonl(trace: Trace, path: str | os.PathLike[str]) -> None:
    """Write one JSON object per request."""
    lines = []
    for r in trace.requests():
        rec: dict = {"time": r.time, "key": _key_token(trace, r.key), "size": r.size}
        if r.load_cost is not None:
            rec["load_cost"] = r.load_cost
        if r.tenant is not None:
            rec["tenant"] = r.tenant
        if r.context is not None:
            rec["context"] = r.context if isinstance(r.context, str) else list(r.context)
        if r.hit is not None:
            rec["hit"] = r.hit
        lines.append(json.dumps(rec, separators=(",", ":")))
    write_atomic(path, ("\n".join(lines) + "\n" if lines else "").encode())


def write_oracle_general(trace: Trace, path: str | os.PathLike[str],
                         time_unit: float = 1.0) -> None:
    """Write libCacheSim's oracleGeneral binary format, next-access times included.

    The format stores whole uint32 times: each time is written as ``floor(time / time_unit)``
    (``time_unit=1e-3`` keeps milliseconds). ``next_access_vtime`` is the 1-based index of the
    key's next request, -1 if none, as libCacheSim's own converter writes it; load costs,
    tenants, contexts and key names have no place in the format and are dropped.
    """
    if time_unit <= 0:
        raise ValueError(f"time_unit must be > 0, got {time_unit}")
    stamps = np.floor(trace.times / time_unit)
    if len(trace) and (stamps.min() < 0 or stamps.max() > _U32_MAX):
        raise TraceError(f"{path}: times / time_unit span {stamps.min():.0f}..{stamps.max():.0f},"
                         f" outside oracleGeneral's uint32 range; shift the times or pick a "
                         f"larger time_unit")
    if len(trace) and int(trace.sizes.max()) > _U32_MAX:
        raise TraceError(f"{path}: size {int(trace.sizes.max())} exceeds oracleGeneral's "
                         "uint32 obj_size")
    rec = np.empty(len(trace), dtype=ORACLE_GENERAL_DTYPE)
    rec["time"] = stamps
    rec["obj_id"] = trace.keys
    rec["obj_size"] = trace.sizes
    nxt = next_access_indices(trace.keys)
    rec["next_access_vtime"] = np.where(nxt >= 0, nxt + 1, -1)
    write_atomic(path, rec.tobytes())


_WRITERS = {"csv": write_csv, "jsonl": write_jsonl, "oracleGeneral": write_oracle_general}


def write_trace(trace: Trace, path: str | os.PathLike[str], fmt: str | None = None) -> None:
    """Write ``trace`` in ``fmt`` (sniffed from the extension when None)."""
    fmt = sniff_format(path) if fmt is None else fmt
    if fmt not in _WRITERS:
        raise TraceError(f"{path}: cannot write format {fmt!r}; writable formats are "
                         f"{', '.join(_WRITERS)}")
    _WRITERS[fmt](trace, path)
