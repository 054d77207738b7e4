"""The daemon's own settings: where it listens, who may call it, how large a request may be, and
what it keeps across restarts.

Two classes, one per stage. ``DaemonSection`` is the policy file's ``daemon`` section (read by
``edge.config`` like every other section, so its errors name the key path): it names the model
and the API key's environment variable, never the key itself. ``DaemonConfig`` is what
``server.Daemon`` runs with once ``edge serve`` has applied its options and read the key.

Frozen and validated like the policy file's sections; light to import: no FastAPI, no uvicorn,
no runtime.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

from edge.schema import parse_bytes

DEFAULT_HOST = "127.0.0.1"  # loopback: exposing the daemon is a deliberate --host choice
DEFAULT_PORT = 8000
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LogLevel = Literal["critical", "error", "warning", "info", "debug"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Limits:
    """Bounds on one request, checked before it reaches the runtime.

    ``max_body_bytes``: the HTTP body (413 past it, read no further); ``max_prompt_chars``: the
    prompt as served (a chat's after its template); ``max_tokens``: the most a request may ask
    for (the backend's context bounds prompt + max_tokens again)."""

    max_body_bytes: int = 1 << 20
    max_prompt_chars: int = 32_768
    max_tokens: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_prompt_chars", "max_tokens"):
            _check_positive_int(name, getattr(self, name))


@dataclass(frozen=True)
class AccessLogConfig:
    """One JSON line per request served (``edge.access_log``), rotated by size.

    ``path``: the log file, a ``.jsonl`` trace ``edge sim`` replays (None: no access log);
    ``max_bytes``: rotate when the file would grow past this (a byte count or a size like
    ``64MiB``); ``backups``: rotated files kept (``access.1.jsonl`` ...; 0: a full file starts
    again empty)."""

    path: Optional[str] = None
    max_bytes: Union[int, str] = "64MiB"
    backups: int = 5

    def __post_init__(self) -> None:
        # The trace reader tells a file's format from its extension (edge.access_log).
        if self.path is not None and (not self.path.endswith(".jsonl")
                                      or Path(self.path).name == ".jsonl"):
            raise ValueError(f"path must name a .jsonl file or be null, got {self.path!r}")
        parse_bytes(self.max_bytes, "max_bytes")
        if isinstance(self.backups, bool) or not isinstance(self.backups, int) \
                or self.backups < 0:
            raise ValueError(f"backups must be an integer >= 0, got {self.backups!r}")


@dataclass(frozen=True)
class DaemonSection:
    """The policy file's ``daemon`` section: what ``edge serve`` runs when no option overrides
    it (every setting has one; see ``edge serve --help``). Relative paths are taken from the
    working directory, as in the catalogue section.

    ``model``: the base model GGUF (None: ``--model`` must give it); ``model_id``: the base
    model's id in the API (None: the model file's stem); ``n_ctx``: tokens per llama context
    (prompt + max_tokens); ``contexts``: llama contexts over the one model, requests served at
    once; ``threads`` / ``threads_batch``: llama.cpp's threads for generating / for prompts,
    shared by the contexts (None: half the cores / all of them; on a busy machine fewer threads
    than cores avoid prompt evaluations stalling at every barrier); ``api_key_env``: the NAME
    of the environment variable holding the API key (None: no key is required);
    ``graceful_timeout``: seconds the first SIGTERM/SIGINT waits for requests in flight (None:
    as long as they take); ``stats_path``: the runtime's counters, loaded at start and saved
    every ``save_interval_seconds`` and at shutdown (None: not kept; the router's learned state
    has its own ``router.state.path``, saved on the same interval)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key_env: Optional[str] = None
    model: Optional[str] = None
    model_id: Optional[str] = None
    n_ctx: int = 2048
    contexts: int = 1
    threads: Optional[int] = None
    threads_batch: Optional[int] = None
    graceful_timeout: Optional[float] = 60.0
    log_level: LogLevel = "info"
    limits: Limits = field(default_factory=Limits)
    stats_path: Optional[str] = None
    save_interval_seconds: float = 60.0
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)

    def __post_init__(self) -> None:
        _check_listen(self.host, self.port)
        if self.api_key_env is not None and not _ENV_NAME.match(self.api_key_env):
            # The value is not echoed: a key pasted here by mistake must not reach a log.
            raise ValueError(f"api_key_env must be the name of an environment variable "
                             f"(letters, digits and _, not starting with a digit), got a "
                             f"{len(self.api_key_env)}-character value that is not one; the "
                             "key itself never goes in a file")
        for name in ("model", "model_id", "stats_path"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ValueError(f"{name} must be non-empty or null, got an empty string")
        if isinstance(self.n_ctx, bool) or not isinstance(self.n_ctx, int) or self.n_ctx < 16:
            raise ValueError(f"n_ctx must be an integer >= 16 (tokens), got {self.n_ctx!r}")
        _check_positive_int("contexts", self.contexts)
        for name in ("threads", "threads_batch"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        _check_graceful_timeout(self.graceful_timeout)
        _check_log_level(self.log_level)
        _check_seconds("save_interval_seconds", self.save_interval_seconds)


@dataclass(frozen=True)
class DaemonConfig:
    """How ``server.Daemon`` runs the app.

    ``graceful_timeout``: seconds the first SIGTERM/SIGINT waits for requests in flight before
    cancelling what is left (None: as long as they take); a second signal exits at once.
    ``stats_path``: where the runtime's counters are loaded from at start and saved to every
    ``save_interval_seconds`` and at shutdown (None: not kept); the same interval saves the
    router's state when ``router.state.path`` is set. ``access_log``: one line per request."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: Optional[str] = field(default=None, repr=False)
    limits: Limits = field(default_factory=Limits)
    model_id: Optional[str] = None
    graceful_timeout: Optional[float] = 60.0
    log_level: str = "info"
    stats_path: Optional[str] = None
    save_interval_seconds: float = 60.0
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)

    def __post_init__(self) -> None:
        _check_listen(self.host, self.port)
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must be a non-empty string or None")
        _check_graceful_timeout(self.graceful_timeout)
        _check_log_level(self.log_level)
        if self.stats_path is not None and not str(self.stats_path).strip():
            raise ValueError("stats_path must be a file path or None, got an empty string")
        _check_seconds("save_interval_seconds", self.save_interval_seconds)


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_listen(host: str, port: int) -> None:
    if not host:
        raise ValueError("host must be an address to bind, got an empty string")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, got {port!r}")


def _check_graceful_timeout(seconds: Optional[float]) -> None:
    if seconds is not None and not 0 < seconds < math.inf:
        raise ValueError(f"graceful_timeout must be a positive number of seconds or None, "
                         f"got {seconds!r}")


def _check_seconds(name: str, seconds: float) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not 0 < seconds < math.inf:
        raise ValueError(f"{name} must be a positive number of seconds, got {seconds!r}")


def _check_log_level(level: str) -> None:
    if level not in LOG_LEVELS:
        raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
