"""Streaming text out: OpenAI's stream chunks as server-sent events, and a response that always
closes what it streams (stop sequences are the backend's: ``edge.stops``).

- ``ChunkWriter`` writes the ``data: {json}\\n\\n`` events of one streamed answer exactly as
  OpenAI shapes them (``text_completion`` or ``chat.completion.chunk``, one id throughout);
  ``DONE`` ends a stream.
- ``ClosingStreamingResponse`` streams a sync generator from the threadpool and closes it however
  the response ends. Starlette's own ``StreamingResponse`` never closes a sync iterator: when the
  client disconnects (ASGI spec 2.3, which uvicorn's HTTP protocols declare) it cancels the task
  that iterates, and the generator is left suspended until garbage collection. A generation left
  suspended keeps its adapters pinned and the backend's context held, so here the generator is
  closed in ``finally``, in the threadpool, after any ``next`` in flight has returned (anyio's
  ``run_sync`` lets a thread finish before delivering the cancellation).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, Optional

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(payload: dict) -> bytes:
    """One server-sent event carrying ``payload`` as JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


# endpoint -> (the chunks' object, one choice of a chunk: (text or None, finish_reason) -> dict)
_CHOICE_OF: dict[str, tuple[str, Callable[[Optional[str], Optional[str]], dict]]] = {
    "completions": ("text_completion", lambda text, finish: {
        "index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}),
    "chat": ("chat.completion.chunk", lambda text, finish: {
        "index": 0, "delta": {} if text is None else {"content": text}, "logprobs": None,
        "finish_reason": finish}),
}


class ChunkWriter:
    """The events of one streamed answer, as OpenAI sends them: the same ``id``, ``created``
    and ``model`` in every chunk; with ``include_usage``, ``usage: null`` in every chunk but a
    last one whose ``choices`` are empty. ``extra`` adds top-level fields to a chunk (the
    daemon's ``edge`` object)."""

    def __init__(self, endpoint: str, request_id: str, created: int, model: str,
                 include_usage: bool) -> None:
        if endpoint not in _CHOICE_OF:
            raise ValueError(f"no stream chunks for endpoint {endpoint!r} "
                             f"(known: {', '.join(_CHOICE_OF)})")
        self.object, self._choice = _CHOICE_OF[endpoint]
        self.endpoint = endpoint
        self.head = {"id": request_id, "object": self.object, "created": created, "model": model}
        self.include_usage = include_usage

    def start(self, extra: Optional[dict] = None) -> Optional[bytes]:
        """The chunk that opens a chat answer (the assistant's role, empty content); None for
        completions, whose first chunk is their first text."""
        if self.endpoint != "chat":
            return None
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                  "finish_reason": None}
        return self._chunk([choice], extra)

    def text(self, text: str, extra: Optional[dict] = None) -> bytes:
        return self._chunk([self._choice(text, None)], extra)

    def finish(self, reason: str, extra: Optional[dict] = None) -> bytes:
        return self._chunk([self._choice(None, reason)], extra)

    def usage(self, usage: dict, extra: Optional[dict] = None) -> bytes:
        return event({**self.head, "choices": [], "usage": usage, **(extra or {})})

    def _chunk(self, choices: list[dict], extra: Optional[dict]) -> bytes:
        body: dict[str, Any] = {**self.head, "choices": choices}
        if self.include_usage:
            body["usage"] = None
        return event({**body, **(extra or {})})


async def iterate_closing(events: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """``events``, each item taken in the threadpool; closed there too however this ends."""
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, events, None)
            if item is None:
                return
            yield item
    finally:
        with anyio.CancelScope(shield=True):  # a cancelled response must still close it
            await anyio.to_thread.run_sync(events.close)


class ClosingStreamingResponse(StreamingResponse):
    """A ``text/event-stream`` of a sync generator of events, closed when the response ends:
    finished, failed, or cancelled because the client went away. ``on_close`` (idempotent) is
    called after it, in the threadpool: closing a generator that never started runs none of
    its code, and a client gone before the first event can leave it so."""

    def __init__(self, events: Generator[bytes, None, None], *,
                 on_close: Optional[Callable[[], None]] = None,
                 headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(iterate_closing(events), media_type="text/event-stream",
                         headers={**SSE_HEADERS, **(headers or {})})
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                # Under ASGI 2.4 a failed send leaves the async iterator suspended: close it.
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
                if self.on_close is not None:
                    await anyio.to_thread.run_sync(self.on_close)
