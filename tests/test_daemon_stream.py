"""Streaming, stop sequences, adapter sets and the refused fields of the daemon (edge.daemon),
against the real server: uvicorn on a loopback port in a background thread, over a Runtime on
real llama.cpp with the tiny generated models (as in test_daemon.py).

The references come from apart from the HTTP path: ``Runtime.handle`` on a second runtime with
its own model, unstopped and unstreamed. Expected stop cuts are derived from those texts by hand
(the text before the first occurrence of the stop string), and the streamed events are parsed
from the raw bytes here, not with the daemon's code.
"""

from __future__ import annotations

import contextlib
import json
import time

import httpx
import openai
import pytest
from daemons import running_daemon

from edge.backends.llama import LlamaBackend
from edge.runtime import InferenceRequest, Runtime
from edge.stops import StopScanner

N_CTX = 256
PROMPT = "Once upon a time, the adapter"
NAMES = ("lora-0-r4", "lora-1-r16", "lora-2-r8")  # the tiny adapters' file stems (ranks 4, 16, 8)
BASE = "base"  # the tiny base model's file stem: its model id
CHAT = [{"role": "user", "content": "Hello"}]
CHAT_PROMPT = "user: Hello\nassistant:"  # the daemon's documented chat template


def policy(directory, budget, *, wait_timeout=30.0) -> dict:
    return {"cache": {"budget": budget, "load_workers": 0, "wait_timeout": wait_timeout},
            "router": {"features": {"dim": 16}},
            "catalogue": {"directory": str(directory), "pattern": "lora-*.gguf"}}


def make_runtime(tiny_models, budget=None, **kwargs) -> Runtime:
    backend = LlamaBackend(tiny_models.base, n_ctx=N_CTX)
    budget = budget if budget is not None else sum(p.stat().st_size for p in tiny_models.adapters)
    return Runtime.from_config(policy(tiny_models.base.parent, budget, **kwargs), backend=backend)


@contextlib.contextmanager
def running(runtime: Runtime, **config):
    """The daemon over ``runtime`` on a free loopback port in a thread; yields its url."""
    with running_daemon(runtime, **config) as (_, url):
        yield url


@pytest.fixture(scope="module")
def reference(tiny_models):
    """In-process answers on a runtime of its own: reference(adapter, prompt, max_tokens), the
    adapter a name, a tuple of names (a set) or () for the base model; ``params`` extra."""
    runtime = make_runtime(tiny_models)
    memo = {}

    def complete(adapter, prompt=PROMPT, max_tokens=8, **params):
        key = (adapter, prompt, max_tokens, json.dumps(params, sort_keys=True))
        if key not in memo:
            memo[key] = runtime.handle(InferenceRequest(
                prompt=prompt, adapter=adapter,
                params={"max_tokens": max_tokens, **params})).output
        return memo[key]

    complete.sizes = runtime.catalogue.sizes()
    yield complete
    runtime.close()


@pytest.fixture(scope="module")
def served(tiny_models):
    """One daemon shared by the tests that only read answers: (runtime, url)."""
    runtime = make_runtime(tiny_models)
    with running(runtime) as url:
        yield runtime, url


def events_of(response: httpx.Response) -> list:
    """The events of a streamed answer, checking OpenAI's framing on the raw bytes: each one is
    ``data: <json>`` then a blank line, and the stream ends with ``data: [DONE]``. Returns the
    JSON payloads, then the string "[DONE]" when it came."""
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = b"".join(response.iter_bytes()).decode()
    assert raw.endswith("\n\n"), raw[-200:]
    events = []
    for block in raw[:-2].split("\n\n"):
        assert block.startswith("data: ") and "\n" not in block, block
        data = block.removeprefix("data: ")
        events.append(data if data == "[DONE]" else json.loads(data))
    assert "[DONE]" not in events[:-1]
    return events


def stream(client, path, **body) -> list:
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        return events_of(response)


def completion_text(chunks) -> str:
    return "".join(c["choices"][0]["text"] for c in chunks if c["choices"])


def chat_text(chunks) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def error_of(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"] and error["type"], error
    return error


# ---- streaming --------------------------------------------------------------------------------

def test_a_streamed_completion_is_the_non_streamed_one_in_openai_chunks(served, reference):
    runtime, url = served
    expected = reference(NAMES[0], PROMPT, 12)
    with httpx.Client(base_url=url, timeout=30) as client:
        whole = client.post("/v1/completions", json={
            "model": NAMES[0], "prompt": PROMPT, "max_tokens": 12}).json()
        assert whole["choices"][0]["text"] == expected.text
        events = stream(client, "/v1/completions", model=NAMES[0], prompt=PROMPT, max_tokens=12,
                        user="alice")
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) >= 3  # the text came in pieces, then the finish
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("cmpl-")
    assert chunks[0]["id"] != whole["id"]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert {c["model"] for c in chunks} == {NAMES[0]} and len({c["created"] for c in chunks}) == 1
    assert completion_text(chunks) == expected.text
    assert [c["choices"][0]["finish_reason"] for c in chunks] == \
        [None] * (len(chunks) - 1) + [expected.finish_reason]
    assert chunks[-1]["choices"][0]["text"] == ""
    assert all("usage" not in c for c in chunks)  # only with include_usage
    first, last = chunks[0]["edge"], chunks[-1]["edge"]
    assert first["request_id"] == chunks[0]["id"] and first["adapter"] == NAMES[0]
    assert first["routed"] is False and first["routing"] == [] and first["cache"] == "hit"
    assert "timings_ms" not in first
    assert {"route", "acquire", "serve", "total"} <= set(last["timings_ms"])
    assert all("edge" not in c for c in chunks[1:-1])


def test_include_usage_adds_openais_usage_chunk(served, reference):
    _, url = served
    expected = reference(NAMES[2], PROMPT, 10)
    with httpx.Client(base_url=url, timeout=30) as client:
        events = stream(client, "/v1/completions", model=NAMES[2], prompt=PROMPT, max_tokens=10,
                        stream_options={"include_usage": True})
    chunks = events[:-1]
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": expected.prompt_tokens, "completion_tokens": expected.completion_tokens,
        "total_tokens": expected.prompt_tokens + expected.completion_tokens}
    assert "timings_ms" in usage["edge"]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == expected.finish_reason
    assert completion_text(chunks) == expected.text


def test_a_streamed_chat_opens_with_the_assistant_role(served, reference):
    _, url = served
    expected = reference(NAMES[1], CHAT_PROMPT, 10)
    with httpx.Client(base_url=url, timeout=30) as client:
        whole = client.post("/v1/chat/completions", json={
            "model": NAMES[1], "messages": CHAT, "max_tokens": 10}).json()
        events = stream(client, "/v1/chat/completions", model=NAMES[1], messages=CHAT,
                        max_tokens=10)
    assert whole["choices"][0]["message"]["content"] == expected.text
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["edge"]["adapter"] == NAMES[1]
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in chunks[1:-1])
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == expected.finish_reason
    assert chat_text(chunks) == expected.text


def test_the_official_openai_client_streams(served, reference):
    _, url = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
    chunks = list(client.completions.create(model=NAMES[2], prompt=PROMPT, max_tokens=8,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == reference(NAMES[2]).text
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices[0].finish_reason == reference(NAMES[2]).finish_reason

    chat = list(client.chat.completions.create(
        model=NAMES[0], messages=CHAT, max_tokens=8, stream=True,
        stream_options={"include_usage": True}))
    expected = reference(NAMES[0], CHAT_PROMPT, 8)
    assert chat[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chat if c.choices) == expected.text
    assert chat[-1].choices == [] and chat[-1].usage.completion_tokens == \
        expected.completion_tokens
    assert chat[0].model_extra["edge"]["adapter"] == NAMES[0]


def test_streams_carry_the_tenant_and_the_feedback_id(tiny_models, reference):
    runtime = make_runtime(tiny_models)
    seen = []
    runtime.add_observer(lambda request, outcome: seen.append(
        (request.tenant, outcome.request_id)))
    with running(runtime) as url, httpx.Client(base_url=url, timeout=30) as client:
        events = stream(client, "/v1/completions", model="auto", prompt=PROMPT, max_tokens=6,
                        user="alice")
        chunks = events[:-1]
        assert seen == [("alice", chunks[0]["id"])]
        edge = chunks[0]["edge"]
        assert edge["routed"] is True and edge["adapter"] == chunks[0]["model"]
        assert completion_text(chunks) == reference(edge["adapter"], PROMPT, 6).text
        accepted = client.post("/v1/feedback", json={"id": chunks[0]["id"], "reward": 1.0})
        assert accepted.status_code == 200, accepted.text
        assert runtime.router.updates == 1


# ---- stop sequences ---------------------------------------------------------------------------

def stop_inside(text: str, start: int, length: int = 3) -> tuple[str, str]:
    """A stop string taken from ``text`` at ``start``, and the text it leaves: everything before
    its first occurrence."""
    stop = text[start:start + length]
    return stop, text[:text.index(stop)]


def scan(stops, pieces) -> tuple[list[str], bool]:
    scanner = StopScanner(stops)
    out = [scanner.feed(piece) for piece in pieces]
    return [*out, scanner.flush()], scanner.stopped


def test_the_stop_scanner_holds_back_only_what_could_begin_a_stop_sequence():
    # (stops, pieces) -> what each feed returns, then flush; worked out by hand.
    assert scan(["abc"], ["xa", "bd", "e"]) == (["x", "abd", "e", ""], False)
    assert scan(["abc"], ["xa", "b", "c", "zz"]) == (["x", "", "", "", ""], True)
    assert scan(["abc"], ["xab"]) == (["x", "ab"], False)  # the end: nothing more can come
    # The earliest stop sequence wins, wherever it is in the list.
    assert scan(["cd", "b"], ["abcd"]) == (["a", ""], True)
    # "\n" is held while it may begin "\n\n", and sent once "E" shows it does not.
    assert scan(["\n\n", "END"], ["one\n", "E", "N", "D\n\n"]) == \
        (["one", "\n", "", "", ""], True)
    # A tail that begins one stop sequence but completes another.
    assert scan(["aab", "ab"], ["xa", "b"]) == (["x", "", ""], True)
    with pytest.raises(ValueError, match="non-empty"):
        StopScanner([""])


def test_stop_cuts_the_text_before_the_first_stop_sequence(served, reference):
    runtime, url = served
    full = reference(NAMES[1], PROMPT, 24)
    assert full.finish_reason == "length" and len(full.text) > 12  # room to cut in
    stop, expected = stop_inside(full.text, 6)
    later, _ = stop_inside(full.text, 10)
    assert 0 < len(expected) < len(full.text) - 3
    with httpx.Client(base_url=url, timeout=30) as client:
        for stops in (stop, [later, stop], ["never generated \x00", stop]):
            served = runtime.stats()["requests"]["requests"]
            body = client.post("/v1/completions", json={
                "model": NAMES[1], "prompt": PROMPT, "max_tokens": 24, "stop": stops}).json()
            assert body["choices"][0]["text"] == expected, stops
            assert body["choices"][0]["finish_reason"] == "stop"
            assert body["usage"]["prompt_tokens"] == full.prompt_tokens
            # Generation stopped there (the backend applies stop sequences): fewer tokens than
            # the unstopped run, and a request served like any other.
            assert 0 < body["usage"]["completion_tokens"] < full.completion_tokens
            assert runtime.stats()["requests"]["requests"] == served + 1
            assert runtime.stats()["requests"]["failed"] == 0
            events = stream(client, "/v1/completions", model=NAMES[1], prompt=PROMPT,
                            max_tokens=24, stop=stops)
            chunks = events[:-1]
            assert events[-1] == "[DONE]" and completion_text(chunks) == expected
            assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
            assert "timings_ms" in chunks[-1]["edge"]
        # A stop sequence never generated leaves the whole text.
        body = client.post("/v1/completions", json={
            "model": NAMES[1], "prompt": PROMPT, "max_tokens": 24, "stop": ["\x00\x01"]}).json()
        assert body["choices"][0]["text"] == full.text
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == full.completion_tokens
        chat_full = reference(NAMES[1], CHAT_PROMPT, 24)
        chat_stop, chat_expected = stop_inside(chat_full.text, 5)
        events = stream(client, "/v1/chat/completions", model=NAMES[1], messages=CHAT,
                        max_tokens=24, stop=chat_stop)
        assert chat_text(events[:-1]) == chat_expected
        assert runtime.cache.stats().pinned_bytes == 0


# ---- a client that goes away ------------------------------------------------------------------

def pace(backend, seconds):
    """Slow the real backend's stream down to one piece per ``seconds`` (a long generation)."""
    real = backend.serve_stream

    def paced(request, objects):
        inner = real(request, objects)
        try:
            while True:
                try:
                    piece = next(inner)
                except StopIteration as done:
                    return done.value
                yield piece
                time.sleep(seconds)
        finally:
            inner.close()

    backend.serve_stream = paced


def test_a_client_gone_mid_stream_releases_its_adapter(tiny_models, reference):
    largest = max(reference.sizes, key=reference.sizes.get)
    other = min(reference.sizes, key=reference.sizes.get)
    budget = reference.sizes[largest]  # one adapter at a time: the next one must evict it
    assert reference(largest, PROMPT, 200).finish_reason == "length"  # it would go on
    runtime = make_runtime(tiny_models, budget=budget, wait_timeout=0.0)
    pace(runtime.backend, 0.05)  # about 5 s for the whole answer
    with running(runtime) as url, httpx.Client(base_url=url, timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions", json={
                "model": largest, "messages": CHAT, "max_tokens": 200, "stream": True}) as r:
            assert r.status_code == 200
            first = next(r.iter_lines())
            assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["role"] \
                == "assistant"
            assert runtime.cache.stats().pinned_bytes == budget  # in use while streaming
        # Leaving the block closed the connection after the first chunk.
        deadline = time.monotonic() + 3
        while runtime.cache.stats().pinned_bytes:
            assert time.monotonic() < deadline, "the adapter is still pinned 3 s after"
            time.sleep(0.01)
        stats = runtime.stats()["requests"]
        assert stats["failed"] == 1 and stats["requests"] == 0  # closed, not served to the end
        assert runtime.backend.served == 0
        # No wait allowed: the next adapter finds room only by evicting the released one.
        answer = client.post("/v1/completions", json={"model": other, "prompt": PROMPT,
                                                      "max_tokens": 2})
        assert answer.status_code == 200, answer.text
        assert runtime.resident() == {other: reference.sizes[other]}
        metrics = client.get("/metrics").text
        assert "edge_requests_in_flight 0.0" in metrics


def test_an_error_during_generation_ends_the_stream_with_an_error_event(tiny_models, caplog):
    runtime = make_runtime(tiny_models)
    real = runtime.backend.serve_stream

    def failing(request, objects):
        inner = real(request, objects)
        try:
            yield next(inner)
            raise ZeroDivisionError("the backend divided by zero")
        finally:
            inner.close()

    with running(runtime) as url, httpx.Client(base_url=url, timeout=30) as client:
        runtime.backend.serve_stream = failing
        events = stream(client, "/v1/completions", model=NAMES[0], prompt=PROMPT, max_tokens=8)
        assert "[DONE]" not in events
        assert completion_text(events[:-1])  # the first piece came
        error = events[-1]["error"]
        assert "ZeroDivisionError: the backend divided by zero" in error["message"]
        assert error["type"] == "server_error"
        assert any("divided by zero" in r.getMessage() for r in caplog.records)
        assert runtime.cache.stats().pinned_bytes == 0
        runtime.backend.serve_stream = real
        assert stream(client, "/v1/completions", model=NAMES[0], prompt=PROMPT,
                      max_tokens=2)[-1] == "[DONE]"


def test_errors_before_the_first_byte_are_json_answers(served):
    _, url = served
    good = {"model": NAMES[0], "prompt": PROMPT, "max_tokens": 4, "stream": True}
    with httpx.Client(base_url=url, timeout=30) as client:
        error = error_of(client.post("/v1/completions", json={**good, "model": "gpt-4"}), 404)
        assert "'gpt-4' not found" in error["message"]
        # The context bound is met when generation starts: still before the first byte.
        error = error_of(client.post("/v1/completions", json={
            **good, "prompt": "word " * 200, "max_tokens": 64}), 400)
        assert "exceeds the context" in error["message"]


# ---- refused fields ---------------------------------------------------------------------------

def test_unsupported_fields_are_refused_by_name(served, reference):
    _, url = served
    good = {"model": NAMES[0], "prompt": PROMPT, "max_tokens": 4}
    chat = {"model": NAMES[0], "messages": CHAT, "max_tokens": 4}
    cases = [("/v1/completions", {**good, "n": 2}, "n=2"),
             ("/v1/completions", {**good, "n": 2, "stream": True}, "n=2"),
             ("/v1/completions", {**good, "best_of": 3}, "best_of=3"),
             ("/v1/completions", {**good, "logprobs": 0}, "logprobs=0"),
             ("/v1/completions", {**good, "echo": True}, "echo=True"),
             ("/v1/completions", {**good, "suffix": "end"}, "suffix='end'"),
             ("/v1/chat/completions", {**chat, "logprobs": True}, "logprobs=True"),
             ("/v1/chat/completions", {**chat, "tools": [{"type": "function"}]}, "tools"),
             ("/v1/chat/completions", {**chat, "functions": [{"name": "f"}]}, "functions"),
             ("/v1/completions", {**good, "stream_options": {"include_usage": True}},
              "stream_options is only allowed with stream: true"),
             ("/v1/completions", {**good, "stream": True,
                                  "stream_options": {"include_usage": 1}}, "include_usage"),
             ("/v1/completions", {**good, "stop": ["a", "b", "c", "d", "e"]},
              "at most 4 stop sequences"),
             ("/v1/completions", {**good, "stop": ""}, "cannot be empty"),
             ("/v1/completions", {**good, "stop": 5}, "stop")]
    with httpx.Client(base_url=url, timeout=30) as client:
        for path, body, words in cases:
            error = error_of(client.post(path, json=body), 400)
            assert words in error["message"], (body, error)
        accepted = client.post("/v1/completions", json={**good, "n": 1, "best_of": 1,
                                                        "echo": False, "stream": False})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["choices"][0]["text"] == reference(NAMES[0], PROMPT, 4).text


# ---- adapter sets and scales ------------------------------------------------------------------

def test_an_adapter_set_serves_the_adapters_together(served, reference):
    _, url = served
    pair = (NAMES[0], NAMES[2])
    model = "+".join(pair)
    expected = reference(pair, PROMPT, 10)
    assert expected.text not in (reference(NAMES[0], PROMPT, 10).text,
                                 reference(NAMES[2], PROMPT, 10).text)
    with httpx.Client(base_url=url, timeout=30) as client:
        body = client.post("/v1/completions", json={"model": model, "prompt": PROMPT,
                                                    "max_tokens": 10}).json()
        assert body["choices"][0]["text"] == expected.text and body["model"] == model
        assert body["edge"]["adapter"] is None and body["edge"]["cache"] in ("hit", "page_in")
        events = stream(client, "/v1/completions", model=model, prompt=PROMPT, max_tokens=10)
        assert completion_text(events[:-1]) == expected.text
        assert {c["model"] for c in events[:-1]} == {model}
        for bad, status, words in ((f"{NAMES[0]}+nope", 404, "'nope' (in the adapter set"),
                                   (f"{NAMES[0]}+auto", 400, "adapters only"),
                                   (f"{NAMES[0]}+{BASE}", 400, "adapters only"),
                                   (f"{NAMES[0]}+", 400, "adapters only"),
                                   (f"{NAMES[0]}+{NAMES[0]}", 400, "twice")):
            error = error_of(client.post("/v1/completions", json={
                "model": bad, "prompt": PROMPT, "max_tokens": 2}), status)
            assert words in error["message"], (bad, error)


def test_adapter_scales_reach_the_backend(served, reference):
    _, url = served
    with httpx.Client(base_url=url, timeout=30) as client:
        def text(model, **fields):
            body = client.post("/v1/completions", json={"model": model, "prompt": PROMPT,
                                                        "max_tokens": 10, **fields})
            assert body.status_code == 200, body.text
            return body.json()["choices"][0]["text"]

        # Scale 0 switches the adapter off: the base model's own text.
        assert text(NAMES[1], adapter_scales={NAMES[1]: 0.0}) == reference((), PROMPT, 10).text
        assert reference((), PROMPT, 10).text != reference(NAMES[1], PROMPT, 10).text
        # In a set, scaling one of them to 0 leaves the other alone.
        pair = f"{NAMES[0]}+{NAMES[2]}"
        assert text(pair, adapter_scales={NAMES[2]: 0.0}) == reference(NAMES[0], PROMPT, 10).text
        half = text(NAMES[1], adapter_scales={NAMES[1]: 0.5})
        assert half == reference(NAMES[1], PROMPT, 10, scales={NAMES[1]: 0.5}).text
        for model, scales, words in ((NAMES[0], {NAMES[1]: 0.5}, "does not serve"),
                                     ("auto", {NAMES[1]: 0.5}, "names no adapter"),
                                     (BASE, {NAMES[1]: 0.5}, "names no adapter")):
            error = error_of(client.post("/v1/completions", json={
                "model": model, "prompt": PROMPT, "adapter_scales": scales}), 400)
            assert words in error["message"] and error["param"] == "adapter_scales"


def test_a_client_gone_before_its_whole_answer_cancels_the_request(tiny_models, reference):
    largest = max(reference.sizes, key=reference.sizes.get)
    assert reference(largest, PROMPT, 200).finish_reason == "length"  # it would go on
    runtime = make_runtime(tiny_models, budget=reference.sizes[largest], wait_timeout=0.0)
    pace(runtime.backend, 0.05)  # about 10 s for the whole answer
    with running(runtime) as url, httpx.Client(base_url=url, timeout=30) as client:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
            httpx.post(f"{url}/v1/completions", timeout=0.5, json={
                "model": largest, "prompt": PROMPT, "max_tokens": 200})
        deadline = time.monotonic() + 3
        while runtime.cache.stats().pinned_bytes or runtime.scheduler.stats().running:
            assert time.monotonic() < deadline, "still generating 3 s after the client left"
            time.sleep(0.01)
        stats = runtime.stats()["requests"]
        assert stats["failed"] == 1 and stats["requests"] == 0
        metrics = client.get("/metrics").text
        assert 'edge_http_errors_total{status="499",type="client_closed_request"} 1.0' in metrics
        assert "edge_requests_in_flight 0.0" in metrics
