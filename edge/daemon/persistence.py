"""What the daemon keeps across restarts: the runtime's counters (a stats file) and the router's
learned state (``router.state.path``), saved atomically on an interval and at shutdown.

    keeper = StateKeeper(runtime, stats_path="state/stats.json", interval=60)
    keeper.load()        # before serving: counts continue from the file (if it exists)
    keeper.start()       # a thread saves both files every ``interval`` seconds
    ...
    keeper.stop()        # joins the thread, then saves the stats once more
    runtime.close()      # saves the router's state once more

Every write goes through ``edge.fileio.write_atomic`` (temp file, fsync, rename, directory
fsync), so a crash or ``kill -9`` at any moment leaves each file whole: the previous version or
the new one. A crash loses what was learned since the last save, at most one interval.

A stats file that is damaged or does not fit the runtime (``StatsFileError``) is refused, naming
the file: the daemon does not start rather than silently start its counts from zero (move the
file away to start afresh). The router refuses its own state file the same way.

The stats file is JSON: ``{"kind": "edge-daemon-stats", "version": 1, "saved_at": <unix time>,
"requests": {counter: int}, "seconds": {step: float}}``, the ``requests`` and ``seconds`` parts
of ``Runtime.stats()``. The cache's counters (hits, evictions, ...) start from zero at each
start: the cache keeps them, and they describe one run's resident set.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from edge.errors import EdgeError
from edge.fileio import remove_stale_temp_files, write_atomic

log = logging.getLogger("edge.daemon")

STATS_KIND = "edge-daemon-stats"
STATS_VERSION = 1


class StatsFileError(EdgeError):
    """A stats file is damaged, of another kind or version, or counts what this runtime does
    not; the message names the file."""


@dataclass(frozen=True)
class SavedStats:
    """The runtime's cumulative counters: ``requests`` (served, routed, hits, feedback, ...)
    and ``seconds`` (time spent routing, acquiring and serving)."""

    requests: dict[str, int]
    seconds: dict[str, float]


def stats_of(runtime: Any) -> SavedStats:
    """What a stats file keeps of ``runtime.stats()``."""
    stats = runtime.stats()
    return SavedStats(dict(stats["requests"]), dict(stats["seconds"]))


def write_stats(path: str | os.PathLike[str], stats: SavedStats) -> None:
    document = {"kind": STATS_KIND, "version": STATS_VERSION, "saved_at": time.time(),
                "requests": stats.requests, "seconds": stats.seconds}
    write_atomic(path, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode())


def read_stats(path: str | os.PathLike[str]) -> SavedStats:
    """The counters in a stats file; ``StatsFileError`` naming the file if it cannot be used."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise StatsFileError(f"{path}: cannot read the stats file: {exc.strerror}") from None
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StatsFileError(f"{path}: damaged stats file (not JSON: {exc}); move it away to "
                             "start the counts afresh") from None
    if not isinstance(document, dict) or document.get("kind") != STATS_KIND:
        kind = document.get("kind") if isinstance(document, dict) else type(document).__name__
        raise StatsFileError(f"{path}: not an edge daemon stats file (kind {kind!r}, expected "
                             f"{STATS_KIND!r})")
    if document.get("version") != STATS_VERSION:
        raise StatsFileError(f"{path}: stats file version {document.get('version')!r} is not "
                             f"supported (this edge reads version {STATS_VERSION})")
    requests = _counters(path, document, "requests", _is_count)
    seconds = _counters(path, document, "seconds", _is_seconds)
    return SavedStats(requests, {k: float(v) for k, v in seconds.items()})


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value >= 0


def _counters(path: Any, document: dict, key: str, valid: Any) -> dict:
    table = document.get(key)
    if not isinstance(table, dict):
        raise StatsFileError(f"{path}: {key}: expected a mapping of counters, got "
                             f"{type(table).__name__}")
    for name, value in table.items():
        if not valid(value):
            raise StatsFileError(f"{path}: {key}.{name}: {value!r} is not a count >= 0")
    return table


def restore_stats(runtime: Any, saved: SavedStats, source: str = "<saved stats>") -> None:
    """Add ``saved`` to ``runtime``'s counters (which start at zero), so counts continue across
    restarts. ``StatsFileError`` naming ``source`` for a counter the runtime does not keep."""
    now = stats_of(runtime)
    for part in ("requests", "seconds"):
        unknown = sorted(set(getattr(saved, part)) - set(getattr(now, part)))
        if unknown:
            raise StatsFileError(
                f"{source}: {part}.{unknown[0]} is not a counter this runtime keeps (it keeps "
                f"{', '.join(sorted(getattr(now, part)))}): the file is from another edge "
                "version; move it away to start the counts afresh")
    runtime.add_counts(saved.requests, saved.seconds)


class StateKeeper:
    """Loads the runtime's counters at start and saves them, with the router's state, every
    ``interval`` seconds on a thread of its own and once more at ``stop`` (see the module doc).

    ``stats_path`` None: counters are not kept; the router's state is saved only when its
    ``router.state.path`` is set. An interval with nothing served writes nothing (flash wears)."""

    def __init__(self, runtime: Any, stats_path: Optional[str | os.PathLike[str]] = None, *,
                 interval: float = 60.0) -> None:
        if not 0 < interval < math.inf:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.runtime = runtime
        self.stats_path = Path(stats_path) if stats_path is not None else None
        self.interval = float(interval)
        self.saves = 0  # rounds that wrote (the interval's and save_now's)
        self.failures = 0  # interval saves that raised; each is logged with its traceback
        self.last_error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last_saved: Optional[tuple] = None

    @property
    def router_state_path(self) -> Optional[str]:
        return self.runtime.router.config.state.path

    @property
    def enabled(self) -> bool:
        return self.stats_path is not None or self.router_state_path is not None

    def load(self) -> Optional[SavedStats]:
        """Continue the counts of the stats file if there is one (None if not). The router
        loaded its own state when the runtime was built. Call before serving."""
        for path in (self.stats_path, self.router_state_path):
            if path is not None:
                for stale in remove_stale_temp_files(path):
                    log.info("removed %s, left by a save that was interrupted", stale)
        if self.stats_path is None or not self.stats_path.exists():
            return None
        saved = read_stats(self.stats_path)
        restore_stats(self.runtime, saved, str(self.stats_path))
        self._last_saved = self._activity()  # what the files hold already
        log.info("continuing the counts of %s (%d requests served before)", self.stats_path,
                 saved.requests.get("requests", 0))
        return saved

    def save_now(self) -> None:
        """Save the stats and the router's state (those configured), now."""
        self.save_stats()
        if self.router_state_path is not None:
            self.runtime.save_router_state()  # under the router's lock: never half an update
        self.saves += 1

    def save_stats(self) -> None:
        if self.stats_path is not None:
            write_stats(self.stats_path, stats_of(self.runtime))

    def _activity(self) -> tuple:
        """What changes whenever something worth saving does: requests served or failed,
        rewards, router updates."""
        stats = self.runtime.stats()
        return tuple(sorted(stats["requests"].items())) + (stats["router"]["updates"],)

    def _save_if_changed(self) -> None:
        activity = self._activity()
        if activity == self._last_saved:
            return
        self.save_now()
        self._last_saved = activity

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._save_if_changed()
            except Exception as exc:  # a full disk must not stop serving; try again next time
                self.failures += 1
                self.last_error = exc
                log.exception("saving the daemon's state failed (trying again in %g s)",
                              self.interval)

    def start(self) -> None:
        """Save every ``interval`` seconds on a thread (nothing to do if nothing is kept)."""
        if self._thread is not None:
            raise RuntimeError("the state keeper is already started")
        if not self.enabled:
            return
        self._thread = threading.Thread(target=self._run, name="edge-state-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the thread, then save the stats once more (``Runtime.close`` saves
        the router's state); an error of this last save is raised."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.save_stats()

