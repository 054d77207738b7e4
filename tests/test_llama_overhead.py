"""The llama backend's per-request shortcuts give what the long way gives, on real llama.cpp with
the tiny generated models.

The last token's log-probability is read from the context's logits only when asked for, or just
before the context decodes again or is freed: a completion kept across later requests, read after
the backend closed, or read from another thread while the context serves again, still has its
own value. The references are a fresh model evaluated from scratch (float64 log-softmax), never
the backend under test. Tokenizing and detokenizing call llama.cpp directly; llama-cpp-python's
own ``Llama.tokenize`` / ``Llama.detokenize`` are the peers.
"""

from __future__ import annotations

import numpy as np
import pytest
from threads import run_threads

from edge.backends import llama as llama_module
from edge.backends import llama_api
from edge.backends.llama import LlamaBackend
from edge.runtime import InferenceRequest

N_CTX = 256
PROMPTS = ("Once upon a time, the adapter", "A completely different prompt about rivers")


def greedy_logprobs(tiny_models, prompt: str, n: int) -> list[float]:
    """Log-probabilities of the first ``n`` greedy tokens after ``prompt`` under a fresh base
    model, each from logits evaluated from scratch."""
    with llama_api.load_model(tiny_models.base, n_ctx=N_CTX) as model:
        tokens = model.tokenize(prompt)
        generated = llama_api.generate_greedy(model, tokens, n)
        logprobs = []
        for k, token in enumerate(generated):
            logits = llama_api.evaluate(model, tokens + generated[:k]).astype(np.float64)
            logprobs.append(float(logits[token] - np.logaddexp.reduce(logits)))
        return logprobs


def serve(backend: LlamaBackend, prompt: str, max_tokens: int):
    return backend.serve(InferenceRequest(prompt=prompt, params={"max_tokens": max_tokens}), [])


@pytest.fixture
def backend(tiny_models):
    b = LlamaBackend(tiny_models.base, n_ctx=N_CTX, track_logprobs=True)
    yield b
    b.close()


def test_a_kept_completion_keeps_its_log_probability_while_the_context_serves_others(
        tiny_models, backend):
    first = serve(backend, PROMPTS[0], 1)  # its logits stay in the context, unread
    second = serve(backend, PROMPTS[1], 3)  # decodes on the same context: first's are read
    third = serve(backend, PROMPTS[0], 2)
    expected_first = greedy_logprobs(tiny_models, PROMPTS[0], 2)
    expected_second = greedy_logprobs(tiny_models, PROMPTS[1], 3)
    assert expected_first[0] != pytest.approx(expected_second[-1], abs=1e-3)  # distinguishable
    assert (first.completion_tokens, second.completion_tokens) == (1, 3)
    assert first.mean_logprob == pytest.approx(expected_first[0], abs=1e-4)
    assert second.mean_logprob == pytest.approx(np.mean(expected_second), abs=1e-4)
    assert third.mean_logprob == pytest.approx(np.mean(expected_first), abs=1e-4)
    assert first.mean_logprob == first.mean_logprob  # read once, kept


def test_a_completion_read_after_the_backend_closed_has_its_value(tiny_models):
    backend = LlamaBackend(tiny_models.base, n_ctx=N_CTX, track_logprobs=True)
    completion = serve(backend, PROMPTS[1], 1)
    backend.close()  # frees the logits it had not read yet
    assert completion.mean_logprob == pytest.approx(
        greedy_logprobs(tiny_models, PROMPTS[1], 1)[0], abs=1e-4)


def test_reading_in_another_thread_while_the_context_serves_again(tiny_models, backend):
    expected = greedy_logprobs(tiny_models, PROMPTS[0], 1)[0]
    for _ in range(5):
        kept = serve(backend, PROMPTS[0], 1)
        read: list[float] = []
        run_threads([lambda kept=kept, read=read: read.append(kept.mean_logprob),
                     lambda: serve(backend, PROMPTS[1], 2)])
        assert read[0] == pytest.approx(expected, abs=1e-4)


def test_log_probabilities_are_computed_only_when_tracked(tiny_models, monkeypatch):
    calls = []
    real = llama_module._log_softmax_at

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(llama_module, "_log_softmax_at", counting)
    backend = LlamaBackend(tiny_models.base, n_ctx=N_CTX)  # track_logprobs off: the default
    try:
        untracked = serve(backend, PROMPTS[0], 4)
        serve(backend, PROMPTS[1], 2)
        assert untracked.mean_logprob is None and calls == []
        backend.track_logprobs = True
        tracked = serve(backend, PROMPTS[0], 4)
        assert len(calls) == 3  # one per token a decode followed; the last one on reading
        assert tracked.mean_logprob == pytest.approx(
            np.mean(greedy_logprobs(tiny_models, PROMPTS[0], 4)), abs=1e-4)
        assert len(calls) == 4
    finally:
        backend.close()


def test_tokenize_gives_llama_cpp_pythons_tokens(tiny_models):
    long_text = "the adapter pages in and out " * 2000  # past the cache's size limit
    texts = ["", "hello", PROMPTS[0], "héllo wörld ✓ 東京", "<s> user: hi </s>", long_text]
    with llama_api.load_model(tiny_models.base, n_ctx=N_CTX) as model:
        assert len(long_text.encode()) > llama_api.TOKENIZE_CACHE_BYTES
        for text in texts:
            for add_bos in (True, False):
                for special in (True, False):
                    peer = model.llama.tokenize(text.encode(), add_bos=add_bos, special=special)
                    assert model.tokenize(text, add_bos, special) == peer, (text[:40], add_bos,
                                                                            special)
                    assert model.tokenize(text, add_bos, special) == peer  # again: cached
        assert model.tokenize("<s>", add_bos=False, special=True) == [
            model.llama.token_bos()]  # control-token text read as the token
        mine = model.tokenize(PROMPTS[0])
        mine.append(-1)  # a caller's list is its own: the cache is untouched
        assert model.tokenize(PROMPTS[0]) == model.llama.tokenize(PROMPTS[0].encode())


def test_detokenize_gives_llama_cpp_pythons_text(tiny_models):
    with llama_api.load_model(tiny_models.base, n_ctx=N_CTX) as model:
        for token in range(model.n_vocab):
            assert model.detokenize([token]) == model.llama.detokenize([token]), token
            assert model.piece(token) == model.llama.detokenize([token]), token
        for text in (PROMPTS[0], " leading space", "héllo ✓"):
            tokens = model.tokenize(text)  # BOS first: the leading-space rule applies
            assert model.detokenize(tokens) == model.llama.detokenize(tokens)
            assert model.detokenize(tokens).decode() == text
        assert model.detokenize([]) == b""
