"""Start the real daemon for a test: uvicorn on a free loopback port, in a thread whose
exceptions reach the test, stopped as the first SIGTERM would (and then the runtime must be
closed, which ``Daemon.run`` does on the way out)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from edge.daemon.config import DaemonConfig
from edge.daemon.server import Daemon
from edge.runtime import Runtime


@contextlib.contextmanager
def running_daemon(runtime: Runtime, **config) -> Iterator[tuple[Daemon, str]]:
    """The daemon over ``runtime`` (``DaemonConfig(**config)``, port 0); yields (daemon, url)."""
    daemon = Daemon(runtime, DaemonConfig(**{"port": 0, "log_level": "warning", **config}))
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # noqa: B036 - reported to the test, not lost in the thread
            failures.append(exc)

    thread = threading.Thread(target=serve, name="daemon", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not daemon.started:
            assert thread.is_alive() and not failures, f"the daemon died while starting: " \
                f"{failures}"
            assert time.monotonic() < deadline, "the daemon did not start within 20 s"
            time.sleep(0.01)
        yield daemon, f"http://127.0.0.1:{daemon.port}"
    finally:
        daemon.stop()
        thread.join(30)
    assert not thread.is_alive(), "the daemon did not stop within 30 s"
    assert not failures, failures
    assert runtime.closed
