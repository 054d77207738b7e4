"""The daemon answers as its OpenAPI schema says: a bounded schemathesis run against the real
daemon (uvicorn on a loopback port, real llama.cpp with the tiny models), with the schema read
from the daemon's own /openapi.json.

Every operation gets a fixed number of generated requests, valid ones and invalid ones, with a
fixed seed. Each answer must not be a 5xx, must have a documented status and content type, and
must match the documented schema (``ErrorResponse`` for the errors; an event stream's events for
``stream: true``). Generated names and token counts almost never exist, so valid requests are
also steered, half of the time, to a real model name and to at most ``MAX_TOKENS`` tokens (the
daemon's limit, which keeps generation cheap): the success answers get checked too, and the test
asserts that they were. Afterwards the daemon must still be healthy, with nothing pinned, and
serve a normal completion exactly as a fresh runtime does.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import httpx
import pytest
import schemathesis
from daemons import running_daemon
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from edge.backends.llama import LlamaBackend
from edge.daemon.app import create_app
from edge.daemon.config import Limits
from edge.runtime import InferenceRequest, Runtime

N_CTX = 256
MAX_TOKENS = 4  # the daemon's limit: more is a 400, so generation stays cheap
EXAMPLES = 25  # generated requests per operation and mode
BASE = "base"
NAMES = ("lora-0-r4", "lora-1-r16", "lora-2-r8")
MODELS = (BASE, "auto", *NAMES, f"{NAMES[0]}+{NAMES[2]}")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
OPERATIONS = {"POST /v1/completions", "POST /v1/chat/completions", "POST /v1/feedback",
              "GET /v1/models", "GET /v1/models/{model}", "POST /v1/adapters/rescan",
              "GET /healthz", "GET /metrics"}
# What a valid request of each operation can be steered to succeed with (see steer).
ANSWERED_200 = OPERATIONS - {"POST /v1/feedback"}  # feedback: checked with a real id below


def new_runtime(tiny_models, reuse_prefix=True) -> Runtime:
    budget = sum(path.stat().st_size for path in tiny_models.adapters)
    return Runtime.from_config(
        {"cache": {"budget": budget, "load_workers": 0, "wait_timeout": 30.0},
         "router": {"features": {"dim": 16}},
         "catalogue": {"directory": str(tiny_models.base.parent), "pattern": "lora-*.gguf"}},
        backend=LlamaBackend(tiny_models.base, n_ctx=N_CTX, reuse_prefix=reuse_prefix))


@contextlib.contextmanager
def documented_daemon(runtime: Runtime):
    """The daemon over ``runtime`` on a free loopback port in a thread; yields its URL. Stopped
    as the first signal would."""
    with running_daemon(runtime, limits=Limits(max_tokens=MAX_TOKENS)) as (_, url):
        yield url


# The fields a steered request keeps: what every backend serves (the others, and fields the
# schema does not name, are refused with a 400 that names them unless neutral).
SERVED_FIELDS = ("model", "prompt", "messages", "max_tokens", "max_completion_tokens",
                 "temperature", "seed", "user", "stream")


def steer(case, data) -> None:
    """Half of the time, make a valid request one the daemon can serve: a real model name, one
    prompt, at most MAX_TOKENS tokens, streamed or not, and no field it refuses; what is left
    stays as generated."""
    if not data.draw(st.booleans(), label="steered"):
        return
    model = data.draw(st.sampled_from(MODELS), label="model")
    if case.path_parameters and "model" in case.path_parameters:
        case.path_parameters["model"] = model
    body = case.body
    if isinstance(body, dict) and "model" in body:
        for field in [field for field in body if field not in SERVED_FIELDS]:
            del body[field]
        body["model"] = model
        if isinstance(body.get("prompt"), list):
            body["prompt"] = body["prompt"][:1] or ""
        for field in ("max_tokens", "max_completion_tokens"):
            if body.get(field) is not None:
                body[field] = data.draw(st.integers(1, MAX_TOKENS), label=field)
        body["stream"] = data.draw(st.sampled_from([None, False, True]), label="stream")


def documented_statuses(operation) -> set[str]:
    """The statuses the operation names itself ("default" documents only the error body)."""
    return {code for code in operation.responses.status_codes if code != "default"}


def fuzz(operation, mode: GenerationMode, url: str, seen: dict) -> None:
    """EXAMPLES generated requests of ``mode`` to ``operation``, each answer checked; the
    (status, media type) of each is added to ``seen[label, mode]``."""
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
    documented = documented_statuses(operation)

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case, data):
        if mode is GenerationMode.POSITIVE:
            steer(case, data)
        response = case.call_and_validate(base_url=url, checks=checks, timeout=30)
        status = response.status_code
        assert str(status) in documented, (
            f"{operation.label} answered {status}, a status it does not document "
            f"({sorted(documented)}): {response.text[:300]}")
        media_type = response.headers.get("content-type", [""])[0].split(";")[0]
        seen[operation.label, mode.value].add((status, media_type))

    run()


def test_every_operation_answers_as_its_schema_says(tiny_models):
    runtime = new_runtime(tiny_models)
    seen: dict[tuple[str, str], set[tuple[int, str]]] = defaultdict(set)
    with documented_daemon(runtime) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=10)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} == OPERATIONS

        for operation in operations:
            fuzz(operation, GenerationMode.POSITIVE, url, seen)
            if len(operation.body):  # a path's string or no input at all cannot be invalid
                fuzz(operation, GenerationMode.NEGATIVE, url, seen)

        # The success answers were checked too, not only the errors: streamed ones as well.
        for label in ANSWERED_200:
            assert 200 in {status for status, _ in seen[label, "positive"]}, (label, seen)
        for label in ("POST /v1/completions", "POST /v1/chat/completions"):
            assert (200, "text/event-stream") in seen[label, "positive"], (label, seen)
            assert (200, "application/json") in seen[label, "positive"], (label, seen)
            assert {status for status, _ in seen[label, "negative"]} <= {400, 404}, seen
        # Feedback's own success answer, for a request the router did route.
        with httpx.Client(base_url=url, timeout=30) as client:
            routed = client.post("/v1/completions", json={"model": "auto", "prompt": "x",
                                                          "max_tokens": 2})
            assert routed.status_code == 200, routed.text
            feedback = schema["/v1/feedback"]["POST"]
            taken = feedback.Case(body={"id": routed.json()["id"], "reward": 0.5}
                                  ).call_and_validate(base_url=url, checks=CHECKS)
            assert taken.status_code == 200 and taken.json()["applied"] is True, taken.text

            # Still healthy, nothing left pinned, and a normal completion is a fresh one.
            assert client.get("/healthz").json() == {"status": "ok"}
            answer = client.post("/v1/completions", json={
                "model": NAMES[1], "prompt": "Once upon a time", "max_tokens": MAX_TOKENS})
            assert answer.status_code == 200, answer.text
            assert runtime.cache.stats().pinned_bytes == 0
    with new_runtime(tiny_models, reuse_prefix=False) as reference:
        expected = reference.handle(InferenceRequest(
            prompt="Once upon a time", adapter=NAMES[1],
            params={"max_tokens": MAX_TOKENS})).output.text
    assert answer.json()["choices"][0]["text"] == expected


@pytest.mark.parametrize(("path", "model"), [("/v1/completions", "CompletionResponse"),
                                           ("/v1/chat/completions", "ChatCompletionResponse")])
def test_a_completion_documents_its_event_stream(tiny_models, path, model):
    runtime = new_runtime(tiny_models)
    with documented_daemon(runtime) as url:
        schema = httpx.get(f"{url}/openapi.json").json()
    answer = schema["paths"][path]["post"]["responses"]["200"]["content"]
    assert answer["application/json"]["schema"]["$ref"] == f"#/components/schemas/{model}"
    assert answer["text/event-stream"]["itemSchema"]["properties"]["data"]["type"] == "string"


def test_a_tiny_positive_temperature_is_served(tiny_models):
    # Found by the schemathesis run: 1e-46 is 0 in float32, and the sampler divided float32
    # logits by it (0/0: NaN, a 500). It now samples in float64.
    runtime = new_runtime(tiny_models)
    with documented_daemon(runtime) as url:
        answer = httpx.post(f"{url}/v1/completions", timeout=30, json={
            "model": BASE, "prompt": "Hello", "max_tokens": 2, "temperature": 1e-46})
    # As close to greedy as sampling gets: the greedy text, from a fresh runtime.
    with new_runtime(tiny_models, reuse_prefix=False) as reference:
        greedy = reference.handle(InferenceRequest(
            prompt="Hello", adapter=(), params={"max_tokens": 2})).output.text
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["text"] == greedy


def test_no_422_is_documented(tiny_models):
    runtime = new_runtime(tiny_models)
    try:
        schema = create_app(runtime).openapi()
        # Validation errors are 400s here: FastAPI's own 422 must not be documented anywhere.
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                assert "422" not in operation["responses"], (method, path)
        assert "HTTPValidationError" not in schema["components"]["schemas"]
    finally:
        runtime.close()
