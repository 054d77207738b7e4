"""The controller's window of quadratic forms, kept between plans (edge/router/window_scores.py):
only the slots written and the arms updated since the last plan are recomputed, and the forms
equal a full recomputation from A^-1 whatever happened in between."""

import numpy as np
import pytest

from edge.paging_cost import PagingCostModel
from edge.router.config import LinUCBConfig, PolarConfig
from edge.router.linucb import LinUCB
from edge.router.polar import PolarRouter
from edge.router.window_scores import WindowQuadForms

MiB = 2**20


def _unit(rng, d):
    x = rng.normal(size=d)
    return x / np.linalg.norm(x)


def _forms_by_hand(lin: LinUCB, X: np.ndarray) -> np.ndarray:
    # x'A_a^-1 x straight from the saved inverses, not through LinUCB's scoring paths.
    A_inv = lin.state_arrays()["A_inv"]
    return np.einsum("nd,ade,ne->na", X, A_inv, X)


# d = 6, N up to 14: the per-arm products; d = 32, N up to 44: past the packed threshold
# (N * d * d * 8 bytes > 256 KiB from N = 33), the packed product for whole rows.
@pytest.mark.parametrize("dim,arms", [(6, 10), (32, 40)])
def test_kept_forms_equal_a_full_recomputation_through_updates_arm_changes_and_wraps(dim, arms):
    rng = np.random.default_rng(7)
    lin = LinUCB(dim, LinUCBConfig(alpha=0.5, refactor_every=5), np.random.default_rng(1),
                 [f"a{i}" for i in range(arms)])
    window, pos, filled = np.zeros((24, dim)), 0, 0
    forms = WindowQuadForms(len(window))
    next_arm = arms
    for step in range(400):
        window[pos] = _unit(rng, dim)
        pos, filled = (pos + 1) % len(window), min(filled + 1, len(window))
        arm = lin.arm_ids[rng.integers(0, lin.n_arms) if step % 50 != 49 else 0]
        lin.update(arm, window[pos - 1], float(rng.random()))
        if step == 150:
            lin.add_arm(f"a{next_arm}")
            next_arm += 1
        if step == 260:
            lin.remove_arm(lin.arm_ids[3])  # the last arm moves into slot 3
        if step % 7 == 0 or step in (151, 261):
            got = forms.compute(lin, window, filled, pos, step + 1)
            want = _forms_by_hand(lin, window[:filled])
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_a_plan_recomputes_only_the_slots_written_and_the_arms_updated_since_the_last():
    dim, arms = 8, 12
    rng = np.random.default_rng(3)
    lin = LinUCB(dim, LinUCBConfig(alpha=0.5), np.random.default_rng(1),
                 [f"a{i}" for i in range(arms)])
    window = np.array([_unit(rng, dim) for _ in range(16)])
    forms = WindowQuadForms(len(window))
    calls = []
    original = lin.quad_forms

    def recording(X, arms=None, chunk=128):
        calls.append((len(X), None if arms is None else sorted(int(a) for a in arms)))
        return original(X, arms, chunk)

    lin.quad_forms = recording
    # The ring is full: 16 contexts written, the next write goes to slot 0.
    forms.compute(lin, window, 16, 0, 16)
    assert calls == [(16, None)]  # the first plan: everything
    calls.clear()
    for slot in (0, 1, 2):  # three more contexts, overwriting the oldest
        window[slot] = _unit(rng, dim)
    lin.update("a2", window[0], 0.9)
    lin.update("a7", window[1], 0.1)
    got = forms.compute(lin, window, 16, 3, 19)
    assert calls == [(3, None), (13, [2, 7])]
    np.testing.assert_allclose(got, _forms_by_hand(lin, window), rtol=1e-10, atol=1e-13)
    calls.clear()
    forms.compute(lin, window, 16, 3, 19)
    assert calls == []  # nothing changed: nothing recomputed
    window[3:16] = [_unit(rng, dim) for _ in range(13)]
    window[0:3] = [_unit(rng, dim) for _ in range(3)]
    got = forms.compute(lin, window, 16, 3, 19 + 16 + 4)  # more than a window: every slot
    assert calls == [(16, None)]
    np.testing.assert_allclose(got, _forms_by_hand(lin, window), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("exploration", ["ucb", "thompson"])
def test_the_controllers_demand_equals_a_fresh_score_of_its_window_at_every_plan(exploration):
    # A plan's shares from the kept forms against shares from scoring the whole window afresh
    # (LinUCB.mean_and_bonus_batch), at each of 40 plans, across a save and restore.
    dim, arms = 32, 40  # packed
    rng = np.random.default_rng(5)

    def router():
        lin = LinUCB(dim, LinUCBConfig(alpha=0.3, exploration=exploration),
                     np.random.default_rng(2))
        polar = PolarRouter(lin, PolarConfig(mode="polar+", epoch_length=8, max_epoch_length=8,
                                             context_window=64, prefetch_plan=False,
                                             forced_exploration_scale=0.0),
                            PagingCostModel(), 400 * MiB)
        for i in range(arms):
            polar.add_arm(f"a{i}", 16 * MiB)
        return polar

    polar = router()
    centres = [_unit(rng, dim) for _ in range(6)]
    plans = 0
    for step in range(320):
        x = centres[rng.integers(0, 6)] + 0.3 * _unit(rng, dim)
        decision = polar.decide(x / np.linalg.norm(x), set(polar.linucb.arm_ids[:10]))
        if polar.take_plan() is not None:  # made as this decision closed an epoch
            plans += 1
            mean, bonus = polar.linucb.mean_and_bonus_batch(polar.recent_contexts())
            best = (mean + bonus).argmax(axis=1)
            share = np.bincount(best, minlength=arms) / len(best)
            want = {polar.linucb.arm_ids[i]: s for i, s in enumerate(share) if s > 0}
            assert polar.demand() == pytest.approx(want, abs=0)
        polar.linucb.update(decision.arm_id, x / np.linalg.norm(x), float(rng.random()))
        if step == 200:
            meta, arrays = polar.state()
            lin_arrays, ids = polar.linucb.state_arrays(), list(polar.linucb.arm_ids)
            polar = router()
            polar.linucb.load_state(ids, lin_arrays)
            polar.restore(ids, meta, arrays)
    assert plans == 40
