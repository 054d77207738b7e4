"""Run worker threads so that a test can fail: every exception a worker raises is collected and
re-raised in the test, and a worker still running after the timeout is a failure too (a thread
that dies or hangs must never leave a green test behind it)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class WorkerFailed(AssertionError):
    """A worker thread raised or did not finish; the first exception is the cause."""


def run_threads(targets: list[Callable[[], None]], timeout: float = 120.0) -> None:
    """Start one thread per target, join them all, then raise ``WorkerFailed`` if any raised
    (every worker's exception is listed) or any is still alive after ``timeout`` seconds."""
    errors: list[tuple[int, BaseException]] = []
    errors_lock = threading.Lock()

    def guarded(i: int, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # noqa: B036 - reported to the test, not swallowed
            with errors_lock:
                errors.append((i, exc))

    threads = [threading.Thread(target=guarded, args=(i, t), daemon=True, name=f"worker-{i}")
               for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    alive = [thread.name for thread in threads if thread.is_alive()]
    if errors:
        listed = "; ".join(f"worker-{i}: {type(e).__name__}: {e}" for i, e in errors[:5])
        raise WorkerFailed(f"{len(errors)} worker(s) raised: {listed}") from errors[0][1]
    if alive:
        raise WorkerFailed(f"still running after {timeout} s: {alive}")
