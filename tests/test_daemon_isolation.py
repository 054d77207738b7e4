"""No cached state crosses adapters, through any path the daemon has: every answer over real HTTP
(greedy, temperature 0) is exactly the text a fresh run gives for that prompt and adapter set.

The fresh run is a brand-new ``LlamaBackend`` + ``Runtime`` per adapter set that never reuses a
prefix: every request there is decoded from empty memory, so nothing cached can reach it. The
daemon meanwhile serves sequences built to catch the known ways KV state leaks (FIELD-NOTES,
llama-server): a request with no adapter after one with an adapter on the same prompt (and the
reverse), alternating adapters on prompts that share a long prefix, a prompt revisited under
another adapter after a different prompt (the RAM prompt cache bug), the same prompt twice under
one adapter (the reuse path must still give the same text, and does reuse), and an adapter
evicted and paged in again in between; each with one llama context and with a pool of two
(slots, each keeping its own KV memory).
"""

from __future__ import annotations

import contextlib

import httpx
import pytest
from daemons import running_daemon

from edge.backends.llama import LlamaBackend
from edge.runtime import InferenceRequest, Runtime

N_CTX = 256
MAX_TOKENS = 8
BASE = "base"  # the tiny base model's file stem: its model id
# Two of the tiny adapters (file stems); A is the largest, so a budget of A's size holds A or B,
# never both.
A, B = "lora-1-r16", "lora-2-r8"
BOTH = f"{A}+{B}"  # the two applied together
# A long shared prefix: a cache keyed by tokens alone would reuse all of it across adapters.
PREFIX = ("In the beginning the model read a long shared preamble about caches, adapters and "
          "budgets; then ")
P = "Once upon a time, the adapter"
P2 = "The cache said"
SHARED_1, SHARED_2 = PREFIX + "it answered", PREFIX + "it asked"
PROMPTS = (P, P2, SHARED_1, SHARED_2)


def policy(directory, budget) -> dict:
    return {"cache": {"budget": budget, "load_workers": 0, "wait_timeout": 30.0},
            "router": {"features": {"dim": 16}},
            "catalogue": {"directory": str(directory), "pattern": "lora-*.gguf"}}


def new_runtime(tiny_models, budget=None, contexts=1, reuse_prefix=True) -> Runtime:
    if budget is None:
        budget = sum(path.stat().st_size for path in tiny_models.adapters)
    backend = LlamaBackend(tiny_models.base, n_ctx=N_CTX, n_contexts=contexts,
                           reuse_prefix=reuse_prefix)
    return Runtime.from_config(policy(tiny_models.base.parent, budget), backend=backend)


@pytest.fixture(params=[1, 2], ids=["1-context", "2-contexts"])
def contexts(request) -> int:
    """The daemon's llama contexts: one whose KV memory every request shares, or a pool of two,
    each keeping its own memory (slots) for a later request to reuse."""
    return request.param


@pytest.fixture(scope="module")
def fresh(tiny_models):
    """fresh(model, prompt): the text a fresh run gives, ``model`` being an adapter name,
    ``"a+b"`` for a set, or the base model's id. One brand-new runtime per adapter set, its
    backend without prefix reuse: every request there is decoded from empty memory."""
    runtimes: dict[tuple[str, ...], Runtime] = {}
    memo: dict[tuple[str, str, int], str] = {}

    def text(model: str, prompt: str, max_tokens: int = MAX_TOKENS) -> str:
        if (model, prompt, max_tokens) not in memo:
            adapters = () if model == BASE else tuple(model.split("+"))
            if adapters not in runtimes:
                runtimes[adapters] = new_runtime(tiny_models, reuse_prefix=False)
            outcome = runtimes[adapters].handle(InferenceRequest(
                prompt=prompt, adapter=adapters,
                params={"max_tokens": max_tokens, "temperature": 0.0}))
            assert outcome.output.reused_tokens == 0
            memo[model, prompt, max_tokens] = outcome.output.text
        return memo[model, prompt, max_tokens]

    yield text
    for runtime in runtimes.values():
        runtime.close()


@contextlib.contextmanager
def daemon_over(runtime: Runtime):
    """The daemon over ``runtime`` on a free loopback port (in a thread); yields an httpx client.
    Stopped on the way out as the first signal would; its thread must have ended."""
    with running_daemon(runtime) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        yield client


def ask(client: httpx.Client, model: str, prompt: str, max_tokens: int = MAX_TOKENS) -> dict:
    response = client.post("/v1/completions", json={
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model
    assert body["usage"]["completion_tokens"] >= 1
    return body


@pytest.fixture
def served(tiny_models, fresh, contexts):
    """served(steps, budget=None): serve ``steps`` ((model, prompt) pairs, or (model, prompt,
    max_tokens)) in order on a new daemon; every answer must be the fresh run's text. Returns
    the answers' bodies."""
    def serve(steps, budget=None) -> list[dict]:
        bodies = []
        with daemon_over(new_runtime(tiny_models, budget, contexts)) as client:
            for i, (model, prompt, *rest) in enumerate(steps):
                body = ask(client, model, prompt, *rest)
                assert body["choices"][0]["text"] == fresh(model, prompt, *rest), (i, model,
                                                                                    prompt)
                bodies.append(body)
        return bodies

    return serve


def test_the_adapters_change_the_greedy_text_on_every_prompt(fresh):
    # Without this, serving the wrong state could give the right text and the tests below
    # could not fail.
    for prompt in PROMPTS:
        texts = {model: fresh(model, prompt) for model in (BASE, A, B)}
        assert len(set(texts.values())) == 3, (prompt, texts)
    # The revisited prompt's texts differ from the other prompt's under each adapter too.
    assert fresh(A, P) != fresh(B, P2) and fresh(B, P) != fresh(A, P2)
    # A and B together are neither alone, nor the base.
    texts = {model: fresh(model, SHARED_1) for model in (BASE, A, B, BOTH)}
    assert len(set(texts.values())) == 4, texts


def test_the_base_model_after_an_adapter_on_the_same_prompt(served):
    served([(A, P), (BASE, P), (A, P)])


def test_an_adapter_after_the_base_model_on_the_same_prompt(served):
    served([(BASE, P), (A, P), (BASE, P)])


def test_alternating_adapters_on_prompts_sharing_a_long_prefix(served):
    served([(A, SHARED_1), (B, SHARED_2), (A, SHARED_1), (B, SHARED_2), (A, SHARED_2),
            (B, SHARED_1), (BASE, SHARED_1)])


def test_a_prompt_revisited_under_another_adapter_is_not_the_first_ones_state(served):
    # llama-server's RAM prompt cache: P under A, P2 under B, then P under B restored A's state.
    served([(A, P), (B, P2), (B, P), (A, P2), (BASE, P)])


def test_an_adapter_set_next_to_its_members_on_a_shared_prefix(served):
    served([(BOTH, SHARED_1), (A, SHARED_1), (BOTH, SHARED_2), (B, SHARED_2), (BOTH, SHARED_1),
            (BASE, SHARED_2), (BOTH, SHARED_2)])


def test_the_same_prompt_twice_under_one_adapter_reuses_and_gives_the_same_text(served):
    first, second = served([(A, SHARED_1), (A, SHARED_1)])
    assert first["edge"]["reused_tokens"] == 0  # nothing before it
    # The second reuses the prompt's KV: all but the last token, decoded again for its logits.
    assert second["edge"]["reused_tokens"] == second["usage"]["prompt_tokens"] - 1 > 0


def test_one_token_repeats_sample_kept_logits_only_under_their_own_adapter(served):
    # A one-token completion leaves the prompt's logits in the context: an exact repeat under
    # the same adapter samples from them (nothing decoded), under any other set it must not.
    bodies = served([(A, P, 1), (A, P, 1), (B, P, 1), (BASE, P, 1), (BOTH, P, 1), (B, P, 1),
                     (B, P, 1), (A, P, 1), (A, P, MAX_TOKENS), (A, P, 1)])
    reused = [body["edge"]["reused_tokens"] for body in bodies]
    prompt_tokens = bodies[0]["usage"]["prompt_tokens"]
    assert reused[1] == reused[6] == prompt_tokens  # the exact repeats
    assert reused[9] == prompt_tokens - 1  # after a longer completion: the last token again


def test_a_shared_prefix_is_reused_under_one_adapter_and_gives_the_fresh_text(served):
    _, second = served([(B, SHARED_1), (B, SHARED_2)])
    assert 0 < second["edge"]["reused_tokens"] < second["usage"]["prompt_tokens"] - 1


def test_an_adapter_evicted_and_paged_in_again_gives_the_fresh_text(tiny_models, served):
    with new_runtime(tiny_models) as sizing:
        sizes = sizing.catalogue.sizes()  # the bytes the cache counts for each adapter
    assert max(sizes.values()) == sizes[A] < sizes[A] + sizes[B]
    bodies = served([(A, P), (B, P), (A, P), (A, P), (BASE, P), (B, P)],
                    budget=sizes[A])  # A or B, never both
    caches = [body["edge"]["cache"] for body in bodies]
    # A, then B evicting A, then A evicting B (paged in again), a hit, the base, B paged in.
    assert caches == ["page_in", "page_in", "page_in", "hit", "base", "page_in"]
