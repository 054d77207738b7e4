"""The learned eviction policy's offline trainer: gradient, reward, environment, learning, CLI.

Peers, not the code under test, give the expected values: finite differences for the gradient,
rewards worked out by hand on a seven-request trace, the C core's LRU replay for the
environment's bookkeeping, and the daemon's own serving path (PagedCache with the ``learned``
policy through ONNX Runtime) for the trained policy's evaluation.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge.config import CacheConfig
from edge.learned.network import (
    CANDIDATE_FEATURES,
    EVICT,
    INPUT_NAMES,
    KEEP,
    N_INPUTS,
    DuelingQNet,
    model_inputs,
    one_hit_unit,
)
from edge.learned.train import (
    ONE_HIT_WEIGHTS,
    Agent,
    Decision,
    HindsightAgent,
    LearningAgent,
    Run,
    TrainConfig,
    evaluate,
    fast_preference,
    hindsight_ranks,
    hindsight_rewards,
    loss_and_gradients,
    prepare_trace,
    replay_many,
    train,
)
from edge.learned.train_command import generate_trace, parse_generate, train_eviction
from edge.sim import generate as gen
from edge.sim.replay import replay_arrays, replay_trace
from edge.sim.specs import working_set_bytes
from edge.sim.trace import Trace, key_id, write_trace


def bursty(seed: int, n: int = 15_000) -> Trace:
    """Zipf traffic over 300 mixed-size objects, a third of it one-off scan bursts."""
    return gen.scan_bursts(n, 300, 1.0, seed, 1500, 500, gen.LognormalSize(64 * 2**10, 0.5))


def budget_of(trace: Trace, fraction: float) -> int:
    return int(fraction * working_set_bytes(trace.keys, trace.sizes))


class LruOrder(Agent):
    """Evicts the candidates in the order given: with k_rand = 0, the LRU tail's order."""

    def preferences(self, inputs, rows_per_decision):
        return -np.concatenate([np.arange(k) for k in rows_per_decision]).astype(np.float64)


class Recorder(LruOrder):
    def __init__(self):
        self.seen = []

    def observe(self, inputs, decisions, replays):
        self.seen += decisions


# -- the network's gradient ---------------------------------------------------------------------

def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(7)
    params = {k: v.astype(np.float64) for k, v in DuelingQNet.initialise(8, seed=3)
              .parameters().items()}
    params["b1"] += 0.1  # biases away from zero, so their gradient is exercised too
    params["ba"] += np.array([0.2, -0.1])
    x = rng.normal(size=(12, N_INPUTS))
    actions = rng.integers(0, 2, 12)
    targets = rng.normal(size=12) * 2  # some errors beyond the Huber threshold, some within
    _, grads = loss_and_gradients(params, x, actions, targets, huber_delta=1.0)
    eps = 1e-6
    for name, value in params.items():
        numeric = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            old = value[i]
            value[i] = old + eps
            up, _ = loss_and_gradients(params, x, actions, targets)
            value[i] = old - eps
            down, _ = loss_and_gradients(params, x, actions, targets)
            value[i] = old
            numeric[i] = (up - down) / (2 * eps)
        assert grads[name].shape == value.shape
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)
        assert np.abs(numeric).max() > 0, name  # every parameter takes part


def test_fast_preference_is_the_networks_eviction_preference():
    net = DuelingQNet.initialise(32, seed=5)
    net.ba[:] = [0.3, -0.2]
    x = np.random.default_rng(1).normal(size=(40, N_INPUTS)).astype(np.float32)
    q = net.forward(x)
    np.testing.assert_allclose(fast_preference(net)(x), q[:, EVICT] - q[:, KEEP], rtol=1e-5,
                               atol=1e-5)


# -- the hindsight reward -----------------------------------------------------------------------

def hand_trace() -> Trace:
    # request: 0   1   2   3   4   5   6
    # key:     10  20  30  10  20  40  10     load cost (s): 1 2 3 1 2 4 1, median 2
    return Trace(np.arange(7, dtype=np.float64), np.array([10, 20, 30, 10, 20, 40, 10],
                                                          dtype=np.uint64),
                 np.ones(7, dtype=np.uint64), load_costs=np.array([1, 2, 3, 1, 2, 4, 1.0]))


def test_next_requests_and_rewards_by_hand():
    t = prepare_trace(hand_trace(), "hand")
    # Dense ids: 10 -> 0, 20 -> 1, 30 -> 2, 40 -> 3.
    np.testing.assert_array_equal(t.next_requests(np.array([0, 1, 2, 3]), 2), [3, 4, -1, 5])
    np.testing.assert_array_equal(t.next_requests(np.array([0, 3]), 5), [6, -1])
    np.testing.assert_allclose(t.penalty_weights, [0.5, 1, 1.5, 0.5, 1, 2, 0.5])
    nxt = np.array([3, 4])  # keys 10 and 20 at request 2
    weights = np.array([0.5, 1.0])  # the costs of requests 3 and 4 over the median
    # Horizon 1: only key 10 (next at 3) is reused in time. Evicted: -0.5; key 20 kept: 0.
    np.testing.assert_allclose(hindsight_rewards(nxt, 2, np.array([True, False]), weights, 1),
                               [-0.5, 0.0])
    # Horizon 2: both are. Key 10 kept: +1; key 20 evicted: -1.
    np.testing.assert_allclose(hindsight_rewards(nxt, 2, np.array([False, True]), weights, 2),
                               [1.0, -1.0])


def test_decisions_of_a_replay_by_hand():
    # Room for two objects: request 2 (key 30) evicts the LRU key 10, request 4 (key 20 was
    # kept, a hit), request 5 (key 40) evicts between 30 and 10 (reloaded at 3) ...
    t = prepare_trace(hand_trace(), "hand")
    agent = Recorder()
    run = Run(t, 2, horizon=2)
    [result] = replay_many([run], agent, k_tail=16, k_rand=0)
    learner = LearningAgent(TrainConfig(), np.random.default_rng(0))
    learner.begin([run], 1)
    first = agent.seen[0]
    assert first.request == 2
    np.testing.assert_array_equal(first.objects, [0, 1])  # LRU end first: key 10, key 20
    np.testing.assert_array_equal(first.evicted, [True, False])
    # Both are back within 2 requests: evicted key 10 costs 0.5, kept key 20 earns 1.
    np.testing.assert_allclose(learner.rewards([first], [0]), [-0.5, 1.0])
    # Requests: 10 m, 20 m, 30 m (evict 10), 10 m (evict 20), 20 m (evict 30), 40 m (evict
    # 10), 10 m (evict 20): one hit-free LRU run, five decisions.
    assert (result.hits, result.decisions, result.evictions) == (0, 5, 5)
    second = agent.seen[1]  # request 3: candidates 20 (LRU end), 30
    np.testing.assert_array_equal(second.objects, [1, 2])
    # 20 evicted, next at 4 (1 request away, cost 2 / 2): -1; 30 kept, never again: 0.
    np.testing.assert_allclose(learner.rewards([second], [0]), [-1.0, 0.0])
    # A round of both decisions at once (as replays in lockstep are rewarded) agrees.
    np.testing.assert_allclose(learner.rewards([first, second], [0, 0]), [-0.5, 1, -1, 0])


# -- the environment ----------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.03, 0.2])
def test_environment_in_lru_order_is_the_c_cores_lru(fraction):
    trace = bursty(3, 8000)
    budget = budget_of(trace, fraction)
    [result] = replay_many([Run(prepare_trace(trace, "b"), budget)], LruOrder(), k_rand=0)
    peer = replay_arrays(trace.keys, trace.sizes, "lru", budget, times=trace.times)
    assert peer.engine == "native"
    assert (result.hits, result.bytes_hit, result.evictions) == (peer.hits, peer.bytes_hit,
                                                                 peer.evictions)


def test_the_hindsight_agent_evicts_the_candidate_used_furthest_ahead():
    # Budget 2 unit objects; requests a b c a. At c's miss the candidates are a (next: request
    # 3) and b (never again): hindsight evicts b and a hits; LRU evicts a, which then misses.
    trace = Trace(np.arange(4.0), np.array([1, 2, 3, 1], dtype=np.uint64),
                  np.ones(4, dtype=np.uint64))
    runs = [Run(prepare_trace(trace, "abca"), 2)]
    [hindsight] = replay_many(runs, HindsightAgent(runs), k_tail=2, k_rand=0)
    [lru] = replay_many(runs, LruOrder(), k_tail=2, k_rand=0)
    assert (hindsight.hits, lru.hits) == (1, 0)


def test_budget_below_the_largest_object_is_refused():
    trace = Trace(np.arange(3.0), np.array([1, 2, 3], dtype=np.uint64),
                  np.array([5, 9, 5], dtype=np.uint64))
    with pytest.raises(ValueError, match=r"budget 8 bytes .* largest object of trace big \(9"):
        replay_many([Run(prepare_trace(trace, "big"), 8)], LruOrder())
    with pytest.raises(ValueError, match="k_tail \\+ k_rand \\+ k_head >= 1"):
        TrainConfig(k_tail=0, k_rand=0)
    TrainConfig(k_tail=0, k_rand=0, k_head=1)  # the MRU head alone is a candidate rule
    with pytest.raises(ValueError, match="k_head >= 0"):
        TrainConfig(k_head=-1)


# -- learning -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained():
    trace = bursty(1)
    config = TrainConfig(episodes=1, seed=0)
    return train([prepare_trace(trace, "train")], [[budget_of(trace, 0.05)]], config)


def test_training_is_reproducible_for_a_seed(trained):
    trace = bursty(1)
    again = train([prepare_trace(trace, "train")], [[budget_of(trace, 0.05)]],
                  TrainConfig(episodes=1, seed=0))
    other = train([prepare_trace(trace, "train")], [[budget_of(trace, 0.05)]],
                  TrainConfig(episodes=1, seed=1))
    assert trained.gradient_steps > 100
    for name, value in trained.net.parameters().items():
        np.testing.assert_array_equal(value, again.net.parameters()[name], err_msg=name)
    assert any(not np.array_equal(v, other.net.parameters()[k])
               for k, v in trained.net.parameters().items())


def test_trained_policy_beats_lru_on_a_held_out_trace(trained):
    held_out = bursty(2)
    budget = budget_of(held_out, 0.05)
    prepared = prepare_trace(held_out, "held out")
    [learned] = evaluate(trained.net, [Run(prepared, budget)])
    untrained = [evaluate(DuelingQNet.initialise(32, seed=s), [Run(prepared, budget)])[0]
                 for s in range(5)]
    reversed_net = DuelingQNet.from_parameters({**trained.net.parameters(),
                                                "wa": -trained.net.wa, "ba": -trained.net.ba})
    [reversed_order] = evaluate(reversed_net, [Run(prepared, budget)])
    [lru] = replay_trace(held_out, ["lru"], [budget])
    # Measured (feature schema 2): learned 0.615, LRU 0.527, untrained networks of seeds 0-4
    # 0.40-0.59 (the ghost-list inputs make some random scores good ones), the learned order
    # reversed 0.30; the same training with the reward's sign flipped reached 0.38 under schema
    # 1 (checked by hand), so this can fail.
    assert learned.hit_ratio > lru.hit_ratio + 0.03
    assert learned.hit_ratio > max(u.hit_ratio for u in untrained) + 0.02
    assert reversed_order.hit_ratio < lru.hit_ratio


@pytest.mark.parametrize("k_head, named", [(0, False), (4, False), (4, True)])
def test_evaluation_equals_the_daemons_learned_policy(trained, tmp_path, k_head, named):
    """``named``: the keys are names, as an access log's adapters are (hashed to 64-bit ids,
    most of them past the C table's direct range): the cache must give a returning name its
    history as it gives a small integer key (the training replay numbers objects 0, 1, ...)."""
    from edge.learned.onnx_model import export_onnx

    model = tmp_path / "m.onnx"
    export_onnx(trained.net, model)
    held_out = bursty(2, 6000)
    if named:
        ids = np.array([key_id(f"adapter-{k}") for k in range(int(held_out.keys.max()) + 1)],
                       dtype=np.uint64)
        held_out = Trace(held_out.times, ids[held_out.keys], held_out.sizes,
                         held_out.load_costs)
        assert (held_out.keys >= 2**63).any()
    budget = budget_of(held_out, 0.05)
    [ours] = evaluate(trained.net, [Run(prepare_trace(held_out, "h"), budget)], k_head=k_head)
    [daemon] = replay_trace(held_out, [CacheConfig(policy="learned", policy_params={
        "model": str(model), "budget_us": 1e6, "k_head": k_head})], [budget])
    assert ours.decisions > 500
    assert (ours.hits, ours.bytes_hit, ours.evictions) == (daemon.hits, daemon.bytes_hit,
                                                           daemon.evictions)


# -- the command --------------------------------------------------------------------------------

def test_cli_trains_evaluates_and_writes_its_outputs(tmp_path):
    train_file = tmp_path / "train.csv"
    held_out = tmp_path / "held.jsonl"
    write_trace(bursty(4, 3000), train_file)
    write_trace(bursty(5, 3000), held_out)
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(train_eviction, [
        "--trace", str(train_file), "--generate", "scan:requests=2000,objects=100,period=500,"
        "burst=100,seed=3", "--budget", "5%,20%", "--out", str(out), "--eval-trace",
        str(held_out), "--episodes", "1", "--seed", "4", "--k-rand", "8", "--no-progress"])
    assert result.exit_code == 0, result.output
    for policy in ("learned", "lru", "lfu", "gdsf", "arc", "s3fifo", "belady-size",
                   "pfoo-l bound"):
        assert policy in result.output
    report = json.loads(out.with_suffix(".eval.json").read_text())
    rows = report["evaluation"]
    # Held out: the file, and the generated workload drawn again with another seed; 2 budgets.
    assert {r["trace"] for r in rows} == {str(held_out),
                                          "scan:seed=1000006,size=64KiB,sigma=1.0,rate=1000.0,"
                                          "requests=2000,objects=100,alpha=0.9,period=500,"
                                          "burst=100,loop=False"}
    assert len(rows) == 2 * 2 * 8 and not any(r["seen"] for r in rows)
    for r in rows:
        assert 0 <= r["hit_ratio"] <= 1
    bound = {(r["trace"], r["budget"]): r["hit_ratio"] for r in rows
             if r["policy"] == "pfoo-l bound"}
    assert all(r["hit_ratio"] <= bound[r["trace"], r["budget"]] + 1e-12 for r in rows)
    assert report["training"]["seed"] == 4 and report["training"]["train_config"]["k_rand"] == 8
    assert report["training"]["requests"] == 2 * (3000 + 2000)
    # What a policy file pins: the printed sha256 is the written file's.
    assert f"sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}  {out}" in result.output
    # The ONNX model is the trained network: ONNX Runtime's Q equals numpy's on the .npz.
    from edge.learned.serving import OnnxScorer

    with np.load(out.with_suffix(".npz")) as saved:
        net = DuelingQNet.from_parameters(dict(saved))
    x = np.random.default_rng(0).normal(size=(16, N_INPUTS)).astype(np.float32)
    np.testing.assert_allclose(OnnxScorer(out).q_values(x), net.forward(x), atol=1e-5)


def test_cli_errors_name_the_input(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,key,size\n0,1,notanumber\n")
    out = str(tmp_path / "m.onnx")
    result = CliRunner().invoke(train_eviction, ["--trace", str(bad), "--budget", "1MiB",
                                                 "--out", out])
    assert result.exit_code == 1 and "bad.csv:2: size 'notanumber'" in result.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = CliRunner().invoke(train_eviction, ["--trace", str(empty), "--budget", "1MiB",
                                                 "--out", out])
    assert result.exit_code == 1 and "empty.jsonl: no requests to train on" in result.output
    result = CliRunner().invoke(train_eviction, ["--generate", "scan:requests=500,size=1MiB,"
                                                 "sigma=0", "--budget", "100KiB", "--out", out])
    assert result.exit_code == 2
    assert "smaller than its largest object (1048576 bytes" in result.output
    result = CliRunner().invoke(train_eviction, ["--generate", "scan:bogus=1", "--budget", "5%",
                                                 "--out", out])
    assert result.exit_code == 2 and "scan has no setting 'bogus'" in result.output
    result = CliRunner().invoke(train_eviction, ["--budget", "5%", "--out", out])
    assert result.exit_code == 2 and "--trace or --generate" in result.output


@pytest.mark.parametrize("spec,objects", [
    ("zipf:requests=300,objects=40,sigma=0,size=1KiB", 40),
    ("scan:requests=300,objects=40,period=100,burst=20,loop=true", 60),
    ("drift:requests=300,objects=40,phase=100,shift=5", 40),
    ("tenants:requests=300,objects=12,tenants=3", 12),
])
def test_generate_specs_reach_their_generators(spec, objects):
    kind, params = parse_generate(spec)
    trace = generate_trace(kind, params)
    assert len(trace) == 300
    assert len(np.unique(trace.keys)) <= objects  # the workload's own object count
    if "sigma=0" in spec:
        assert set(trace.sizes.tolist()) == {1024}
    if "loop=true" in spec:  # one scan range, rescanned: 40 Zipf keys + 20 scan keys at most
        assert trace.keys.max() < 60
    again = generate_trace(kind, params)
    np.testing.assert_array_equal(trace.keys, again.keys)
    other = generate_trace(kind, params, seed_offset=1)
    assert not np.array_equal(trace.keys, other.keys)


def test_size_scaled_reward_by_hand():
    base = hand_trace()
    sizes = np.where(base.keys == 10, 2, 1).astype(np.uint64)  # key 10: 2 bytes; median 1
    t = prepare_trace(Trace(base.times, base.keys, sizes, load_costs=base.load_costs), "sized")
    features = np.zeros((2, 6), np.float32)
    features[:, 1] = [2, 1]
    decision = Decision(features, 0.0, 0.5, np.array([0, 1]), 2,
                        evicted=np.array([True, False]))
    for scaled, expected in ((False, [-0.5, 1.0]), (True, [-0.25, 1.0])):
        learner = LearningAgent(TrainConfig(size_scaled_reward=scaled), np.random.default_rng(0))
        learner.begin([Run(t, 4, horizon=2)], 1)
        np.testing.assert_allclose(learner.rewards([decision], [0]), expected)


def test_cli_learns_from_the_daemons_access_log(tmp_path):
    """Records as ``edge.access_log`` writes them (named keys, tenant, measured load cost, the
    device's hit); with no held-out trace the table evaluates the log itself and says so."""
    rng = np.random.default_rng(0)
    log = tmp_path / "access.jsonl"
    names = [f"adapter-{i}" for i in range(30)]
    with log.open("w") as f:
        for i, k in enumerate((rng.zipf(1.3, 1500) % 30).tolist()):
            f.write(json.dumps({"time": 1718000000.0 + i, "key": names[k],
                                "size": (1 + k % 4) * 2**20, "load_cost": 0.01 * (1 + k % 4),
                                "tenant": "alice" if k % 2 else "bob", "hit": False}) + "\n")
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(train_eviction, ["--trace", str(log), "--budget", "20%",
                                                 "--out", str(out), "--episodes", "1"])
    assert result.exit_code == 0, result.output
    assert "(a training trace: not held out)" in result.output
    rows = json.loads(out.with_suffix(".eval.json").read_text())["evaluation"]
    assert {r["trace"] for r in rows} == {str(log)} and all(r["seen"] for r in rows)
    assert out.stat().st_size > 0


# -- the imitation objective --------------------------------------------------------------------

def test_linear_network_scores_its_weights_in_onnx_too(tmp_path):
    """The served form of a linear score: numpy's and ONNX Runtime's eviction preference are
    w @ x + b for inputs of either sign (the trunk passes x as relu(x), relu(-x))."""
    from edge.learned.onnx_model import export_onnx
    from edge.learned.serving import OnnxScorer

    rng = np.random.default_rng(5)
    weights = rng.normal(size=N_INPUTS)
    net = DuelingQNet.linear(weights, 0.25)
    x = rng.normal(scale=3.0, size=(40, N_INPUTS)).astype(np.float32)
    want = x.astype(np.float64) @ weights + 0.25
    np.testing.assert_allclose(net.eviction_preference(x), want, atol=1e-5)
    export_onnx(net, tmp_path / "linear.onnx")
    np.testing.assert_allclose(OnnxScorer(tmp_path / "linear.onnx").preferences(x), want,
                               atol=1e-5)
    with pytest.raises(ValueError, match="weights must have shape"):
        DuelingQNet.linear(weights[:3])


def test_one_hit_unit_is_one_exactly_for_one_access_in_a_first_residency(tmp_path):
    """The unit reads the C core's counts through their log1p inputs: 1 at (accesses 1, no
    earlier accesses, no earlier residency), 0 at every other point of the count lattice, ages
    and sizes whatever they are; the served network adds ``one_hit`` times it to the linear
    score, in numpy and in ONNX Runtime alike."""
    from edge.learned.onnx_model import export_onnx
    from edge.learned.serving import OnnxScorer

    rng = np.random.default_rng(3)
    counts = [(a, pa, pr) for a in (1, 2, 3, 40) for pa in (0, 1, 7) for pr in (0, 1, 2)]
    features = np.zeros((len(counts), len(CANDIDATE_FEATURES)), dtype=np.float32)
    features[:, 0] = rng.uniform(0, 1e4, len(counts))  # age
    features[:, 1] = rng.uniform(1e3, 1e9, len(counts))  # size
    for j, name in enumerate(("accesses", "past_accesses", "past_residencies")):
        features[:, CANDIDATE_FEATURES.index(name)] = [c[j] for c in counts]
    x = model_inputs(features, 0.0, 0.3, 0.1)
    unit, bias = one_hit_unit()
    want = np.array([1.0 if c == (1, 0, 0) else 0.0 for c in counts])
    np.testing.assert_allclose(np.maximum(x @ unit + bias, 0.0), want, atol=1e-6)
    weights = rng.normal(size=N_INPUTS)
    net = DuelingQNet.linear(weights, -0.5, one_hit=3.0)
    assert net.hidden == 2 * N_INPUTS + 1 and DuelingQNet.linear(weights).hidden == 2 * N_INPUTS
    score = x.astype(np.float64) @ weights - 0.5 + 3.0 * want
    np.testing.assert_allclose(net.eviction_preference(x), score, atol=1e-4)
    export_onnx(net, tmp_path / "one-hit.onnx")
    np.testing.assert_allclose(OnnxScorer(tmp_path / "one-hit.onnx").preferences(x), score,
                               atol=1e-4)


def test_hindsight_ranks_by_hand():
    # A decision at request 10 over three candidates: next requested at 12 (size 100), never
    # (size 10; 'never' is 1000 requests away) and at 30 (size 1000). Scores before centring:
    # log(2 * 100) = 5.298, log(1000 * 10) = 9.210, log(20 * 1000) = 9.903; mean 8.137.
    ranks = hindsight_ranks(np.array([12, -1, 30]), 10, np.array([100.0, 10.0, 1000.0]), 1000)
    np.testing.assert_allclose(ranks, [5.2983 - 8.1372, 9.2103 - 8.1372, 9.9035 - 8.1372],
                               atol=1e-3)


@pytest.fixture(scope="module")
def imitated():
    trace = bursty(1)
    config = TrainConfig(seed=0, objective="imitation", k_tail=8, k_rand=8)
    return train([prepare_trace(trace, "train")], [[budget_of(trace, 0.05)]], config)


def test_imitation_is_reproducible_and_beats_lru_on_a_held_out_trace(imitated):
    trace = bursty(1)
    again = train([prepare_trace(trace, "train")], [[budget_of(trace, 0.05)]],
                  TrainConfig(seed=0, objective="imitation", k_tail=8, k_rand=8))
    for name, value in imitated.net.parameters().items():
        np.testing.assert_array_equal(value, again.net.parameters()[name], err_msg=name)
    assert imitated.gradient_steps == 0 and imitated.decisions > 1000
    held_out = bursty(2)
    budget = budget_of(held_out, 0.05)
    [learned] = evaluate(imitated.net, [Run(prepare_trace(held_out, "h"), budget)],
                         k_tail=8, k_rand=8)
    [lru] = replay_trace(held_out, ["lru"], [budget])
    # Measured: 0.591 against LRU's 0.527; the fit's own ranking reversed (weights negated)
    # reaches 0.364, so this can fail.
    assert learned.hit_ratio > lru.hit_ratio + 0.03
    reversed_net = DuelingQNet.linear(-imitated_weights(imitated.net))
    [backwards] = evaluate(reversed_net, [Run(prepare_trace(held_out, "h"), budget)],
                           k_tail=8, k_rand=8)
    assert backwards.hit_ratio < lru.hit_ratio


def test_imitation_keeps_the_one_hit_weight_its_replays_score_best(imitated):
    """The search replays the training pair under every weight of the grid and keeps the best
    mean hit ratio (the first of equals); the served network is the fit plus that weight, and
    replaying it alone gives the figure the search recorded for it."""
    search = imitated.one_hit_search
    assert [r["weight"] for r in search] == list(ONE_HIT_WEIGHTS)
    scores = [r["mean_hit_ratio"] for r in search]
    assert imitated.one_hit_weight == ONE_HIT_WEIGHTS[scores.index(max(scores))]
    # A third of this trace is one-off scan keys: putting them first pays (measured: 0.5999 at
    # weight 0, 0.6040 at the chosen 1), so the search must not settle on no unit.
    assert imitated.one_hit_weight > 0 and max(scores) > scores[0] + 0.002
    assert imitated.net.hidden == 2 * N_INPUTS + 1
    trace = bursty(1)
    [alone] = evaluate(imitated.net, [Run(prepare_trace(trace, "train"), budget_of(trace, 0.05))],
                       k_tail=8, k_rand=8)
    assert alone.hit_ratio == pytest.approx(max(scores), abs=1e-9)
    assert imitated.as_dict()["one_hit_weight"] == imitated.one_hit_weight
    with pytest.raises(ValueError, match="one_hit_weights must be"):
        TrainConfig(objective="imitation", one_hit_weights=(0.0, -1.0))


def imitated_weights(net: DuelingQNet) -> np.ndarray:
    """The linear score's weights back from its served form (EVICT's half on relu(x))."""
    return 2 * net.wa[:N_INPUTS, EVICT].astype(np.float64)


def test_cli_imitation_objective(tmp_path):
    out = tmp_path / "imitation.onnx"
    result = CliRunner().invoke(train_eviction, [
        "--generate", "scan:requests=3000,objects=150,period=800,burst=150,seed=3",
        "--budget", "5%", "--out", str(out), "--objective", "imitation", "--k-tail", "4",
        "--k-rand", "8", "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".eval.json").read_text())
    assert report["training"]["train_config"]["objective"] == "imitation"
    assert report["training"]["requests"] == 3000  # one pass, whatever --episodes says
    with np.load(out.with_suffix(".npz")) as saved:
        net = DuelingQNet.from_parameters(dict(saved))
    # The left-out inputs (load cost, demand) carry no weight.
    weights = imitated_weights(net)
    left_out = [INPUT_NAMES.index("log_load_cost_ms"), INPUT_NAMES.index("demand")]
    assert np.all(weights[left_out] == 0) and np.any(weights != 0)
    assert [r["weight"] for r in report["training"]["one_hit_search"]] == list(ONE_HIT_WEIGHTS)
    assert "one-hit weight" in result.output
    bad = CliRunner().invoke(train_eviction, ["--generate", "scan:seed=3", "--budget", "5%",
                                              "--out", str(out), "--objective", "sgd"])
    assert bad.exit_code == 2 and "'sgd' is not one of 'dqn', 'imitation'" in bad.output
    for text, why in (("1,x", "not a comma-separated list of numbers"),
                      ("0,-2", "one_hit_weights must be one or more finite weights >= 0")):
        bad = CliRunner().invoke(train_eviction, [
            "--generate", "scan:seed=3", "--budget", "5%", "--out", str(out), "--objective",
            "imitation", "--one-hit-weights", text])
        assert bad.exit_code == 2 and why in bad.output, bad.output
    # --one-hit-weights 0: no search, no unit: the linear score alone.
    plain = tmp_path / "plain.onnx"
    result = CliRunner().invoke(train_eviction, [
        "--generate", "scan:requests=3000,objects=150,period=800,burst=150,seed=3",
        "--budget", "5%", "--out", str(plain), "--objective", "imitation", "--k-tail", "4",
        "--k-rand", "8", "--one-hit-weights", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "one_hit_search" not in json.loads(plain.with_suffix(".eval.json").read_text())[
        "training"]
    with np.load(plain.with_suffix(".npz")) as saved:
        assert DuelingQNet.from_parameters(dict(saved)).hidden == 2 * N_INPUTS
    # A budget that holds the whole working set evicts nothing: a one-line error, no model.
    roomy = CliRunner().invoke(train_eviction, [
        "--generate", "scan:requests=2000,objects=50,seed=3", "--budget", "100%",
        "--out", str(tmp_path / "none.onnx"), "--objective", "imitation", "--no-progress"])
    assert roomy.exit_code == 1, roomy.output
    assert "imitation saw 0 eviction candidates" in roomy.output
    assert not (tmp_path / "none.onnx").exists()


def test_dqn_that_learns_nothing_is_an_error_not_a_model(tmp_path):
    """Budgets that hold the whole working set make no eviction decision: no gradient step,
    so no model is written (an untrained network would be served as if trained)."""
    out = tmp_path / "none.onnx"
    result = CliRunner().invoke(train_eviction, [
        "--generate", "scan:requests=2000,objects=50,seed=3", "--budget", "100%",
        "--out", str(out), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "no gradient step was taken: the replays made 0 eviction decisions" in result.output
    assert not out.exists() and not out.with_suffix(".npz").exists()
