import numpy as np
import pytest

from edge.router.config import FeatureConfig, LinUCBConfig, PolarConfig, RouterConfig, StateConfig
from edge.router.errors import StateCorruptError, StateMismatchError
from edge.router.router import Router
from edge.router.state import decode_state, encode_state

MiB = 2**20
CATALOGUE = {f"ad{i}": (i + 1) * 8 * MiB for i in range(6)}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _config(path=None, dim=24, **kw):
    return RouterConfig(features=FeatureConfig(dim=dim),
                        polar=PolarConfig(mode="polar+", epoch_length=8, context_window=16),
                        state=StateConfig(path=path, **kw))


def _trained(path=None, seed=0, steps=120, clock=None):
    router = Router(_config(path), CATALOGUE, rng=np.random.default_rng(seed),
                    budget_bytes=60 * MiB, clock=clock or FakeClock())
    rng = np.random.default_rng(seed + 1)
    for i in range(steps):
        router.route(i, f"request {i} about topic {i % 5}", set(list(CATALOGUE)[:2]))
        router.update(i, float(rng.uniform()))
    return router


def test_round_trip_is_exact_and_decisions_continue_identically(tmp_path):
    path = tmp_path / "router.state"
    a = _trained()
    a.save(path)
    b = Router(_config(), CATALOGUE, rng=np.random.default_rng(999), budget_bytes=60 * MiB)
    b.load(path)
    for key, arr in a.linucb.state_arrays().items():
        np.testing.assert_array_equal(b.linucb.state_arrays()[key], arr, err_msg=key)
    assert b.arm_ids == a.arm_ids
    assert b.polar.sizes() == a.polar.sizes()
    np.testing.assert_array_equal(b.polar.chosen_counts(), a.polar.chosen_counts())
    assert b.polar.schedule.state() == a.polar.schedule.state()
    # The amortisation estimates (shares per arm, measured residency) travel with the state.
    assert a.polar._share.sum() > 0 and a.polar._residency > 0
    np.testing.assert_array_equal(b.polar._share, a.polar._share)
    assert (b.polar._residency, b.polar._residency_n, b.polar._demand) == \
        (a.polar._residency, a.polar._residency_n, a.polar._demand)
    for i in range(200, 240):  # same RNG state, same schedule: same choices, same scores
        da = a.route(i, f"later {i}", {"ad0"})
        db = b.route(i, f"later {i}", {"ad0"})
        assert (da.arm_id, da.reason) == (db.arm_id, db.reason)
        np.testing.assert_array_equal(da.score, db.score)
        a.update(i, 0.5)
        b.update(i, 0.5)


def test_truncated_or_damaged_state_file_is_detected(tmp_path):
    path = tmp_path / "router.state"
    _trained().save(path)
    data = path.read_bytes()
    fresh = Router(_config(), CATALOGUE, rng=np.random.default_rng(0), budget_bytes=60 * MiB)
    for cut in sorted({0, 5, 20, len(data) // 3, len(data) // 2, len(data) - 1}):
        path.write_bytes(data[:cut])
        with pytest.raises(StateCorruptError, match=str(path)):
            fresh.load(path)
    flipped = bytearray(data)
    flipped[-100] ^= 0x01
    path.write_bytes(bytes(flipped))
    with pytest.raises(StateCorruptError, match="checksum"):
        fresh.load(path)
    path.write_bytes(data + b"extra")
    with pytest.raises(StateCorruptError, match="padded"):
        fresh.load(path)


def test_format_rejects_pickled_objects_and_other_versions():
    blob = encode_state({"kind": "x"}, {"a": np.arange(3)})
    header, arrays = decode_state(blob)
    assert header["kind"] == "x" and arrays["a"].tolist() == [0, 1, 2]
    bumped = blob[:12] + (2).to_bytes(4, "little") + blob[16:]
    with pytest.raises(StateCorruptError, match="version 2"):
        decode_state(bumped)
    with pytest.raises(StateCorruptError, match="pickle|readable"):
        decode_state(encode_state({}, {"o": np.array([{"a": 1}], dtype=object)}))


def test_feature_config_mismatch_is_refused(tmp_path):
    path = tmp_path / "router.state"
    _trained().save(path)
    other = Router(_config(dim=32), CATALOGUE, rng=np.random.default_rng(0))
    with pytest.raises(StateMismatchError, match="fingerprint"):
        other.load(path)
    salted = RouterConfig(features=FeatureConfig(dim=24, hash_seed=7),
                          polar=PolarConfig(mode="polar+", epoch_length=8, context_window=16))
    with pytest.raises(StateMismatchError, match="feature settings"):
        Router(salted, CATALOGUE, rng=np.random.default_rng(0)).load(path)
    prior = RouterConfig(features=FeatureConfig(dim=24), linucb=LinUCBConfig(prior_reward=0.5),
                         polar=PolarConfig(mode="polar+", epoch_length=8, context_window=16))
    with pytest.raises(StateMismatchError, match="prior_reward"):
        Router(prior, CATALOGUE, rng=np.random.default_rng(0)).load(path)


def test_saved_on_interval_at_shutdown_and_loaded_at_start(tmp_path):
    path = tmp_path / "state" / "router.state"
    clock = FakeClock()
    router = Router(_config(str(path), save_interval_seconds=30.0), CATALOGUE,
                    rng=np.random.default_rng(0), clock=clock)
    router.route("a", "one")
    router.update("a", 0.5)
    assert not path.exists()  # interval not reached
    clock.now = 31.0
    router.route("b", "two")
    router.update("b", 0.5)
    assert path.exists()
    router.route("c", "three")
    router.update("c", 0.5)
    router.close()
    # A new process: the catalogue changed (ad5 deleted, new adapter added) while it was down.
    catalogue = {k: v for k, v in CATALOGUE.items() if k != "ad5"} | {"fresh": 4 * MiB}
    again = Router(_config(str(path)), catalogue, rng=np.random.default_rng(1))
    assert again.updates == 3
    assert set(again.arm_ids) == set(catalogue)
    assert int(again.linucb.counts().sum()) == 3 - int(
        router.linucb.counts()[router.linucb.index_of("ad5")])
