"""The answers the daemon sends, as pydantic models, so that its OpenAPI schema describes them.

One model per JSON answer of ``edge.daemon.app``: completions and chat completions (with the
``edge`` object: request id, adapter, routing, cache, timings), feedback, the model list and one
model, a rescan's report, health, and the error body every 4xx/5xx carries,
``{"error": {"message", "type", "param", "code"}}``. Objects whose keys the daemon fixes forbid
others (``additionalProperties: false``), so a key added to an answer without its model fails
loudly in tests instead of going undocumented; open-ended objects (a routing score row, a model's
metadata, timings) allow extra keys.

``ROUTE_DOCS`` holds, per ``(method, path)``, the decorator arguments that document a route:
``response_model``, ``responses`` (errors, health's 503, the ``text/event-stream`` answer of a
completion sent with ``stream: true``) and, for ``/metrics``, its text ``response_class``;
``create_app`` passes them to its decorators.

A route with a ``response_model`` has FastAPI validate what the endpoint returns against it (a
mismatch is a 500) and serialise it through the model; ``response_model_exclude_unset`` keeps
keys an endpoint leaves out (a model row's adapter-only fields) out of the answer, as before.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

# ---- the models -------------------------------------------------------------------------------


class _Closed(BaseModel):
    """An object whose keys the daemon fixes: any other key is an error (documented as
    ``additionalProperties: false``)."""

    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """An object that may carry keys beyond the documented ones."""

    model_config = ConfigDict(extra="allow")


class ErrorDetail(_Closed):
    message: str = Field(description="What went wrong, naming the input at fault.")
    type: str = Field(description='OpenAI\'s error type, e.g. "invalid_request_error", '
                      '"authentication_error", "server_error", "server_busy".')
    param: Optional[str] = Field(description="The request field at fault, if one is.")
    code: Optional[str] = Field(description='A machine-readable code, e.g. "model_not_found", '
                                '"cache_full", "unsupported_parameter".')


class ErrorResponse(_Closed):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


class Usage(_Closed):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class RoutingScore(_Open):
    """One adapter's score in the router's decision (``Decision.explain``)."""

    arm: str = Field(description="The adapter.")
    mean: Optional[float] = Field(description="Estimated reward (null if not finite).")
    bonus: Optional[float] = Field(description="Exploration bonus (null if not finite).")
    penalty: Optional[float] = Field(description="Paging penalty (null if not finite).")
    score: Optional[float] = Field(description="mean + bonus - penalty (null if not finite).")
    chosen: bool


class Timings(_Open):
    """Milliseconds on the runtime's clock."""

    route: float = Field(description="Features and the routing decision.")
    acquire: float = Field(description="Pinning the adapters: for a miss, the page-in and any "
                           "wait for room.")
    serve: float = Field(description="Generation.")
    total: float


class EdgeInfo(_Closed):
    """How edge served a completion."""

    request_id: str = Field(description="The completion's id: the key of its feedback.")
    adapter: Optional[str] = Field(description="The one adapter that served it (null for the "
                                   "base model or a set of adapters).")
    routed: bool = Field(description='The router chose the adapter (model "auto").')
    reason: Optional[str] = Field(description='Why the router chose it ("ucb", "forced", '
                                  '"epsilon"...); null when not routed.')
    routing: list[RoutingScore] = Field(description="The best adapters' scores, best first "
                                        "([] when not routed).")
    cache: Literal["hit", "page_in", "base"] = Field(description="hit: every adapter was "
                                                     "resident; page_in: one was loaded; base: "
                                                     "no adapter.")
    timings_ms: Timings
    reused_tokens: Optional[int] = Field(ge=0, description="Prompt tokens whose KV state was "
                                         "kept from the previous request under the same "
                                         "adapters (null if the backend does not say).")


FinishReason = Literal["stop", "length"]


class CompletionChoice(_Closed):
    index: int = Field(ge=0)
    text: str
    logprobs: None = None
    finish_reason: FinishReason


class CompletionResponse(_Closed):
    """``POST /v1/completions``: OpenAI's ``text_completion`` plus ``edge``."""

    id: str
    object: Literal["text_completion"]
    created: int = Field(description="Unix time, seconds.")
    model: str = Field(description="What served it: the adapter(s), joined by '+', or the base "
                       "model's id.")
    choices: list[CompletionChoice] = Field(min_length=1, max_length=1)
    usage: Usage
    edge: EdgeInfo


class AssistantMessage(_Closed):
    role: Literal["assistant"]
    content: str


class ChatChoice(_Closed):
    index: int = Field(ge=0)
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason


class ChatCompletionResponse(_Closed):
    """``POST /v1/chat/completions``: OpenAI's ``chat.completion`` plus ``edge``."""

    id: str
    object: Literal["chat.completion"]
    created: int = Field(description="Unix time, seconds.")
    model: str = Field(description="What served it: the adapter(s), joined by '+', or the base "
                       "model's id.")
    choices: list[ChatChoice] = Field(min_length=1, max_length=1)
    usage: Usage
    edge: EdgeInfo


class FeedbackResponse(_Closed):
    """``POST /v1/feedback``."""

    id: Union[str, int] = Field(description="The completion's id, as sent.")
    reward: float = Field(description="The reward, as sent.")
    applied: bool = Field(description="False if the adapter left the catalogue meanwhile.")


class ModelEdge(_Open):
    """What edge knows of a model; adapters carry their metadata too."""

    kind: Literal["base", "router", "adapter"]
    size_bytes: Optional[int] = Field(None, ge=0, description="Adapters: the bytes the cache "
                                      "counts.")
    resident: Optional[bool] = Field(None, description="Adapters: loaded now.")
    description: Optional[str] = None
    tags: Optional[list[str]] = None
    rank: Optional[int] = None
    scale: Optional[float] = None


class Model(_Closed):
    """``GET /v1/models/{model}``: the base model, ``auto`` or an adapter."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    edge: ModelEdge


class ModelList(_Closed):
    """``GET /v1/models``: the base model, ``auto``, then every adapter."""

    object: Literal["list"]
    data: list[Model]


class RescanResponse(_Closed):
    """``POST /v1/adapters/rescan``."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    adapters: int = Field(ge=0, description="Adapters in the catalogue now.")


class Health(_Closed):
    """``GET /healthz``: 200 ``ok``, 503 ``closed``."""

    status: Literal["ok", "closed"]


# ---- the routes' documentation -----------------------------------------------------------------

def error_responses(*statuses: int, media_type: Optional[str] = None
            ) -> dict[Union[int, str], dict[str, Any]]:
    """``responses`` entries documenting ``statuses`` (and any other status) as ErrorResponse.

    FastAPI documents a ``model`` under the route's own media type; a route answering another
    (``/metrics``: text) names the error body's JSON explicitly with ``media_type``."""
    if media_type is None:
        body: dict[str, Any] = {"model": ErrorResponse}
    else:
        body = {"content": {media_type: {"schema": {
            "$ref": f"#/components/schemas/{ErrorResponse.__name__}"}}}}
    documented: dict[Union[int, str], dict[str, Any]] = {
        status: {**body, "description": ERROR_CAUSES[status]} for status in statuses}
    # "default" also keeps FastAPI from documenting a 422 this daemon never sends (its
    # validation errors are 400s).
    documented["default"] = {**body,
                             "description": "Any other error (e.g. 405 for a wrong method)."}
    return documented


ERROR_CAUSES = {
    400: "A malformed body, an unknown or unsupported field (named), or a value over a limit.",
    401: "No valid API key (when the daemon has one).",
    404: "An unknown model (the known ones are named) or request id.",
    413: "A body over the daemon's limit.",
    429: "The queue is full (Retry-After).",
    500: "An unexpected error (logged; the daemon goes on).",
    503: "No room in the cache within its wait (Retry-After), or shutting down.",
}

# One event of a completion streamed with stream: true, as FastAPI documents server-sent events.
STREAM_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string",
                 "description": 'A chunk as JSON (OpenAI\'s stream chunk), or "[DONE]" last.'},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}
STREAMED = {"description": "The answer; with stream: true, server-sent events.",
            "content": {"text/event-stream": {"itemSchema": STREAM_EVENT}}}

GENERATION_ERRORS = (400, 401, 404, 413, 429, 500, 503)

ROUTE_DOCS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/completions"): {
        "response_model": CompletionResponse,
        "responses": {200: STREAMED, **error_responses(*GENERATION_ERRORS)}},
    ("POST", "/v1/chat/completions"): {
        "response_model": ChatCompletionResponse,
        "responses": {200: STREAMED, **error_responses(*GENERATION_ERRORS)}},
    ("POST", "/v1/feedback"): {
        "response_model": FeedbackResponse,
        "responses": error_responses(400, 401, 404, 413, 500, 503)},
    ("GET", "/v1/models"): {
        "response_model": ModelList, "response_model_exclude_unset": True,
        "responses": error_responses(401, 500)},
    ("GET", "/v1/models/{model}"): {
        "response_model": Model, "response_model_exclude_unset": True,
        "responses": error_responses(401, 404, 500)},
    ("POST", "/v1/adapters/rescan"): {
        "response_model": RescanResponse,
        "responses": error_responses(401, 413, 500, 503)},
    ("GET", "/healthz"): {
        "response_model": Health,
        "responses": {503: {"model": Health, "description": "The runtime is closed."}}},
    ("GET", "/metrics"): {
        "response_class": PlainTextResponse,
        "responses": {200: {"description": "Prometheus' text format."},
                      **error_responses(401, 500, media_type="application/json")}},
}
