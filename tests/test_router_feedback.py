import numpy as np
import pytest

from edge.router.config import FeatureConfig, FeedbackConfig, PolarConfig, RouterConfig
from edge.router.errors import RewardError, UnknownRequestError
from edge.router.feedback import REWARD_SOURCES
from edge.router.router import Router

MiB = 2**20


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _router(clock=None, **feedback):
    cfg = RouterConfig(features=FeatureConfig(dim=16), polar=PolarConfig(mode="off"),
                       feedback=FeedbackConfig(**feedback))
    return Router(cfg, {"a": 10 * MiB, "b": 20 * MiB}, rng=np.random.default_rng(0),
                  clock=clock or FakeClock())


def test_late_out_of_order_rewards_update_the_arm_that_served_each_request():
    router = _router()
    decisions = {f"r{i}": router.route(f"r{i}", f"prompt number {i}") for i in range(6)}
    for rid in ["r4", "r0", "r5", "r2", "r1", "r3"]:
        assert router.update(rid, 0.25) is True
    counts = dict(zip(router.arm_ids, router.linucb.counts(), strict=False))
    expected = {"a": 0, "b": 0}
    for d in decisions.values():
        expected[d.arm_id] += 1
    assert counts == expected
    assert len(router.pending) == 0


def test_unknown_duplicate_or_repeated_request_ids_are_clear_errors():
    router = _router()
    router.route("r1", "hello")
    with pytest.raises(RewardError, match="already routed"):
        router.route("r1", "again")
    router.update("r1", 1.0)
    with pytest.raises(UnknownRequestError, match="'r1'.*already given"):
        router.update("r1", 1.0)
    with pytest.raises(UnknownRequestError, match="'nope'"):
        router.update("nope", 0.5)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), float("inf"), "0.5", True, None])
def test_reward_outside_range_or_not_a_number_is_refused_and_keeps_the_decision(bad):
    router = _router()
    router.route("r", "text")
    with pytest.raises(RewardError, match="reward for request 'r'"):
        router.update("r", bad)
    assert "r" in router.pending  # a bad reward does not consume the decision
    assert router.update("r", 0.5)


def test_pending_decisions_expire():
    clock = FakeClock()
    router = _router(clock, expiry_seconds=10.0)
    router.route("old", "one")
    clock.now = 6.0
    router.route("young", "two")
    clock.now = 12.0
    with pytest.raises(UnknownRequestError, match="expired"):
        router.update("old", 0.5)
    assert router.update("young", 0.5)
    assert router.pending.expired == 1


def test_pending_table_is_bounded_and_drops_the_oldest():
    router = _router(max_pending=3)
    for i in range(5):
        router.route(f"r{i}", "x")
    assert len(router.pending) == 3 and router.pending.overflowed == 2
    with pytest.raises(UnknownRequestError):
        router.update("r0", 0.5)
    assert router.update("r4", 0.5)


def test_feedback_for_a_deleted_adapter_is_counted_stale():
    router = _router()
    seen = {}
    i = 0
    while len(seen) < 2:
        d = router.route(f"r{i}", f"p{i}")
        seen.setdefault(d.arm_id, f"r{i}")
        i += 1
    router.remove_arm("a")
    with pytest.raises(UnknownRequestError):  # its pending decisions were dropped
        router.update(seen["a"], 0.5)
    assert router.update(seen["b"], 0.5)


def test_reward_source_interface_scores_responses_automatically():
    class LengthScorer:
        name = "length"

        def reward_for(self, request_id, prompt, response):
            return min(1.0, len(response) / 10)

    REWARD_SOURCES["length-test"] = LengthScorer
    try:
        cfg = RouterConfig(features=FeatureConfig(dim=16), polar=PolarConfig(mode="off"),
                           feedback=FeedbackConfig(reward_source="length-test"))
        router = Router(cfg, {"a": MiB}, rng=np.random.default_rng(0))
        router.route("r", "prompt")
        assert router.on_response("r", "prompt", "12345") is True
        assert router.linucb.counts().tolist() == [1]
    finally:
        del REWARD_SOURCES["length-test"]
    explicit = _router()
    explicit.route("r", "p")
    assert explicit.on_response("r", "p", "resp") is None and "r" in explicit.pending


def test_response_likelihood_rewards_the_geometric_mean_token_probability():
    from types import SimpleNamespace

    source = REWARD_SOURCES["response-likelihood"]()
    # Three tokens with probabilities 0.5, 0.25, 0.125: geometric mean 0.25.
    mean = float(np.mean(np.log([0.5, 0.25, 0.125])))
    assert source.reward_for("r", "p", SimpleNamespace(mean_logprob=mean)) == pytest.approx(0.25)
    assert source.reward_for("r", "p", SimpleNamespace(mean_logprob=float("nan"))) is None
    assert source.reward_for("r", "p", "a plain string response") is None
