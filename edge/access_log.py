"""The access log: every adapter a served request used, as a JSONL trace the simulator replays.

``edge sim``, ``edge tune`` and the eviction trainer should learn from what this device really
saw. ``AccessLog`` is a ``Runtime`` observer that appends one record per adapter of every served
request to a file in the simulator's ``jsonl`` trace format (``edge/sim/trace.py``), so the log
is a trace as it stands: ``edge sim --trace access.jsonl``.

    log = AccessLog.attach(runtime, "/var/lib/edge/access.jsonl")  # or AccessLog(...) and
    ...                                                            # runtime.add_observer(log)
    log.close()                                                    # after the runtime

A record::

    {"time":1718000000.25,"key":"sql","size":41943040,"load_cost":0.031,"tenant":"alice",
     "hit":false,"context":[0.12,-0.4,...]}

- ``time``: ``clock()`` (wall-clock seconds) when the request finished. Lines are written in the
  order requests finish, with times taken under the log's lock, so a file's times never go back
  (for a clock that does not). The records of one request share its time.
- ``key``: the adapter's name; ``size``: its catalogue size in bytes.
- ``load_cost``: seconds to page the adapter in. For a request that paged in its one adapter,
  the acquire time it measured (the page-in, with any wait for room). For a hit, the last such
  measurement of that adapter. Where there is none (the adapter was prefetched, paged in as part
  of a set, or before this log was opened), the ``paging_cost`` model's time for its size: the
  same figure ``edge sim`` gives cost-aware policies for a trace without load costs. (Omitting
  the field there would be more honest, but the reader wants every record to carry the optional
  fields of the first one.)
- ``tenant``: the request's ``tenant`` (OpenAI's ``user``), ``NO_TENANT`` ("-") when it gave
  none, since the reader wants the field in every record or in none.

A request for the base model alone pages nothing and is not logged. A request for a set of
adapters is one record per adapter, in the set's order; its acquire time is not split between
them, so it counts as no measurement of any.

- ``hit``: whether the request found its adapters resident (``Trace.hits``; a replay decides
  hits for itself, the comparison is the device's own).
- ``context``: the router's feature vector, for a request the router chose the adapter of
  (``model: auto``); absent for a named one. ``edge sim --router`` replays the routed records.

Rotation: when the file would reach ``max_bytes`` it becomes ``access.1.jsonl`` (older backups
move up one number, the oldest beyond ``backups`` is deleted) and a new ``access.jsonl`` begins.
``access_log_files(path)`` lists the set oldest first (the highest backup number first, the
current file last); their concatenation in that order is the device's history as one trace::

    cat access.3.jsonl access.2.jsonl access.1.jsonl access.jsonl > all.jsonl
    edge sim --trace all.jsonl --policy lru,s3fifo --budget 1GiB

Durability: each record is one line written and flushed in one call, so a crashed process
loses at most the line it was writing; the torn line it leaves is cut off when the log is next
opened, so the file always reads cleanly. (An append-only log cannot be written atomically like
edge's state files, and need not be: it only ever grows by whole lines.) A flushed line is in the
OS, not necessarily on disk: a power cut can lose the last lines.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from edge.errors import ConfigError, EdgeError
from edge.paging_cost import PagingCostModel
from edge.schema import parse_bytes

if TYPE_CHECKING:  # the runtime is heavy to import; the log only needs its request and outcome
    from edge.runtime import InferenceRequest, Outcome, Runtime

DEFAULT_MAX_BYTES = 64 * 2**20
DEFAULT_BACKUPS = 5
SUFFIX = ".jsonl"
# The tenant of a request that named none (like the Common Log Format's "-").
NO_TENANT = "-"

_log = logging.getLogger("edge.access_log")


class AccessLog:
    """A thread-safe ``Runtime`` observer appending JSONL trace records to a rotated file.

    ``size_of(name)`` gives an adapter's size in bytes (``attach`` reads the runtime's current
    catalogue). ``max_bytes`` (an int or a size like ``"64MiB"``) bounds each file; ``backups``
    is how many full files are kept (0: a full file starts again empty). ``paging_cost``
    estimates the load cost of an adapter never measured paging in (see the module doc).
    ``ConfigError`` names a bad setting or a path that cannot be written.
    """

    def __init__(self, path: str | os.PathLike[str], *, size_of: Callable[[str], int],
                 max_bytes: int | str = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS,
                 clock: Callable[[], float] = time.time,
                 paging_cost: Optional[PagingCostModel] = None) -> None:
        self.path = Path(path)
        if self.path.name == SUFFIX or not self.path.name.endswith(SUFFIX):
            raise ConfigError(f"access log path {str(path)!r} must name a {SUFFIX} file: the "
                              "trace reader tells the format from the extension")
        try:
            max_bytes = parse_bytes(max_bytes, "access log max_bytes")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if isinstance(backups, bool) or not isinstance(backups, int) or backups < 0:
            raise ConfigError(f"access log backups must be an integer >= 0, got {backups!r}")
        self.max_bytes, self.backups = max_bytes, backups
        self._size_of = size_of
        self._clock = clock
        self._paging_cost = paging_cost or PagingCostModel()
        self._page_in_seconds: dict[str, float] = {}  # the last measured page-in per adapter
        self._lock = threading.Lock()
        self._closed = False
        self.records = 0  # records written by this instance
        directory = self.path.parent
        if not directory.is_dir():
            raise ConfigError(f"access log path {str(path)!r}: directory {str(directory)!r} "
                              "does not exist")
        try:
            torn = _cut_torn_tail(self.path)
            self._handler = _RotatingLines(self.path, maxBytes=max_bytes, backupCount=backups,
                                           encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"access log path {str(path)!r} cannot be opened for appending: "
                              f"{exc.strerror or exc}") from None
        if torn:
            _log.warning("access log %s ended in a torn line (%d bytes, from a crash); "
                         "cut it off", self.path, torn)

    @classmethod
    def attach(cls, runtime: Runtime, path: str | os.PathLike[str], **settings) -> AccessLog:
        """An access log of ``runtime``'s requests, already observing it (sizes from its
        catalogue as it is when each request is logged). Close it after the runtime."""
        log = cls(path, size_of=lambda name: runtime.catalogue[name].size, **settings)
        runtime.add_observer(log)
        return log

    def __call__(self, request: InferenceRequest, outcome: Outcome) -> None:
        """Log the adapters that served ``request`` (the ``Runtime.add_observer`` signature)."""
        names = outcome.adapters
        if not names:
            return  # the base model alone: nothing was paged, nothing to replay
        # Sizes first: an adapter gone from the catalogue fails the whole request's records,
        # never half a set.
        sizes = [int(self._size_of(name)) for name in names]
        tenant = NO_TENANT if request.tenant in (None, "") else str(request.tenant)
        # The router's features, for `edge sim --router` to replay the routing (a routed
        # request has exactly one adapter).
        context = None if outcome.context is None else [float(v) for v in outcome.context]
        with self._lock:
            if self._closed:
                raise EdgeError(f"access log {self.path} is closed; close it after the runtime")
            if len(names) == 1 and not outcome.hit:
                self._page_in_seconds[names[0]] = max(0.0, float(outcome.timings["acquire"]))
            now = float(self._clock())  # under the lock, so the file's times never go back
            for name, size in zip(names, sizes, strict=True):
                cost = self._page_in_seconds.get(name)
                if cost is None:
                    cost = self._paging_cost.paging_seconds(size)
                record = {"time": now, "key": name, "size": size, "load_cost": cost,
                          "tenant": tenant, "hit": bool(outcome.hit)}
                if context is not None:
                    record["context"] = context
                # ASCII only: the handler measures max_bytes in characters, so they are bytes.
                line = json.dumps(record, separators=(",", ":"), allow_nan=False)
                self._handler.handle(logging.makeLogRecord({"msg": line}))
                self.records += 1

    def close(self) -> None:
        """Flush and close the file; later records raise. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._handler.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> AccessLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RotatingLines(RotatingFileHandler):
    """The standard library's rotating file (locking, renaming the backups), with backups named
    ``access.N.jsonl`` so each reads as a trace on its own, and three fixes for a log of lines."""

    def __init__(self, path: Path, **kwargs) -> None:
        super().__init__(path, **kwargs)
        self.namer = _backup_name

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        # The library would rotate an empty file when one record exceeds max_bytes, pushing real
        # backups out with empty ones; such a record gets a file of its own instead.
        if self.stream is not None and self.stream.seek(0, os.SEEK_END) == 0:
            return False
        return super().shouldRollover(record)

    def doRollover(self) -> None:
        super().doRollover()
        if self.backupCount == 0:  # the library would go on appending to the full file
            self.stream.seek(0)
            self.stream.truncate()

    def handleError(self, record: logging.LogRecord) -> None:
        # The library prints to stderr and carries on; raise, so the runtime logs the failed
        # observer with the reason (disk full, file removed...).
        raise  # handleError is called from emit's except block: this re-raises its error


_BACKUP = re.compile(r"\.(\d+)\.jsonl$")


def _backup_name(default: str) -> str:
    """``/d/access.jsonl.3`` (the library's name) -> ``/d/access.3.jsonl``."""
    base, _, number = default.rpartition(".")
    return f"{base[:-len(SUFFIX)]}.{number}{SUFFIX}"


def access_log_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files of the access log ``path`` that exist, oldest first: the backups from the
    highest number down, then ``path`` itself. Replay them in this order."""
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        raise ValueError(f"access log path {str(path)!r} must name a {SUFFIX} file")
    stem = path.name[:-len(SUFFIX)]
    backups = []
    for candidate in path.parent.glob(f"{glob.escape(stem)}.*{SUFFIX}"):
        match = _BACKUP.search(candidate.name)
        if match and candidate.name == f"{stem}.{match.group(1)}{SUFFIX}":
            backups.append((int(match.group(1)), candidate))
    files = [p for _, p in sorted(backups, reverse=True)]
    return files + [path] if path.exists() else files


def _cut_torn_tail(path: Path) -> int:
    """Cut off a last line without its newline (a crash mid-write); returns the bytes cut."""
    try:
        f = open(path, "r+b")
    except FileNotFoundError:
        return 0
    with f:
        end = pos = f.seek(0, os.SEEK_END)
        keep = 0
        while pos > 0:
            step = min(pos, 1 << 16)
            f.seek(pos - step)
            newline = f.read(step).rfind(b"\n")
            if newline >= 0:
                keep = pos - step + newline + 1
                break
            pos -= step
        if keep < end:
            f.truncate(keep)
        return end - keep


__all__ = ["DEFAULT_BACKUPS", "DEFAULT_MAX_BYTES", "NO_TENANT", "AccessLog", "access_log_files"]
