"""Prefetching the next layer's experts: prediction quality, the transition table, identical
outputs, the budget under prefetch races, and counters that add up.

Chance level for a prediction of k = 4 of 32 experts per layer (one token) is 4/32 = 0.125 for
both precision and recall.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
import pytest
from page_cache import page_cache_residency

from edge.backends.experts import ExpertStore
from edge.cache import PagedCache
from edge.moe.model import MoeModel
from edge.moe.prefetch import Prefetcher, TransitionTable
from edge.tiny_models import make_tiny_moe

EXPERT_BYTES = 3 * 64 * 128 * 4  # float32 gate, up, down of the default 64 x 128 experts
TOP_K, N_LAYER = 4, 8
ACTIVE = TOP_K * N_LAYER * EXPERT_BYTES  # budget "1x": every layer's active experts once
CHANCE = TOP_K / 32


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("moe-prefetch")


@pytest.fixture(scope="module")
def structured(moe_dir):
    return make_tiny_moe(moe_dir, structured=True, seed=0)


@pytest.fixture(scope="module")
def plain(moe_dir):
    return make_tiny_moe(moe_dir, structured=False, seed=0)


def sampled_run(path, *, prefetch, predictor="router", budget=2 * ACTIVE, workers=0, n=40,
                on_layer=None, store_class=ExpertStore, cache_class=PagedCache):
    """(tokens, last logits, run counters, prefetch counters, cache stats) of a sampled run."""
    with store_class(path) as store, cache_class(budget, "lru", load_workers=workers) as cache:
        model = MoeModel(store, cache, n_ctx=128, on_layer=on_layer, prefetch=prefetch,
                         predictor=predictor)
        tokens = model.generate([1, 300, 301], n, temperature=1.0, seed=3)
        logits = model.eval([tokens[-1]])
        cache.verify()
        return tokens, logits, model.counters(), model.prefetch_counters(), cache.stats()


# ---- prediction quality ----------------------------------------------------------------------

def test_transition_table_predicts_structured_routing_and_not_random_routing(structured, plain):
    """The table learns cluster -> expert-group transitions that the structured model has and the
    random one lacks."""
    recall = {}
    for tiny in (structured, plain):
        *_, counters, _ = sampled_run(tiny.path, prefetch=True, predictor="transitions")
        recall[tiny.structured] = counters.recall
    assert recall[True] > 0.7
    assert recall[False] < 3 * CHANCE  # measured about 0.23: the table only learns popularity
    assert recall[True] > recall[False] + 0.4


def test_next_router_prediction_is_far_better_than_chance(structured, plain):
    """The next layer's router on this layer's residual stream predicts well on both models:
    it reads the hidden state, not routing locality, and the residual stream changes little
    from one layer to the next (measured recall about 0.97 structured, 0.91 random)."""
    for tiny in (structured, plain):
        *_, counters, _ = sampled_run(tiny.path, prefetch=True, predictor="router")
        assert counters.precision > 6 * CHANCE and counters.recall > 6 * CHANCE


def test_transition_table_learns_a_planted_transition():
    """Layer 0 expert 1 is always followed by layer 1 expert 6; the other pairs are noise."""
    table = TransitionTable(n_layers=3, n_experts=8)
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = np.array([[1, int(rng.choice([0, 2, 3]))]])
        b = np.array([[6, int(rng.choice([0, 2, 3, 4]))]])
        table.update(0, a, b)
    assert table.counts[0, 1, 6] == 50  # every token
    assert table.counts[0].sum() == 50 * 4  # 2 x 2 pairs per token
    assert table.counts[1].sum() == 0  # another layer's table is untouched
    assert table.predict(0, np.array([[1, 7]]), 1).tolist() == [[6]]
    # Expert 7 was never seen in layer 0 and layer 1 has learned nothing: no prediction.
    assert table.predict(0, np.array([[7]]), 2).tolist() == [[-1, -1]]
    assert table.predict(1, np.array([[6]]), 1).tolist() == [[-1]]


def test_transition_table_counts_a_hand_built_batch():
    table = TransitionTable(n_layers=2, n_experts=4)
    table.update(0, np.array([[0, 1], [0, 2]]), np.array([[3, 2], [3, 1]]))
    want = np.zeros((4, 4), dtype=np.int64)
    for i, j in [(0, 3), (0, 2), (1, 3), (1, 2), (0, 3), (0, 1), (2, 3), (2, 1)]:
        want[i, j] += 1
    assert (table.counts[0] == want).all()
    # Token [0, 1]: scores of next experts 3: 2 + 1 = 3, 2: 1 + 1 = 2, 1: 1 + 0 = 1.
    assert table.predict(0, np.array([[0, 1]]), 3).tolist() == [[3, 2, 1]]


def test_bad_predictor_and_shapes_are_refused(structured):
    with ExpertStore(structured.path) as store, PagedCache("8MiB", load_workers=0) as cache:
        with pytest.raises(ValueError, match="predictor must be one of router, transitions, "
                                             "both, got 'oracle'"):
            Prefetcher(cache, store, {0: store.router(0)}, 4, predictor="oracle")
    with pytest.raises(ValueError, match="same tokens"):
        TransitionTable(2, 4).update(0, np.zeros((2, 2), int), np.zeros((3, 2), int))


# ---- outputs, budget, counters -----------------------------------------------------------------

@pytest.mark.parametrize("predictor", ["router", "both"])
def test_outputs_are_identical_with_prefetch_on_and_off(structured, predictor):
    off = sampled_run(structured.path, prefetch=False, budget=ACTIVE)
    on = sampled_run(structured.path, prefetch=True, predictor=predictor, budget=ACTIVE,
                     workers=2)
    assert on[0] == off[0] and len(off[0]) == 40
    assert np.array_equal(on[1], off[1])
    assert on[3].issued > 0


class SlowStore(ExpertStore):
    """Every read takes a little longer, so background prefetches are still in flight when the
    next layer asks for them (the race under test)."""

    def load_key(self, key):
        time.sleep(0.002)
        return super().load_key(key)


@pytest.mark.parametrize("budget", [ACTIVE, 2 * ACTIVE])
def test_budget_holds_under_prefetch_races(plain, budget):
    """Three load workers prefetch while layers pin and compute. After every layer (hook inside
    the pinned block, prefetches issued): resident + reserved <= budget, this layer's experts
    pinned and resident, the index consistent."""
    problems, layers = [], []
    main = threading.get_ident()
    holder = {}

    class Checked(PagedCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            holder["cache"] = self

    def check(layer, keys):
        cache = holder["cache"]
        stats = cache.stats()
        if stats.resident_bytes + stats.reserved_bytes > budget:
            problems.append(("over budget", layer, stats))
        if stats.pinned_bytes < len(keys) * EXPERT_BYTES or not all(k in cache for k in keys):
            problems.append(("running layer not pinned", layer, stats))
        if threading.get_ident() != main:
            problems.append(("hook off the main thread", layer))
        cache.verify()
        layers.append(layer)

    tokens, _, run, pre, stats = sampled_run(plain.path, prefetch=True, budget=budget,
                                             workers=3, n=30, on_layer=check,
                                             store_class=SlowStore, cache_class=Checked)
    assert problems == []
    assert len(layers) >= N_LAYER * 30
    assert run.coalesced > 0  # the race happened: a layer joined a prefetch still loading
    assert stats.prefetches == pre.issued > 0
    assert stats.load_failures == 0 and stats.pinned_bytes == 0


class RecordingCache(PagedCache):
    """A real cache that records which keys each prefetch call started."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started: list[int] = []

    def prefetch(self, keys, loader=None, *, nbytes=None):
        keys = list(keys)
        n = super().prefetch(keys, loader, nbytes=nbytes)
        assert len(keys) == 1  # the prefetcher asks one key at a time
        self.started += keys[:n]
        return n


@pytest.mark.parametrize("budget", [ACTIVE, 2 * ACTIVE])
def test_counters_add_up(structured, budget):
    """Loads inline (no workers): every started prefetch is resident when the next layer asks,
    so useful = started keys the next layer used, counted here from the layers' own keys."""
    used_by_step: list[set[int]] = []
    holder = {}

    class Cache(RecordingCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            holder["cache"] = self

    marks = []  # (index into started before this layer's acquire, layer keys)

    def record(layer, keys):
        used_by_step.append(set(keys))
        marks.append(len(holder["cache"].started))

    _, _, run, pre, stats = sampled_run(structured.path, prefetch=True, budget=budget,
                                        workers=0, n=30, on_layer=record, cache_class=Cache)
    started = holder["cache"].started
    # Prefetches issued during step i (between marks i-1 and i) are for step i + 1's layer.
    useful, begin = 0, 0
    for i, end in enumerate(marks):
        if i + 1 < len(used_by_step):
            useful += len(set(started[begin:end]) & used_by_step[i + 1])
        begin = end
    assert pre.issued == len(started) == stats.prefetches
    assert pre.useful == useful
    assert pre.useful + pre.wasted == pre.issued
    assert pre.bytes_issued == pre.issued * EXPERT_BYTES
    assert pre.wasted_bytes == pre.wasted * EXPERT_BYTES
    assert pre.useful_bytes + pre.wasted_bytes == pre.bytes_issued
    assert pre.useful <= pre.correct <= min(pre.predicted, pre.used)
    assert pre.not_started == stats.prefetch_failures
    with ExpertStore(structured.path) as store:
        # Every read is a demand miss or a started prefetch.
        assert run.bytes_read == (run.misses + pre.issued) * store.file_nbytes(0, 0)


def test_prefetch_raises_the_hit_ratio_at_twice_the_active_experts(structured):
    off = sampled_run(structured.path, prefetch=False)[2]
    on = sampled_run(structured.path, prefetch=True)[2]
    assert on.hit_ratio > off.hit_ratio + 0.05  # measured 0.85 -> 0.97


def test_run_command_prefetch_prints_and_writes_the_counters(plain, tmp_path):
    from click.testing import CliRunner

    from edge.moe.run_command import run

    outputs = {}
    for mode in ("off", "on", "readahead"):
        path = tmp_path / f"{mode}.json"
        result = CliRunner().invoke(run, [
            str(plain.path), "--budget", "1x", "--max-tokens", "6", "--prompt", "Once upon",
            "--prefetch", mode, "--json", str(path)])
        assert result.exit_code == 0, result.output
        outputs[mode] = (result.output.splitlines()[0], json.loads(path.read_text()), result)
    assert outputs["off"][1]["prefetch"] is None
    for mode in ("on", "readahead"):
        text, figures, result = outputs[mode]
        assert text == outputs["off"][0]  # the same generated text
        assert figures["prefetch"]["mode"] == mode
        assert figures["prefetch"]["predictor"] == "router"
        assert figures["prefetch"]["issued"] == (figures["prefetch"]["useful"]
                                                 + figures["prefetch"]["wasted"]) > 0
        assert f"prefetch ({mode}, router):" in result.output and "recall" in result.output
    # Readahead loads nothing into the cache ahead of time: its demand reads are those of "off".
    for name in ("hits", "misses", "bytes_read"):
        assert outputs["readahead"][1][name] == outputs["off"][1][name]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="posix_fadvise and mincore")
def test_readahead_prefetch_counts_and_leaves_no_expert_pages_behind(structured):
    """Readahead past the page cache: the same tokens as no prefetch, the kernel's reads
    counted (file bytes), and afterwards no expert page in the OS page cache: a used
    prediction's pages were dropped by its load, an unused one's by the next observe."""
    runs = {}
    for prefetch in (False, "readahead"):
        with ExpertStore(structured.path, page_cache=False) as store, \
                PagedCache(ACTIVE, "lru", load_workers=0) as cache:
            model = MoeModel(store, cache, n_ctx=64, prefetch=prefetch)
            tokens = model.generate([1, 300, 301], 12, temperature=1.0, seed=3)
            runs[prefetch] = (tokens, model.counters(), model.prefetch_counters())
            file_bytes = store.file_nbytes(0, 0)
            slices = [piece for layer in range(N_LAYER) for expert in range(32)
                      for piece in store.slices(layer, expert)]
            cached = [page for piece in slices
                      for page in page_cache_residency(structured.path, piece.offset,
                                                       piece.nbytes)]
            assert not any(cached), f"{sum(cached)} expert pages left in the page cache"
    (tokens_off, off, _), (tokens_ra, ra, counters) = runs[False], runs["readahead"]
    assert tokens_ra == tokens_off
    assert (ra.hits, ra.misses, ra.bytes_read) == (off.hits, off.misses, off.bytes_read)
    assert counters.issued > 0 and counters.useful > 0
    assert counters.useful + counters.wasted == counters.issued
    assert counters.bytes_issued == counters.issued * file_bytes
    assert counters.useful_bytes == counters.useful * file_bytes


def test_prefetch_mode_is_checked(structured):
    with ExpertStore(structured.path) as store, PagedCache(ACTIVE, "lru") as cache:
        with pytest.raises(ValueError, match="prefetch must be False, True, 'load' or "
                                             "'readahead', got 'kernel'"):
            MoeModel(store, cache, prefetch="kernel")


def test_prefetch_evicts_around_the_predicted_experts_already_resident(structured):
    """Budget of 3 experts: layer 0's expert 0 pinned (the running layer), layer 1's A (least
    recently used) and C resident. Predicted for layer 1: A and B. B's prefetch needs one slot;
    plain LRU would take A's, but A is predicted, so C goes."""
    a, b, c = 5, 9, 17
    with ExpertStore(structured.path) as store, \
            PagedCache(3 * EXPERT_BYTES, "lru", loader=store.load_key,
                       load_workers=0) as cache:
        prefetcher = Prefetcher(cache, store, {layer: store.router(layer) for layer in range(8)},
                                2, predictor="transitions")
        prefetcher.table.counts[0, 0, a] = 5
        prefetcher.table.counts[0, 0, b] = 3
        for expert in (a, c):
            with cache.acquire(1 << 32 | expert):
                pass
        before = cache.stats()
        with cache.acquire(0 << 32 | 0):  # the running layer's expert
            prefetcher.issue(0, np.zeros((1, 64), np.float32), np.array([[0]]))
            cache.verify()
        assert set(cache.resident()) == {0, 1 << 32 | a, 1 << 32 | b}
        stats = cache.stats()
        assert stats.prefetches - before.prefetches == 1
        # Holding A recorded no access: no hit, and A is still the least recently used of
        # layer 1 (C, used after it, was evicted only because A was held).
        # (The one miss is the running layer's expert 0, loaded by the acquire above.)
        assert stats.hits == before.hits and stats.misses - before.misses == 1
        assert list(cache.resident())[0] == 1 << 32 | a
        assert prefetcher.counters().issued == 1
