"""POLAR: cache-aware LinUCB routing plus an epoch cache controller.

Per request (fast timescale):
    score_a = mean_a(x) + bonus_a(x) - lambda * paging_seconds(size_a) * [a not resident]
and the arm with the highest score serves the request, except on a POLAR+ forced-exploration
round, where the least-chosen under-sampled arm serves it (ties broken by the injected RNG).
With a controller, the charge of a page-in is amortised over the requests the adapter is
expected to serve while resident (``_charge``), and a page-in that does not fit in the
free bytes is also charged the expected re-paging cost of what it evicts (``eviction_charge``);
the rules are in docs/router.md.

Per epoch (slow timescale): the controller plans the resident set for the next epoch from the
last ``context_window`` contexts with optimistic utilities (mean + bonus), see
``edge.router.planner``. Planning on optimistic scores rather than on what the router picked is
deliberate: a cache-aware router rarely picks a non-resident adapter, so "keep what was picked"
never changes the set (the pitfall in FIELD-NOTES); an untried adapter's bonus (and the optimistic
prior) makes it worth a slot until it has been tried.

The controller only returns arm ids; ``apply_resident_set`` hands them to a ``PagedCache``.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import Any, Optional

import numpy as np

from edge._native.router import paging_penalty
from edge.errors import EdgeError
from edge.paging_cost import PagingCostModel
from edge.router.config import PolarConfig
from edge.router.errors import RouterError
from edge.router.linucb import Decision, LinUCB
from edge.router.planner import plan_resident_set
from edge.router.schedule import EpochSchedule
from edge.router.window_scores import WindowQuadForms

# Demand-load residencies averaged exactly up to this many, exponentially after.
_RESIDENCY_MEMORY = 64


class PolarRouter:
    """Cache-aware routing over a ``LinUCB``; owns arm sizes, paging costs and the epochs."""

    def __init__(self, linucb: LinUCB, config: PolarConfig, paging_cost: PagingCostModel,
                 budget_bytes: Optional[int] = None) -> None:
        self.linucb = linucb
        self.config = config
        self.paging_cost = paging_cost
        self.budget_bytes = budget_bytes
        self.schedule = EpochSchedule(config)
        self._sizes = np.zeros(0, dtype=np.int64)
        self._penalty = np.zeros(0)  # lambda * paging seconds, per arm
        self._chosen = np.zeros(0, dtype=np.int64)  # decisions per arm (feedback may lag)
        # Share of recent contexts whose best (optimistic, paging ignored) arm is each arm,
        # measured at the last epoch end; 0 until then (no amortisation without an estimate).
        self._share = np.zeros(0)
        # Residency of demand loads (an arm routed to while not resident): decisions from the
        # page-in until the arm is first seen non-resident again. _residency is their running
        # mean (exponential once _residency_n reaches _RESIDENCY_MEMORY); 0 until measured.
        self._tick = 0
        self._demand: dict[int, int] = {}  # arm index -> tick of its page-in
        self._residency = 0.0
        self._residency_n = 0
        # Amortisation needs the controller (a budget, so plans and shares exist).
        self._amortising = (config.amortise_paging and config.mode != "off"
                            and budget_bytes is not None)
        # POLAR+ only (POLAR keeps the plain charge); needs a budget to know the free bytes.
        self._charging_eviction = (config.charge_eviction and config.mode == "polar+"
                                   and budget_bytes is not None)
        # (resident mask bytes, requests left) -> this round's charges
        # (read-only); dropped whenever sizes or shares change (add/remove/set_size, a plan, a
        # restore).
        self._charge_memo: Optional[tuple[tuple[bytes, float], np.ndarray]] = None
        self._window = np.zeros((config.context_window, linucb.dim))
        self._window_pos = 0
        self._window_filled = 0
        self._window_quad = WindowQuadForms(config.context_window)
        self._plan: Optional[list[str]] = None
        if linucb.n_arms:
            raise ValueError("give PolarRouter an empty LinUCB; add arms through PolarRouter")

    # ---- catalogue -----------------------------------------------------------------------------

    @property
    def arm_ids(self) -> tuple[str, ...]:
        return self.linucb.arm_ids

    def size_of(self, arm_id: str) -> int:
        return int(self._sizes[self.linucb.index_of(arm_id)])

    def sizes(self) -> dict[str, int]:
        return dict(zip(self.linucb.arm_ids, map(int, self._sizes), strict=True))

    def chosen_counts(self) -> np.ndarray:
        return self._chosen.copy()

    def paging_penalty(self) -> np.ndarray:
        """lambda * paging seconds per arm (reward units), indexed like ``arm_ids``."""
        return self._penalty.copy()

    def add_arm(self, arm_id: str, size_bytes: int) -> None:
        if isinstance(size_bytes, bool) or not isinstance(size_bytes, (int, np.integer)) \
                or size_bytes <= 0:
            raise ValueError(f"size of arm {arm_id!r} must be a positive byte count, "
                             f"got {size_bytes!r}")
        if self.budget_bytes is not None and size_bytes > self.budget_bytes:
            raise RouterError(f"arm {arm_id!r} is {size_bytes} bytes, more than the whole cache "
                              f"budget of {self.budget_bytes} bytes: it could never be loaded")
        self.linucb.add_arm(arm_id)
        cost = self.paging_cost.paging_seconds(int(size_bytes))
        self._sizes = np.append(self._sizes, int(size_bytes))
        self._penalty = np.append(self._penalty, self.config.paging_weight * cost)
        self._chosen = np.append(self._chosen, 0)
        self._share = np.append(self._share, 0.0)
        self._charge_memo = None

    def set_size(self, arm_id: str, size_bytes: int) -> None:
        """An adapter file was replaced by one of another size: keep what was learned."""
        i = self.linucb.index_of(arm_id)
        if size_bytes <= 0 or (self.budget_bytes is not None and size_bytes > self.budget_bytes):
            raise ValueError(f"size of arm {arm_id!r} must be positive and within the budget, "
                             f"got {size_bytes!r}")
        self._sizes[i] = size_bytes
        seconds = self.paging_cost.paging_seconds(int(size_bytes))
        self._penalty[i] = self.config.paging_weight * seconds
        self._charge_memo = None

    def remove_arm(self, arm_id: str) -> None:
        i = self.linucb.index_of(arm_id)
        self.linucb.remove_arm(arm_id)
        # LinUCB moved its last arm into slot i; mirror that so indices stay aligned.
        for name in ("_sizes", "_penalty", "_chosen", "_share"):
            arr = getattr(self, name)
            arr[i] = arr[-1]
            setattr(self, name, arr[:-1].copy())
        if self._plan is not None:
            self._plan = [a for a in self._plan if a != arm_id]
        self._demand.clear()  # indices moved; the open residencies are simply not measured
        self._charge_memo = None

    # ---- routing -------------------------------------------------------------------------------

    def resident_mask(self, resident: Container[str]) -> np.ndarray:
        return np.fromiter((a in resident for a in self.linucb.arm_ids), dtype=bool,
                           count=self.linucb.n_arms)

    def decide(self, x: np.ndarray, resident: np.ndarray | Container[str]) -> Decision:
        """Route one context. ``resident``: a bool mask indexed like ``arm_ids`` or a container
        of resident arm ids. Closing an epoch leaves a plan for ``take_plan``."""
        mask = self._mask(resident)
        penalty = self._charge(mask)
        if self._demand:
            self._track_residency(mask)
        epsilon = self.linucb.config.epsilon
        if self.schedule.is_forced():
            decision = self._forced_decision(x, penalty)
        elif epsilon and self.linucb.rng.random() < epsilon:
            arm = int(self.linucb.rng.integers(self.linucb.n_arms))
            decision = self.linucb.decide(x, penalty, forced_index=arm, reason="epsilon")
        else:
            decision = self.linucb.decide(x, penalty)
        if self._amortising and not mask[decision.arm_index]:
            self._demand[decision.arm_index] = self._tick
        self._tick += 1
        self._chosen[decision.arm_index] += 1
        self._remember(decision_context=x)
        if self.config.mode != "off" and self.schedule.advance():
            self._plan = self.plan()
        return decision

    def preview(self, x: np.ndarray, resident: np.ndarray | Container[str]) -> Decision:
        """The arm ``decide`` would pick on an ordinary round (not a forced or epsilon one),
        with the same scores, changing nothing: no epoch step, no counts, no RNG draw (an exact
        tie goes to the first arm)."""
        mask = self._mask(resident)
        penalty = self._charge(mask)
        mean, bonus = self.linucb.mean_and_bonus(self.linucb._check_context(x))
        score = mean + bonus - penalty
        i = int(score.argmax())
        ids = self.linucb.arm_ids
        return Decision(ids[i], i, ids, mean, bonus, penalty, score, "preview")

    def _mask(self, resident: np.ndarray | Container[str]) -> np.ndarray:
        mask = resident if isinstance(resident, np.ndarray) else self.resident_mask(resident)
        if mask.shape != (self.linucb.n_arms,) or mask.dtype != bool:
            raise ValueError(f"resident mask must be bool of shape ({self.linucb.n_arms},), "
                             f"got {mask.dtype} {mask.shape}")
        return mask

    def _charge(self, mask: np.ndarray) -> np.ndarray:
        """The paging penalty of each arm this round (0 for resident ones)."""
        if self.config.mode == "off":
            return np.zeros(self.linucb.n_arms)
        # The charges depend only on the resident set and the requests left (0 until a
        # residency is measured; sizes and shares drop the memo when they change), and
        # the resident set changes only on a miss or a plan: most rounds reuse the last table
        # (measured at N = 16: ~0.5 us to look up against ~3.5 us to compute; at N = 256 the
        # eviction term alone took ~25 us on a loaded machine).
        left = self._requests_left()
        key = (mask.tobytes(), left)
        if self._charge_memo is None or self._charge_memo[0] != key:
            charge = self._compute_charge(mask, left)
            charge.flags.writeable = False  # shared by the decisions of the rounds that reuse it
            self._charge_memo = (key, charge)
        return self._charge_memo[1]

    def _compute_charge(self, mask: np.ndarray, left: float) -> np.ndarray:
        # Amortised: lambda * c_a / k_a, k_a = 1 + share_a * left, left = the requests a
        # page-in now is expected to serve after this one (``_requests_left``): it serves
        # share_a of the requests routed while it stays resident, so each bears 1/k_a of its
        # cost. left = 0 leaves the charge whole. One C call (edge_paging_penalty).
        amortised = left if self._amortising and self._residency > 0.0 else 0.0
        extra = self.eviction_charge(mask) if self._charging_eviction else None
        return paging_penalty(self._penalty, self._share, float(amortised), extra, mask)

    def _eviction_horizon(self) -> float:
        return max(1.0, self._requests_left())

    def eviction_charge(self, mask: np.ndarray) -> np.ndarray:
        """Per arm (indexed like ``arm_ids``; meaningful for the non-resident ones), the
        expected re-paging cost of what paging it in would evict. 0 if it fits in the free
        bytes (budget minus the resident arms' sizes). Otherwise residents are taken cheapest
        first until enough bytes are freed; resident v costs lambda * c_v * min(1, s_v * h):
        its page-in charge times the expected number of requests (at most 1: one re-load)
        that want it back within h = ``_requests_left()`` requests (h at least 1). Cheapest
        first because the router cannot see which victim the cache's eviction policy will
        take: this is the least the eviction can cost by that estimate."""
        if self.budget_bytes is None:
            return np.zeros(len(self._sizes))
        need = self._sizes - (self.budget_bytes - int(self._sizes[mask].sum()))
        out = np.zeros(len(self._sizes))
        short = need > 0
        resident = np.flatnonzero(mask)
        if not short.any() or len(resident) == 0:
            return out
        horizon = self._eviction_horizon()
        cost = self._penalty[resident] * np.minimum(1.0, self._share[resident] * horizon)
        order = np.argsort(cost, kind="stable")
        freed = np.cumsum(self._sizes[resident][order])
        paid = np.cumsum(cost[order])
        # An arm needing more than every resident frees (possible only if the budget shrank
        # after a restore) is charged for all of them.
        at = np.minimum(np.searchsorted(freed, need[short]), len(freed) - 1)
        out[short] = paid[at]
        return out

    def _track_residency(self, mask: np.ndarray) -> None:
        for i, start in list(self._demand.items()):
            if not mask[i]:
                del self._demand[i]
                self._residency_n += 1
                weight = 1.0 / min(self._residency_n, _RESIDENCY_MEMORY)
                self._residency += weight * ((self._tick - start) - self._residency)

    def _requests_left(self) -> float:
        """Requests a page-in now is expected to serve after the current one: those left in
        this epoch, at most the measured residency of a demand load."""
        return min(self.schedule.length - self.schedule.step - 1, self._residency)

    def _forced_decision(self, x: np.ndarray, penalty: np.ndarray) -> Decision:
        """A forced round serves the least-chosen *under-sampled* arm (ties by the RNG): one
        with fewer than ``forced_min_decisions`` decisions, or one whose paging-free optimistic
        score mean + bonus reaches the best penalised score, i.e. that lost this round only to
        its paging charge. An arm whose upper confidence bound cannot beat the winner even
        without the charge gains nothing from a forced sample; with no under-sampled arm the
        round is routed normally."""
        decision = self.linucb.decide(x, penalty)
        floor = self.config.forced_min_decisions
        eligible = (self._chosen < floor) | (decision.mean + decision.bonus
                                             >= decision.score[decision.arm_index])
        if not eligible.any():
            return decision
        least = np.flatnonzero(eligible & (self._chosen == self._chosen[eligible].min()))
        i = int(least[self.linucb.rng.integers(len(least))])
        return self.linucb.decide(x, penalty, forced_index=i)

    def _remember(self, decision_context: np.ndarray) -> None:
        self._window[self._window_pos] = decision_context
        self._window_pos = (self._window_pos + 1) % len(self._window)
        self._window_filled = min(self._window_filled + 1, len(self._window))

    # ---- epoch controller ----------------------------------------------------------------------

    def recent_contexts(self) -> np.ndarray:
        return self._window[: self._window_filled].copy()

    def plan(self) -> Optional[list[str]]:
        """The resident set for the next epoch (arm ids, priority order); None without budget.
        Empty with ``prefetch_plan: false``: nothing is to be prefetched, so only the demand
        shares are measured and the planner's greedy passes are skipped."""
        if self.budget_bytes is None or self.linucb.n_arms == 0:
            return None
        filled = self._window_filled
        contexts = self._window[:filled]
        # The window's quadratic forms, only what changed since the last plan recomputed
        # (none needed at alpha 0, where the bonus is 0).
        # _tick counts the decisions, one context written each.
        quad = (self._window_quad.compute(self.linucb, self._window, filled, self._window_pos,
                                          self._tick)
                if self.linucb.alpha != 0.0 else None)
        mean, bonus = self.linucb.mean_and_bonus_batch(contexts, quad=quad)
        utility = mean + bonus
        if len(contexts):
            best = utility.argmax(axis=1)
            self._share = np.bincount(best, minlength=self.linucb.n_arms) / len(contexts)
            self._charge_memo = None
        if not self.config.prefetch_plan:
            return []
        chosen = plan_resident_set(utility, self._penalty, self._sizes, self.budget_bytes)
        ids = self.linucb.arm_ids
        return [ids[i] for i in chosen]

    def demand(self) -> dict[str, float]:
        """Each arm's share of the recent contexts whose best arm (optimistic mean + bonus,
        paging ignored) it is, measured when the last epoch closed: the estimate the
        amortised charge uses, and the learned eviction policy's demand input. Arms with no
        share are left out; empty before the first plan (and without a budget or with mode
        ``off``, which plan nothing)."""
        ids = self.linucb.arm_ids
        return {ids[i]: float(share) for i, share in enumerate(self._share) if share > 0}

    def take_plan(self) -> Optional[list[str]]:
        """The plan made when the last epoch closed, once (None if no epoch closed since)."""
        plan, self._plan = self._plan, None
        return plan

    # ---- state ---------------------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"schedule": self.schedule.state(), "window_pos": self._window_pos,
                "window_filled": self._window_filled, "budget_bytes": self.budget_bytes,
                "residency": {"tick": self._tick, "mean": self._residency,
                              "n": self._residency_n,
                              "open": [[i, t] for i, t in self._demand.items()]}}
        return meta, {"sizes": self._sizes.copy(), "chosen": self._chosen.copy(),
                      "share": self._share.copy(), "window": self._window.copy()}

    def restore(self, arm_ids: list[str], meta: Mapping[str, Any],
                arrays: Mapping[str, np.ndarray]) -> None:
        """Install saved arms and controller state (the LinUCB arrays are loaded separately)."""
        if arrays["window"].shape != self._window.shape:
            raise ValueError(f"saved context window has shape {arrays['window'].shape}, "
                             f"this router uses {self._window.shape}")
        self._sizes = arrays["sizes"].astype(np.int64).copy()
        cost = self.paging_cost.paging_seconds
        self._penalty = np.array([self.config.paging_weight * cost(int(s)) for s in self._sizes])
        self._chosen = arrays["chosen"].astype(np.int64).copy()
        # Files written before amortisation have no shares: start unamortised until the next
        # epoch end measures them.
        share = arrays.get("share")
        self._share = (np.zeros(len(self._sizes)) if share is None
                       else share.astype(np.float64).copy())
        self._window = arrays["window"].astype(np.float64).copy()
        self._window_quad.invalidate()
        self._charge_memo = None
        self._window_pos = int(meta["window_pos"])
        self._window_filled = int(meta["window_filled"])
        self.schedule.restore(meta["schedule"])
        residency = meta.get("residency", {})  # absent in files written before amortisation
        self._tick = int(residency.get("tick", 0))
        self._residency = float(residency.get("mean", 0.0))
        self._residency_n = int(residency.get("n", 0))
        self._demand = {int(i): int(t) for i, t in residency.get("open", [])
                        if 0 <= int(i) < len(arm_ids)}
        if len(self._sizes) != len(arm_ids) or len(self._share) != len(arm_ids):
            raise ValueError("saved arm sizes or shares do not match the saved arms")


def apply_resident_set(cache: Any, keys: Iterable[str], sizes: Mapping[str, int]
                       ) -> tuple[int, int]:
    """Make ``keys`` the cache's priority residents: returns (discarded, prefetch started).

    ``cache`` is a ``PagedCache`` (anything with ``budget``, ``resident()``, ``discard`` and
    ``prefetch``); ``sizes`` gives the bytes of each key. Residents outside the plan are discarded,
    least recently used first, only as far as needed to make room for the planned keys that are
    not resident: the rest stay (free bytes cost nothing) and are the first victims of a later
    miss. A pinned one is skipped: it is in use. Then the planned keys are prefetched in priority
    order (inline when the cache has ``load_workers=0``), so no planned key evicts another.
    """
    keys = list(dict.fromkeys(keys))
    resident = cache.resident()  # least to most recently used
    wanted = set(keys)
    missing = [k for k in keys if k not in resident]
    need = sum(int(sizes[k]) for k in missing)
    free = cache.budget - sum(resident.values())
    discarded = 0
    for key, nbytes in resident.items():
        if free >= need:
            break
        if key in wanted:
            continue
        try:
            if cache.discard(key):
                discarded += 1
                free += nbytes
        except EdgeError:  # pinned right now: it stays until released
            continue
    return discarded, cache.prefetch(missing)
