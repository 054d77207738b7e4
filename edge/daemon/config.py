"""The daemon's own settings: where it listens, who may call it, and how large a request may be.

Frozen and validated like the policy file's sections (``edge.config``); the runtime's settings
stay in the policy file. Light to import: no FastAPI, no uvicorn, no runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

DEFAULT_HOST = "127.0.0.1"  # loopback: exposing the daemon is a deliberate --host choice
DEFAULT_PORT = 8000


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
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class DaemonConfig:
    """How ``server.serve`` runs the app.

    ``graceful_timeout``: seconds the first SIGTERM/SIGINT waits for requests in flight before
    cancelling what is left (None: as long as they take); a second signal exits at once."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: Optional[str] = field(default=None, repr=False)
    limits: Limits = field(default_factory=Limits)
    model_id: Optional[str] = None
    graceful_timeout: Optional[float] = 60.0
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must be an address to bind, got an empty string")
        if isinstance(self.port, bool) or not isinstance(self.port, int) \
                or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must be a non-empty string or None")
        if self.graceful_timeout is not None and not 0 < self.graceful_timeout < float("inf"):
            raise ValueError(f"graceful_timeout must be a positive number of seconds or None, "
                             f"got {self.graceful_timeout!r}")
