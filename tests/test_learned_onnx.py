"""The learned eviction network's ONNX file and its serving rules (edge.learned.onnx_model,
edge.learned.serving).

- The exported graph computes what ``DuelingQNet.forward`` computes (the numpy pass is the
  reference), for several hidden sizes and batch sizes, empty batches included.
- The file carries the feature schema; reading it needs ONNX Runtime only, and every way a file
  can be unusable is a ``ModelError`` naming the file.
- ``CircuitBreaker`` and ``TimedScorer`` follow their rules exactly, driven by scripted decisions
  and a scripted clock; the model itself is real.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge._native.learned import learned_inputs, rank_by_preference
from edge.errors import EdgeError
from edge.learned.network import (
    CANDIDATE_FEATURES,
    EVICT,
    INPUT_NAMES,
    KEEP,
    N_INPUTS,
    DuelingQNet,
    model_inputs,
)
from edge.learned.onnx_model import (
    ModelError,
    export_onnx,
    load_model_file,
    open_model,
)
from edge.learned.serving import CircuitBreaker, OnnxScorer, TimedScorer

ROOT = Path(__file__).resolve().parents[1]


def realistic_inputs(n: int, seed: int) -> np.ndarray:
    """Inputs as the policy makes them: C-core-like features over many orders of magnitude."""
    rng = np.random.default_rng(seed)
    features = rng.lognormal(mean=3.0, sigma=4.0, size=(n, len(CANDIDATE_FEATURES)))
    return model_inputs(features, rng.random(n), float(rng.random()), float(rng.random()))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "net.onnx"
    export_onnx(DuelingQNet.initialise(16, seed=3), path, metadata={"seed": 3})
    return path


# -- the graph equals the numpy forward pass ------------------------------------------------

@pytest.mark.parametrize("hidden", [1, 8, 32, 64])
def test_the_onnx_graph_computes_the_numpy_forward_pass(tmp_path, hidden):
    net = DuelingQNet.initialise(hidden, seed=hidden)
    path = tmp_path / "net.onnx"
    export_onnx(net, path)
    _, session = open_model(path)
    for n in (0, 1, 2, 32, 500):
        for x in (realistic_inputs(n, seed=n),
                  np.random.default_rng(n).standard_normal((n, N_INPUTS)).astype(np.float32)):
            q = session.run(["q"], {"x": x})[0]
            assert q.shape == (n, 2) and q.dtype == np.float32
            # Both float32: only the summation order differs, so 1e-5 relative (outputs reach
            # ~100 with He weights and log inputs) plus 1e-5 absolute near zero.
            np.testing.assert_allclose(q, net.forward(x), rtol=1e-5, atol=1e-5)


def test_the_graph_is_not_trivially_equal_to_any_network(tmp_path):
    # The comparison above can fail: another network's file gives other numbers.
    export_onnx(DuelingQNet.initialise(8, seed=1), tmp_path / "one.onnx")
    _, session = open_model(tmp_path / "one.onnx")
    x = realistic_inputs(16, seed=0)
    other = DuelingQNet.initialise(8, seed=2).forward(x)
    assert not np.allclose(session.run(["q"], {"x": x})[0], other, rtol=1e-3, atol=1e-3)


def test_the_scorer_gives_evict_minus_keep(model_path):
    net = DuelingQNet.initialise(16, seed=3)
    x = realistic_inputs(40, seed=9)
    q = net.forward(x)
    np.testing.assert_allclose(OnnxScorer(model_path).preferences(x), q[:, EVICT] - q[:, KEEP],
                               rtol=1e-5, atol=1e-5)


# -- the file: metadata, hash, atomic write -------------------------------------------------

def test_the_file_carries_the_schema_and_the_callers_metadata(tmp_path):
    path = tmp_path / "net.onnx"
    sha = export_onnx(DuelingQNet.initialise(12, seed=0), path,
                      metadata={"training_traces": ["bursty-1.csv", "zipf-2.csv"], "seed": 42})
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    model = load_model_file(path, expected_sha256=sha.upper())  # hex digits in either case
    assert model.sha256 == sha and model.data == path.read_bytes() and model.hidden == 12
    assert model.metadata == {"feature_schema_version": 2, "input_names": list(INPUT_NAMES),
                              "hidden": 12, "training_traces": ["bursty-1.csv", "zipf-2.csv"],
                              "seed": 42}
    # The onnx package reads the same entries (a peer of ORT's custom_metadata_map).
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert props["seed"] == "42" and props["hidden"] == "12"
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]  # no temp file left behind


def test_export_refuses_metadata_it_cannot_store(tmp_path):
    net = DuelingQNet.initialise(4)
    with pytest.raises(ValueError, match="feature_schema_version"):
        export_onnx(net, tmp_path / "a.onnx", metadata={"feature_schema_version": 1})
    with pytest.raises(ValueError, match="JSON"):
        export_onnx(net, tmp_path / "b.onnx", metadata={"seed": object()})
    net.w2 = net.w2[:, :3]
    with pytest.raises(ValueError, match="w2"):
        export_onnx(net, tmp_path / "c.onnx")
    assert list(tmp_path.iterdir()) == []


def test_loading_and_serving_need_only_onnx_runtime(model_path):
    # A fresh interpreter where ``import onnx`` fails: the runtime path must not need it.
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from edge.learned.serving import OnnxScorer\n"
            "import numpy as np\n"
            f"s = OnnxScorer({str(model_path)!r})\n"
            f"print(s.model.metadata['seed'], s.preferences(np.zeros((3, {N_INPUTS}), np.float32))"
            ".shape)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "(3,)"]


def rewrite_metadata(source: Path, target: Path, **changes: str | None) -> None:
    """A copy of ``source`` with metadata entries replaced (value) or dropped (None)."""
    model = onnx.load(source)
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, target)


@pytest.mark.parametrize(("changes", "message"), [
    ({"feature_schema_version": "1"}, "feature schema version is 1, expected 2"),  # schema 1
    ({"feature_schema_version": None}, "no feature_schema_version"),
    ({"input_names": '["log_age", "log_size"]'}, "input names are"),
    ({"hidden": '"wide"'}, "hidden size 'wide'"),
])
def test_a_model_of_another_schema_is_refused(model_path, tmp_path, changes, message):
    path = tmp_path / "other.onnx"
    rewrite_metadata(model_path, path, **changes)
    with pytest.raises(ModelError, match=message) as caught:
        load_model_file(path)
    assert str(path) in str(caught.value)


def test_a_graph_with_another_signature_is_refused(tmp_path):
    # Right metadata, but an input of 8 columns: the graph, not only its label, is checked.
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["q"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["N", 2])],
        initializer=[onnx.numpy_helper.from_array(np.zeros((8, 2), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"feature_schema_version": "2", "hidden": "4",
                                   "input_names": '["' + '", "'.join(INPUT_NAMES) + '"]'})
    path = tmp_path / "narrow.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match=r"its inputs are .*expected one float tensor 'x'"):
        load_model_file(path)


def test_unusable_files_are_model_errors_naming_the_file(model_path, tmp_path):
    missing = tmp_path / "absent.onnx"
    with pytest.raises(ModelError, match="no such file") as caught:
        load_model_file(missing)
    assert str(missing) in str(caught.value)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot a model at all" * 50)
    with pytest.raises(ModelError, match="not a valid ONNX model") as caught:
        load_model_file(garbage)
    assert str(garbage) in str(caught.value)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model_path.read_bytes()[:200])
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_model_file(truncated)
    with pytest.raises(ModelError, match="sha256 is .* expected 0000") as caught:
        load_model_file(model_path, expected_sha256="0" * 64)
    assert str(model_path) in str(caught.value)
    assert issubclass(ModelError, EdgeError)


# -- the circuit breaker --------------------------------------------------------------------

def drive(breaker: CircuitBreaker, outcomes: str) -> str:
    """One decision per character: ``F`` a failure, ``.`` a success. Returns, per decision,
    ``-`` when the breaker refused the model, else the outcome that was recorded."""
    seen = []
    for outcome in outcomes:
        if breaker.allows():
            breaker.record(outcome == "F")
            seen.append(outcome)
        else:
            seen.append("-")
    return "".join(seen)


def test_the_breaker_opens_after_overruns_within_the_window_and_retries_after_cooldown():
    breaker = CircuitBreaker(overruns=3, window=5, cooldown=4)
    # Decisions 1-5: failures at 1, 3 and 5 are three within five decisions: opens after 5.
    # 6-9 refused (cooldown 4); 10 is the trial and fails: open again for 11-14; 15 is the next
    # trial and succeeds: closed, history cleared, so 16-17 (two failures) do not open it.
    assert drive(breaker, "F.F.F") == "F.F.F"
    assert breaker.state == "open" and breaker.opens == 1
    assert drive(breaker, "FFFF" + "F" + "FFFF" + ".") == "----" + "F" + "----" + "."
    assert breaker.opens == 2 and breaker.state == "closed"
    assert drive(breaker, "FF.") == "FF."
    assert breaker.state == "closed"


def test_failures_further_apart_than_the_window_do_not_open_it():
    breaker = CircuitBreaker(overruns=3, window=5, cooldown=4)
    # Failures at 1, 4, 7 and 10: never three within five decisions.
    assert drive(breaker, "F..F..F..F") == "F..F..F..F"
    assert breaker.opens == 0
    # A failure at 11 makes 7, 10 and 11: three within the five decisions 7..11.
    assert drive(breaker, "F") == "F" and breaker.opens == 1


@pytest.mark.parametrize("kwargs", [{"overruns": 0, "window": 5, "cooldown": 1},
                                    {"overruns": 3, "window": 2, "cooldown": 1},
                                    {"overruns": 1, "window": 1, "cooldown": True}])
def test_breaker_settings_are_checked(kwargs):
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)


# -- the budget, with a scripted clock ------------------------------------------------------

class ScriptedClock:
    """Nanoseconds: each read returns the next value of a script."""

    def __init__(self, *reads: int) -> None:
        self.reads = list(reads)

    def __call__(self) -> int:
        return self.reads.pop(0)


def test_a_late_answer_is_discarded_and_counted(model_path):
    clock = ScriptedClock()
    timed = TimedScorer(OnnxScorer(model_path), budget_us=100, clock=clock)
    x = realistic_inputs(5, seed=1)
    expected = np.argsort(-OnnxScorer(model_path).preferences(x), kind="stable").tolist()
    # begin at 0; before the model 40 us; after it 99 us (within 100): the model's answer.
    clock.reads += [0, 40_000, 99_000]
    assert timed.rank(x, timed.begin()) == expected
    # begin at 0; before 40 us; after 100.001 us: late, discarded.
    clock.reads += [0, 40_000, 100_001]
    assert timed.rank(x, timed.begin()) is None
    # candidates and features alone took 150 us: the model is not asked (one clock read).
    clock.reads += [0, 150_000]
    assert timed.rank(x, timed.begin()) is None
    assert clock.reads == []
    assert timed.stats.as_dict() == {
        "decisions": 3, "model_decisions": 1,
        "fallback_decisions": {"timeout": 2, "error": 0, "no_model": 0, "breaker_open": 0},
        "overruns": 2, "breaker_opens": 0}


def test_the_breaker_switches_the_model_off_and_on_again(model_path):
    clock = ScriptedClock()
    timed = TimedScorer(OnnxScorer(model_path), budget_us=10,
                        breaker=CircuitBreaker(overruns=2, window=2, cooldown=3), clock=clock)
    x = realistic_inputs(4, seed=2)
    late, in_time = [0, 1_000, 20_000], [0, 1_000, 5_000]
    results = []
    for reads in (late, late, None, None, None, in_time, in_time):
        if reads is not None:
            clock.reads += reads
        started = timed.begin()
        results.append("fallback" if started is None else
                        "model" if timed.rank(x, started) is not None else "late")
    # Two overruns in two decisions open it; three decisions refused; the trial is in time.
    assert results == ["late", "late", "fallback", "fallback", "fallback", "model", "model"]
    assert clock.reads == []
    stats = timed.stats.as_dict()
    assert stats["fallback_decisions"] == {"timeout": 2, "error": 0, "no_model": 0,
                                           "breaker_open": 3}
    assert (stats["decisions"], stats["model_decisions"], stats["overruns"],
            stats["breaker_opens"]) == (7, 2, 2, 1)
    assert timed.breaker.state == "closed"


def test_runtime_errors_and_non_finite_answers_fall_back(model_path, caplog):
    timed = TimedScorer(OnnxScorer(model_path), budget_us=1e9)
    good = realistic_inputs(3, seed=0)
    wrong_width = np.zeros((3, N_INPUTS - 1), np.float32)  # ORT refuses the shape
    nan = good.copy()
    nan[1, 0] = np.nan
    assert timed.rank(good, timed.begin()) is not None
    assert timed.rank(wrong_width, timed.begin()) is None
    assert timed.rank(nan, timed.begin()) is None
    stats = timed.stats.as_dict()
    assert stats["fallback_decisions"]["error"] == 2 and stats["model_decisions"] == 1
    assert sum("failed; falling back to LRU" in r.getMessage() for r in caplog.records) == 1


def test_without_a_model_every_decision_is_no_model():
    timed = TimedScorer(None, budget_us=500)
    assert [timed.begin() for _ in range(3)] == [None, None, None]
    assert timed.stats.fallback_decisions["no_model"] == 3 and timed.stats.decisions == 3
    with pytest.raises(ValueError, match="budget_us"):
        TimedScorer(None, budget_us=0)


def test_the_c_cores_input_rows_are_model_inputs():
    # Serving builds a decision's inputs in the C core (edge_learned_inputs); training uses
    # model_inputs (numpy). They may differ in the last bit of log1p (numpy's SIMD log1p
    # against libm's log1pf), never more.
    rng = np.random.default_rng(4)
    m = len(CANDIDATE_FEATURES)
    features = (rng.lognormal(0, 6, size=(3000, m))
                * rng.choice([-1, 1], size=(3000, m), p=[0.1, 0.9])).astype(np.float32)
    features[:4, :4] = [[np.nan, np.inf, 0.0, -0.0]] * 4
    got = learned_inputs(features, 0.0, 0.25, 0.01)
    want = model_inputs(features, 0.0, 0.25, 0.01)
    np.testing.assert_allclose(got, want, rtol=5e-7, atol=0)  # NaN where model_inputs has NaN
    assert got.dtype == np.float32 and got.shape == (3000, N_INPUTS)
    with pytest.raises(ValueError, match=rf"features must be \(n, {m}\)"):
        learned_inputs(np.zeros((2, 5), np.float32), 0.0, 0.0, 0.0)


@pytest.mark.parametrize("n", [0, 1, 37, 129, 1000])  # 129 and 1000: past the C stack's 128
def test_the_c_cores_rank_is_numpys_stable_argsort(n):
    # A decision's order is ranked in the C core (edge_learned_rank); the numpy definition is
    # labels[argsort(-(q[:, EVICT] - q[:, KEEP]), stable)]. Values from a small set, so that
    # many preferences tie and the tie order is tested, with -0.0 beside 0.0.
    rng = np.random.default_rng(n)
    q = rng.choice(np.array([-1.5, -0.0, 0.0, 0.25, 2.0], np.float32), size=(n, 2))
    labels = rng.permutation(10 * n + 1)[:n].astype(np.int32)
    want = labels[np.argsort(-(q[:, EVICT] - q[:, KEEP]), kind="stable")].tolist()
    assert rank_by_preference(q, labels) == want
    assert rank_by_preference(q, labels.astype(np.int64)) == want  # converted, same answer


def test_the_c_cores_rank_refuses_non_finite_preferences_and_other_shapes():
    q = np.zeros((3, 2), np.float32)
    labels = np.arange(3, dtype=np.int32)
    for bad in (np.nan, np.inf, -np.inf):
        q[2, EVICT] = bad
        with pytest.raises(ValueError, match="non-finite eviction preference"):
            rank_by_preference(q, labels)
    q[2, EVICT] = 0.0
    q[1] = [3e38, -3e38]  # each finite, their difference overflows: refused too
    with pytest.raises(ValueError, match="non-finite"):
        rank_by_preference(q, labels)
    for wrong in (np.zeros((3, 3), np.float32), np.zeros((2, 2), np.float32),
                  np.zeros((3, 2), np.float64), np.zeros((2, 3), np.float32).T):
        with pytest.raises(ValueError, match=r"Q rows must be a C-contiguous \(3, 2\) float32"):
            rank_by_preference(wrong, labels)
