"""Generators: reproducible per seed, and the statistics they promise are measurable in output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge._native import NativeIndex
from edge.errors import TraceError
from edge.sim.generate import (
    FixedSize,
    LognormalSize,
    SmallHugeMix,
    adapters_on_arrivals,
    drifting_zipf,
    moe_expert_key,
    moe_reuse_fraction,
    moe_routing,
    read_azure_llm_arrivals,
    scan_burst_mask,
    scan_bursts,
    tenant_adapter_stream,
    zipf_trace,
)

AZURE_SAMPLE = Path(__file__).parent / "data" / "azure_llm_conv_head.csv"

GENERATORS = {
    "zipf": lambda seed: zipf_trace(5000, 300, 0.9, seed, LognormalSize(1000, 1.0)),
    "scan": lambda seed: scan_bursts(5000, 300, 0.9, seed, period=1000, burst_length=200),
    "drift": lambda seed: drifting_zipf(5000, 300, 0.9, seed, phase_length=1000, shift=10),
    "tenants": lambda seed: tenant_adapter_stream(2000, 4, 20, seed, context_dim=8).trace,
    "moe": lambda seed: moe_routing(200, 4, 16, 2, 0.5, seed).trace,
    "arrivals": lambda seed: adapters_on_arrivals(np.arange(100.0), 10, 1.0, seed),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_reproducible_per_seed(name):
    make = GENERATORS[name]
    a, b, c = make(11), make(11), make(12)
    for field in ("times", "keys", "sizes"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.keys, c.keys)
    # a Generator passed in is used as is (no hidden global RNG)
    d = make(np.random.default_rng(11))
    np.testing.assert_array_equal(a.keys, d.keys)


def fitted_zipf_exponent(keys: np.ndarray, top: int) -> float:
    """Slope of log(frequency) against log(rank) over the ``top`` most frequent keys."""
    counts = np.sort(np.unique(keys, return_counts=True)[1])[::-1][:top]
    ranks = np.arange(1, len(counts) + 1)
    return -np.polyfit(np.log(ranks), np.log(counts), 1)[0]


@pytest.mark.parametrize("alpha", [0.6, 0.9, 1.2])
def test_zipf_exponent_recovered(alpha):
    trace = zipf_trace(300_000, 2000, alpha, seed=1)
    assert fitted_zipf_exponent(trace.keys, top=100) == pytest.approx(alpha, abs=0.05)
    assert trace.keys.max() < 2000
    assert np.all(np.diff(trace.times) > 0)  # Poisson arrivals, strictly increasing
    assert 1 / np.diff(trace.times).mean() == pytest.approx(1000, rel=0.02)  # default rate


def test_size_models():
    rng = np.random.default_rng(3)
    assert set(FixedSize(77).draw(rng, 100).tolist()) == {77}
    s = LognormalSize(median_bytes=10_000, sigma=0.8).draw(rng, 100_000).astype(float)
    assert np.median(s) == pytest.approx(10_000, rel=0.03)
    assert np.log(s).std() == pytest.approx(0.8, rel=0.03)
    mix = SmallHugeMix(1000, 10**8, huge_fraction=0.1).draw(rng, 100_000)
    assert set(mix.tolist()) == {1000, 10**8}
    assert (mix == 10**8).mean() == pytest.approx(0.1, abs=0.005)


def test_an_object_keeps_its_size():
    t = zipf_trace(20_000, 500, 0.8, seed=2, sizes=SmallHugeMix(100, 10**6, 0.2))
    order = np.argsort(t.keys, kind="stable")
    same_key = t.keys[order][1:] == t.keys[order][:-1]
    assert np.all(t.sizes[order][1:][same_key] == t.sizes[order][:-1][same_key])


def test_scan_bursts_positions_and_keys():
    n, n_obj, period, burst = 10_000, 500, 2000, 600
    t = scan_bursts(n, n_obj, 0.9, seed=4, period=period, burst_length=burst)
    mask = scan_burst_mask(n, period, burst)
    assert mask.sum() == 5 * burst
    starts = np.flatnonzero(np.diff(mask.astype(int)) == 1) + 1
    assert starts.tolist() == [1400, 3400, 5400, 7400, 9400]
    assert np.all(t.keys[mask] >= n_obj) and np.all(t.keys[~mask] < n_obj)
    scans = t.keys[mask].astype(np.int64).reshape(5, burst)
    assert np.all(np.diff(scans, axis=1) == 1)  # sequential within a burst
    assert len(np.unique(scans)) == scans.size  # fresh keys each burst
    looped = scan_bursts(n, n_obj, 0.9, 4, period, burst, fresh_scan_keys=False)
    loops = looped.keys[mask].reshape(5, burst)
    assert np.all(loops == loops[0])  # the same range every burst


def test_scan_bursts_thrash_lru():
    # Bursts longer than the cache flush LRU's hot set; the Zipf requests between bursts then
    # miss while it warms up again.
    n, n_obj, cache = 40_000, 2000, 200
    plain = zipf_trace(n, n_obj, 1.0, seed=5)
    scanned = scan_bursts(n, n_obj, 1.0, seed=5, period=500, burst_length=250)
    mask = scan_burst_mask(n, 500, 250)

    def lru_hit_ratio_outside_bursts(trace):
        hits = np.zeros(n, np.uint8)
        NativeIndex().replay("lru", trace.keys, np.ones(n, np.uint64), cache, hits_out=hits)
        return hits[~mask].mean()

    assert lru_hit_ratio_outside_bursts(plain) - lru_hit_ratio_outside_bursts(scanned) > 0.1


def test_drift_moves_the_hot_object_by_shift_per_phase():
    n_obj, phase, shift = 400, 5000, 37
    t = drifting_zipf(6 * phase, n_obj, 1.2, seed=6, phase_length=phase, shift=shift)
    for p in range(6):
        keys = t.keys[p * phase:(p + 1) * phase]
        hottest = np.bincount(keys.astype(np.int64), minlength=n_obj).argmax()
        assert hottest == (p * shift) % n_obj


def test_tenants_follow_their_own_preferences_and_contexts_are_linear():
    w = tenant_adapter_stream(40_000, n_tenants=5, n_adapters=30, seed=7, alpha=1.2,
                              context_dim=16, context_noise=0.2)
    t = w.trace
    assert t.tenant_names == tuple(f"tenant-{i}" for i in range(5))
    favourites = set()
    for code in range(5):
        keys = t.keys[t.tenants == code].astype(np.int64)
        assert np.bincount(keys, minlength=30).argmax() == w.preferences[code, 0]
        favourites.add(int(w.preferences[code, 0]))
    assert len(favourites) > 1  # preferences are per tenant, not one global ranking
    np.testing.assert_allclose(np.linalg.norm(t.contexts, axis=1), 1.0)
    utilities = w.utilities()
    assert utilities.shape == (40_000, 30)
    np.testing.assert_allclose(utilities, t.contexts @ w.adapter_weights.T)
    # the requested adapter is the one of highest linear utility, up to the context noise
    assert (utilities.argmax(axis=1) == t.keys).mean() > 0.95
    noisy = tenant_adapter_stream(20_000, 5, 30, seed=7, context_dim=16, context_noise=2.0)
    assert (noisy.utilities().argmax(axis=1) == noisy.trace.keys).mean() < 0.8
    without = tenant_adapter_stream(100, 2, 5, seed=7)
    assert without.trace.contexts is None and without.adapter_weights is None
    with pytest.raises(ValueError, match="without contexts"):
        without.utilities()


def test_moe_shape_keys_and_skew():
    r = moe_routing(n_tokens=500, n_layers=6, n_experts=32, top_k=4, locality=0.3, seed=8,
                    expert_bytes=1234)
    assert r.experts.shape == (500, 6, 4)
    assert len(r.trace) == 500 * 6 * 4
    assert np.all(np.diff(r.experts, axis=2) > 0)  # top_k distinct experts, sorted
    keys = r.trace.keys.reshape(500, 6, 4)
    np.testing.assert_array_equal(keys, moe_expert_key(np.arange(6)[None, :, None], r.experts))
    assert np.all(r.trace.sizes == 1234)
    assert np.all(r.trace.times.reshape(500, 24) == (np.arange(500) / 20.0)[:, None])
    counts = np.bincount(r.experts[:, 0].ravel(), minlength=32)
    assert counts.max() > 3 * counts.mean()  # skewed per-layer popularity


@pytest.mark.parametrize("locality", [0.0, 0.5, 0.9])
def test_moe_measured_locality_matches_requested(locality):
    def reuse(loc, seed):
        return moe_reuse_fraction(moe_routing(4000, 8, 64, 2, loc, seed, alpha=1.0).experts)

    chance = reuse(0.0, seed=100)  # two independent draws that happen to coincide
    expected = locality + (1 - locality) * chance
    assert reuse(locality, seed=9) == pytest.approx(expected, abs=0.02)


def test_azure_arrivals_and_adapters_laid_onto_them(tmp_path):
    a = read_azure_llm_arrivals(AZURE_SAMPLE)
    assert len(a.times) == 20 and a.times[0] == 0.0
    assert a.times[1] == pytest.approx(4.314579)  # 18:15:50.9951690 - 18:15:46.6805900
    assert a.context_tokens[:2].tolist() == [374, 396]
    assert a.generated_tokens[:2].tolist() == [44, 109]
    t = adapters_on_arrivals(a, n_adapters=5, alpha=1.0, seed=10)
    np.testing.assert_array_equal(t.times, a.times)
    assert t.keys.max() < 5
    drifted = adapters_on_arrivals(np.arange(20_000.0), 50, 1.5, 10, phase_seconds=10_000,
                                   shift=25)
    first = np.bincount(drifted.keys[:10_000].astype(np.int64)).argmax()
    second = np.bincount(drifted.keys[10_000:].astype(np.int64)).argmax()
    assert first != second
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,12\n")
    with pytest.raises(TraceError, match=r"bad\.csv:2: expected"):
        read_azure_llm_arrivals(bad)


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        zipf_trace(10, 10, -1.0, 0)
    with pytest.raises(ValueError, match="burst_length"):
        scan_bursts(10, 10, 1.0, 0, period=5, burst_length=5)
    with pytest.raises(ValueError, match="top_k"):
        moe_routing(10, 2, 4, 5, 0.5, 0)
    with pytest.raises(ValueError, match="locality"):
        moe_routing(10, 2, 4, 2, 1.5, 0)


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("make, message", [
    # nan compares false with every bound and inf passes ">= 0": both used to slip through.
    (lambda: zipf_trace(10, 10, NAN, 0), "alpha must be a finite number >= 0, got nan"),
    (lambda: zipf_trace(10, 10, INF, 0), "alpha must be a finite number >= 0, got inf"),
    (lambda: zipf_trace(10, 10, 1.0, 0, rate=INF), "rate must be a finite number > 0, got inf"),
    (lambda: LognormalSize(1000, NAN), "sigma must be a finite number >= 0, got nan"),
    (lambda: LognormalSize(INF, 1.0), "median_bytes must be a finite number > 0, got inf"),
    (lambda: LognormalSize(2**33, 1.0), "need min_bytes <= median_bytes <= max_bytes"),
    (lambda: FixedSize(2**64), "nbytes 18446744073709551616 is too large"),
    (lambda: FixedSize(1.5), "nbytes 1.5 is not a whole number of bytes"),
    (lambda: SmallHugeMix(1000, 2**64), "huge_bytes 18446744073709551616 is too large"),
    (lambda: moe_routing(10, 2, 4, 2, 0.5, 0, expert_bytes=2**64), "expert_bytes"),
    (lambda: moe_routing(10, 2, 4, 2, 0.5, 0, tokens_per_second=INF), "tokens_per_second"),
    (lambda: tenant_adapter_stream(10, 2, 4, 0, tenant_alpha=INF), "tenant_alpha must be"),
    (lambda: tenant_adapter_stream(10, 2, 4, 0, context_dim=2, context_noise=NAN),
     "context_noise must be a finite number >= 0, got nan"),
    (lambda: adapters_on_arrivals(np.arange(10.0), 4, 1.0, 0, phase_seconds=INF),
     "phase_seconds must be a finite number > 0, got inf"),
])
def test_non_finite_and_out_of_range_parameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_lognormal_sizes_near_2_64_do_not_wrap():
    # float64 rounds 2**64-1 up to 2**64, which no uint64 holds: the clip must stay below it.
    sizes = LognormalSize(2**62, 3.0, max_bytes=2**64 - 1).draw(np.random.default_rng(0), 1000)
    assert sizes.dtype == np.uint64 and sizes.min() >= 1
    assert int(sizes.max()) > 2**63  # the clipped tail sits just below 2**64, not at 0

