"""The MoE layer executor: gating as llama.cpp does it, and paged experts giving the same output
as a reference that holds every expert (read with gguf's reader and decoded by hand)."""

from __future__ import annotations

import math

import gguf
import numpy as np
import pytest
from test_moe_store import dequantize_by_hand

from edge.backends.experts import ExpertStore, MoeFormatError, MoeLayout, expert_key
from edge.cache import PagedCache
from edge.moe.executor import ExpertExecutor
from edge.moe.gating import GatingRule, gating_rule
from edge.tiny_models import make_tiny_moe

DTYPES = ("f32", "f16", "bf16", "q8_0")
SHAPE = dict(n_layer=2, n_expert=8, n_expert_used=2, n_embd=64, n_ff=64)
EXPERT_BYTES = 3 * 64 * 64 * 4  # float32 gate, up, down of 64 x 64


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("moe-exec")
    return {dtype: make_tiny_moe(out, structured=False, seed=5, dtype=dtype, **SHAPE).path
            for dtype in DTYPES}


def reference_moe(path, layer: int, x: np.ndarray, k: int) -> np.ndarray:
    """Every expert resident, one token at a time: softmax over all experts, top k,
    renormalised (llama.cpp's llama rule), weighted sum of SwiGLU outputs."""
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}

    def weight(name):
        return dequantize_by_hand(tensors[f"blk.{layer}.{name}.weight"])

    router, gate, up, down = (weight(n) for n in ("ffn_gate_inp", "ffn_gate_exps",
                                                  "ffn_up_exps", "ffn_down_exps"))
    out = np.zeros_like(x)
    for t, h in enumerate(x):
        logits = router @ h
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        chosen = np.argsort(-probs, kind="stable")[:k]
        w = probs[chosen] / probs[chosen].sum()
        for e, we in zip(chosen, w, strict=True):
            g, u = gate[e] @ h, up[e] @ h
            out[t] += we * (down[e] @ (g / (1 + np.exp(-g)) * u))
    return out


def hidden_states(n_tokens: int, seed: int = 0) -> np.ndarray:
    """RMS-normed-looking inputs (entries of unit scale), as a block hands the FFN."""
    return np.random.default_rng(seed).normal(size=(n_tokens, 64)).astype(np.float32)


def assert_close(got, want):
    # 1e-6 relative to the output's size: float32 sums in another order, nothing more.
    assert np.linalg.norm(got - want) <= 1e-6 * np.linalg.norm(want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_paged_layer_equals_the_all_resident_reference(models, dtype):
    x = hidden_states(6, seed=1)
    with ExpertStore(models[dtype]) as store, \
            PagedCache(8 * EXPERT_BYTES, "lru", load_workers=2) as cache:
        executor = ExpertExecutor(store, cache)
        for layer in (0, 1):
            assert_close(executor.forward(layer, x), reference_moe(models[dtype], layer, x, 2))
        counters = executor.counters()
    assert counters.layer_calls == 2  # one acquire_many per layer
    assert counters.bytes_read == counters.loads * store.file_nbytes(0, 0)


def test_one_acquire_per_layer_counts_each_distinct_expert_once(models):
    x = hidden_states(5, seed=2)
    with ExpertStore(models["f32"]) as store, PagedCache(16 * EXPERT_BYTES, "lru") as cache:
        executor = ExpertExecutor(store, cache)
        experts, _ = executor.route(0, x)
        distinct = len(np.unique(experts))
        executor.forward(0, x)
        first = executor.counters()
        assert (first.misses, first.hits, first.layer_calls) == (distinct, 0, 1)
        executor.forward(0, x)  # same tokens again: every expert is resident
        second = executor.counters()
        assert (second.misses, second.hits, second.layer_calls) == (distinct, distinct, 2)
        assert second.bytes_read == distinct * store.file_nbytes(0, 0)


def test_budget_of_exactly_one_layers_experts(models):
    """Decoding one token at a time under a budget of k experts: every layer evicts the last
    one's experts, the running layer's experts stay pinned and resident, and the budget holds
    after every layer."""
    path = models["q8_0"]
    seen = []
    with ExpertStore(path) as store, PagedCache(2 * EXPERT_BYTES, "lru") as cache:

        def check(layer, keys):
            stats = cache.stats()
            assert all(key in cache for key in keys)
            assert stats.pinned_bytes == len(keys) * EXPERT_BYTES
            assert stats.resident_bytes + stats.reserved_bytes <= stats.budget
            seen.append((layer, len(keys)))

        executor = ExpertExecutor(store, cache, on_layer=check)
        for h in hidden_states(4, seed=3):
            for layer in (0, 1):
                got = executor.forward(layer, h[None])
                assert_close(got, reference_moe(path, layer, h[None], 2))
        assert cache.stats().pinned_bytes == 0
    assert seen == [(layer, 2) for _ in range(4) for layer in (0, 1)]
    assert executor.counters().evictions > 0


def test_a_batch_wider_than_the_budget_is_split_not_refused(models):
    x = hidden_states(8, seed=4)
    calls = []
    with ExpertStore(models["f16"]) as store, PagedCache(3 * EXPERT_BYTES, "lru") as cache:
        executor = ExpertExecutor(store, cache, on_layer=lambda layer, keys: calls.append(
            (len(keys), cache.stats().resident_bytes)))
        got = executor.forward(1, x)
    assert_close(got, reference_moe(models["f16"], 1, x, 2))
    assert len(calls) > 1  # 8 tokens x 2 experts cannot share 3 experts' room
    assert all(n <= 3 and resident <= 3 * EXPERT_BYTES for n, resident in calls)


def test_a_budget_below_one_tokens_experts_is_a_clear_error(models):
    from edge.errors import ObjectTooLargeError

    with ExpertStore(models["f32"]) as store, PagedCache(EXPERT_BYTES, "lru") as cache:
        executor = ExpertExecutor(store, cache)
        with pytest.raises(ObjectTooLargeError):
            executor.forward(0, hidden_states(1))
        assert cache.stats().pinned_bytes == 0


def test_expert_keys_are_layer_and_expert(models):
    with ExpertStore(models["f32"]) as store, PagedCache(8 * EXPERT_BYTES, "lru") as cache:
        executor = ExpertExecutor(store, cache)
        x = hidden_states(1, seed=6)
        experts, _ = executor.route(1, x)
        executor.forward(1, x)
        assert set(cache.resident()) == {expert_key(1, int(e)) for e in experts[0]}


# ---- gating ----------------------------------------------------------------------------------

def test_softmax_top_k_renormalised_by_hand():
    experts, weights = GatingRule("softmax", renormalise=True).route(
        np.array([[1.0, 3.0, 2.0, 0.0]]), 2)
    assert experts.tolist() == [[1, 2]]
    # e^3 / (e^3 + e^2) = 1 / (1 + e^-1)
    np.testing.assert_allclose(weights[0], [1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))],
                               rtol=1e-6)


def test_softmax_top_k_without_renormalising_by_hand():
    _, weights = GatingRule("softmax", renormalise=False).route(
        np.array([[1.0, 3.0, 2.0, 0.0]]), 2)
    total = math.exp(0) + math.exp(1) + math.exp(2) + math.exp(3)
    np.testing.assert_allclose(weights[0], [math.exp(3) / total, math.exp(2) / total],
                               rtol=1e-6)


def layout(arch="llama", **metadata):
    return MoeLayout(arch, 1, 4, 2, 8, 8, (0,), metadata)


def test_llama_rule_is_llama_cpps_whatever_the_file_omits():
    assert gating_rule(layout()) == GatingRule("softmax", renormalise=True, scale=1.0)


def test_llama_metadata_that_llama_cpp_would_ignore_is_refused():
    with pytest.raises(MoeFormatError, match="expert_weights_norm=False"):
        gating_rule(layout(expert_weights_norm=False))


def test_other_architectures_take_the_rule_from_metadata():
    assert gating_rule(layout("qwen2moe", expert_weights_norm=False)) == GatingRule(
        "softmax", renormalise=False)
    with pytest.raises(MoeFormatError, match="qwen2moe.expert_weights_norm"):
        gating_rule(layout("qwen2moe"))
