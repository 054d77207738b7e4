"""The daemon's HTTP application: OpenAI-compatible endpoints over one ``Runtime``.

``create_app(runtime)`` returns a FastAPI app; every completion goes through the runtime's one
request path (``Runtime.handle``, or ``Runtime.stream`` when the answer is streamed), so the
daemon adds only HTTP: parsing and limits, model names, server-sent events, cancelling a request
whose client went away, errors as OpenAI-style bodies, and metrics.

Endpoints (all but ``/healthz`` need ``Authorization: Bearer <key>`` when an API key is set):

- ``POST /v1/completions``: ``model``, ``prompt`` (a string), ``max_tokens`` (default 16),
  ``temperature`` (default 0: greedy), ``seed``, ``stop``, ``stream``, ``stream_options``,
  ``user`` (the request's tenant), and edge's ``adapter_scales``. ``model`` is an adapter name, a
  set of them joined by ``+`` (``"a+b"``: served together, in that order), the base model's id
  (no adapter) or ``"auto"`` (the router chooses). The answer is OpenAI's ``text_completion``
  with ``model`` = what served it, plus an ``edge`` object: the request id (``id`` too: the key
  of its feedback), the adapter (None for a set or the base), whether it was routed and why (the
  top scores), ``cache`` (``hit``, ``page_in`` or ``base``) and timings in ms.
- ``POST /v1/chat/completions``: ``messages`` instead of ``prompt``, rendered by the base
  model's own chat template (its GGUF's ``tokenizer.chat_template``) or, for a model without one,
  joined as ``"<role>: <content>\\n"`` lines followed by ``"assistant:"``; that text is what is
  routed on and generated from.
- ``POST /v1/feedback``: ``{"id", "reward"}`` for a routed request (404 for an id with no
  pending decision, 400 for a reward out of range).
- ``GET /v1/models``: the base model, ``auto`` and every adapter (size, resident or not);
  ``GET /v1/models/{id}``: one of them.
- ``POST /v1/adapters/rescan``: read the adapter directory again (added, removed, changed).
- ``GET /healthz`` (no key; 503 once the runtime is closed), ``GET /metrics`` (Prometheus).

``stream: true`` answers with server-sent events as OpenAI sends them (edge.daemon.sse):
``data: {chunk}`` events of ``text_completion`` / ``chat.completion.chunk`` objects, all with
the answer's id (the key of its feedback); a chat answer opens with a ``role: assistant``
delta; the last chunk has the ``finish_reason``, then ``data: [DONE]``. With
``stream_options: {"include_usage": true}`` every chunk has ``usage: null`` and one more chunk
(``choices: []``) before ``[DONE]`` has the usage. The first chunk carries the ``edge`` object
known at the start (adapter, routed, reason, routing, cache), the last one ``edge.timings_ms``.
Routing, acquiring and generating up to the first text happen before the response starts, so
their errors are ordinary JSON errors with their status; an error after that is one
``data: {"error": {...}}`` event that ends the stream (logged). A client that goes away ends the
generation: the runtime's stream is closed, its adapters released (``ClosingStreamingResponse``).

``stop`` (a string or up to 4): the text ends before the first stop sequence generated,
``finish_reason`` is ``"stop"``, and generation stops there; a stream holds back only the text
that could still begin a stop sequence. The backend applies them (the llama backend's ``stop``
parameter, ``edge.stops``), so usage, feedback and the access log are those of any request.

A client that goes away cancels its request: a stream is closed (``ClosingStreamingResponse``);
a whole answer's endpoint watches the connection while the runtime serves in the threadpool and
sets the request's ``cancel`` event, so a queued request leaves the queue and a generating one
stops at its next token, releasing its adapters either way.

``adapter_scales`` (edge's extension, ``{"a": 0.5}``): the LoRA scale of adapters the ``model``
field names, passed as the llama backend's ``scales`` parameter; an adapter not named keeps its
own scale (its metadata's, default 1).

Errors are ``{"error": {"message", "type", "param", "code"}}``: 400 for a malformed body or an
unsupported field (named: ``n`` other than 1, ``best_of``, ``logprobs``, ``echo``, ``suffix``,
tools...), 401 without the key, 404 for an unknown model (naming known ones) or request id, 413
for a body over ``Limits.max_body_bytes``, 429 (``Retry-After``) when the request queue is full,
503 (``Retry-After``) when the cache had no room within its ``wait_timeout`` or the daemon is
shutting down, 500 for anything else (logged with its traceback; the daemon goes on). The runtime
blocks (llama.cpp), so it is always called in the threadpool and the event loop stays free; a
stream takes each piece in the threadpool too; the runtime's scheduler admits as many requests
at once as the backend has contexts and queues the rest.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge import __version__
from edge.daemon.config import Limits
from edge.daemon.errors import ApiError, api_error_for, error_body
from edge.daemon.metrics import DaemonMetrics
from edge.daemon.responses import ROUTE_DOCS
from edge.daemon.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    FeedbackRequest,
    unsupported,
)
from edge.daemon.sse import DONE, ChunkWriter, ClosingStreamingResponse, event
from edge.runtime import AUTO, InferenceRequest, Outcome, Runtime, Stream

log = logging.getLogger("edge.daemon")

OPEN_PATHS = frozenset({"/healthz"})  # answered without the API key
TOP_SCORES = 5  # routing explanation: the best this many adapters
KNOWN_NAMES_SHOWN = 10
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions, used for chat too
SET_SEPARATOR = "+"  # model "a+b": adapters a and b together
# How often a whole answer's endpoint checks that its client is still there (seconds).
DISCONNECT_POLL_SECONDS = 0.1


def base_model_id(runtime: Runtime) -> str:
    """The base model's id: its file's stem (``base`` when the backend has no model file)."""
    path = getattr(getattr(runtime.backend, "model", None), "path", None)
    return Path(str(path)).stem if path else "base"


def create_app(runtime: Runtime, *, api_key: Optional[str] = None,
               limits: Optional[Limits] = None, model_id: Optional[str] = None) -> FastAPI:
    """The OpenAI-compatible app over ``runtime`` (see the module docstring). The caller keeps
    owning the runtime: closing it is ``server.serve``'s job (or the test's)."""
    limits = limits or Limits()
    metrics = DaemonMetrics(runtime)
    gateway = Gateway(runtime, model_id or base_model_id(runtime), limits, metrics)
    app = FastAPI(title="edge", version=__version__,
                  summary="OpenAI-compatible LoRA adapter serving under a byte budget.")
    app.state.gateway = gateway
    _install_error_handlers(app, metrics)

    @app.post("/v1/completions", **ROUTE_DOCS["POST", "/v1/completions"])
    async def completions(body: CompletionRequest, connection: Request
                          ) -> dict | ClosingStreamingResponse:
        prompt = body.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ApiError(400, f"prompt: a batch of {len(prompt)} prompts is not "
                               "supported; send one prompt (a string) per request",
                               param="prompt")
            prompt = prompt[0]
        job = gateway.prepare(body, prompt, "completions")
        if job.stream:
            return await run_in_threadpool(gateway.stream, job)
        outcome, served_as = await gateway.serve_watching(job, connection)
        output = outcome.output
        return {"id": outcome.request_id, "object": "text_completion", "created": int(time.time()),
                "model": served_as,
                "choices": [{"index": 0, "text": _text(output), "logprobs": None,
                             "finish_reason": _finish_reason(output)}],
                "usage": _usage(output), "edge": gateway.explain(outcome)}

    @app.post("/v1/chat/completions", **ROUTE_DOCS["POST", "/v1/chat/completions"])
    async def chat_completions(body: ChatCompletionRequest, connection: Request
                               ) -> dict | ClosingStreamingResponse:
        job = gateway.prepare(body, await run_in_threadpool(gateway.chat_prompt, body), "chat")
        if job.stream:
            return await run_in_threadpool(gateway.stream, job)
        outcome, served_as = await gateway.serve_watching(job, connection)
        output = outcome.output
        return {"id": outcome.request_id, "object": "chat.completion", "created": int(time.time()),
                "model": served_as,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": _text(output)},
                             "logprobs": None, "finish_reason": _finish_reason(output)}],
                "usage": _usage(output), "edge": gateway.explain(outcome)}

    @app.post("/v1/feedback", **ROUTE_DOCS["POST", "/v1/feedback"])
    def feedback(body: FeedbackRequest) -> dict:
        gateway.refuse_unknown_fields(body)
        applied = gateway.call(lambda: runtime.feedback(body.id, body.reward), "feedback")
        return {"id": body.id, "reward": body.reward, "applied": applied}

    @app.get("/v1/models", **ROUTE_DOCS["GET", "/v1/models"])
    def models() -> dict:
        return {"object": "list", "data": gateway.models()}

    @app.get("/v1/models/{model}", **ROUTE_DOCS["GET", "/v1/models/{model}"])
    def model(model: str) -> dict:
        rows = {row["id"]: row for row in gateway.models()}
        if model in rows:
            return rows[model]
        gateway.resolve(model)  # the 404 naming the known models
        raise ApiError(404, f"model {model!r} not found", param="model", code="model_not_found")

    @app.post("/v1/adapters/rescan", **ROUTE_DOCS["POST", "/v1/adapters/rescan"])
    def rescan() -> dict:
        report = gateway.call(runtime.rescan, "rescanning the adapters")
        return {**report, "adapters": len(runtime.catalogue)}

    @app.get("/healthz", **ROUTE_DOCS["GET", "/healthz"])
    async def healthz() -> JSONResponse:
        # async: answered on the event loop even while every worker thread is generating.
        if runtime.closed:
            return JSONResponse({"status": "closed"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", **ROUTE_DOCS["GET", "/metrics"])
    def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes,
                       on_error=metrics.error)
    return app


class Gateway:
    """What the endpoints do besides HTTP: name resolution, limits, the call to ``handle`` and
    its errors, metrics, and the ``edge`` part of an answer."""

    def __init__(self, runtime: Runtime, model_id: str, limits: Limits,
                 metrics: DaemonMetrics) -> None:
        self.runtime = runtime
        self.model_id = model_id
        self.limits = limits
        self.metrics = metrics
        if model_id == AUTO:
            raise ValueError(f'the base model id cannot be "{AUTO}"')
        if model_id in runtime.catalogue:
            log.warning("an adapter is named like the base model (%r): that name serves the base "
                        "model", model_id)

    # ---- a generation -------------------------------------------------------------------

    def prepare(self, body: Any, prompt: str, endpoint: str) -> Job:
        """``body`` checked and turned into the request to serve (every 4xx a body can earn
        before anything is routed or loaded)."""
        self.refuse_unknown_fields(body)
        problem = unsupported(body)
        if problem:
            raise ApiError(400, problem, code="unsupported_parameter")
        if body.stream_options is not None and not body.stream:
            raise ApiError(400, "stream_options is only allowed with stream: true",
                           param="stream_options")
        if len(prompt) > self.limits.max_prompt_chars:
            raise ApiError(400, f"the prompt is {len(prompt)} characters, more than this "
                           f"daemon's limit of {self.limits.max_prompt_chars}", param="prompt",
                           code="prompt_too_long")
        max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
        if max_tokens is None:
            max_tokens = min(DEFAULT_MAX_TOKENS, self.limits.max_tokens)
        elif max_tokens > self.limits.max_tokens:
            raise ApiError(400, f"max_tokens {max_tokens} is more than this daemon's limit of "
                           f"{self.limits.max_tokens}", param="max_tokens")
        params: dict[str, Any] = {"max_tokens": max_tokens}
        if body.temperature is not None:
            params["temperature"] = body.temperature
        if body.seed is not None:
            params["seed"] = body.seed
        if body.stop_sequences():
            params["stop"] = list(body.stop_sequences())
        adapter = self.resolve(body.model)
        if body.adapter_scales:
            params["scales"] = self._scales(body.adapter_scales, adapter, body.model)
        prefix = "cmpl" if endpoint == "completions" else "chatcmpl"
        request_id = f"{prefix}-{uuid.uuid4().hex}"
        request = self.call(lambda: InferenceRequest(
            prompt=prompt, adapter=adapter, request_id=request_id, params=params,
            tenant=body.user, cancel=None if body.stream else threading.Event()),
            "reading the request")
        return Job(request, endpoint, body.model, bool(body.stream), body.include_usage())

    @staticmethod
    def _scales(scales: dict[str, float], adapter: str | tuple[str, ...], model: str
                ) -> dict[str, float]:
        """``adapter_scales`` as the llama backend's ``scales`` parameter (name -> scale)."""
        named = (adapter,) if isinstance(adapter, str) and adapter != AUTO else \
            adapter if isinstance(adapter, tuple) else ()
        if not named:
            raise ApiError(400, f"adapter_scales: model {model!r} names no adapter to scale; "
                           'give one ("a") or a set ("a+b")', param="adapter_scales")
        stray = sorted(set(scales) - set(named))
        if stray:
            raise ApiError(400, f"adapter_scales names {', '.join(map(repr, stray))}, which "
                           f"model {model!r} does not serve (it serves: {', '.join(named)})",
                           param="adapter_scales")
        return dict(scales)

    def chat_prompt(self, body: ChatCompletionRequest) -> str:
        """The messages as the text to route on and generate from: the base model's own chat
        template when its GGUF has one (``backend.format_chat``), else ``role: content`` lines
        and ``assistant:`` (``render_chat_plainly``)."""
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        return self.call(lambda: self.runtime.render_chat(messages), "rendering the chat")

    def serve(self, job: Job) -> tuple[Outcome, str]:
        """A whole answer through ``Runtime.handle``: the outcome and the model name that
        served it (in the threadpool; ``job.request.cancel`` stops it)."""
        doing = f"serving {job.request.request_id} ({job.model})"
        self.metrics.in_flight.inc()
        try:
            outcome = self.call(lambda: self.runtime.handle(job.request), doing)
        finally:
            self.metrics.in_flight.dec()
        served_as = self.served_as(outcome)
        self.metrics.observe(outcome, job.endpoint, served_as)
        return outcome, served_as

    async def serve_watching(self, job: Job, connection: Request) -> tuple[Outcome, str]:
        """``serve`` in the threadpool while the event loop watches the client: one that
        disconnects sets the request's ``cancel`` event, so the runtime drops it from the
        queue or stops its generation at the next token (its adapters released either way)."""
        work = asyncio.ensure_future(run_in_threadpool(self.serve, job))
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=DISCONNECT_POLL_SECONDS)
                if done:
                    return work.result()
                if await connection.is_disconnected():
                    log.info("%s: the client went away; cancelling it",
                             job.request.request_id)
                    job.request.cancel.set()
                    return await work  # RequestCancelled, or done just before the cancel
        finally:
            job.request.cancel.set()  # this task cancelled (shutdown): stop the work too

    def stream(self, job: Job) -> ClosingStreamingResponse:
        """The answer as server-sent events. Routing, acquiring and the first piece of text
        happen now, so their errors are ordinary JSON answers with their status."""
        run = Generation(self, job)
        return ClosingStreamingResponse(self._events(run), on_close=run.close)

    def _events(self, run: Generation) -> Generator[bytes, None, None]:
        """OpenAI's chunks of ``run``: an error during generation becomes an ``error`` event
        and ends the stream; ``run`` is closed however this ends (a client gone included)."""
        job = run.job
        chunks = ChunkWriter(job.endpoint, str(run.stream.request_id), int(time.time()),
                             run.served_as, job.include_usage)
        head: Optional[dict] = {"edge": self.explain_start(run.stream)}
        try:
            opening = chunks.start(head)
            if opening is not None:
                yield opening
                head = None
            for text in run:
                yield chunks.text(text, head)
                head = None
            outcome = run.outcome
            end = self.explain_end(outcome)  # on the last chunk, whichever it is
            reason = _finish_reason(outcome.output)
            if job.include_usage:
                yield chunks.finish(reason, head)
                yield chunks.usage(_usage(outcome.output), {"edge": end})
            else:
                yield chunks.finish(reason, {"edge": {**(head or {}).get("edge", {}), **end}})
            yield DONE
        except Exception as exc:
            error = api_error_for(exc, f"streaming {run.stream.request_id} ({job.model})")
            if error.status < 500:
                log.warning("streaming %s failed: %s", run.stream.request_id, error.message)
            self.metrics.error(error.status, error.type)
            yield event(error.body())
        finally:
            if run.outcome is None:
                log.info("%s: the stream ended early (client gone or error); generation "
                         "stopped and its adapters released", run.stream.request_id)
            run.close()

    def resolve(self, model: str) -> str | tuple[str, ...]:
        """The ``InferenceRequest.adapter`` for a ``model`` field."""
        if model == AUTO:
            return AUTO
        if model == self.model_id:
            return ()  # the base model alone
        if model in self.runtime.catalogue:
            return model
        if SET_SEPARATOR in model:
            return self._adapter_set(model)
        self._unknown(model)

    def _adapter_set(self, model: str) -> tuple[str, ...]:
        """``"a+b"``: the adapters a and b served together."""
        names = tuple(model.split(SET_SEPARATOR))
        for name in names:
            if name in (self.model_id, AUTO, ""):
                raise ApiError(400, f"model {model!r}: an adapter set lists adapters only (not "
                               f"{name!r}), joined by {SET_SEPARATOR!r}", param="model")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ApiError(400, f"model {model!r} lists {', '.join(twice)} twice",
                           param="model")
        for name in names:
            if name not in self.runtime.catalogue:
                self._unknown(name, f" (in the adapter set {model!r})")
        return names

    def _unknown(self, model: str, where: str = "") -> NoReturn:
        names = [self.model_id, AUTO, *self.runtime.catalogue]
        shown = ", ".join(names[:KNOWN_NAMES_SHOWN])
        more = f", ... ({len(names) - 2} adapters in all)" if len(names) > KNOWN_NAMES_SHOWN \
            else ""
        raise ApiError(404, f"model {model!r}{where} not found: give an adapter name, a set of "
                       f"them (\"a{SET_SEPARATOR}b\"), the base model {self.model_id!r} or "
                       f"{AUTO!r} (known: {shown}{more}; GET /v1/models lists them all)",
                       param="model", code="model_not_found")

    def served_as(self, outcome: Outcome) -> str:
        return SET_SEPARATOR.join(outcome.adapters) if outcome.adapters else self.model_id

    def explain(self, outcome: Outcome) -> dict:
        """The ``edge`` object of an answer."""
        return {**self.explain_start(outcome), **self.explain_end(outcome)}

    @staticmethod
    def explain_start(started: Outcome | Stream) -> dict:
        """What is known once the adapters are pinned (a stream's first chunk)."""
        decision, adapters = started.decision, started.adapters
        return {
            "request_id": started.request_id,
            "adapter": adapters[0] if len(adapters) == 1 else None,
            "routed": decision is not None,
            "reason": decision.reason if decision is not None else None,
            "routing": _json_safe(decision.explain(TOP_SCORES)) if decision is not None else [],
            "cache": ("hit" if started.hit else "page_in") if adapters else "base",
        }

    @staticmethod
    def explain_end(outcome: Outcome) -> dict:
        """What is known once it was served (a stream's last chunk)."""
        return {"timings_ms": {step: round(seconds * 1000, 3)
                               for step, seconds in outcome.timings.items()},
                "reused_tokens": getattr(outcome.output, "reused_tokens", None)}

    # ---- the rest ---------------------------------------------------------------------------

    def models(self) -> list[dict]:
        resident = self.runtime.resident()
        rows = [_model_row(self.model_id, {"kind": "base"}),
                _model_row(AUTO, {"kind": "router"})]
        for name, entry in self.runtime.catalogue.items():
            meta = entry.metadata or {}
            rows.append(_model_row(name, {
                "kind": "adapter", "size_bytes": entry.size, "resident": name in resident,
                **{k: meta[k] for k in ("description", "tags", "rank", "scale") if k in meta}}))
        return _json_safe(rows)

    @staticmethod
    def refuse_unknown_fields(body: Any) -> None:
        unknown = body.unknown_fields()
        if unknown:
            raise ApiError(400, f"unknown field(s) {', '.join(unknown)} (this endpoint accepts: "
                           f"{', '.join(type(body).model_fields)})", param=unknown[0],
                           code="unknown_parameter")

    @staticmethod
    def call(fn: Callable[[], Any], doing: str) -> Any:
        """``fn()``, with any exception turned into its HTTP answer (5xx logged)."""
        try:
            return fn()
        except ApiError:
            raise
        except Exception as exc:
            raise api_error_for(exc, doing) from exc


@dataclass(frozen=True)
class Job:
    """A checked request, ready to serve (``Gateway.prepare``)."""

    request: InferenceRequest
    endpoint: str  # "completions" or "chat"
    model: str  # the model field as sent
    stream: bool
    include_usage: bool


class Generation:
    """One request generated through ``Runtime.stream``.

    Opening it routes, acquires and generates up to the first text to send (errors raised as
    ``ApiError``s). Iterate it once for the text; then ``outcome`` is the runtime's.
    ``close()`` always (``with``): a request abandoned early is closed, so its generation stops
    and its adapters are released."""

    def __init__(self, gateway: Gateway, job: Job) -> None:
        self.gateway, self.job = gateway, job
        self.outcome: Optional[Outcome] = None
        self.stream: Optional[Stream] = None
        self._texts: Optional[Generator[str, None, None]] = None
        self._closed = False
        doing = f"serving {job.request.request_id} ({job.model})"
        gateway.metrics.in_flight.inc()
        try:
            self.stream = gateway.call(lambda: gateway.runtime.stream(job.request), doing)
            self.served_as = SET_SEPARATOR.join(self.stream.adapters) or gateway.model_id
            self._texts = self._generate()
            self._first = gateway.call(lambda: next(self._texts, None), doing)
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[str]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._texts or ()

    def _generate(self) -> Generator[str, None, None]:
        yield from self.stream
        self._finish(self.stream.outcome)

    def _finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.gateway.metrics.observe(outcome, self.job.endpoint, self.served_as)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._texts is not None:
                self._texts.close()
            if self.stream is not None:
                self.stream.close()  # nothing left to do once it finished
        finally:
            self.gateway.metrics.in_flight.dec()

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _model_row(name: str, edge: dict) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "edge", "edge": edge}


def _text(output: Any) -> str:
    text = getattr(output, "text", None)
    if text is not None:
        return text
    return "" if output is None else str(output)


def _finish_reason(output: Any) -> str:
    return getattr(output, "finish_reason", None) or "stop"


def _usage(output: Any) -> dict:
    prompt = getattr(output, "prompt_tokens", 0) or 0
    completion = getattr(output, "completion_tokens", 0) or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# ---- errors as OpenAI-style bodies ----------------------------------------------------------

def _install_error_handlers(app: FastAPI, metrics: DaemonMetrics) -> None:
    def answer(status: int, body: dict, headers: Optional[dict] = None) -> JSONResponse:
        metrics.error(status, body["error"]["type"])
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return answer(exc.status, exc.body(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return answer(400, error_body(message, "invalid_request_error", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        message = f"{exc.detail}: {request.method} {request.url.path}" \
            if exc.status_code in (404, 405) else str(exc.detail)
        return answer(exc.status_code, error_body(message, kind), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error = api_error_for(exc, f"{request.method} {request.url.path}")
        return answer(error.status, error.body(), error.headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, Optional[str]]:
    """One line naming each bad field (at most five), and the first one's name."""
    parts, first = [], None
    errors = exc.errors()
    for error in errors:
        if error.get("type") == "json_invalid":
            detail = (error.get("ctx") or {}).get("error", error.get("msg"))
            return f"the body is not valid JSON: {detail}", None
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        if where and first is None:
            first = where.split(".")[0]
        if not where and error.get("type") in ("missing", "model_attributes_type", "dict_type"):
            parts.append("the body must be a JSON object, sent as Content-Type: "
                         "application/json")
        else:
            parts.append(f"{where or 'body'}: {error.get('msg')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts[:5]) + more, first


# ---- the API key and the body limit ---------------------------------------------------------

class Guard:
    """ASGI middleware before the app: the API key (every path but ``OPEN_PATHS``) and the body
    size limit (checked on ``Content-Length`` and on the bytes as they arrive, then replayed to
    the app; a body over the limit is answered 413 and read no further)."""

    def __init__(self, app: Any, *, api_key: Optional[str], max_body_bytes: int,
                 on_error: Callable[[int, str], None]) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.on_error = on_error

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        if self.key is not None and scope.get("path") not in OPEN_PATHS \
                and not self._authorized(headers.get(b"authorization", b"")):
            await self._refuse(scope, receive, send, 401, "a valid API key is required: send "
                               "'Authorization: Bearer <key>'", "authentication_error",
                               {"WWW-Authenticate": "Bearer"})
            return
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await self._refuse(scope, receive, send, 400, "Content-Length is not a number",
                                   "invalid_request_error")
                return
            if length > self.max_body_bytes:
                await self._too_large(scope, receive, send, length)
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away before sending its body
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await self._too_large(scope, receive, send, None)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)

    async def _too_large(self, scope: dict, receive: Callable, send: Callable,
                         length: Optional[int]) -> None:
        size = f" ({length} bytes)" if length is not None else ""
        await self._refuse(scope, receive, send, 413, f"the request body{size} is over this "
                           f"daemon's limit of {self.max_body_bytes} bytes",
                           "invalid_request_error")

    async def _refuse(self, scope: dict, receive: Callable, send: Callable, status: int,
                      message: str, kind: str, headers: Optional[dict] = None) -> None:
        self.on_error(status, kind)
        response = JSONResponse(error_body(message, kind), status_code=status, headers=headers)
        await response(scope, receive, send)
