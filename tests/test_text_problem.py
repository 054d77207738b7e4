"""The text-prompt routing workload (edge.sim.text_problem): LoRA sizes, tenant styles,
utilities, drifting popularity and contexts through the configured extractor."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from edge.config import EdgeConfig
from edge.paging_cost import PagingCostModel
from edge.router.config import FeatureConfig, PolarConfig, RouterConfig
from edge.router.features import make_extractor
from edge.sim.routing import replay_routing
from edge.sim.synthetic import RoutingProblem
from edge.sim.text_problem import (
    LORA_BASES,
    SHARED_WORDS,
    MiB,
    TextRoutingProblem,
    _tenant_vocabularies,
    draw_lora_sizes,
    lora_combos,
    lora_file_bytes,
    make_text_problem,
)

TENANTS = 8


@pytest.fixture(scope="module")
def problem():
    # zipf 0: uniform tenants, so the style check below has a chance level of 1 / TENANTS.
    return make_text_problem(32, 4000, np.random.default_rng(3), n_tenants=TENANTS, zipf=0.0)


def test_lora_file_bytes_by_hand():
    # Qwen2.5-0.5B (hidden 896, 24 layers, 14 heads -> head_dim 64, 2 kv heads -> kv width
    # 128), rank 8, q,k,v,o: rank * (in + out) per map, in + out = q 896+896, k 896+128,
    # v 896+128, o 896+896 = 5632 per layer; 8 * 5632 * 24 layers = 1,081,344 parameters,
    # 2 bytes each = 2,162,688 bytes.
    assert lora_file_bytes(LORA_BASES["Qwen2.5-0.5B"], 8, "attention") == 2_162_688
    # Llama-3.1-8B (hidden 4096, 32 layers, 32 heads -> head_dim 128, 8 kv heads -> kv width
    # 1024, intermediate 14336), rank 64, all-linear: q 4096+4096, k 4096+1024, v 4096+1024,
    # o 4096+4096 = 26,624; gate, up and down 4096+14336 each = 55,296; 81,920 per layer;
    # 64 * 81,920 * 32 = 167,772,160 parameters, * 2 bytes = 335,544,320 bytes = 320 MiB.
    assert lora_file_bytes(LORA_BASES["Llama-3.1-8B"], 64, "all-linear") == 320 * 2**20
    # Llama-3.2-1B (hidden 2048, 16 layers, 32 heads -> 64, 8 kv heads -> 512, intermediate
    # 8192), rank 16, all-linear, fp32: q 4096, k 2560, v 2560, o 4096, gate/up/down 10,240
    # each = 44,032; 16 * 44,032 * 16 = 11,272,192 parameters, * 4 bytes = 45,088,768.
    assert lora_file_bytes(LORA_BASES["Llama-3.2-1B"], 16, "all-linear", 4) == 45_088_768


def test_lora_file_bytes_rejects_unknown_targets_and_bad_rank():
    with pytest.raises(ValueError, match="targets"):
        lora_file_bytes(LORA_BASES["Qwen2.5-7B"], 8, "mlp")
    with pytest.raises(ValueError, match="rank"):
        lora_file_bytes(LORA_BASES["Qwen2.5-7B"], 0, "attention")


def test_draw_lora_sizes_in_range_and_reproducible():
    low, high = 5 * MiB, 320 * MiB
    sizes = draw_lora_sizes(2000, np.random.default_rng(7), low, high)
    assert sizes.dtype == np.int64 and sizes.shape == (2000,)
    assert sizes.min() >= low and sizes.max() <= high
    # Every size is one a real combination has, and the draw spreads over many of them.
    allowed = {size for *_, size in lora_combos(low, high)}
    assert set(sizes.tolist()) <= allowed and len(set(sizes.tolist())) > 20
    # The 2,162,688-byte LoRA above is under 5 MiB: never drawn.
    assert 2_162_688 not in set(sizes.tolist())
    assert np.array_equal(sizes, draw_lora_sizes(2000, np.random.default_rng(7), low, high))
    assert not np.array_equal(sizes, draw_lora_sizes(2000, np.random.default_rng(8), low, high))
    with pytest.raises(ValueError, match="no LoRA combination"):
        draw_lora_sizes(3, np.random.default_rng(0), min_bytes=1, max_bytes=2)


def test_shapes_and_types(problem):
    T, N = 4000, 32
    assert isinstance(problem, RoutingProblem) and isinstance(problem, TextRoutingProblem)
    assert problem.contexts.shape == (T, 64) and problem.contexts.dtype == np.float64
    assert problem.utilities.shape == (T, N) and problem.utilities.dtype == np.float64
    assert problem.sizes.shape == (N,) and problem.sizes.dtype == np.int64
    assert problem.topics.shape == (T,) and set(problem.topics.tolist()) == set(range(TENANTS))
    assert len(problem.prompts) == T and all(isinstance(p, str) for p in problem.prompts)
    assert problem.arm_ids[0] == "adapter-000" and len(problem.arm_ids) == N
    assert problem.features == FeatureConfig()
    lengths = [len(p.split()) for p in problem.prompts]
    assert min(lengths) >= 8 and max(lengths) <= 30


def test_reproducible_per_seed():
    def make(seed):
        return make_text_problem(16, 300, np.random.default_rng(seed))
    a, b, c = make(5), make(5), make(6)
    for name in ("contexts", "utilities", "sizes", "topics"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.prompts == b.prompts
    assert a.prompts != c.prompts and not np.array_equal(a.utilities, c.utilities)


def test_contexts_are_the_configured_extractors():
    config = FeatureConfig(dim=32, hash_seed=7, char_ngrams=(3,))
    p = make_text_problem(8, 200, np.random.default_rng(1), features=config)
    assert p.features == config and p.contexts.shape == (200, 32)
    assert np.array_equal(p.contexts, make_extractor(config).extract_batch(p.prompts))


def test_default_contexts_are_the_default_extractors(problem):
    expected = make_extractor(FeatureConfig()).extract_batch(problem.prompts)
    assert np.array_equal(problem.contexts, expected)


def test_utilities_follow_the_tenant(problem):
    U, t = problem.utilities, problem.topics
    specialist = (np.arange(U.shape[1])[None, :] % TENANTS) == t[:, None]
    # The best adapter for every request specialises in its tenant.
    assert np.all(specialist[np.arange(len(t)), U.argmax(axis=1)])
    # The documented ranges: specialists 0.6-0.95, the others 0.1-0.45.
    assert U[specialist].min() >= 0.6 and U[specialist].max() <= 0.95
    assert U[~specialist].min() >= 0.1 and U[~specialist].max() <= 0.45
    # Each adapter's specialist utility exceeds its others by AFFINITY = 0.5 plus the
    # difference of two U(0, 0.05) variations: within 0.05, and 0.5 on average over adapters.
    for_tenant = np.array([U[t == tenant][0] for tenant in range(TENANTS)])  # (tenants, N)
    spec_rows = np.arange(U.shape[1]) % TENANTS
    gap = for_tenant[spec_rows, np.arange(U.shape[1])] - np.array(
        [np.delete(for_tenant[:, a], spec_rows[a]).mean() for a in range(U.shape[1])])
    assert gap.min() >= 0.45 and gap.max() <= 0.55
    assert gap.mean() == pytest.approx(0.5, abs=0.01)
    # The request matters only through its tenant: one row per tenant.
    for tenant in range(TENANTS):
        rows = U[t == tenant]
        assert np.all(rows == rows[0])


def test_utilities_fill_the_documented_ranges():
    # With 256 adapters the draws come close to both ends of each range.
    p = make_text_problem(256, 2000, np.random.default_rng(4), zipf=0.0)
    U, t = p.utilities, p.topics
    specialist = (np.arange(256)[None, :] % 64) == t[:, None]
    assert 0.6 <= U[specialist].min() < 0.62 and 0.92 < U[specialist].max() <= 0.95
    assert 0.1 <= U[~specialist].min() < 0.11 and 0.44 < U[~specialist].max() <= 0.45


def test_tenants_write_in_their_own_words(problem):
    shared = set(SHARED_WORDS)
    own: dict[int, set[str]] = {}
    n_shared = n_words = 0
    for text, tenant in zip(problem.prompts, problem.topics.tolist(), strict=True):
        words = text.rstrip(".").lower().split()
        n_words += len(words)
        n_shared += sum(w in shared for w in words)
        own.setdefault(tenant, set()).update(w for w in words if w not in shared)
    # p_style = 0.5: about half the words come from the tenant's vocabulary.
    assert abs(n_shared / n_words - 0.5) < 0.02
    # ~40 made-up words per tenant, no two tenants sharing one.
    # 40 made-up words per tenant (each drawn ~4750 times here: every word shows), no two
    # tenants sharing one.
    assert all(len(v) == 40 for v in own.values())
    assert sum(len(v) for v in own.values()) == len(set().union(*own.values()))


def test_vocabularies_stay_disjoint_at_many_tenants():
    # Tenants build words from few syllables, so at N = 1024 (256 tenants) two tenants' words
    # would collide without the check against the words taken already.
    vocab = _tenant_vocabularies(256, np.random.default_rng(0))
    words = vocab.ravel().tolist()
    assert vocab.shape == (256, 40) and len(set(words)) == len(words)
    assert not set(words) & set(SHARED_WORDS)
    assert all(w.isalpha() and w.islower() for w in words)


def test_styles_are_learnable_from_the_contexts(problem):
    # Ridge regression of the one-hot tenant on the contexts, fit on the first half: the
    # text has to carry the tenant through the extractor for this to beat chance (1/8).
    X, y = problem.contexts, problem.topics
    half = len(y) // 2
    Y = np.eye(TENANTS)[y[:half]]
    Xa = np.vstack([X[:half], np.sqrt(1e-3) * np.eye(X.shape[1])])
    Ya = np.vstack([Y, np.zeros((X.shape[1], TENANTS))])
    W = np.linalg.lstsq(Xa, Ya, rcond=None)[0]
    accuracy = np.mean((X[half:] @ W).argmax(axis=1) == y[half:])
    assert accuracy > 0.8


def _top(topics: np.ndarray) -> int:
    return Counter(topics.tolist()).most_common(1)[0][0]


def test_popularity_drifts():
    p = make_text_problem(32, 4000, np.random.default_rng(0), n_tenants=TENANTS,
                          drift_every=1000)
    tops = [_top(p.topics[i:i + 1000]) for i in range(0, 4000, 1000)]
    assert any(top != tops[0] for top in tops[1:])


def test_no_drift_is_stationary_zipf():
    T = 20000
    p = make_text_problem(32, T, np.random.default_rng(0), n_tenants=TENANTS, drift_every=0)
    assert _top(p.topics[: T // 2]) == _top(p.topics[T // 2:])
    # Zipf(1) over 8 tenants: the top one has 1 / H_8 = 1 / 2.717857 = 0.3679 of the requests,
    # the second 0.1840 (std of a share over 20000 requests: < 0.004).
    shares = sorted(np.bincount(p.topics, minlength=TENANTS) / T, reverse=True)
    assert shares[0] == pytest.approx(0.3679, abs=0.015)
    assert shares[1] == pytest.approx(0.1840, abs=0.015)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_arms=0), "n_arms"),
    (dict(horizon=0), "horizon"),
    (dict(n_tenants=0), "n_tenants"),
    (dict(p_style=0.0), "p_style"),
    (dict(p_style=1.5), "p_style"),
    (dict(drift_every=-1), "drift_every"),
    (dict(zipf=-1.0), "zipf"),
    (dict(min_bytes=10 * MiB, max_bytes=5 * MiB), "min_bytes"),
])
def test_arguments_are_checked(kwargs, match):
    args = {"n_arms": 4, "horizon": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_text_problem(args.pop("n_arms"), args.pop("horizon"), np.random.default_rng(0),
                          **args)


def test_replays_like_a_routing_problem():
    # What scripts/bench_router.py's run_instance reads: .contexts .utilities .sizes .arm_ids.
    p = make_text_problem(8, 300, np.random.default_rng(2))
    config = EdgeConfig(router=RouterConfig(polar=PolarConfig(epoch_length=64), seed=1))
    budget = max(int(p.sizes.max()), int(p.sizes.sum() * 0.25))
    r = replay_routing("polar+", p.contexts, p.utilities, p.sizes, config=config,
                       budget_bytes=budget, paging_cost=PagingCostModel(),
                       rng=np.random.default_rng(0), arm_ids=p.arm_ids)
    assert 0.0 <= r["hit_ratio"] <= 1.0 and r["regret"] >= 0.0
