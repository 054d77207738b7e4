import numpy as np
import pytest

from edge.router.config import LinUCBConfig
from edge.router.errors import DuplicateArmError, UnknownArmError
from edge.router.linucb import LinUCB


def _unit_rows(rng, n, d):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _direct(d, lam, prior, xs, rs, discount=1.0):
    """Reference: A and b built from scratch, theta by a direct solve."""
    A = lam * np.eye(d)
    b = np.zeros(d)
    for x, r in zip(xs, rs, strict=False):
        A = discount * A + (1 - discount) * lam * np.eye(d) + np.outer(x, x)
        b = discount * b + (r - prior) * x
    return A, b, np.linalg.solve(A, b)


@pytest.mark.parametrize("refactor_every", [10**9, 512])
def test_sherman_morrison_matches_direct_solve_after_thousands_of_updates(refactor_every):
    rng = np.random.default_rng(0)
    d, n_arms, T = 16, 3, 3000
    cfg = LinUCBConfig(alpha=0.7, ridge_lambda=0.5, prior_reward=0.3,
                       refactor_every=refactor_every)
    model = LinUCB(d, cfg, np.random.default_rng(1), [f"a{i}" for i in range(n_arms)])
    X = _unit_rows(rng, T, d)
    arms = rng.integers(n_arms, size=T)
    R = rng.uniform(size=T)
    for x, a, r in zip(X, arms, R, strict=False):
        model.update(f"a{a}", x, r)
    probe = _unit_rows(rng, 50, d)
    mean, bonus = model.mean_and_bonus_batch(probe)
    for a in range(n_arms):
        A, b, theta = _direct(d, cfg.ridge_lambda, cfg.prior_reward, X[arms == a], R[arms == a])
        st = model.state_arrays()
        np.testing.assert_allclose(st["A_inv"][a], np.linalg.inv(A), rtol=0, atol=1e-8)
        np.testing.assert_allclose(st["theta"][a], theta, rtol=0, atol=1e-8)
        ref_mean = cfg.prior_reward + probe @ theta
        ref_bonus = cfg.alpha * np.sqrt(np.einsum("nd,de,ne->n", probe, np.linalg.inv(A), probe))
        np.testing.assert_allclose(mean[:, a], ref_mean, rtol=0, atol=1e-8)
        np.testing.assert_allclose(bonus[:, a], ref_bonus, rtol=0, atol=1e-8)
    assert model.counts().tolist() == [int((arms == a).sum()) for a in range(n_arms)]


def test_discounted_updates_match_direct_weighted_solve():
    rng = np.random.default_rng(2)
    d, T = 8, 400
    cfg = LinUCBConfig(ridge_lambda=2.0, prior_reward=0.5, discount=0.99)
    model = LinUCB(d, cfg, np.random.default_rng(0), ["only"])
    X, R = _unit_rows(rng, T, d), rng.uniform(size=T)
    for x, r in zip(X, R, strict=False):
        model.update("only", x, r)
    A, b, theta = _direct(d, 2.0, 0.5, X, R, discount=0.99)
    st = model.state_arrays()
    np.testing.assert_allclose(st["A"][0], A, atol=1e-10)
    np.testing.assert_allclose(st["theta"][0], theta, atol=1e-8)
    # The ridge floor survives forgetting: smallest eigenvalue stays >= lambda.
    assert np.linalg.eigvalsh(st["A"][0]).min() >= 2.0 - 1e-9


def test_discount_tracks_a_utility_that_flips():
    d = 4
    x = np.array([1.0, 0, 0, 0])
    steady = LinUCB(d, LinUCBConfig(prior_reward=0.0), np.random.default_rng(0), ["a"])
    forgetful = LinUCB(d, LinUCBConfig(prior_reward=0.0, discount=0.95),
                       np.random.default_rng(0), ["a"])
    for m in (steady, forgetful):
        for _ in range(500):
            m.update("a", x, 1.0)
        for _ in range(100):
            m.update("a", x, 0.0)
    assert forgetful.mean_and_bonus(x)[0][0] < 0.05 < steady.mean_and_bonus(x)[0][0]


def test_batched_scores_equal_single_scores():
    rng = np.random.default_rng(3)
    d = 12
    model = LinUCB(d, LinUCBConfig(), np.random.default_rng(0), [f"a{i}" for i in range(5)])
    for x in _unit_rows(rng, 200, d):
        model.update(f"a{rng.integers(5)}", x, rng.uniform())
    probe = _unit_rows(rng, 300, d)
    mean, bonus = model.mean_and_bonus_batch(probe, chunk=7)
    for i in (0, 150, 299):
        m1, b1 = model.mean_and_bonus(probe[i])
        np.testing.assert_allclose(mean[i], m1, atol=1e-12)
        np.testing.assert_allclose(bonus[i], b1, atol=1e-12)


def test_batched_scores_at_alpha_0_equal_single_scores_without_the_quadratic_forms():
    # At alpha 0 the batch skips the quadratic forms (its bonus is 0 whatever they are): the
    # same figures as one context at a time, and the means as at any alpha.
    rng = np.random.default_rng(5)
    d = 12
    greedy = LinUCB(d, LinUCBConfig(alpha=0.0), np.random.default_rng(0),
                    [f"a{i}" for i in range(5)])
    wide = LinUCB(d, LinUCBConfig(alpha=0.5), np.random.default_rng(0),
                  [f"a{i}" for i in range(5)])
    for x in _unit_rows(rng, 200, d):
        arm, reward = f"a{rng.integers(5)}", rng.uniform()
        greedy.update(arm, x, reward)
        wide.update(arm, x, reward)
    probe = _unit_rows(rng, 40, d)
    mean, bonus = greedy.mean_and_bonus_batch(probe)
    assert not bonus.any() and bonus.shape == mean.shape == (40, 5)
    np.testing.assert_array_equal(mean, wide.mean_and_bonus_batch(probe)[0])
    for i in (0, 39):
        m1, b1 = greedy.mean_and_bonus(probe[i])
        np.testing.assert_allclose(mean[i], m1, atol=1e-12)
        assert not np.any(b1)


def test_arms_added_and_removed_at_run_time_keep_the_others_state():
    rng = np.random.default_rng(4)
    d = 6
    model = LinUCB(d, LinUCBConfig(), np.random.default_rng(0), ["a", "b", "c"])
    for x in _unit_rows(rng, 60, d):
        model.update(["a", "b", "c"][rng.integers(3)], x, rng.uniform())
    before = {a: model.state_arrays()["theta"][model.index_of(a)].copy() for a in "abc"}
    model.remove_arm("a")
    for i in range(20):  # growth past the initial capacity of 8
        model.add_arm(f"new{i}")
    assert "a" not in model and model.n_arms == 22
    for a in "bc":
        np.testing.assert_array_equal(model.state_arrays()["theta"][model.index_of(a)],
                                      before[a])
    fresh = model.state_arrays()["A_inv"][model.index_of("new5")]
    np.testing.assert_array_equal(fresh, np.eye(d) / model.config.ridge_lambda)
    with pytest.raises(UnknownArmError, match="'a' is not in the catalogue"):
        model.update("a", np.ones(d) / np.sqrt(d), 0.5)
    with pytest.raises(DuplicateArmError):
        model.add_arm("b")


def test_decision_explains_itself_and_respects_penalty():
    model = LinUCB(3, LinUCBConfig(alpha=0.0, prior_reward=0.0), np.random.default_rng(0),
                   ["x", "y"])
    ctx = np.array([1.0, 0, 0])
    for _ in range(50):
        model.update("x", ctx, 0.9)
        model.update("y", ctx, 0.5)
    assert model.decide(ctx).arm_id == "x"
    decision = model.decide(ctx, penalty=np.array([0.6, 0.0]))
    assert decision.arm_id == "y"
    rows = decision.explain()
    assert rows[0]["arm"] == "y" and rows[0]["chosen"]
    for row in rows:
        assert row["score"] == pytest.approx(row["mean"] + row["bonus"] - row["penalty"])


def test_bad_context_is_refused_with_its_shape():
    model = LinUCB(4, LinUCBConfig(), np.random.default_rng(0), ["a"])
    with pytest.raises(ValueError, match=r"shape \(4,\), got \(3,\)"):
        model.decide(np.ones(3))
    with pytest.raises(UnknownArmError, match="no arms"):
        LinUCB(4, LinUCBConfig(), np.random.default_rng(0)).decide(np.ones(4))
    with pytest.raises(TypeError, match="Generator"):
        LinUCB(4, LinUCBConfig(), rng=np.random.RandomState(0))


def _play(model, X, U, rng, noise=0.1):
    regret = np.empty(len(X))
    for t, (x, u) in enumerate(zip(X, U, strict=False)):
        a = model.decide(x).arm_index
        regret[t] = u.max() - u[a]
        model.update_index(a, x, float(np.clip(u[a] + noise * rng.standard_normal(), 0, 1)))
    return np.cumsum(regret)


def _linear_problem(seed, n_arms, d, T):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(n_arms, d)) / np.sqrt(d)
    X = _unit_rows(rng, T, d)
    X[:, 0] = 0.5  # bias coordinate, then renormalise
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    U = np.clip(0.5 + 0.4 * X @ theta.T, 0, 1)
    return X, U


def test_regret_on_a_stationary_linear_problem_grows_sublinearly():
    n_arms, d, T = 8, 8, 6000
    X, U = _linear_problem(5, n_arms, d, T)
    model = LinUCB(d, LinUCBConfig(alpha=0.5), np.random.default_rng(6),
                   [f"a{i}" for i in range(n_arms)])
    cumulative = _play(model, X, U, np.random.default_rng(7))
    ts = np.unique(np.geomspace(T // 20, T, 12).astype(int))
    slope = np.polyfit(np.log(ts), np.log(cumulative[ts - 1]), 1)[0]
    assert slope < 0.8, f"log-regret vs log-T slope {slope:.3f}"
    # The same check fails for a policy that does not learn, so it can tell the difference.
    rng = np.random.default_rng(8)
    random_regret = np.cumsum(U.max(axis=1) - U[np.arange(T), rng.integers(n_arms, size=T)])
    assert np.polyfit(np.log(ts), np.log(random_regret[ts - 1]), 1)[0] > 0.95


def test_optimistic_prior_tries_every_arm_where_a_zero_prior_starves_them():
    n_arms, d, T = 16, 8, 1500
    X, U = _linear_problem(9, n_arms, d, T)
    tried = {}
    for prior in (0.0, 1.0):
        model = LinUCB(d, LinUCBConfig(alpha=0.05, prior_reward=prior),
                       np.random.default_rng(1), [f"a{i}" for i in range(n_arms)])
        _play(model, X, U, np.random.default_rng(2))
        tried[prior] = int(np.count_nonzero(model.counts()))
    assert tried[1.0] == n_arms
    assert tried[0.0] < n_arms  # the pitfall the prior exists for


def test_ties_are_broken_by_the_injected_rng_reproducibly():
    picks = []
    for _ in range(2):
        model = LinUCB(4, LinUCBConfig(), np.random.default_rng(42),
                       [f"a{i}" for i in range(10)])
        picks.append([model.decide(np.array([1.0, 0, 0, 0])).arm_index for _ in range(30)])
    assert picks[0] == picks[1]
    assert len(set(picks[0])) > 3  # untried arms tie: not always the first one


def test_packed_scoring_of_a_large_catalogue_matches_direct_solve_and_survives_arm_changes():
    # 40 arms at d=32 is past the packed-scoring threshold: single-context scores come from
    # theta and the packed upper triangle of A^-1 and must equal a direct solve on the float64
    # state, before and after arms are removed and added (slots move) and after refactoring.
    rng = np.random.default_rng(7)
    d, n_arms, T = 32, 40, 4000
    cfg = LinUCBConfig(alpha=0.6, ridge_lambda=0.7, prior_reward=0.4, refactor_every=64)
    ids = [f"a{i}" for i in range(n_arms)]
    model = LinUCB(d, cfg, np.random.default_rng(1), ids[:7])
    assert not model._packed  # a few arms are scored by the plain product
    model.add_arm(ids[7])
    assert model._packed  # from 8 arms the C core scores the packed rows
    # ... while the planner's batch keeps the plain products below the byte threshold: both
    # agree with a decision's scores (exact ties impossible: trained, continuous contexts).
    small = LinUCB(d, cfg, np.random.default_rng(1), ids[:8])
    warm = _unit_rows(rng, 200, d)
    for j, x in enumerate(warm):
        small.update(ids[j % 8], x, float(rng.uniform()))
    decision = small.decide(warm[0])
    batch_mean, batch_bonus = small.mean_and_bonus_batch(warm[:1])
    np.testing.assert_allclose(batch_mean[0], decision.mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(batch_bonus[0], decision.bonus, rtol=0, atol=1e-12)
    for arm_id in ids[8:]:
        model.add_arm(arm_id)
    X = _unit_rows(rng, T, d)
    arms = rng.integers(n_arms, size=T)
    R = rng.uniform(size=T)
    for x, a, r in zip(X, arms, R, strict=True):
        model.update(ids[a], x, r)
    model.remove_arm("a3")  # the last arm moves into slot 3
    model.add_arm("fresh")
    probe = _unit_rows(rng, 20, d)
    for x in probe:
        mean, bonus = model.mean_and_bonus(x)
        for arm_id in ("a0", "a39", "a17", "fresh"):
            i = model.index_of(arm_id)
            if arm_id == "fresh":
                A, theta = cfg.ridge_lambda * np.eye(d), np.zeros(d)
            else:
                a = ids.index(arm_id)
                A, _, theta = _direct(d, cfg.ridge_lambda, cfg.prior_reward, X[arms == a],
                                      R[arms == a])
            assert mean[i] == pytest.approx(cfg.prior_reward + theta @ x, abs=1e-8)
            assert bonus[i] == pytest.approx(cfg.alpha * np.sqrt(x @ np.linalg.solve(A, x)),
                                             abs=1e-8)
        batch_mean, batch_bonus = model.mean_and_bonus_batch(x[None, :])
        np.testing.assert_allclose(batch_mean[0], mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(batch_bonus[0], bonus, rtol=0, atol=1e-12)
    # Many contexts in chunks (the planner's call): the same as one context at a time.
    batch_mean, batch_bonus = model.mean_and_bonus_batch(probe, chunk=7)
    singles = [model.mean_and_bonus(x) for x in probe]
    np.testing.assert_allclose(batch_mean, [m for m, _ in singles], rtol=0, atol=1e-12)
    np.testing.assert_allclose(batch_bonus, [b for _, b in singles], rtol=0, atol=1e-12)


def test_thompson_scores_are_posterior_draws_around_the_mean():
    # Hand derivation: one update of arm a0 with x = e1, reward 0.8, ridge 1, prior 0.5 gives
    # A = diag(2, 1, 1), theta = (0.3 / 2) e1. At x = e1: mean = 0.5 + 0.15 = 0.65 and the
    # posterior of the score is N(0.65, alpha^2 * x'A^-1x) = N(0.65, 0.2^2 / 2); the untried a1
    # scores N(0.5, 0.2^2). So a0 wins when 0.15 + 0.2 (z0 / sqrt 2 - z1) > 0, with probability
    # Phi(0.15 / (0.2 * sqrt(1.5))) = Phi(0.612) = 0.730.
    cfg = LinUCBConfig(alpha=0.2, prior_reward=0.5, exploration="thompson")
    model = LinUCB(3, cfg, np.random.default_rng(4), ["a0", "a1"])
    x = np.array([1.0, 0.0, 0.0])
    model.update("a0", x, 0.8)
    draws = [model.decide(x) for _ in range(20000)]
    scores = np.array([d.score for d in draws])
    assert scores[:, 0].mean() == pytest.approx(0.65, abs=0.003)
    assert scores[:, 0].std() == pytest.approx(0.2 / np.sqrt(2), rel=0.03)
    assert scores[:, 1].std() == pytest.approx(0.2, rel=0.03)
    share = np.mean([d.arm_index == 0 for d in draws])
    assert share == pytest.approx(0.730, abs=0.01)
    # UCB on the same model is deterministic: a0 (0.65 + 0.141) against a1 (0.5 + 0.2).
    ucb = LinUCB(3, LinUCBConfig(alpha=0.2, prior_reward=0.5), np.random.default_rng(4),
                 ["a0", "a1"])
    ucb.update("a0", x, 0.8)
    assert all(ucb.decide(x).arm_index == 0 for _ in range(10))


def test_exploration_must_be_ucb_or_thompson():
    with pytest.raises(ValueError, match="exploration must be 'ucb' or 'thompson', got 'ts'"):
        LinUCBConfig(exploration="ts")


# The plain stack and the packed rows in the C core; past 2 MiB of rows, numpy's BLAS.
@pytest.mark.parametrize(("d", "n_arms"), [(32, 5), (32, 40), (64, 130)])
def test_decide_scores_equal_a_direct_solve(d, n_arms):
    # decide() scores through the C core (edge_linucb_scores) or numpy; the reference is a
    # direct solve on the same updates, the penalty subtracted by hand.
    rng = np.random.default_rng(11)
    T = 1500
    cfg = LinUCBConfig(alpha=0.8, ridge_lambda=0.9, prior_reward=0.3)
    ids = [f"a{i}" for i in range(n_arms)]
    model = LinUCB(d, cfg, np.random.default_rng(2), ids)
    assert model._packed == (n_arms * d * d * 8 > 256 * 1024)
    assert (model._scoring_bytes > 2 * 1024 * 1024) == (d == 64)
    X, arms, R = _unit_rows(rng, T, d), rng.integers(n_arms, size=T), rng.uniform(size=T)
    for x, a, r in zip(X, arms, R, strict=True):
        model.update(ids[a], x, r)
    direct = [_direct(d, cfg.ridge_lambda, cfg.prior_reward, X[arms == a], R[arms == a])
              for a in range(n_arms)]
    for x in _unit_rows(rng, 10, d):
        penalty = rng.uniform(0, 0.2, size=n_arms)
        decision = model.decide(x, penalty)
        mean = np.array([cfg.prior_reward + theta @ x for _, _, theta in direct])
        bonus = np.array([cfg.alpha * np.sqrt(x @ np.linalg.solve(A, x)) for A, _, _ in direct])
        np.testing.assert_allclose(decision.mean, mean, rtol=0, atol=1e-9)
        np.testing.assert_allclose(decision.bonus, bonus, rtol=0, atol=1e-9)
        np.testing.assert_allclose(decision.score, mean + bonus - penalty, rtol=0, atol=1e-9)
        assert decision.arm_index == int(np.argmax(mean + bonus - penalty))
        np.testing.assert_array_equal(decision.penalty, penalty)


def test_ties_among_untried_arms_draw_as_flatnonzero_and_integers_do():
    # The C core lists the tied arms; the draw is rng.integers over them in index order, the
    # same draws as np.flatnonzero(score >= best - 1e-12) indexed by a generator of one seed.
    d, n = 4, 12
    model = LinUCB(d, LinUCBConfig(), np.random.default_rng(5), [f"a{i}" for i in range(n)])
    reference = np.random.default_rng(5)
    penalty = np.where(np.arange(n) % 3 == 0, 0.0, 0.5)  # arms 0, 3, 6, 9 tie at the top
    for _ in range(40):
        decision = model.decide(np.array([0.0, 1.0, 0.0, 0.0]), penalty)
        ties = np.flatnonzero(decision.score >= decision.score.max() - 1e-12)
        assert ties.tolist() == [0, 3, 6, 9]
        assert decision.arm_index == int(ties[reference.integers(len(ties))])


def test_penalties_and_contexts_of_other_types_are_converted_or_refused_before_the_c_core():
    # cffi reads whatever bytes it is given: a float32 penalty read as doubles would be garbage
    # (and half as long). Lists and float32 give the float64 answer; a wrong length is refused.
    model = LinUCB(3, LinUCBConfig(), np.random.default_rng(0), ["a", "b", "c"])
    x = np.array([0.6, 0.8, 0.0])
    expected = model.decide(x, np.array([0.3, 0.0, 0.1]))
    for penalty in ([0.3, 0.0, 0.1], np.array([0.3, 0.0, 0.1], dtype=np.float32),
                    np.array([0.3, 9, 0.0, 9, 0.1])[::2]):
        got = model.decide(x, penalty)
        np.testing.assert_allclose(got.score, expected.score, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match=r"penalty must have shape \(3,\)"):
        model.decide(x, np.zeros(2))
    model.update("a", np.array([0.6, 0.8, 0.0], dtype=np.float32), 1.0)  # converted, not misread
    reference = LinUCB(3, LinUCBConfig(), np.random.default_rng(0), ["a", "b", "c"])
    reference.update("a", np.array([0.6, 0.8, 0.0], dtype=np.float32).astype(np.float64), 1.0)
    np.testing.assert_array_equal(model.mean_and_bonus(x)[0], reference.mean_and_bonus(x)[0])


def test_exploration_scale_shrinks_with_evidence_as_configured():
    # alpha_t = alpha + (alpha_initial - alpha) * n0 / (n0 + t), worked by hand for alpha 0.1,
    # alpha_initial 1.1, n0 100: t = 0 -> 1.1, t = 100 -> 0.6, t = 300 -> 0.35.
    cfg = LinUCBConfig(alpha=0.1, alpha_initial=1.1, alpha_decay_updates=100)
    model = LinUCB(4, cfg, np.random.default_rng(0), ["a", "b"])
    rng = np.random.default_rng(1)
    x = _unit_rows(rng, 1, 4)[0]
    expected = {0: 1.1, 100: 0.6, 300: 0.35}
    for t in range(301):
        if t in expected:
            assert model.alpha == pytest.approx(expected[t], rel=1e-12)
            # The bonus of every path is the scheduled scale times the confidence width.
            A_inv = model.state_arrays()["A_inv"]
            width = np.sqrt(np.einsum("i,aij,j->a", x, A_inv, x))
            np.testing.assert_allclose(model.mean_and_bonus(x)[1], expected[t] * width,
                                       rtol=1e-9)
            np.testing.assert_allclose(model.decide(x).bonus, expected[t] * width, rtol=1e-9)
            np.testing.assert_allclose(model.mean_and_bonus_batch(x[None])[1][0],
                                       expected[t] * width, rtol=1e-9)
        model.update("ab"[t % 2], _unit_rows(rng, 1, 4)[0], float(rng.uniform()))
    # A router restarted from saved arms resumes the schedule where their evidence left it.
    resumed = LinUCB(4, cfg, np.random.default_rng(0))
    resumed.load_state(["a", "b"], model.state_arrays())
    assert resumed.alpha == pytest.approx(0.1 + 1.0 * 100 / (100 + 301), rel=1e-12)
    # Without alpha_initial the scale is alpha throughout.
    fixed = LinUCB(4, LinUCBConfig(alpha=0.3), np.random.default_rng(0), ["a"])
    fixed.update("a", x, 0.5)
    assert fixed.alpha == 0.3


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha_initial": -0.5}, "alpha_initial must be >= 0"),
    ({"alpha_initial": float("nan")}, "alpha_initial must be a finite number"),
    ({"alpha_decay_updates": 0}, "alpha_decay_updates must be > 0"),
    ({"alpha_decay_updates": float("inf")}, "alpha_decay_updates must be a finite number"),
])
def test_exploration_schedule_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LinUCBConfig(**kwargs)
