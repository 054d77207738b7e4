"""The numpy MoE model, experts paged from disk, against llama.cpp on the same GGUF.

llama.cpp (llama-cpp-python, edge.backends.llama_api) is the peer: its next-token logits are
the golden values. Tolerances, relative to the largest |logit| (about 5 here), are set by the
storage type: llama.cpp rounds activations to the weights' type before its dot products (F16,
BF16, Q8_0) and keeps K/V in f16; numpy computes in float32 on the dequantised weights. Measured
differences are about a fifth of each bound; reading one wrong expert moves logits by far more.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from page_cache import page_cache_residency

from edge.backends import llama_api
from edge.backends.experts import ExpertStore
from edge.cache import PagedCache
from edge.moe.model import MoeModel
from edge.tiny_models import make_tiny_moe

TOLERANCE = {"f32": 1e-4, "f16": 2e-4, "bf16": 1e-3, "q8_0": 3e-3}
EXPERT_BYTES = 3 * 64 * 128 * 4  # float32 gate, up, down of the default 64 x 128 experts
TOP_K = 4
PROMPT = "The quick brown fox jumps"


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("moe-model")


@pytest.fixture(scope="module")
def structured(moe_dir):
    return make_tiny_moe(moe_dir, structured=True, seed=0)


@pytest.fixture(scope="module")
def plain(moe_dir):
    return make_tiny_moe(moe_dir, structured=False, seed=0)


def load_llama(path):
    # One thread: on a shared 2-core machine llama.cpp's default thread count turns a 10 ms
    # prompt into seconds of spinning.
    return llama_api.load_model(path, n_ctx=64, n_threads=1, n_threads_batch=1)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "q8_0"])
def test_logits_match_llama_cpp(moe_dir, dtype):
    path = make_tiny_moe(moe_dir, structured=True, seed=0, dtype=dtype).path
    llama = load_llama(path)
    try:
        tokens = llama.tokenize(PROMPT)
        want = llama_api.evaluate(llama, tokens)
        with MoeModel.open(path, budget=2 * 8 * TOP_K * EXPERT_BYTES) as model:
            assert relative_error(model.eval(tokens), want) <= TOLERANCE[dtype]
            for _ in range(3):  # then one token at a time, through both KV caches
                token = int(np.argmax(want))
                llama_api.decode(llama, [token])
                want = llama_api.last_logits(llama)
                assert relative_error(model.eval([token]), want) <= TOLERANCE[dtype]
    finally:
        llama.close()


class ShiftedStore(ExpertStore):
    """Reads expert e + 1's bytes for expert e: what an off-by-one-slice bug would do."""

    def slices(self, layer, expert):
        return super().slices(layer, (expert + 1) % self.n_expert)


def test_reading_the_wrong_expert_is_caught_by_the_comparison(structured):
    llama = load_llama(structured.path)
    try:
        tokens = llama.tokenize(PROMPT)
        want = llama_api.evaluate(llama, tokens)
    finally:
        llama.close()
    with ShiftedStore(structured.path) as store, PagedCache("64MiB", "lru") as cache:
        model = MoeModel(store, cache, n_ctx=64)
        assert relative_error(model.eval(tokens), want) > 100 * TOLERANCE["f32"]


def test_generation_equals_llama_cpps_greedy_tokens_under_a_one_layer_budget(plain):
    """Budget: exactly one layer's k experts. Every layer must evict the last one's experts;
    the hook sees, after each layer's experts are computed and while they are pinned, that they
    are all resident and that resident bytes are within the budget."""
    llama = load_llama(plain.path)
    try:
        prompt = llama.tokenize(PROMPT)
        want = llama_api.generate_greedy(llama, prompt, 12)
    finally:
        llama.close()
    budget = TOP_K * EXPERT_BYTES
    checks = []
    with ExpertStore(plain.path) as store, PagedCache(budget, "lru") as cache:

        def check(layer, keys):
            stats = cache.stats()
            assert all(key in cache for key in keys)
            assert stats.pinned_bytes == len(keys) * EXPERT_BYTES
            assert stats.resident_bytes + stats.reserved_bytes <= budget
            checks.append(layer)

        model = MoeModel(store, cache, n_ctx=64, on_layer=check)
        got = model.generate(prompt, len(want))
        counters = model.counters()
    assert got == want and len(want) == 12
    # The prompt's layers are split into groups that fit; each decoded token runs 8 layers once.
    assert len(checks) >= 8 * (1 + 11)
    assert counters.misses >= 8 * 12 * TOP_K // 2 and counters.evictions > 0
    assert counters.bytes_read == counters.loads * store.file_nbytes(0, 0)


def consecutive_overlap(model: MoeModel, prompt, n: int) -> tuple[float, float]:
    """(mean share of a token's experts the previous token also used, hit ratio) over n
    sampled tokens, per layer."""
    trace: dict[int, list[frozenset]] = {}
    model.executor.on_layer = lambda layer, keys: trace.setdefault(layer, []).append(
        frozenset(keys))
    model.generate(prompt, n, temperature=1.0, seed=1)
    decoded = {layer: steps[1:] for layer, steps in trace.items()}  # drop the prompt's call
    overlaps = [len(a & b) / TOP_K for steps in decoded.values()
                for a, b in zip(steps, steps[1:], strict=False)]
    return float(np.mean(overlaps)), model.counters().hit_ratio


def test_structured_router_has_locality_and_the_random_one_has_none(structured, plain):
    budget = 2 * 8 * TOP_K * EXPERT_BYTES  # twice the active experts of every layer
    results = {}
    for tiny in (structured, plain):
        with MoeModel.open(tiny.path, budget=budget, n_ctx=128) as model:
            results[tiny.structured] = consecutive_overlap(model, [1, 300], 48)
    # Independent uniform choices of 4 of 32 experts share 4/32 = 0.125 on average.
    assert results[False][0] < 0.25
    assert results[True][0] > 0.6
    assert results[True][1] > results[False][1] + 0.3


def test_eval_rejects_bad_tokens_and_a_full_context(structured):
    with MoeModel.open(structured.path, budget="64MiB", n_ctx=4) as model:
        with pytest.raises(ValueError, match="token ids must be in"):
            model.eval([1, 100000])
        with pytest.raises(ValueError, match="non-empty"):
            model.eval([])
        model.eval([1, 2, 3])
        with pytest.raises(ValueError, match="context full: 3 \\+ 2 tokens > n_ctx 4"):
            model.eval([4, 5])


def test_run_command_generates_llama_cpps_tokens_and_reports_paging(plain, tmp_path):
    import json

    from click.testing import CliRunner

    from edge.moe.run_command import run
    from edge.moe.traces import load_routing

    prompts = ["Once upon a time", "SELECT name"]
    llama = load_llama(plain.path)
    try:
        encoded = [llama.tokenize(p) for p in prompts]
        outputs = [llama_api.generate_greedy(llama, tokens, 5) for tokens in encoded]
        texts = [llama.detokenize(out).decode("utf-8", errors="replace") for out in outputs]
    finally:
        llama.close()
    figures_path, routing_path = tmp_path / "run.json", tmp_path / "routing.npy"
    result = CliRunner().invoke(run, [
        str(plain.path), "--budget", "4x", "--max-tokens", "5", "--prompt", prompts[0],
        "--prompt", prompts[1], "--json", str(figures_path), "--routing", str(routing_path)])
    assert result.exit_code == 0, result.output
    for prompt, text in zip(prompts, texts, strict=True):
        assert f"{prompt}{text}\n" in result.output
    figures = json.loads(figures_path.read_text())
    n_generated = sum(len(out) for out in outputs)
    assert figures["tokens"] == n_generated
    assert figures["budget"] == 4 * TOP_K * 8 * EXPERT_BYTES
    # Evaluated: each prompt, then each generated token but the last.
    routing = load_routing(routing_path)
    assert routing.shape == (sum(len(t) + len(o) - 1 for t, o in zip(encoded, outputs,
                                                                       strict=True)), 8, TOP_K)
    # One acquire per layer per step: a prompt's step asks for its distinct experts once.
    asked, row = 0, 0
    for tokens, out in zip(encoded, outputs, strict=True):
        prompt_rows = routing[row:row + len(tokens)]
        asked += sum(len(np.unique(prompt_rows[:, layer])) for layer in range(8))
        asked += (len(out) - 1) * 8 * TOP_K
        row += len(tokens) + len(out) - 1
    assert figures["hits"] + figures["misses"] == asked
    with ExpertStore(plain.path) as store:
        assert figures["bytes_read"] == figures["misses"] * store.file_nbytes(0, 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="posix_fadvise")
def test_run_command_reads_past_the_page_cache_with_the_same_results(plain, tmp_path):
    import json

    from click.testing import CliRunner

    from edge.moe.run_command import run

    runs = {}
    for mode in ("keep", "drop"):
        path = tmp_path / f"{mode}.json"
        result = CliRunner().invoke(run, [str(plain.path), "--budget", "1x", "--max-tokens", "4",
                                          "--page-cache", mode, "--json", str(path)])
        assert result.exit_code == 0, result.output
        runs[mode] = (result.output.splitlines()[:3], json.loads(path.read_text()))
    (text_keep, keep), (text_drop, drop) = runs["keep"], runs["drop"]
    assert text_drop == text_keep  # the same bytes read, so the same tokens
    assert drop["page_cache"] == "drop" and keep["page_cache"] == "keep"
    for name in ("hits", "misses", "bytes_read"):
        assert drop[name] == keep[name] > 0


def test_run_command_errors_are_one_line(tmp_path):
    from click.testing import CliRunner

    from edge.moe.run_command import run
    from edge.tiny_models import make_tiny_models

    base = make_tiny_models(tmp_path, n_adapters=0).base
    result = CliRunner().invoke(run, [str(base)])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: {base}: not a MoE GGUF: metadata key "
                                      "llama.expert_count is missing")


@pytest.mark.parametrize("budget, message", [("0x", "the multiple must be > 0"),
                                             ("lots", "or a multiple of the active experts")])
def test_run_command_rejects_a_bad_budget(plain, budget, message):
    from click.testing import CliRunner

    from edge.moe.run_command import run

    result = CliRunner().invoke(run, [str(plain.path), "--budget", budget])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="posix_fadvise and mincore")
def test_a_model_past_the_page_cache_never_maps_its_file(structured, monkeypatch):
    """The dense weights are read through the store's descriptor, not a mapping: a mapping's
    read-around (and its readahead, still in flight when a drop is advised) would leave expert
    pages in the OS page cache. Any memmap during construction fails the test."""
    def no_mapping(*args, **kwargs):
        raise AssertionError(f"the model file was mapped: {args!r}")

    monkeypatch.setattr(np, "memmap", no_mapping)
    with ExpertStore(structured.path, page_cache=False) as store, \
            PagedCache(1 << 20, "lru", load_workers=0) as cache:
        model = MoeModel(store, cache, n_ctx=16)
        assert model.dense.token_embd.shape[1] == store.layout.n_embd
        slices = [piece for layer in range(store.n_layer) for expert in range(store.n_expert)
                  for piece in store.slices(layer, expert)]
        cached = [page for piece in slices
                  for page in page_cache_residency(structured.path, piece.offset, piece.nbytes)]
        assert not any(cached), f"{sum(cached)} expert pages in the page cache after opening"
