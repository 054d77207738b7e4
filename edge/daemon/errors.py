"""Errors as HTTP answers: every failure the daemon returns is an OpenAI-style body,
``{"error": {"message", "type", "param", "code"}}``, with a status from one registry.

edge's own exceptions map to a status by class (``STATUS_OF``, looked up along the exception's
MRO, so a subclass inherits its family's answer); anything else is a 500 whose traceback is
logged, and the daemon goes on serving.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Optional

from edge.catalogue import UnknownObjectError
from edge.errors import (
    BudgetError,
    CacheClosedError,
    CacheFullError,
    ConfigError,
    EdgeError,
    QueueFullError,
    RequestError,
)
from edge.router.errors import RewardError, UnknownRequestError
from edge.scheduler import RequestCancelled

log = logging.getLogger("edge.daemon")

# Seconds a client is told to wait before retrying when the cache had no room.
RETRY_AFTER_SECONDS = 1


class ApiError(Exception):
    """An answer other than 200: status, message, OpenAI's error ``type``, optional ``code``,
    ``param`` and extra headers."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", *,
                 code: Optional[str] = None, param: Optional[str] = None,
                 headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return error_body(self.message, self.type, code=self.code, param=self.param)


def error_body(message: str, type: str, *, code: Optional[str] = None,
               param: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# edge exception class -> (status, OpenAI error type, code); the most specific class wins.
STATUS_OF: dict[type[BaseException], tuple[int, str, Optional[str]]] = {
    RequestError: (400, "invalid_request_error", None),
    UnknownObjectError: (404, "invalid_request_error", "model_not_found"),
    UnknownRequestError: (404, "invalid_request_error", "request_not_found"),
    RewardError: (400, "invalid_request_error", "invalid_reward"),
    CacheFullError: (503, "server_busy", "cache_full"),
    QueueFullError: (429, "rate_limit_error", "queue_full"),
    # The client is gone: nobody reads this answer; 499 (nginx's "client closed request")
    # keeps it apart from the daemon's own errors in the metrics.
    RequestCancelled: (499, "client_closed_request", "cancelled"),
    CacheClosedError: (503, "server_unavailable", "shutting_down"),
    ConfigError: (500, "server_error", "config_error"),
    BudgetError: (500, "server_error", "budget_error"),
    EdgeError: (500, "server_error", None),
}


def api_error_for(exc: BaseException, doing: str) -> ApiError:
    """The answer for ``exc`` raised while ``doing`` (for the log); 5xx are logged."""
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            status, kind, code = STATUS_OF[cls]
            message = str(exc) or type(exc).__name__
            break
    else:
        status, kind, code = 500, "server_error", None
        message = f"internal error while {doing}: {type(exc).__name__}: {exc}"
    busy = isinstance(exc, (CacheFullError, QueueFullError))
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if busy else None
    if status >= 500 and status != 503:
        log.error("%s failed: %s", doing, message, exc_info=exc)
    elif status == 503:
        log.warning("%s: %s", doing, message)
    return ApiError(status, message, kind, code=code, headers=headers)
