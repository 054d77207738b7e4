"""Disjoint-arm LinUCB in float64 with Sherman-Morrison updates.

Per arm a: A_a = lambda*I + sum x x' (discounted when ``discount < 1``), b_a = sum (r - r0) x,
theta_a = A_a^-1 b_a, and

    mean_a(x)  = r0 + theta_a . x          (r0 = prior_reward: what an untried arm predicts)
    bonus_a(x) = alpha * sqrt(x' A_a^-1 x)
    score_a(x) = mean_a(x) + bonus_a(x) - penalty_a

A_a^-1 is updated by Sherman-Morrison (O(d^2)); every ``refactor_every`` updates of an arm it is
recomputed exactly from A_a, which is kept alongside, so rounding drift stays bounded however
long the router runs. Arms live in stacked arrays so scoring all arms is two matrix-vector
products, whatever N is; the scoring reads theta and the packed upper triangle of A^-1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

import numpy as np

from edge._native.router import LinUCBKernels
from edge.router.config import LinUCBConfig
from edge.router.errors import DuplicateArmError, UnknownArmError

_TIE_TOLERANCE = 1e-12
# Score from the packed upper triangle of A^-1 once the arms' A^-1 stack exceeds this many bytes
# (N > 32 at d = 32): below it the stack sits in cache and the plain product is cheaper than
# building the packed weights; above it reading half the bytes wins (measured, docs/router.md).
_PACKED_MIN_BYTES = 256 * 1024
# The C core scores from the packed rows from this many arms on, whatever the bytes: one dot
# product of d(d+1)/2 per arm beats d dot products of d (decide + update_index, timed warm
# by a scratch timeit loop at d = 16, 32, 64 and N = 1-32: level at N = 8, 0.8 us faster at
# N = 16, d = 32; 1.3 us slower at N = 4, d = 64). numpy's paths (Thompson sampling, the
# planner's batch) keep the byte threshold.
_PACKED_MIN_ARMS_C = 8
# Score in the C core (one call) while the scoring rows stay this small; beyond, a decision is
# bound by memory bandwidth and numpy's BLAS reads the rows faster (at d = 64, N = 256: 4.4 MiB
# of rows a decision, where the C scores were measured slower before this threshold), while its
# few numpy calls no longer dominate.
_C_SCORING_MAX_BYTES = 2 * 1024 * 1024


@dataclass(slots=True)
class Decision:
    """One routing decision and its explanation, arrays indexed like ``arm_ids``.

    (Not frozen: a frozen dataclass's ``__init__`` costs more than the scoring at N=16.)"""

    arm_id: str
    arm_index: int
    arm_ids: tuple[str, ...]
    mean: np.ndarray
    bonus: np.ndarray
    penalty: np.ndarray
    score: np.ndarray
    # Why this arm: "ucb" (highest score), "forced" (POLAR+ forced exploration) or "epsilon"
    # (a uniformly random arm, LinUCBConfig.epsilon).
    reason: str = "ucb"

    def explain(self, top: Optional[int] = None) -> list[dict]:
        """Per-arm mean, confidence bonus, paging penalty and final score, best first."""
        order = np.argsort(-self.score, kind="stable")
        if top is not None:
            order = order[:top]
        return [{"arm": self.arm_ids[i], "mean": float(self.mean[i]),
                 "bonus": float(self.bonus[i]), "penalty": float(self.penalty[i]),
                 "score": float(self.score[i]), "chosen": int(i) == self.arm_index}
                for i in order]


class LinUCB:
    def __init__(self, dim: int, config: LinUCBConfig, rng: np.random.Generator,
                 arm_ids: Iterable[str] = ()) -> None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}")
        self.dim = dim
        self.config = config
        self.rng = rng
        self._thompson = config.exploration == "thompson"
        # The exploration scale in use (LinUCBConfig.alpha_initial): updates received, all arms.
        self._updates = 0
        self.alpha = self._alpha_after(0)
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._n = 0
        # Plain lists: incrementing a numpy scalar in place costs more than the update's maths.
        self._counts: list[int] = []
        self._since_refactor: list[int] = []
        self._unfolded: list[list[tuple[np.ndarray, float]]] = []
        # Adding, removing or reloading arms (indices may move) bumps the layout: with the
        # arms' update counts, what a kept score needs to know it is stale (WindowQuadForms).
        self._layout = 0
        rows, cols = np.triu_indices(dim)
        self._packed_len = len(rows)
        self._triu_rows, self._triu_cols = rows, cols
        self._triu_flat = rows * dim + cols  # flat indices of the upper triangle of a d x d
        self._triu_weight = np.where(rows == cols, 1.0, 2.0)
        self._packed = False
        self._kernels = LinUCBKernels(dim)
        self._allocate(8)
        for arm_id in arm_ids:
            self.add_arm(arm_id)

    def _alpha_after(self, updates: int) -> float:
        """The exploration scale after ``updates`` updates (LinUCBConfig.alpha_initial)."""
        cfg = self.config
        if cfg.alpha_initial is None:
            return cfg.alpha
        n0 = cfg.alpha_decay_updates
        return cfg.alpha + (cfg.alpha_initial - cfg.alpha) * n0 / (n0 + updates)

    # ---- arms ----------------------------------------------------------------------------------

    def _allocate(self, capacity: int) -> None:
        d, n = self.dim, self._n
        # theta_a and A_a^-1 share one (d+1, d) block per arm, so scoring all arms is a single
        # matrix-vector product: row 0 gives theta.x, rows 1..d give A^-1 x.
        stack = np.zeros((capacity, d + 1, d))
        A = np.zeros((capacity, d, d))
        b = np.zeros((capacity, d))
        if n:
            stack[:n], A[:n], b[:n] = self._stack[:n], self._A[:n], self._b[:n]
        self._stack, self._A, self._b = stack, A, b
        self._theta = stack[:, 0, :]
        self._A_inv = stack[:, 1:, :]
        # Scoring copy: theta_a and the upper triangle of the symmetric A_a^-1, packed, one row
        # per arm. x'A^-1x = sum_{i<=j} w_ij P_ij with w_ii = x_i^2, w_ij = 2 x_i x_j, so a
        # decision reads d + d(d+1)/2 float64 per arm instead of d(d+1): about half the bytes
        # (at N=256, d=32: 1.1 MiB instead of 2.1 MiB). Same float64 numbers, only the
        # summation order differs; the state (theta, A^-1, A, b) is unchanged.
        score = np.zeros((capacity, d + self._packed_len))
        if n:
            score[:n] = self._score[:n]
        self._score = score
        self._refresh_views()

    def _refresh_views(self) -> None:
        # Views over the live arms, rebuilt only when the arm set changes (hot path uses them).
        n, d = self._n, self.dim
        self._layout += 1
        # numpy's paths (Thompson sampling, the planner's batch) go packed by bytes alone.
        self._packed_numpy = n * d * d * 8 > _PACKED_MIN_BYTES
        packed = self._packed_numpy or (not self._thompson and n >= _PACKED_MIN_ARMS_C)
        if packed and not self._packed:
            self._packed = True
            for i in range(n):
                self._sync_scoring(i)
        self._packed = packed
        self._stack_rows = self._stack[:n].reshape(n * (d + 1), d)
        self._score_theta = self._score[:n, :d]
        self._score_packed = self._score[:n, d:]
        self._ids_tuple = tuple(self._ids)
        self._kernels.set_arrays(self._stack.reshape(len(self._stack), (d + 1) * d),
                                 self._score, packed)
        self._scoring_bytes = n * (self._score.shape[1] if packed else (d + 1) * d) * 8

    def _sync_scoring(self, i: int) -> None:
        """Copy arm ``i``'s theta and packed A^-1 into the scoring rows (after any change)."""
        if not self._packed:
            return
        row = self._score[i]
        row[: self.dim] = self._theta[i]
        row[self.dim:] = self._A_inv[i].ravel()[self._triu_flat]

    @property
    def arm_ids(self) -> tuple[str, ...]:
        return self._ids_tuple

    @property
    def n_arms(self) -> int:
        return self._n

    def __contains__(self, arm_id: object) -> bool:
        return arm_id in self._index

    def index_of(self, arm_id: str) -> int:
        try:
            return self._index[arm_id]
        except KeyError:
            raise UnknownArmError(f"arm {arm_id!r} is not in the catalogue "
                                  f"({self._n} arms)") from None

    def counts(self) -> np.ndarray:
        """Updates received per arm (a copy), indexed like ``arm_ids``."""
        return np.array(self._counts, dtype=np.int64)

    def add_arm(self, arm_id: str) -> int:
        if not isinstance(arm_id, str) or not arm_id:
            raise ValueError(f"arm id must be a non-empty string, got {arm_id!r}")
        if arm_id in self._index:
            raise DuplicateArmError(f"arm {arm_id!r} is already in the catalogue")
        if self._n == self._A.shape[0]:
            self._allocate(2 * self._A.shape[0])
        i = self._n
        lam = self.config.ridge_lambda
        self._A[i] = lam * np.eye(self.dim)
        self._A_inv[i] = np.eye(self.dim) / lam
        self._b[i] = 0.0
        self._theta[i] = 0.0
        self._sync_scoring(i)
        self._counts.append(0)
        self._since_refactor.append(0)
        self._unfolded.append([])
        self._ids.append(arm_id)
        self._index[arm_id] = i
        self._n += 1
        self._refresh_views()
        return i

    def remove_arm(self, arm_id: str) -> None:
        """Forget an arm; the last arm moves into its slot (indices of others may change)."""
        i = self.index_of(arm_id)
        last = self._n - 1
        if i != last:
            for name in ("_stack", "_A", "_b", "_score", "_counts", "_since_refactor",
                         "_unfolded"):
                arr = getattr(self, name)
                arr[i] = arr[last]
            moved = self._ids[last]
            self._ids[i] = moved
            self._index[moved] = i
        self._ids.pop()
        self._counts.pop()
        self._since_refactor.pop()
        self._unfolded.pop()
        del self._index[arm_id]
        self._n -= 1
        self._refresh_views()

    # ---- scoring -------------------------------------------------------------------------------

    def _check_context(self, x: np.ndarray) -> np.ndarray:
        if type(x) is not np.ndarray or x.dtype != np.float64 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"context must have shape ({self.dim},), got {x.shape}")
        return x

    def mean_and_bonus(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-arm mean and confidence bonus for one context (no checks: the hot path)."""
        if self._packed:
            mean = self._score_theta @ x
            mean += self.config.prior_reward
            w = x[self._triu_rows] * x[self._triu_cols]
            w *= self._triu_weight
            quad = self._score_packed @ w
        else:
            y = (self._stack_rows @ x).reshape(self._n, self.dim + 1)
            mean = y[:, 0] + self.config.prior_reward
            quad = y[:, 1:] @ x
        # x'A^-1 x >= 0 in exact arithmetic; abs() only absorbs a rounding of order 1e-17.
        bonus = np.sqrt(np.abs(quad, out=quad), out=quad)
        bonus *= self.alpha
        return mean, bonus

    def mean_and_bonus_batch(self, X: np.ndarray, chunk: int = 128,
                             quad: Optional[np.ndarray] = None
                             ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and bonus for many contexts at once: two arrays of shape (len(X), n_arms).
        ``quad``: the contexts' quadratic forms when the caller has them (WindowQuadForms)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"contexts must have shape (n, {self.dim}), got {X.shape}")
        N = self._n
        mean = X @ self._theta[:N].T + self.config.prior_reward
        if self.alpha == 0.0:
            # The bonus is 0 whatever the quadratic forms: skip them (most of a plan's time; a
            # greedy learner's controller planning every 64 requests at N = 256 paid it).
            return mean, np.zeros((X.shape[0], N))
        if quad is None:
            quad = self.quad_forms(X, chunk=chunk)
        return mean, self.alpha * np.sqrt(quad)

    def change_marks(self) -> tuple[int, np.ndarray]:
        """(layout, per-arm update counts): a score computed from arm a's A^-1 is current while
        the layout is the same and a's count has not moved (every change of A^-1 is an update;
        the refactorisation inside one only removes rounding drift)."""
        return self._layout, np.array(self._counts, dtype=np.int64)

    def quad_forms(self, X: np.ndarray, arms: Optional[np.ndarray] = None,
                   chunk: int = 128) -> np.ndarray:
        """x'A_a^-1 x (>= 0) for every context (row of X) and every arm, or only the arms
        whose indices are ``arms``: shape (len(X), N or len(arms))."""
        n, d = X.shape[0], self.dim
        cols = np.arange(self._n) if arms is None else np.asarray(arms, dtype=np.intp)
        quad = np.empty((n, len(cols)))
        # The packed product pays for forming every context's weights only once the stack
        # is past the byte threshold (below it the stack is cache-resident: the plain products
        # were faster, 1-3.5 ms against 2-6 ms for a 1024-context plan at N = 16, d = 32); a
        # few arms (a plan's arms updated since the last one) take the plain products too.
        if self._packed_numpy and arms is None:
            # Many arms: x'A^-1x = w(x) . packed(A^-1) for all contexts and arms is one
            # (n x d(d+1)/2) @ (d(d+1)/2 x N) product (at N=256, d=32, 1024 contexts: 22 ms
            # instead of 58 ms for the per-arm products below, one thread).
            packed = np.take(np.ascontiguousarray(self._A_inv[:self._n]).reshape(-1, d * d),
                             self._triu_flat, axis=1)
            for s in range(0, n, chunk):
                Xc = X[s:s + chunk]
                outer = (Xc[:, :, None] * Xc[:, None, :]).reshape(len(Xc), d * d)
                w = np.take(outer, self._triu_flat, axis=1)
                w *= self._triu_weight
                quad[s:s + chunk] = w @ packed.T
        else:
            A_inv = self._A_inv[: self._n] if arms is None else self._A_inv[cols]
            A_inv_rows = np.ascontiguousarray(A_inv).reshape(len(cols) * d, d)
            # Chunked so the (rows, arms, d) intermediate stays a few MB.
            for s in range(0, n, chunk):
                Xc = X[s:s + chunk]
                Y = (Xc @ A_inv_rows.T).reshape(len(Xc), len(cols), d)
                quad[s:s + chunk] = np.einsum("nad,nd->na", Y, Xc)
        # x'A^-1 x >= 0 in exact arithmetic; the clip only absorbs rounding.
        np.maximum(quad, 0.0, out=quad)
        return quad

    def decide(self, x: np.ndarray, penalty: Optional[np.ndarray] = None,
               forced_index: Optional[int] = None, reason: str = "forced") -> Decision:
        """The arm with the highest mean + bonus - penalty (ties broken by the injected RNG).

        ``forced_index`` overrides the choice (forced or epsilon exploration, named by
        ``reason``) but the scores are still computed so the decision can be explained."""
        if self._n == 0:
            raise UnknownArmError("cannot route: the catalogue has no arms")
        x = self._check_context(x)
        n_ties = 0  # counted by the C core; 0: not counted (numpy's path)
        if self._thompson or self._scoring_bytes > _C_SCORING_MAX_BYTES:
            mean, bonus = self.mean_and_bonus(x)
            if self._thompson:
                # One posterior draw per arm: the sampled score's deviation from the mean is
                # alpha * sqrt(x'A^-1 x) * N(0, 1), so sampling theta_a in full is not needed.
                bonus *= self.rng.standard_normal(self._n)
            score = mean + bonus
            if penalty is not None:
                score -= penalty
            i = int(score.argmax())
        else:
            # The C core: the same numbers as mean_and_bonus (summed in another order), the
            # penalty subtracted, the best arm and its ties found, in one call.
            (mean, bonus, score), i, n_ties = self._kernels.scores(
                self._n, x, self.config.prior_reward, self.alpha, penalty,
                _TIE_TOLERANCE)
        if penalty is None:
            penalty = np.zeros(self._n)
        ids = self._ids_tuple
        if forced_index is not None:
            return Decision(ids[forced_index], forced_index, ids, mean, bonus, penalty, score,
                            reason)
        # Exact ties come from arms that still share the prior (no feedback yet); between
        # trained arms a tie has probability zero with continuous contexts, so only an untried
        # winner pays for the tie check.
        if self._counts[i] == 0:
            if n_ties == 0:
                ties = np.flatnonzero(score >= score[i] - _TIE_TOLERANCE)
                if len(ties) > 1:
                    i = int(ties[self.rng.integers(len(ties))])
            elif n_ties > 1:
                i = self._kernels.tie(int(self.rng.integers(n_ties)))
        return Decision(ids[i], i, ids, mean, bonus, penalty, score)

    # ---- learning ------------------------------------------------------------------------------

    def update(self, arm_id: str, x: np.ndarray, reward: float) -> None:
        self.update_index(self.index_of(arm_id), self._check_context(x), float(reward))

    def update_index(self, i: int, x: np.ndarray, reward: float) -> None:
        """Fold one (context, reward) into arm ``i``; ``x`` must be a float64 vector of dim."""
        cfg = self.config
        r = reward - cfg.prior_reward
        if cfg.discount == 1.0:
            # Sherman-Morrison: (A + xx')^-1 = A^-1 - (A^-1 x)(A^-1 x)' / (1 + x'A^-1 x), and the
            # matching recursive least-squares step theta += k * (r - theta.x), k = A^-1 x / denom,
            # in the C core (the packed scoring row rewritten too): one call, not eight.
            self._kernels.update(i, x, r)
            # A and b are only needed for the exact refactorisation (and the state file), so the
            # sample waits in a short per-arm list and is folded in there: same sums, O(d^2)
            # fewer Python-level array operations per update.
            self._unfolded[i].append((x.copy(), r))
            self._since_refactor[i] += 1
        else:
            # A <- g*A + (1-g)*lambda*I + x x': the ridge part is topped back up so A never
            # loses its lambda floor. That step is full-rank, so Sherman-Morrison does not
            # apply: the arm's inverse is recomputed exactly (O(d^3), discount mode only).
            g = cfg.discount
            A = self._A[i]
            A *= g
            A[np.diag_indices(self.dim)] += (1.0 - g) * cfg.ridge_lambda
            A += np.multiply.outer(x, x)
            self._b[i] *= g
            self._b[i] += r * x
            self._since_refactor[i] = cfg.refactor_every
        self._counts[i] += 1
        if cfg.alpha_initial is not None:
            self._updates += 1
            self.alpha = self._alpha_after(self._updates)
        if self._since_refactor[i] >= cfg.refactor_every:
            self.refactor(i)

    def _fold(self, i: int) -> None:
        """Add the samples waiting in arm ``i``'s list to its exact A and b."""
        waiting = self._unfolded[i]
        if waiting:
            X = np.array([x for x, _ in waiting])
            R = np.array([r for _, r in waiting])
            self._A[i] += X.T @ X
            self._b[i] += X.T @ R
            waiting.clear()

    def refactor(self, i: int) -> None:
        """Recompute arm ``i``'s A^-1 (and theta) exactly from A and b, discarding drift."""
        self._fold(i)
        A_inv = np.linalg.inv(self._A[i])
        self._A_inv[i] = 0.5 * (A_inv + A_inv.T)
        self._theta[i] = self._A_inv[i] @ self._b[i]
        self._sync_scoring(i)
        self._since_refactor[i] = 0

    # ---- state ---------------------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        n = self._n
        for i in range(n):
            self._fold(i)
        return {"A": self._A[:n].copy(), "A_inv": self._A_inv[:n].copy(),
                "b": self._b[:n].copy(), "theta": self._theta[:n].copy(),
                "counts": np.array(self._counts, dtype=np.int64),
                "since_refactor": np.array(self._since_refactor, dtype=np.int64)}

    def load_state(self, arm_ids: list[str], arrays: dict[str, np.ndarray]) -> None:
        """Replace every arm with saved ones (shapes checked by the caller's format reader)."""
        n = len(arm_ids)
        self._ids, self._index, self._n = [], {}, 0
        self._counts, self._since_refactor, self._unfolded = [], [], []
        self._allocate(max(8, n))
        for arm_id in arm_ids:
            self.add_arm(arm_id)
        self._A[:n] = arrays["A"]
        self._A_inv[:n] = arrays["A_inv"]
        self._b[:n] = arrays["b"]
        self._counts = [int(c) for c in arrays["counts"]]
        self._since_refactor = [int(c) for c in arrays["since_refactor"]]
        # theta is derivable but saved: recomputing it in another order could change last bits.
        self._theta[:n] = arrays["theta"]
        for i in range(n):
            self._sync_scoring(i)
        # The schedule resumes where the saved arms' evidence left it.
        self._updates = sum(self._counts)
        self.alpha = self._alpha_after(self._updates)
