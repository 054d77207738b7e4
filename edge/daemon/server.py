"""Run the app under uvicorn, keep the daemon's state across restarts, and close the runtime on
the way out.

Shutdown has two stages, as in uvicorn: the first SIGTERM or SIGINT stops accepting
connections and lets the requests in flight finish (for at most ``graceful_timeout`` seconds),
then the runtime's counters are saved (``stats_path``), the runtime is closed (every adapter
unloaded, the router's state saved when ``router.state.path`` is set, the model freed) and
``serve`` returns. A second signal, of either kind, exits the process at once (status 128 + the
signal): generations in flight are abandoned, and the files keep what was last saved (written
atomically every ``save_interval_seconds``, so a kill loses at most that much learning and never
tears a file; see ``edge.daemon.persistence``).

    serve(runtime, host="127.0.0.1", port=8000)       # blocks until a signal

``Daemon`` is the same without signals of its own, for embedding: ``run()`` in any thread,
``stop()`` from another (what the first signal does).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from types import FrameType
from typing import Any, Optional

import uvicorn

from edge.daemon.app import create_app
from edge.daemon.config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    AccessLogConfig,
    DaemonConfig,
    Limits,
)
from edge.daemon.persistence import StateKeeper
from edge.errors import ConfigError
from edge.runtime import Runtime

log = logging.getLogger("edge.daemon")


class _Server(uvicorn.Server):
    """uvicorn's server with edge's signal handling: the second signal of either kind exits at
    once (uvicorn's forces only on a second SIGINT), and the signal that stopped it is not
    recorded, so uvicorn does not raise it again on the way out (under SIGTERM's default action
    that would kill the process before ``Daemon.run`` closes the runtime)."""

    def handle_exit(self, sig: int, frame: Optional[FrameType]) -> None:
        if self.should_exit:
            log.warning("second %s: exiting now, abandoning the requests in flight",
                        signal.Signals(sig).name)
            self.force_exit = True
            _exit_now(128 + sig)
        else:
            log.info("%s: finishing the requests in flight, then closing (send it again to "
                     "exit at once)", signal.Signals(sig).name)
            self.should_exit = True


def _exit_now(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


class Daemon:
    """The app over ``runtime`` under a uvicorn server; ``run`` saves the counters and closes
    the runtime when the server has stopped, whatever stopped it.

    Built before serving: the counters of ``config.stats_path`` are added to the runtime's here
    (``StatsFileError`` naming the file if it cannot be used), and the access log is opened."""

    def __init__(self, runtime: Runtime, config: Optional[DaemonConfig] = None) -> None:
        self.runtime = runtime
        self.config = config = config or DaemonConfig()
        self.keeper = StateKeeper(runtime, config.stats_path,
                                  interval=config.save_interval_seconds)
        self.keeper.load()
        self.app = create_app(runtime, api_key=config.api_key, limits=config.limits,
                              model_id=config.model_id)
        self.server = _Server(uvicorn.Config(
            self.app, host=config.host, port=config.port, log_level=config.log_level,
            timeout_graceful_shutdown=config.graceful_timeout, lifespan="off"))
        self.access_log = open_access_log(runtime, config.access_log)

    def run(self) -> None:
        """Serve until ``stop()`` or a signal (in the main thread), saving the daemon's state
        every ``save_interval_seconds``; then save it once more and close the runtime."""
        self.keeper.start()
        try:
            self.server.run()
        finally:
            try:
                self.keeper.stop()  # joins the saver, then saves the counters
            finally:
                log.info("closing the runtime")
                try:
                    self.runtime.close()  # saves the router's state
                finally:
                    self._close_access_log()

    def _close_access_log(self) -> None:
        close = getattr(self.access_log, "close", None)
        if close is not None:
            close()

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish, then ``run`` closes the runtime."""
        self.server.should_exit = True

    @property
    def started(self) -> bool:
        return self.server.started

    @property
    def port(self) -> int:
        """The bound port (the one the OS chose when configured with port 0), once started."""
        for server in getattr(self.server, "servers", ()):
            for sock in server.sockets:
                return sock.getsockname()[1]
        return self.config.port


def open_access_log(runtime: Runtime, config: AccessLogConfig) -> Optional[Any]:
    """The access log ``config`` asks for, observing ``runtime``'s requests (None: no log).
    Close it after the runtime."""
    if config.path is None:
        return None
    try:
        from edge.access_log import AccessLog
    except ModuleNotFoundError as exc:  # a tree from before edge.access_log
        if exc.name != "edge.access_log":
            raise
        raise ConfigError(f"access_log.path is {config.path!r}, but this edge has no access "
                          "log (edge.access_log); remove the setting") from None
    return AccessLog.attach(runtime, config.path, max_bytes=config.max_bytes,
                            backups=config.backups)


def serve(runtime: Runtime, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
          api_key: Optional[str] = None, limits: Optional[Limits] = None,
          model_id: Optional[str] = None, graceful_timeout: Optional[float] = 60.0,
          log_level: str = "info") -> None:
    """Serve ``runtime`` over HTTP until SIGTERM/SIGINT (see the module docstring); the runtime
    is closed when this returns."""
    Daemon(runtime, DaemonConfig(host=host, port=port, api_key=api_key,
                                 limits=limits or Limits(), model_id=model_id,
                                 graceful_timeout=graceful_timeout, log_level=log_level)).run()
