"""LoRA adapters hot-swapped on real llama.cpp (edge.backends.llama_api) with the tiny models.

What the adapter backend will rely on: attaching changes the output, detaching restores the base
exactly, a hot-swapped adapter computes what a model built with that adapter computes, several
adapters with their own scales apply at once, and misuse fails with a message that names the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import gguf
import numpy as np
import pytest
from llama_cpp import Llama

import edge.tiny_models
from edge.backends import llama_api
from edge.backends.llama_api import (
    LlamaApiError,
    UnsupportedLlamaVersion,
    adapter_free,
    adapter_init,
    evaluate,
    generate_greedy,
    load_model,
    set_adapters,
)

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The adapter changes what comes next, naïvely?"
N_CTX = 128


@pytest.fixture
def model(tiny_models):
    with load_model(tiny_models.base, n_ctx=N_CTX) as m:
        yield m


@pytest.fixture
def prompt(model):
    return model.tokenize(PROMPT)


def reference_logits(tiny_models, adapter_path, tokens):
    """Logits of a model constructed with ``lora_path`` (the high-level class's only way)."""
    llama = Llama(model_path=str(tiny_models.base), lora_path=str(adapter_path), n_ctx=N_CTX,
                  verbose=False)
    with llama_api.LlamaModel(llama, str(tiny_models.base)) as ref:
        return evaluate(ref, tokens)


# --- the tiny models ---------------------------------------------------------------------------

def test_tiny_models_are_seeded_and_differ_in_size(tiny_models, tmp_path):
    again = edge.tiny_models.make_tiny_models(tmp_path, n_adapters=3, seed=0)
    for mine, theirs in zip([tiny_models.base, *tiny_models.adapters],
                            [again.base, *again.adapters], strict=True):
        assert mine.read_bytes() == theirs.read_bytes()
    sizes = [p.stat().st_size for p in tiny_models.adapters]
    assert len(set(sizes)) == len(sizes)


def test_tiny_adapters_are_lora_gguf_for_llama(tiny_models):
    reader = gguf.GGUFReader(tiny_models.adapters[0])
    fields = {name: reader.fields[name].contents()
              for name in ("general.type", "general.architecture", "adapter.type",
                           "adapter.lora.alpha")}
    assert fields == {"general.type": "adapter", "general.architecture": "llama",
                      "adapter.type": "lora", "adapter.lora.alpha": 4.0}
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b",
            "blk.2.ffn_up.weight.lora_b"} <= names


def test_tiny_base_loads_tokenizes_any_text_and_generates(model, prompt):
    # Byte fallback: the accented character and the rest come back byte for byte.
    assert model.detokenize(prompt).decode("utf-8").strip() == PROMPT
    out = generate_greedy(model, prompt, max_tokens=4)
    assert len(out) == 4 and all(0 <= t < model.n_vocab for t in out)
    # Greedy decoding from scratch is deterministic: the memory is cleared first.
    assert generate_greedy(model, prompt, max_tokens=4) == out


# --- attach, detach, swap ----------------------------------------------------------------------

def test_attaching_an_adapter_changes_the_logits(model, tiny_models, prompt):
    base = evaluate(model, prompt)
    set_adapters(model, [(adapter_init(model, tiny_models.adapters[0]), 1.0)])
    with_adapter = evaluate(model, prompt)
    assert with_adapter.shape == base.shape == (model.n_vocab,)
    assert np.abs(with_adapter - base).max() > 0.1


def test_detaching_restores_the_base_logits_bit_for_bit(model, tiny_models, prompt):
    base = evaluate(model, prompt)
    adapter = adapter_init(model, tiny_models.adapters[1])
    set_adapters(model, [(adapter, 1.0)])
    evaluate(model, prompt)
    set_adapters(model, [])
    assert np.array_equal(evaluate(model, prompt), base)
    adapter_free(adapter)
    assert np.array_equal(evaluate(model, prompt), base)


@pytest.mark.parametrize("index", [0, 1])
def test_a_hot_swapped_adapter_computes_what_a_model_built_with_it_does(model, tiny_models,
                                                                        prompt, index):
    # Swap through another adapter first, so the check covers a real swap, not a first attach.
    others = [adapter_init(model, p) for p in tiny_models.adapters]
    set_adapters(model, [(others[2], 1.0)])
    evaluate(model, prompt)
    set_adapters(model, [(others[index], 1.0)])
    swapped = evaluate(model, prompt)
    assert np.array_equal(swapped, reference_logits(tiny_models, tiny_models.adapters[index],
                                                    prompt))


def test_two_adapters_apply_at_once_each_with_its_own_scale(model, tiny_models, prompt):
    a, b = (adapter_init(model, p) for p in tiny_models.adapters[:2])

    def logits(adapters):
        set_adapters(model, adapters)
        return evaluate(model, prompt)

    only_a, only_b = logits([(a, 1.0)]), logits([(b, 1.0)])
    both = logits([(a, 1.0), (b, 1.0)])
    assert np.abs(both - only_a).max() > 0.1 and np.abs(both - only_b).max() > 0.1
    np.testing.assert_allclose(logits([(b, 1.0), (a, 1.0)]), both, rtol=1e-5, atol=1e-5)
    # Scales are per adapter: b at scale 0 leaves a alone; a at half scale is neither.
    assert np.array_equal(logits([(a, 1.0), (b, 0.0)]), only_a)
    half = logits([(a, 0.5), (b, 0.0)])
    assert np.abs(half - only_a).max() > 0.1
    assert model.attached == [a, b]


# --- ownership and misuse ----------------------------------------------------------------------

def test_an_attached_adapter_cannot_be_freed(model, tiny_models):
    adapter = adapter_init(model, tiny_models.adapters[0])
    set_adapters(model, [(adapter, 1.0)])
    with pytest.raises(LlamaApiError, match="detach"):
        adapter_free(adapter)
    set_adapters(model, [])
    adapter_free(adapter)
    adapter_free(adapter)  # a second free is a no-op
    with pytest.raises(LlamaApiError, match="freed"):
        set_adapters(model, [(adapter, 1.0)])


def test_a_model_that_cannot_load_is_named(tmp_path):
    missing = tmp_path / "no-such-model.gguf"
    with pytest.raises(LlamaApiError, match=re.escape(str(missing))):
        load_model(missing)


def test_adapter_init_failure_names_the_path(model, tiny_models, tmp_path):
    missing = tmp_path / "no-such-adapter.gguf"
    with pytest.raises(LlamaApiError, match=re.escape(str(missing))):
        adapter_init(model, missing)
    with pytest.raises(LlamaApiError, match=re.escape(str(tiny_models.base))):
        adapter_init(model, tiny_models.base)  # a model, not an adapter


def test_an_adapter_only_attaches_to_its_own_model(model, tiny_models):
    with load_model(tiny_models.base, n_ctx=N_CTX) as other:
        foreign = adapter_init(other, tiny_models.adapters[0])
        with pytest.raises(LlamaApiError, match="loaded for"):
            set_adapters(model, [(foreign, 1.0)])


def test_closing_the_model_detaches_and_frees_its_adapters(tiny_models, prompt):
    model = load_model(tiny_models.base, n_ctx=N_CTX)
    a, b = (adapter_init(model, p) for p in tiny_models.adapters[:2])
    set_adapters(model, [(a, 1.0)])
    model.close()
    assert a.handle is None and b.handle is None and model.closed
    model.close()
    with pytest.raises(LlamaApiError, match="closed"):
        evaluate(model, prompt)


# --- the version check -------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["0.3.16", "0.2.90", "0.4.0", "1.0.0", "not-a-version"])
def test_an_unsupported_version_is_refused_with_the_range(version):
    with pytest.raises(UnsupportedLlamaVersion) as info:
        llama_api.check_llama_cpp(version)
    assert version in str(info.value) and llama_api.SUPPORTED_RANGE in str(info.value)
    assert isinstance(info.value, ImportError)


@pytest.mark.parametrize("version", ["0.3.17", "0.3.36", "0.3.99"])
def test_a_supported_version_passes(version):
    llama_api.check_llama_cpp(version)


def test_a_binding_without_the_adapter_api_is_refused():
    old = SimpleNamespace(**{name: None for name in llama_api.REQUIRED_FUNCTIONS})
    del old.llama_set_adapters_lora  # 0.3.16 had llama_set_adapter_lora + llama_rm_adapter_lora
    with pytest.raises(UnsupportedLlamaVersion, match="llama_set_adapters_lora"):
        llama_api.check_llama_cpp("0.3.36", old)


def test_the_installed_version_passes_and_pyproject_pins_the_same_range():
    import llama_cpp

    llama_api.check_llama_cpp(llama_cpp.__version__, llama_cpp)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"llama-cpp-python{llama_api.SUPPORTED_RANGE}"' in pyproject
