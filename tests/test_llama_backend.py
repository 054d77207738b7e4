"""The llama.cpp backend under edge.Runtime, on real llama.cpp with the tiny generated models.

One base model stays loaded; adapters are paged in and out by the cache and attached per request.
The references are computed independently: a fresh model evaluated from scratch with the
adapter attached (edge.backends.llama_api), never the backend under test.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threads import run_threads

from edge.backends import llama_api
from edge.backends.llama import LlamaBackend
from edge.catalogue import Catalogue
from edge.config import CacheConfig, EdgeConfig
from edge.errors import RequestError
from edge.router.config import FeatureConfig, FeedbackConfig, RouterConfig
from edge.runtime import InferenceRequest, Runtime
from edge.sim.backend import SimulatedBackend

N_CTX = 256
PROMPT = "Once upon a time, the adapter"


def catalogue_of(tiny_models) -> Catalogue:
    return Catalogue.from_files({f"a{i}": p for i, p in enumerate(tiny_models.adapters)})


def config(budget, wait_timeout=0.0) -> EdgeConfig:
    return EdgeConfig(cache=CacheConfig(budget=budget, load_workers=0, wait_timeout=wait_timeout),
                      router=RouterConfig(features=FeatureConfig(dim=16)))


def fresh_greedy(tiny_models, adapter_path, prompt, max_tokens):
    """Tokens a fresh model generates greedily with ``adapter_path`` attached (or none)."""
    with llama_api.load_model(tiny_models.base, n_ctx=N_CTX) as model:
        if adapter_path is not None:
            llama_api.set_adapters(model, [(llama_api.adapter_init(model, adapter_path), 1.0)])
        tokens = llama_api.generate_greedy(model, model.tokenize(prompt), max_tokens)
        return model.detokenize(tokens).decode("utf-8", errors="replace")


@pytest.fixture
def backend(tiny_models):
    b = LlamaBackend(tiny_models.base, n_ctx=N_CTX)
    yield b
    b.close()


def test_runtime_serves_real_completions_named_and_routed(tiny_models, backend):
    catalogue = catalogue_of(tiny_models)
    with Runtime(config(sum(catalogue.sizes().values())), backend, catalogue) as rt:
        named = rt.handle(InferenceRequest(prompt=PROMPT, adapter="a1",
                                           params={"max_tokens": 8}))
        assert named.output.text == fresh_greedy(tiny_models, tiny_models.adapters[1], PROMPT, 8)
        assert named.output.completion_tokens == 8 or named.output.finish_reason == "stop"
        auto = rt.handle(InferenceRequest(prompt=PROMPT, request_id="r1",
                                          params={"max_tokens": 8}))
        i = int(auto.adapter[1:])
        assert auto.output.text == fresh_greedy(tiny_models, tiny_models.adapters[i], PROMPT, 8)
        assert rt.feedback("r1", 1.0)
        base = rt.handle(InferenceRequest(prompt=PROMPT, adapter=[], params={"max_tokens": 8}))
        assert base.output.text == fresh_greedy(tiny_models, None, PROMPT, 8)
    assert backend.loads == backend.unloads and backend.model.closed


def test_an_adapter_changes_the_completion(tiny_models, backend):
    catalogue = catalogue_of(tiny_models)
    with Runtime(config(sum(catalogue.sizes().values())), backend, catalogue) as rt:
        texts = {name: rt.handle(InferenceRequest(prompt=PROMPT, adapter=name,
                                                  params={"max_tokens": 12})).output.text
                 for name in ("a0", "a1", "a2")}
        texts["base"] = rt.handle(InferenceRequest(prompt=PROMPT, adapter=[],
                                                   params={"max_tokens": 12})).output.text
    assert len(set(texts.values())) == 4, texts


def test_a_shared_prefix_is_reused_only_under_the_same_adapter_set(tiny_models, backend):
    catalogue = catalogue_of(tiny_models)
    longer = PROMPT + " went on"
    with Runtime(config(sum(catalogue.sizes().values())), backend, catalogue) as rt:
        first = rt.handle(InferenceRequest(prompt=PROMPT, adapter="a0",
                                           params={"max_tokens": 4})).output
        # The same adapter, a prompt that extends the last one: its KV is kept.
        same = rt.handle(InferenceRequest(prompt=longer, adapter="a0",
                                          params={"max_tokens": 6})).output
        assert same.reused_tokens > 0
        assert same.text == fresh_greedy(tiny_models, tiny_models.adapters[0], longer, 6)
        # Another adapter on a prompt with the same prefix: nothing may be reused.
        other = rt.handle(InferenceRequest(prompt=longer + " and on", adapter="a1",
                                           params={"max_tokens": 6})).output
        assert other.reused_tokens == 0
        assert other.text == fresh_greedy(tiny_models, tiny_models.adapters[1],
                                          longer + " and on", 6)
        # Back to the base model on the first prompt: no reuse of a1's state either.
        base = rt.handle(InferenceRequest(prompt=PROMPT, adapter=[],
                                          params={"max_tokens": 4})).output
        assert base.reused_tokens == 0
        assert base.text == fresh_greedy(tiny_models, None, PROMPT, 4)
        assert first.prompt_tokens == len(backend.model.tokenize(PROMPT))


def test_an_exact_repeat_samples_from_the_logits_the_context_kept(tiny_models, backend,
                                                                  monkeypatch):
    catalogue = catalogue_of(tiny_models)
    decodes = []
    real_decode = llama_api.decode
    monkeypatch.setattr(llama_api, "decode",
                        lambda target, tokens: (decodes.append(len(tokens)),
                                                real_decode(target, tokens)))
    with Runtime(config(sum(catalogue.sizes().values())), backend, catalogue) as rt:
        def one(adapter, max_tokens=1):
            decodes.clear()
            return rt.handle(InferenceRequest(prompt=PROMPT, adapter=adapter,
                                              params={"max_tokens": max_tokens})).output

        first, again = one("a0"), one("a0")  # a one-token completion leaves the prompt's logits
        assert first.reused_tokens == 0 and again.reused_tokens == again.prompt_tokens
        assert decodes == [] and again.text == first.text
        assert again.text == fresh_greedy(tiny_models, tiny_models.adapters[0], PROMPT, 1)
        # Under another adapter the same prompt is decoded afresh, and gives its own token.
        other = one("a1")
        assert other.reused_tokens == 0 and decodes == [other.prompt_tokens]
        assert other.text == fresh_greedy(tiny_models, tiny_models.adapters[1], PROMPT, 1)
        # After a longer completion the memory holds generated tokens too: the last prompt
        # token is decoded again (the logits are the last generated token's).
        one("a1", max_tokens=3)
        after = one("a1", max_tokens=2)
        assert after.reused_tokens == after.prompt_tokens - 1 and decodes[0] == 1
        assert after.text == fresh_greedy(tiny_models, tiny_models.adapters[1], PROMPT, 2)


def test_evicted_adapters_are_freed_and_a_pinned_one_is_never_evicted(tiny_models, backend):
    catalogue = catalogue_of(tiny_models)
    # Room for the largest adapter only: most switches evict, and a request for another
    # adapter must wait until the first releases (wait_timeout), never free what is in use.
    budget = max(catalogue.sizes().values())
    rt = Runtime(config(budget, wait_timeout=60.0), backend, catalogue)
    expected = {name: fresh_greedy(tiny_models, catalogue[name].location, PROMPT, 24)
                for name in ("a0", "a1", "a2")}
    results, lock = [], threading.Lock()

    def worker(name):
        def run():
            for _ in range(3):
                out = rt.handle(InferenceRequest(prompt=PROMPT, adapter=name,
                                                 params={"max_tokens": 24}))
                with lock:
                    results.append((name, out.output.text))
                # The budget (the largest adapter's size) bounds what is loaded at once; the
                # two smaller adapters fit together in it.
                live = [a.path for a in list(backend.model._live)]
                by_path = {str(catalogue[n].location): catalogue[n].size for n in catalogue}
                assert sum(by_path[p] for p in live) <= budget, live
        return run

    run_threads([worker(name) for name in ("a0", "a1", "a2")])
    assert len(results) == 9
    assert all(text == expected[name] for name, text in results)
    evictions = rt.cache.stats().evictions
    assert evictions >= 2 and backend.unloads == evictions
    rt.close()
    assert backend.loads == backend.unloads and backend.model._live == []


class Recording:
    """Wraps a backend and records the order of loads and unloads by adapter name."""

    def __init__(self, inner):
        self.inner, self.events = inner, []
        self.clock = getattr(inner, "clock", None)

    def load(self, entry):
        self.events.append(("load", entry.name))
        return self.inner.load(entry)

    def unload(self, entry, value):
        self.events.append(("unload", entry.name))
        self.inner.unload(entry, value)

    def serve(self, request, objects):
        return self.inner.serve(request, objects)

    def close(self):
        self.inner.close()


def test_the_simulator_and_the_real_backend_page_alike(tiny_models, backend):
    catalogue = catalogue_of(tiny_models)
    sizes = sorted(catalogue.sizes().values())
    budget = sizes[-1] + sizes[0]  # the largest and the smallest fit together, no more
    stream = list(np.random.default_rng(7).choice(["a0", "a1", "a2"], size=40))
    runs = {}
    for kind, inner in (("real", backend), ("sim", SimulatedBackend())):
        recording = Recording(inner)
        with Runtime(config(budget), recording, catalogue) as rt:
            hits = [rt.handle(InferenceRequest(prompt=PROMPT, adapter=str(name),
                                               params={"max_tokens": 1})).hit
                    for name in stream]
            runs[kind] = (hits, list(recording.events), rt.cache.stats().evictions)
    assert runs["real"] == runs["sim"]
    assert 0 < sum(runs["real"][0]) < len(stream)  # both hits and page-ins happened


def test_bad_generation_parameters_are_named(tiny_models, backend):
    from edge.errors import RequestError

    catalogue = catalogue_of(tiny_models)
    with Runtime(config(sum(catalogue.sizes().values())), backend, catalogue) as rt:
        with pytest.raises(RequestError, match="max_tokens must be a positive integer"):
            rt.handle(InferenceRequest(prompt=PROMPT, adapter="a0", params={"max_tokens": 0}))
        with pytest.raises(RequestError, match=r"unknown generation parameter\(s\) \['top_q'\]"):
            rt.handle(InferenceRequest(prompt=PROMPT, adapter="a0", params={"top_q": 1}))
        with pytest.raises(RequestError, match="exceeds the context of 256 tokens"):
            rt.handle(InferenceRequest(prompt=PROMPT * 40, adapter="a0"))
        assert rt.cache.stats().pinned_bytes == 0


def test_the_response_likelihood_reward_is_the_adapters_own_token_probabilities(tiny_models,
                                                                               backend):
    catalogue = catalogue_of(tiny_models)
    cfg = EdgeConfig(cache=CacheConfig(budget=sum(catalogue.sizes().values()), load_workers=0),
                     router=RouterConfig(features=FeatureConfig(dim=16),
                                         feedback=FeedbackConfig(reward_source="response-likelihood")))
    with Runtime(cfg, backend, catalogue) as rt:
        out = rt.handle(InferenceRequest(prompt=PROMPT, request_id="r", params={"max_tokens": 5}))
        assert rt.router.updates == 1  # rewarded automatically, no feedback call
        with pytest.raises(Exception, match="no pending decision"):
            rt.feedback("r", 0.5)
        completion = out.output
    # Independently: each generated token's log-probability under a fresh model with the
    # chosen adapter, from logits evaluated from scratch on the growing sequence.
    with llama_api.load_model(tiny_models.base, n_ctx=N_CTX) as model:
        adapter = llama_api.adapter_init(model, catalogue[out.adapter].location)
        llama_api.set_adapters(model, [(adapter, 1.0)])
        tokens = model.tokenize(PROMPT)
        generated = llama_api.generate_greedy(model, tokens, 5)
        logprobs = []
        for k, token in enumerate(generated):
            logits = llama_api.evaluate(model, tokens + generated[:k]).astype(np.float64)
            logprobs.append(logits[token] - np.logaddexp.reduce(logits))
    assert completion.completion_tokens == len(generated)
    assert completion.mean_logprob == pytest.approx(np.mean(logprobs), abs=1e-4)


def test_the_router_can_route_on_the_base_models_own_embedding(tiny_models, backend):
    catalogue = catalogue_of(tiny_models)
    cfg = EdgeConfig(cache=CacheConfig(budget=sum(catalogue.sizes().values()), load_workers=0),
                     router=RouterConfig(features=FeatureConfig(extractor="llama-embedding",
                                                                dim=16)))
    rt = Runtime(cfg, backend, catalogue)
    extractor = rt.router.extractor
    assert type(extractor).__name__ == "LlamaEmbeddingExtractor"
    out = rt.handle(InferenceRequest(prompt=PROMPT, request_id="r", params={"max_tokens": 2}))
    assert out.routed and rt.feedback("r", 0.5)
    np.testing.assert_array_equal(rt.router.features(PROMPT), extractor.extract(PROMPT))
    rt.close()  # the extractor's context is freed before the model
    assert extractor.closed and backend.model.closed


def test_a_policy_file_runtime_serves_the_valid_adapters_of_a_directory(tiny_models, backend,
                                                                      tmp_path):
    import shutil

    from edge.backends.catalog import BaseModelInfo, validate_adapter
    from edge.catalogue import UnknownObjectError

    adapters = tmp_path / "adapters"
    adapters.mkdir()
    for i, path in enumerate(tiny_models.adapters[:2]):
        shutil.copy(path, adapters / f"a{i}.gguf")
    (adapters / "broken.gguf").write_bytes(tiny_models.adapters[2].read_bytes()[:300])
    mapping = {"cache": {"budget": "1MB", "load_workers": 0},
               "router": {"features": {"dim": 16}},
               "catalogue": {"directory": str(adapters)}}
    with Runtime.from_config(mapping, backend=backend) as rt:
        assert set(rt.catalogue) == {"a0", "a1"}  # the truncated file is skipped, with a reason
        assert "broken.gguf" in " ".join(str(p) for p in backend.adapters.rejected)
        base = BaseModelInfo.from_gguf(tiny_models.base)
        # Declared sizes are the adapters' tensor bytes, not their file sizes.
        assert rt.catalogue["a0"].size == validate_adapter(adapters / "a0.gguf", base).nbytes
        assert rt.catalogue["a0"].size < (adapters / "a0.gguf").stat().st_size
        out = rt.handle(InferenceRequest(prompt=PROMPT, adapter="a1", params={"max_tokens": 6}))
        assert out.output.text == fresh_greedy(tiny_models, tiny_models.adapters[1], PROMPT, 6)
        with pytest.raises(UnknownObjectError):
            rt.handle(InferenceRequest(prompt=PROMPT, adapter="broken"))
        # A new adapter dropped into the directory is served after a rescan.
        shutil.copy(tiny_models.adapters[2], adapters / "a2.gguf")
        assert rt.rescan() == {"added": ["a2"], "removed": [], "changed": []}
        out = rt.handle(InferenceRequest(prompt=PROMPT, adapter="a2", params={"max_tokens": 6}))
        assert out.output.text == fresh_greedy(tiny_models, tiny_models.adapters[2], PROMPT, 6)


def test_llama_cpp_never_sees_a_file_that_was_not_validated(tiny_models, backend, tmp_path):
    from edge.backends.catalog import AdapterError

    bad = tmp_path / "bad.gguf"
    raw = bytearray(tiny_models.adapters[0].read_bytes())
    raw[8:16] = (2**60).to_bytes(8, "little")  # an absurd tensor count in the header
    bad.write_bytes(bytes(raw))
    catalogue = Catalogue.from_files({"good": tiny_models.adapters[0], "bad": bad})
    with Runtime(config(1 << 20), backend, catalogue) as rt:
        with pytest.raises(AdapterError, match="bad.gguf"):
            rt.handle(InferenceRequest(prompt=PROMPT, adapter="bad"))
        assert backend.loads == 0 and rt.cache.stats().reserved_bytes == 0
        assert rt.handle(InferenceRequest(prompt=PROMPT, adapter="good",
                                          params={"max_tokens": 2})).output.completion_tokens


def test_streaming_yields_the_completion_piece_by_piece(tiny_models, backend):
    catalogue = catalogue_of(tiny_models)
    with Runtime(config(sum(catalogue.sizes().values())), backend, catalogue) as rt:
        with rt.stream(InferenceRequest(prompt=PROMPT, adapter="a2",
                                        params={"max_tokens": 12})) as stream:
            pieces = list(stream)
        assert len(pieces) > 1 and "".join(pieces) == stream.outcome.output.text
        assert stream.outcome.output.text == fresh_greedy(tiny_models, tiny_models.adapters[2],
                                                          PROMPT, 12)
        # Abandoned after one piece: the context is freed for the next request.
        early = rt.stream(InferenceRequest(prompt=PROMPT, adapter="a0",
                                           params={"max_tokens": 12}))
        next(early)
        early.close()
        again = rt.complete(PROMPT, adapter="a0", max_tokens=12)
        assert again.output.text == fresh_greedy(tiny_models, tiny_models.adapters[0], PROMPT, 12)
        chat = rt.chat([{"role": "user", "content": "hello"}], adapter="a1", max_tokens=3)
        assert chat.output.prompt_tokens == len(backend.model.tokenize("user: hello\nassistant:"))


def test_a_file_is_validated_again_only_when_it_changed(tiny_models, backend, tmp_path,
                                                        monkeypatch):
    import shutil

    from edge.backends import catalog

    path = tmp_path / "a.gguf"
    shutil.copy(tiny_models.adapters[0], path)
    calls = []
    real = catalog.validate_adapter
    monkeypatch.setattr(catalog, "validate_adapter",
                        lambda p, base: calls.append(p) or real(p, base))
    catalogue = Catalogue.from_files({"a": path, "b": tiny_models.adapters[1]})
    with Runtime(config(max(catalogue.sizes().values())), backend, catalogue) as rt:
        for name in ("a", "b", "a", "b"):  # one adapter fits: every request pages in
            rt.handle(InferenceRequest(prompt=PROMPT, adapter=name, params={"max_tokens": 1}))
        assert backend.loads == 4 and len(calls) == 2  # each file parsed once
        path.write_bytes(path.read_bytes()[:200])  # replaced by a truncated file
        with pytest.raises(catalog.AdapterError):
            rt.handle(InferenceRequest(prompt=PROMPT, adapter="a"))
        assert len(calls) == 3


def test_stop_sequences_end_the_text_before_the_first_one(tiny_models, backend):
    catalogue = catalogue_of(tiny_models)
    with Runtime(config(sum(catalogue.sizes().values())), backend, catalogue) as rt:
        full = rt.handle(InferenceRequest(prompt=PROMPT, adapter="a1",
                                          params={"max_tokens": 24})).output
        assert full.finish_reason == "length" and len(full.text) >= 10, full
        # A stop string from the middle of the unstopped text: the expected cut is the text
        # before its first occurrence (found by str.index on the reference, not by the code).
        stop = full.text[6:9]
        expected = full.text[:full.text.index(stop)]
        request = InferenceRequest(prompt=PROMPT, adapter="a1",
                                   params={"max_tokens": 24, "stop": ["\x00never", stop]})
        cut = rt.handle(request).output
        assert cut.text == expected and cut.finish_reason == "stop"
        assert 0 < cut.completion_tokens < full.completion_tokens
        with rt.stream(request) as pieces:
            streamed = "".join(pieces)
        assert streamed == expected and pieces.outcome.output.text == expected
        # A stop sequence that never appears changes nothing.
        same = rt.handle(InferenceRequest(prompt=PROMPT, adapter="a1",
                                          params={"max_tokens": 24, "stop": "\x00never"}))
        assert same.output.text == full.text and same.output.finish_reason == "length"
        with pytest.raises(RequestError, match="stop must be"):
            rt.handle(InferenceRequest(prompt=PROMPT, adapter="a1", params={"stop": [""]}))
