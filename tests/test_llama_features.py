"""Router features from the base model's embedding (edge.backends.llama_features), on real
llama.cpp with the tiny generated models: the extractor's own context sees no adapter, the
fingerprint follows the settings and the model, and a Router routes text with it."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from threads import run_threads

import edge.tiny_models
from edge.backends import llama_api, llama_features
from edge.backends.llama import LlamaBackend
from edge.backends.llama_features import (
    BIAS,
    LlamaEmbeddingExtractor,
    embedding_extractor_for,
    model_identity,
)
from edge.catalogue import Catalogue
from edge.errors import ConfigError
from edge.router.config import FeatureConfig, RouterConfig
from edge.router.errors import StateMismatchError
from edge.router.features import make_extractor
from edge.router.router import Router

N_CTX = 256
FEATURES = FeatureConfig(extractor="llama-embedding", dim=16)
PROMPTS = ["Once upon a time, the adapter", "SELECT name FROM users WHERE id = 7;",
           "the quick brown fox jumps over the lazy dog", ""]


@pytest.fixture(scope="module")
def other_base(tmp_path_factory):
    """A second tiny base: same shapes and vocabulary, other weights (seed 1)."""
    make = edge.tiny_models.make_tiny_models
    return make(tmp_path_factory.mktemp("tiny-base-seed1"), n_adapters=0, seed=1).base


@pytest.fixture
def model(tiny_models):
    with llama_api.load_model(tiny_models.base, n_ctx=N_CTX) as m:
        yield m


@pytest.fixture
def extractor(model):
    with LlamaEmbeddingExtractor(model, FEATURES) as e:
        yield e


def test_vectors_are_finite_unit_norm_with_a_constant_bias(extractor):
    assert extractor.dim == 16
    for text in PROMPTS:
        x = extractor.extract(text)
        assert x.shape == (16,) and x.dtype == np.float64
        assert np.all(np.isfinite(x))
        assert np.linalg.norm(x) == pytest.approx(1.0, abs=1e-12)
        assert x[0] == BIAS  # the empty prompt still has its BOS token to embed


def test_same_text_same_vector_and_different_texts_differ(extractor, model):
    xs = [extractor.extract(t) for t in PROMPTS]
    assert all(np.array_equal(x, extractor.extract(t)) for x, t in zip(xs, PROMPTS, strict=True))
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            assert np.linalg.norm(xs[i] - xs[j]) > 1e-3, (PROMPTS[i], PROMPTS[j])
    with LlamaEmbeddingExtractor(model, FEATURES) as again:  # a fresh context agrees
        assert np.array_equal(again.extract(PROMPTS[0]), xs[0])
    batch = extractor.extract_batch(PROMPTS)
    assert batch.shape == (len(PROMPTS), 16)
    assert np.array_equal(batch, np.stack(xs))
    assert extractor.extract_batch([]).shape == (0, 16)


def test_an_adapter_on_the_serving_context_does_not_change_the_features(tiny_models, model,
                                                                       extractor):
    tokens = model.tokenize(PROMPTS[0])
    base_logits = llama_api.evaluate(model, tokens)
    before = extractor.extract_batch(PROMPTS)
    adapter = llama_api.adapter_init(model, tiny_models.adapters[1])
    llama_api.set_adapters(model, [(adapter, 1.0)])
    # The adapter really is live on the serving context...
    assert not np.allclose(llama_api.evaluate(model, tokens), base_logits)
    # ...yet neither the open extractor nor one created while it is attached sees it.
    assert np.array_equal(extractor.extract_batch(PROMPTS), before)
    with LlamaEmbeddingExtractor(model, FEATURES) as created_under_adapter:
        assert np.array_equal(created_under_adapter.extract_batch(PROMPTS), before)
    llama_api.set_adapters(model, [])


def test_prompts_are_cut_at_max_chars_and_at_the_context(model):
    config = FeatureConfig(extractor="llama-embedding", dim=8, max_chars=12)
    with LlamaEmbeddingExtractor(model, config) as e:
        assert np.array_equal(e.extract("abcdefghijkl"), e.extract("abcdefghijkl and more"))
        assert not np.array_equal(e.extract("abcdefghijk"), e.extract("abcdefghijkl"))
    with LlamaEmbeddingExtractor(model, FEATURES, n_ctx=32) as e:
        assert e.max_tokens == 32
        long = "word " * 200
        assert np.array_equal(e.extract(long), e.extract(long + "a different ending"))


def test_fingerprint_follows_settings_and_base_model(tiny_models, model, extractor, other_base,
                                                     tmp_path):
    fp = extractor.fingerprint
    assert isinstance(fp, str) and len(fp) == 16
    with LlamaEmbeddingExtractor(model, FEATURES) as same:
        assert same.fingerprint == fp
    for changed in (FeatureConfig(extractor="llama-embedding", dim=16, hash_seed=1),
                    FeatureConfig(extractor="llama-embedding", dim=32)):
        with LlamaEmbeddingExtractor(model, changed) as e:
            assert e.fingerprint != fp
    with LlamaEmbeddingExtractor(model, FEATURES, n_ctx=32) as e:  # truncation point
        assert e.fingerprint != fp
    with llama_api.load_model(other_base, n_ctx=N_CTX) as other, \
            LlamaEmbeddingExtractor(other, FEATURES) as e:
        assert e.fingerprint != fp
        assert not np.array_equal(e.extract(PROMPTS[0]), extractor.extract(PROMPTS[0]))
    copy = tmp_path / "copy-of-base.gguf"  # a copy (new path, new mtime) is the same model
    shutil.copyfile(tiny_models.base, copy)
    with llama_api.load_model(copy, n_ctx=N_CTX) as m2, LlamaEmbeddingExtractor(m2, FEATURES) as e:
        assert e.fingerprint == fp


def test_hash_seed_changes_the_projection(model, extractor):
    other = FeatureConfig(extractor="llama-embedding", dim=16, hash_seed=7)
    with LlamaEmbeddingExtractor(model, other) as e:
        assert not np.allclose(e.extract(PROMPTS[0]), extractor.extract(PROMPTS[0]))


def test_model_identity_samples_a_large_file(tmp_path, monkeypatch):
    monkeypatch.setattr(llama_features, "IDENTITY_HEAD", 1024)
    monkeypatch.setattr(llama_features, "IDENTITY_SAMPLE", 256)
    data = bytearray(np.random.default_rng(0).bytes(64 * 1024))
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(data)
    b.write_bytes(data)
    assert model_identity(a) == model_identity(b)
    data[1024] ^= 1  # the first sample, just past the head
    b.write_bytes(data)
    assert model_identity(a) != model_identity(b)
    b.write_bytes(bytes(data) + b"\0")  # the size is hashed too
    assert model_identity(a) != model_identity(b)


def test_close_frees_the_context_and_a_later_extract_raises(model):
    e = LlamaEmbeddingExtractor(model, FEATURES)
    e.extract(PROMPTS[0])
    e.close()
    assert e.closed
    e.close()  # twice is a no-op
    with pytest.raises(llama_api.LlamaApiError, match="extractor is closed"):
        e.extract(PROMPTS[0])
    with pytest.raises(llama_api.LlamaApiError, match="extractor is closed"):
        e.extract_batch(PROMPTS)


def test_a_model_closed_first_is_refused_and_its_context_leaked_not_freed(tiny_models, caplog):
    model = llama_api.load_model(tiny_models.base, n_ctx=N_CTX)
    e = LlamaEmbeddingExtractor(model, FEATURES)
    model.close()
    with pytest.raises(llama_api.LlamaApiError, match="close the extractor first"):
        e.extract(PROMPTS[0])
    with caplog.at_level("WARNING", logger="edge.backends.llama_features"):
        e.close()
    assert e.closed and "leaked" in caplog.text


def test_bad_settings_are_refused(model):
    with pytest.raises(ConfigError, match="at least 2"):
        LlamaEmbeddingExtractor(model, FeatureConfig(extractor="llama-embedding", dim=1))
    with LlamaEmbeddingExtractor(model, FEATURES) as e, pytest.raises(TypeError):
        e.extract(b"bytes")  # type: ignore[arg-type]
    # The registry names it, and says where it comes from: it needs the loaded model.
    with pytest.raises(ConfigError, match="embedding_extractor_for"):
        make_extractor(FEATURES)


def test_router_routes_text_with_it_and_refuses_state_from_another_model(
        tiny_models, other_base, tmp_path):
    config = RouterConfig(features=FEATURES)
    state = tmp_path / "router.state"
    backend = LlamaBackend(tiny_models.base, n_ctx=N_CTX)
    try:
        extractor = embedding_extractor_for(backend, FEATURES)
        router = Router(config, {"a": 100, "b": 100}, extractor=extractor)
        for i, prompt in enumerate(PROMPTS * 3):
            decision = router.route(f"r{i}", prompt, {"a", "b"})
            assert decision.arm_id in {"a", "b"}
            router.update(f"r{i}", 1.0 if (decision.arm_id == "a") == (i % 2 == 0) else 0.0)
        assert router.updates == len(PROMPTS) * 3
        router.save(state)
        router.close()
        extractor.close()  # before the backend: it frees its context on the same model
    finally:
        backend.close()
    other = LlamaBackend(other_base, n_ctx=N_CTX)
    try:
        with embedding_extractor_for(other, FEATURES) as extractor:
            with pytest.raises(StateMismatchError, match="fingerprint"):
                Router(config, {"a": 100, "b": 100}, extractor=extractor).load(state)
    finally:
        other.close()
    with pytest.raises(ConfigError, match="llama-embedding"):
        embedding_extractor_for(other, FeatureConfig(dim=16))


def test_extraction_runs_alongside_serving(tiny_models):
    backend = LlamaBackend(tiny_models.base, n_ctx=N_CTX)
    entry = Catalogue.from_files({"a0": tiny_models.adapters[0]})["a0"]
    try:
        with embedding_extractor_for(backend, FEATURES) as extractor:
            expected = extractor.extract_batch(PROMPTS)
            adapter, _ = backend.load(entry)

            def extract():
                for _ in range(5):
                    assert np.array_equal(extractor.extract_batch(PROMPTS), expected)

            def serve():
                request = SimpleNamespace(prompt=PROMPTS[0], params={"max_tokens": 8})
                for objects in ([(entry, adapter)], [], [(entry, adapter)]):
                    backend.serve(request, objects)

            run_threads([extract, extract, serve])
            backend.unload(entry, adapter)
    finally:
        backend.close()
