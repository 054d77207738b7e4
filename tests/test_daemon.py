"""The daemon (edge.daemon) against the real server: uvicorn on a loopback port in a background
thread, over a Runtime on real llama.cpp with the tiny generated models.

The references are computed apart from the HTTP path: ``Runtime.handle`` on a second runtime with
its own model (the same request path, no HTTP), and for the base model a fresh model generating
greedily through edge.backends.llama_api.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from daemons import running_daemon
from prometheus_client.parser import text_string_to_metric_families
from threads import run_threads

from edge.backends import llama_api
from edge.backends.llama import LlamaBackend
from edge.daemon import server as daemon_server
from edge.daemon.config import DaemonConfig, Limits
from edge.daemon.server import Daemon
from edge.runtime import InferenceRequest, Runtime

ROOT = Path(__file__).resolve().parents[1]
N_CTX = 256
PROMPT = "Once upon a time, the adapter"
NAMES = ("lora-0-r4", "lora-1-r16", "lora-2-r8")  # the tiny adapters' file stems
BASE = "base"  # the tiny base model's file stem: its model id


def policy(directory, budget, *, wait_timeout=30.0, state_path=None) -> dict:
    return {"cache": {"budget": budget, "load_workers": 0, "wait_timeout": wait_timeout},
            "router": {"features": {"dim": 16},
                       "state": {"path": None if state_path is None else str(state_path)}},
            "catalogue": {"directory": str(directory), "pattern": "lora-*.gguf"}}


def make_runtime(tiny_models, budget=None, **kwargs) -> Runtime:
    directory = kwargs.pop("directory", tiny_models.base.parent)
    backend = LlamaBackend(tiny_models.base, n_ctx=N_CTX)
    budget = budget if budget is not None else sum(p.stat().st_size for p in tiny_models.adapters)
    return Runtime.from_config(policy(directory, budget, **kwargs), backend=backend)


@contextlib.contextmanager
def running(runtime: Runtime, **config):
    """The daemon over ``runtime`` on a free loopback port in a thread; yields (daemon, url).
    On the way out it is stopped as the first signal would, and must have closed the runtime."""
    with running_daemon(runtime, **config) as (daemon, url):
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        yield daemon, url


@pytest.fixture(scope="module")
def reference(tiny_models):
    """In-process completions on a runtime of its own: reference(adapter, prompt, max_tokens)
    with adapter a name or () for the base model."""
    runtime = make_runtime(tiny_models)
    memo = {}

    def complete(adapter, prompt=PROMPT, max_tokens=8):
        key = (adapter, prompt, max_tokens)
        if key not in memo:
            memo[key] = runtime.handle(InferenceRequest(
                prompt=prompt, adapter=adapter, params={"max_tokens": max_tokens})).output
        return memo[key]

    complete.sizes = runtime.catalogue.sizes()  # the adapters' declared (tensor) bytes
    yield complete
    runtime.close()


def fresh_greedy(tiny_models, prompt, max_tokens):
    """The base model's greedy text from a fresh model, no runtime and no adapter."""
    with llama_api.load_model(tiny_models.base, n_ctx=N_CTX) as model:
        tokens = llama_api.generate_greedy(model, model.tokenize(prompt), max_tokens)
        return model.detokenize(tokens).decode("utf-8", errors="replace")


def complete(client, model, prompt=PROMPT, max_tokens=8, **fields):
    return client.post("/v1/completions", json={"model": model, "prompt": prompt,
                                                "max_tokens": max_tokens, **fields})


def error_of(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"], error
    return error


# ---- completions ------------------------------------------------------------------------------

def test_a_named_adapter_completion_is_the_in_process_one(tiny_models, reference):
    runtime = make_runtime(tiny_models)
    with running(runtime) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        for name in NAMES:
            expected = reference(name)
            for cache in ("page_in", "hit"):
                body = complete(client, name).json()
                assert body["object"] == "text_completion" and body["model"] == name
                choice = body["choices"][0]
                assert choice["text"] == expected.text
                assert choice["finish_reason"] == expected.finish_reason
                assert body["usage"] == {
                    "prompt_tokens": expected.prompt_tokens,
                    "completion_tokens": expected.completion_tokens,
                    "total_tokens": expected.prompt_tokens + expected.completion_tokens}
                edge = body["edge"]
                assert edge["request_id"] == body["id"] and edge["adapter"] == name
                assert edge["routed"] is False and edge["routing"] == []
                assert edge["cache"] == cache
                assert set(edge["timings_ms"]) == {"route", "queue", "acquire", "serve", "total"}
                assert 0 < edge["timings_ms"]["total"] < 30_000
        # The texts differ between adapters, so the comparison above can tell them apart.
        assert len({reference(name).text for name in NAMES}) == len(NAMES)


def test_the_base_model_serves_without_an_adapter(tiny_models):
    runtime = make_runtime(tiny_models)
    with running(runtime) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        body = complete(client, BASE, max_tokens=10).json()
        assert body["choices"][0]["text"] == fresh_greedy(tiny_models, PROMPT, 10)
        assert body["model"] == BASE
        assert body["edge"]["adapter"] is None and body["edge"]["cache"] == "base"
        assert runtime.resident() == {}  # no adapter was paged in for it
        # A list of exactly one prompt (what some clients send) is the same request.
        again = complete(client, BASE, prompt=[PROMPT], max_tokens=10).json()
        assert again["choices"][0]["text"] == body["choices"][0]["text"]
        # Without max_tokens: OpenAI's default of 16.
        default = client.post("/v1/completions", json={"model": BASE, "prompt": PROMPT}).json()
        assert default["choices"][0]["text"] == fresh_greedy(tiny_models, PROMPT, 16)


def test_auto_routes_and_takes_feedback(tiny_models, reference):
    runtime = make_runtime(tiny_models)
    with running(runtime) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        body = complete(client, "auto").json()
        chosen, edge = body["model"], body["edge"]
        assert chosen in NAMES and edge["adapter"] == chosen and edge["routed"] is True
        assert edge["reason"] in ("ucb", "forced", "epsilon")
        routing = edge["routing"]
        assert 1 <= len(routing) <= 5 and {row["arm"] for row in routing} <= set(NAMES)
        assert [row["arm"] for row in routing if row["chosen"]] == [chosen]
        scores = [row["score"] for row in routing]
        assert scores == sorted(scores, reverse=True)
        assert body["choices"][0]["text"] == reference(chosen).text

        accepted = client.post("/v1/feedback", json={"id": body["id"], "reward": 0.75})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {"id": body["id"], "reward": 0.75, "applied": True}
        assert runtime.router.updates == 1
        # The reward was taken: the same id again, and an id never seen, are unknown.
        for unknown in (body["id"], "cmpl-never-served"):
            error = error_of(client.post("/v1/feedback", json={"id": unknown, "reward": 1.0}), 404)
            assert unknown in error["message"]
        # A reward outside the configured range [0, 1] names the range.
        second = complete(client, "auto").json()
        error = error_of(client.post("/v1/feedback", json={"id": second["id"], "reward": 7.5}),
                         400)
        assert "7.5" in error["message"]
        # A named request has no routing decision to reward.
        named = complete(client, NAMES[0]).json()
        error_of(client.post("/v1/feedback", json={"id": named["id"], "reward": 1.0}), 404)
        assert runtime.router.updates == 1


def test_chat_completions_use_the_documented_template(tiny_models, reference):
    runtime = make_runtime(tiny_models)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Tell me "},
                                             {"type": "text", "text": "a story"}]}]
    prompt = "system: Be brief.\nuser: Tell me a story\nassistant:"
    # The daemon renders through the runtime (the tiny base has no template of its own).
    assert runtime.render_chat([{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Tell me a story"}]) == prompt
    with running(runtime) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        response = client.post("/v1/chat/completions", json={
            "model": NAMES[2], "messages": messages, "max_tokens": 8})
        assert response.status_code == 200, response.text
        body = response.json()
        expected = reference(NAMES[2], prompt, 8)
        assert body["object"] == "chat.completion" and body["model"] == NAMES[2]
        assert body["id"].startswith("chatcmpl-")
        assert body["choices"][0]["message"] == {"role": "assistant", "content": expected.text}
        assert body["usage"]["prompt_tokens"] == expected.prompt_tokens
        # max_completion_tokens (newer clients) is max_tokens.
        newer = client.post("/v1/chat/completions", json={
            "model": NAMES[2], "messages": messages, "max_completion_tokens": 3}).json()
        assert newer["usage"]["completion_tokens"] == 3


def test_the_official_openai_client_works(tiny_models, reference):
    runtime = make_runtime(tiny_models)
    with running(runtime, api_key="test-key") as (_, url):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="test-key", max_retries=0,
                               timeout=30)
        completion = client.completions.create(model=NAMES[1], prompt=PROMPT, max_tokens=8,
                                               temperature=0)
        assert completion.choices[0].text == reference(NAMES[1]).text
        assert completion.model == NAMES[1]
        assert completion.usage.completion_tokens == reference(NAMES[1]).completion_tokens
        assert completion.model_extra["edge"]["adapter"] == NAMES[1]

        chat = client.chat.completions.create(
            model=NAMES[0], max_tokens=8, messages=[{"role": "user", "content": "Hello"}])
        assert chat.choices[0].message.content == reference(NAMES[0], "user: Hello\nassistant:",
                                                             8).text
        assert chat.choices[0].message.role == "assistant"

        listed = {model.id: model.model_extra["edge"] for model in client.models.list()}
        assert set(listed) == {BASE, "auto", *NAMES}
        assert listed[NAMES[1]]["resident"] is True and listed[BASE]["kind"] == "base"
        assert client.models.retrieve(NAMES[2]).model_extra["edge"]["resident"] is False
        with pytest.raises(openai.NotFoundError, match="known: base, auto"):
            client.models.retrieve("missing")

        with pytest.raises(openai.NotFoundError, match="no-such-adapter"):
            client.completions.create(model="no-such-adapter", prompt=PROMPT)
        with pytest.raises(openai.BadRequestError, match="n=2"):
            client.completions.create(model=NAMES[1], prompt=PROMPT, n=2)
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.completions.create(model=NAMES[1], prompt=PROMPT)


def test_models_lists_the_base_auto_and_every_adapter_with_size_and_residency(tiny_models):
    runtime = make_runtime(tiny_models)
    with running(runtime) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        assert complete(client, NAMES[2]).status_code == 200
        rows = {row["id"]: row for row in client.get("/v1/models").json()["data"]}
        assert list(rows)[:2] == [BASE, "auto"] and set(rows) == {BASE, "auto", *NAMES}
        for name in NAMES:
            edge = rows[name]["edge"]
            assert edge["kind"] == "adapter"
            assert edge["size_bytes"] == runtime.catalogue[name].size
            assert edge["resident"] is (name == NAMES[2])


def test_rescan_picks_up_added_and_removed_adapters(tiny_models, tmp_path):
    for path in tiny_models.adapters[:2]:
        shutil.copy(path, tmp_path / path.name)
    runtime = make_runtime(tiny_models, directory=tmp_path)
    with running(runtime) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        error_of(complete(client, NAMES[2]), 404)
        shutil.copy(tiny_models.adapters[2], tmp_path / tiny_models.adapters[2].name)
        (tmp_path / tiny_models.adapters[0].name).unlink()
        report = client.post("/v1/adapters/rescan")
        assert report.status_code == 200, report.text
        assert report.json() == {"added": [NAMES[2]], "removed": [NAMES[0]], "changed": [],
                                 "adapters": 2}
        assert complete(client, NAMES[2]).status_code == 200
        error_of(complete(client, NAMES[0]), 404)


# ---- metrics ----------------------------------------------------------------------------------

def scrape(client) -> dict[str, list]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/plain")
    return {family.name: family.samples
            for family in text_string_to_metric_families(response.text)}


def value(families, sample_name, **labels) -> float:
    family = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    matches = [s.value for s in families[family]
               if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (sample_name, labels, families[family])
    return matches[0]


def test_metrics_count_what_was_served(tiny_models, reference):
    sizes = sorted(reference.sizes.values())
    budget = sizes[-1] + sizes[0]  # some adapters stay, switching evicts
    runtime = make_runtime(tiny_models, budget=budget)
    with running(runtime) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        served = []
        for model in (NAMES[0], NAMES[0], NAMES[1], NAMES[2], NAMES[0], BASE):
            served.append(complete(client, model).json()["edge"]["cache"])
        routed = complete(client, "auto").json()
        served.append(routed["edge"]["cache"])
        assert client.post("/v1/feedback", json={"id": routed["id"], "reward": 1.0}
                           ).status_code == 200
        error_of(complete(client, NAMES[0], n=3), 400)
        error_of(complete(client, "nope"), 404)

        m = scrape(client)
        stats = runtime.cache.stats()
        assert value(m, "edge_requests_total", model=NAMES[0], cache="page_in") >= 1
        assert value(m, "edge_requests_total", model=BASE, cache="base") == 1
        counted = sum(s.value for s in m["edge_requests"] if s.name == "edge_requests_total")
        assert counted == len(served) == 7
        assert value(m, "edge_routing_decisions_total", adapter=routed["model"]) == 1
        assert value(m, "edge_page_in_seconds_count") == served.count("page_in") == stats.misses
        assert value(m, "edge_page_in_seconds_sum") > 0
        assert value(m, "edge_request_seconds_count", endpoint="completions") == 7
        assert value(m, "edge_cache_budget_bytes") == budget
        resident = value(m, "edge_cache_resident_bytes")
        assert resident == sum(runtime.resident().values()) and 0 < resident <= budget
        assert value(m, "edge_cache_evictions_total",
                     policy=runtime.config.cache.policy_label) == stats.evictions >= 1
        assert value(m, "edge_routing_decisions_total", adapter=routed["model"],
                     reason=routed["edge"]["reason"]) == 1
        assert value(m, "edge_queue_seconds_count") == 7
        assert value(m, "edge_scheduler_slots") == runtime.scheduler.slots == 1
        assert value(m, "edge_scheduler_waiting") == value(m, "edge_scheduler_running") == 0
        assert value(m, "edge_scheduler_refused_total") == 0
        assert value(m, "edge_cache_hits_total") == stats.hits == served.count("hit")
        assert value(m, "edge_feedback_total") == 1
        assert value(m, "edge_router_updates_total") == 1
        assert value(m, "edge_http_errors_total", status="400") == 1
        assert value(m, "edge_http_errors_total", status="404") == 1
        assert value(m, "edge_requests_in_flight") == 0


# ---- concurrency ------------------------------------------------------------------------------

def test_eight_concurrent_clients_under_a_budget_that_forces_eviction(tiny_models, reference):
    budget = max(reference.sizes.values())  # one adapter at a time
    runtime = make_runtime(tiny_models, budget=budget, wait_timeout=60.0)
    prompts = [PROMPT, "The cache said", "Adapters all the way"]
    plan = [(NAMES[(i + j) % 3] if (i + j) % 4 else BASE, prompts[(i * j) % 3])
            for i in range(8) for j in range(4)]
    expected = {(model, prompt): reference(() if model == BASE else model, prompt, 12).text
                for model, prompt in plan}
    over_budget, samples, done = [], [0], threading.Event()

    def watch():
        while not done.is_set():
            stats = runtime.cache.stats()
            if stats.resident_bytes + stats.reserved_bytes > budget:
                over_budget.append(stats)
            samples[0] += 1
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    with running(runtime) as (_, url):
        def client_of(i):
            def run():
                with httpx.Client(base_url=url, timeout=60) as client:
                    for model, prompt in plan[i * 4:(i + 1) * 4]:
                        response = complete(client, model, prompt, 12)
                        assert response.status_code == 200, response.text
                        assert response.json()["choices"][0]["text"] == expected[model, prompt]
                    routed = complete(client, "auto", prompts[i % 3], 12)
                    assert routed.status_code == 200, routed.text
                    body = routed.json()
                    assert body["choices"][0]["text"] == reference(body["model"], prompts[i % 3],
                                                                   12).text
            return run

        watcher.start()
        try:
            run_threads([client_of(i) for i in range(8)], timeout=120)
        finally:
            done.set()
            watcher.join(5)
        with httpx.Client(base_url=url) as client:
            m = scrape(client)
            assert 0 < value(m, "edge_cache_resident_bytes") <= budget
            assert [s for s in m["edge_http_errors"] if s.name == "edge_http_errors_total"] == []
            assert value(m, "edge_cache_evictions_total") >= 2
    assert not over_budget, over_budget[:3]
    assert samples[0] > 10  # the watcher did watch
    stats = runtime.stats()
    assert stats["requests"]["requests"] == 8 * 5 and stats["requests"]["failed"] == 0
    assert stats["cache"]["evictions"] >= 2


# ---- errors -----------------------------------------------------------------------------------

JSON = {"content-type": "application/json"}


def test_malformed_requests_get_a_4xx_with_a_message_and_the_daemon_goes_on(tiny_models):
    runtime = make_runtime(tiny_models)
    limits = Limits(max_body_bytes=4096, max_prompt_chars=1000, max_tokens=64)
    good = {"model": NAMES[0], "prompt": PROMPT, "max_tokens": 4}
    cases = [  # (method, path, body: bytes or JSON, status, words the message must contain)
        ("POST", "/v1/completions", b'{"model": "x", "prompt": ', 400, "not valid JSON"),
        ("POST", "/v1/completions", b"[1, 2]", 400, "JSON object"),
        ("POST", "/v1/completions", b"", 400, "JSON object"),
        ("POST", "/v1/completions", {**good, "max_tokens": "4"}, 400, "max_tokens"),
        ("POST", "/v1/completions", {**good, "max_tokens": 4.0}, 400, "max_tokens"),
        ("POST", "/v1/completions", {**good, "max_tokens": 0}, 400, "max_tokens"),
        ("POST", "/v1/completions", {**good, "prompt": 42}, 400, "prompt"),
        ("POST", "/v1/completions", {**good, "prompt": ["a", "b"]}, 400, "batch of 2"),
        ("POST", "/v1/completions", {"model": NAMES[0]}, 400, "prompt: Field required"),
        ("POST", "/v1/completions", {**good, "temperature": -1}, 400, "temperature"),
        ("POST", "/v1/completions", {**good, "model": "gpt-4"}, 404, "'gpt-4' not found"),
        ("POST", "/v1/completions", {**good, "model": "gpt-4"}, 404, NAMES[0]),
        ("POST", "/v1/completions", {**good, "max_tokens": 65}, 400, "limit of 64"),
        ("POST", "/v1/completions", {**good, "prompt": "x" * 1001}, 400, "limit of 1000"),
        ("POST", "/v1/completions", {**good, "prompt": "x" * 5000}, 413, "limit of 4096"),
        ("POST", "/v1/completions", {**good, "n": 2}, 400, "n=2"),
        ("POST", "/v1/completions", {**good, "stream_options": {"include_usage": True}}, 400,
         "stream_options"),
        ("POST", "/v1/completions", {**good, "logprobs": 3}, 400, "logprobs"),
        ("POST", "/v1/completions", {**good, "stop": ["a", "b", "c", "d", "e"]}, 400,
         "at most 4 stop sequences"),
        ("POST", "/v1/completions", {**good, "top_k": 5}, 400, "unknown field(s) top_k"),
        # JSON can escape a lone surrogate, which no UTF-8 tokenizer can take.
        ("POST", "/v1/completions", {**good, "prompt": "abc \ud800 def"}, 400,
         "not valid Unicode"),
        ("POST", "/v1/completions", {**good, "model": "auto", "prompt": "\udfff"}, 400,
         "not valid Unicode"),
        ("POST", "/v1/completions", {**good, "prompt": "\ud800", "stream": True}, 400,
         "not valid Unicode"),
        ("POST", "/v1/chat/completions",
         {"model": BASE, "messages": [{"role": "user", "content": "hi \udc80"}]}, 400,
         "not valid Unicode"),
        ("POST", "/v1/chat/completions", {"model": BASE, "messages": []}, 400, "messages"),
        ("POST", "/v1/chat/completions", {"model": BASE, "messages": [{"role": "robot"}]}, 400,
         "role"),
        ("POST", "/v1/chat/completions",
         {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "tools": [{}]}, 400,
         "tools"),
        ("POST", "/v1/feedback", {"id": "x"}, 400, "reward"),
        ("POST", "/v1/feedback", {"id": ["x"], "reward": 1}, 400, "id"),
        ("GET", "/v1/completions", None, 405, "Method Not Allowed"),
        ("GET", "/v1/nothing", None, 404, "/v1/nothing"),
    ]
    with running(runtime, limits=limits) as (_, url), \
            httpx.Client(base_url=url, timeout=30) as client:
        for method, path, body, status, words in cases:
            content = body if isinstance(body, bytes) or body is None else json.dumps(body)
            response = client.request(method, path, content=content, headers=JSON)
            error = error_of(response, status)
            assert words in error["message"], (path, body, error)
            assert complete(client, **good).status_code == 200, (path, body)  # still serving
        # The context bound of the backend (prompt + max_tokens > n_ctx) is a 400 too.
        error = error_of(complete(client, NAMES[0], "word " * 200, 64), 400)
        assert "exceeds the context" in error["message"]
        # A body sent in chunks, with no Content-Length, is cut off at the limit all the same.
        def chunks():
            yield b'{"model": "base", "prompt": "'
            for _ in range(50):
                yield b"x" * 100
            yield b'"}'

        response = client.post("/v1/completions", content=chunks(), headers=JSON)
        assert "limit of 4096" in error_of(response, 413)["message"]
        # A JSON body is only read as JSON: a form-encoded one (curl -d) is told so.
        response = client.post("/v1/completions", content=json.dumps(good),
                               headers={"content-type": "application/x-www-form-urlencoded"})
        assert "application/json" in error_of(response, 400)["message"]
        assert runtime.cache.stats().pinned_bytes == 0


def test_an_unexpected_error_is_a_500_with_a_message_and_the_daemon_goes_on(tiny_models,
                                                                            caplog):
    runtime = make_runtime(tiny_models)
    handle = runtime.handle

    def broken(request):
        raise ZeroDivisionError("the backend divided by zero")

    with running(runtime) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        runtime.handle = broken
        error = error_of(complete(client, NAMES[0]), 500)
        assert "ZeroDivisionError: the backend divided by zero" in error["message"]
        assert error["type"] == "server_error"
        assert any("divided by zero" in r.getMessage() and r.exc_info for r in caplog.records)
        runtime.handle = handle
        assert complete(client, NAMES[0]).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_no_room_within_the_wait_is_a_503_with_retry_after(tiny_models, reference):
    budget = max(reference.sizes.values())
    largest = NAMES[1]  # rank 16
    runtime = make_runtime(tiny_models, budget=budget, wait_timeout=0.0)
    with running(runtime) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        with runtime.cache.acquire(largest):  # in use: nothing can be evicted for another
            response = complete(client, NAMES[0])
            error = error_of(response, 503)
            assert response.headers["retry-after"] == "1"
            assert error["code"] == "cache_full"
        assert complete(client, NAMES[0]).status_code == 200  # room again once released


def test_the_api_key_is_required_everywhere_but_healthz(tiny_models):
    runtime = make_runtime(tiny_models)
    with running(runtime, api_key="s3cret") as (_, url):
        requests = [("GET", "/v1/models", None), ("GET", "/metrics", None),
                    ("POST", "/v1/completions", {"model": BASE, "prompt": "x"}),
                    ("POST", "/v1/chat/completions",
                     {"model": BASE, "messages": [{"role": "user", "content": "x"}]}),
                    ("POST", "/v1/feedback", {"id": "x", "reward": 1.0}),
                    ("POST", "/v1/adapters/rescan", None)]
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic s3cret"},
                        {"authorization": "s3cret"}):
            for method, path, body in requests:
                response = httpx.request(method, url + path, json=body, headers=headers)
                error = error_of(response, 401)
                assert error["type"] == "authentication_error"
                assert response.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/healthz").status_code == 200
        key = {"authorization": "Bearer s3cret"}
        assert httpx.get(f"{url}/v1/models", headers=key).status_code == 200
        assert httpx.post(f"{url}/v1/completions", headers=key, json={
            "model": BASE, "prompt": "x", "max_tokens": 2}).status_code == 200


# ---- shutdown ---------------------------------------------------------------------------------

def test_stopping_finishes_the_request_in_flight_then_closes_the_runtime(tiny_models, tmp_path):
    state = tmp_path / "router.state"
    runtime = make_runtime(tiny_models, state_path=state)
    backend = runtime.backend
    # The daemon serves a whole answer through the backend's stream (so that a client going
    # away can stop it between tokens): hold that.
    serve_stream, started, release = backend.serve_stream, threading.Event(), threading.Event()

    def held_serve(request, objects):
        started.set()
        assert release.wait(30)
        return (yield from serve_stream(request, objects))

    backend.serve_stream = held_serve
    daemon = Daemon(runtime, DaemonConfig(port=0, log_level="warning"))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    while not daemon.started:
        assert thread.is_alive()
        time.sleep(0.01)
    url = f"http://127.0.0.1:{daemon.port}"
    answers = []
    client = threading.Thread(target=lambda: answers.append(httpx.post(
        f"{url}/v1/completions", timeout=30,
        json={"model": "auto", "prompt": PROMPT, "max_tokens": 6})))
    client.start()
    assert started.wait(30)
    daemon.stop()  # what the first SIGTERM does
    deadline = time.monotonic() + 10
    while True:  # it stops accepting connections ...
        try:
            httpx.get(f"{url}/healthz", timeout=1)
        except httpx.ConnectError:
            break
        assert time.monotonic() < deadline, "still accepting connections 10 s after stop()"
        time.sleep(0.02)
    time.sleep(0.2)
    assert thread.is_alive() and not runtime.closed  # ... but waits for the request in flight
    release.set()
    client.join(30)
    thread.join(30)
    assert not thread.is_alive() and runtime.closed
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()["usage"]["completion_tokens"] == 6
    assert state.is_file() and state.stat().st_size > 0  # the router's state was saved
    assert backend.model.closed and backend.loads == backend.unloads


def test_a_second_signal_exits_at_once(monkeypatch):
    exits = []
    monkeypatch.setattr(daemon_server, "_exit_now", exits.append)
    server = daemon_server._Server(daemon_server.uvicorn.Config(app=None))
    server.handle_exit(signal.SIGINT, None)
    assert server.should_exit and not server.force_exit and exits == []
    server.handle_exit(signal.SIGTERM, None)  # uvicorn's own forces only on a second SIGINT
    assert server.force_exit and exits == [128 + signal.SIGTERM]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_edge_serve_answers_and_saves_the_router_state_on_sigterm(tiny_models, tmp_path):
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    for path in tiny_models.adapters:
        shutil.copy(path, adapters / path.name)
    state = tmp_path / "router.state"
    config = tmp_path / "policy.yaml"
    config.write_text(json.dumps({"cache": {"budget": "1GiB"},
                                  "router": {"features": {"dim": 16},
                                             "state": {"path": str(state)}}}))
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-c", "from edge.daemon.commands import serve; serve()",
               "--config", str(config), "--model", str(tiny_models.base),
               "--adapters", str(adapters), "--budget", "100000", "--port", str(port),
               "--api-key-env", "EDGE_TEST_KEY", "--n-ctx", str(N_CTX), "--log-level", "info"]
    env = {**os.environ, "EDGE_TEST_KEY": "k3y"}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   cwd=ROOT)
    try:
        url, key = f"http://127.0.0.1:{port}", {"authorization": "Bearer k3y"}
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        routed = httpx.post(f"{url}/v1/completions", headers=key, timeout=30, json={
            "model": "auto", "prompt": PROMPT, "max_tokens": 4})
        assert routed.status_code == 200, routed.text
        assert httpx.post(f"{url}/v1/feedback", headers=key, json={
            "id": routed.json()["id"], "reward": 1.0}).status_code == 200
        models = httpx.get(f"{url}/v1/models", headers=key).json()["data"]
        assert [m["id"] for m in models] == [BASE, "auto", *NAMES]
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert not state.exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert state.is_file(), log.read_text()
    assert "closing the runtime" in log.read_text()


def test_edge_serve_reports_bad_options_in_one_line(tiny_models, tmp_path):
    config = tmp_path / "policy.yaml"
    config.write_text("cache: {budget: 1GiB}\n")
    base = [sys.executable, "-c", "from edge.daemon.commands import serve; serve()",
            "--config", str(config), "--model", str(tiny_models.base)]
    cases = [([], "no adapter directory"),
             (["--adapters", str(tmp_path), "--budget", "lots"], "--budget"),
             (["--adapters", str(tmp_path), "--api-key-env", "EDGE_TEST_UNSET_KEY"],
              "EDGE_TEST_UNSET_KEY is not set")]
    for extra, words in cases:
        out = subprocess.run(base + extra, capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items()
                                  if k != "EDGE_TEST_UNSET_KEY"})
        assert out.returncode != 0 and words in out.stderr, (extra, out.stderr)
        assert "Traceback" not in out.stderr
