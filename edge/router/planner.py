"""Choose the resident set for the next epoch: monotone submodular maximisation under a knapsack.

For recent contexts x_1..x_n and estimated utilities u(x, a) (optimistic: mean + bonus), the value
of keeping set S resident is

    F(S) = sum_x max( max_{a in S} u(x, a),  max_a (u(x, a) - lambda * c_a) )

where the second term is what routing x costs when its best adapter must be paged in (c_a is the
modelled paging time). F is a facility-location function with a per-context floor: monotone and
submodular. Under the byte budget we run two greedy passes, one by marginal gain per byte and one
by raw marginal gain, and keep the better: max of the two is at least (1 - 1/e)/2 ~ 0.316 of the
optimum (Leskovec et al., KDD 2007, "Cost-effective outbreak detection"); with equal sizes both
passes are the classic greedy, (1 - 1/e). Bytes left after the gains run out go to the
adapters with the highest total estimated utility: residency costs nothing once the budget is
there, and they may save a page-in.
"""

from __future__ import annotations

import numpy as np


def plan_resident_set(utility: np.ndarray, paging_penalty: np.ndarray, sizes: np.ndarray,
                      budget_bytes: int) -> list[int]:
    """Arm indices to keep resident, in priority order; their sizes sum to <= budget_bytes.

    ``utility``: (contexts, arms) estimated utilities; ``paging_penalty``: lambda * c_a per arm
    (reward units); ``sizes``: bytes per arm. Arms bigger than the budget are never chosen.
    """
    utility = np.asarray(utility, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    penalty = np.asarray(paging_penalty, dtype=np.float64)
    if utility.ndim != 2 or utility.shape[1] != len(sizes) or penalty.shape != sizes.shape:
        raise ValueError(f"shapes disagree: utility {utility.shape}, penalty {penalty.shape}, "
                         f"sizes {sizes.shape}")
    if np.any(sizes <= 0):
        raise ValueError("every arm size must be positive")
    if budget_bytes <= 0 or utility.shape[1] == 0:
        return []
    if utility.shape[0] == 0:
        chosen: list[int] = []
    else:
        floor = (utility - penalty).max(axis=1)
        by_density = _greedy(utility, floor, sizes, budget_bytes, per_byte=True)
        by_gain = _greedy(utility, floor, sizes, budget_bytes, per_byte=False)
        chosen = max(by_density, by_gain,
                     key=lambda s: (_value(utility, floor, s), -sum(sizes[s])))
    return _fill(chosen, utility, sizes, budget_bytes)


def objective(utility: np.ndarray, paging_penalty: np.ndarray, chosen: list[int]) -> float:
    """F(S) minus its value for the empty set (what the greedy passes maximise)."""
    utility = np.asarray(utility, dtype=np.float64)
    floor = (utility - np.asarray(paging_penalty)).max(axis=1)
    return _value(utility, floor, chosen)


def _value(utility: np.ndarray, floor: np.ndarray, chosen: list[int]) -> float:
    if not chosen:
        return 0.0
    best = np.maximum(utility[:, chosen].max(axis=1), floor)
    return float((best - floor).sum())


def _greedy(utility: np.ndarray, floor: np.ndarray, sizes: np.ndarray, budget: int,
            per_byte: bool) -> list[int]:
    current = floor.copy()
    left = budget
    available = sizes <= budget
    chosen: list[int] = []
    while True:
        candidates = np.flatnonzero(available & (sizes <= left))
        if len(candidates) == 0:
            break
        gains = np.maximum(utility[:, candidates] - current[:, None], 0.0).sum(axis=0)
        keys = gains / sizes[candidates] if per_byte else gains
        k = int(keys.argmax())
        if gains[k] <= 0.0:
            break
        a = int(candidates[k])
        chosen.append(a)
        available[a] = False
        left -= int(sizes[a])
        np.maximum(current, utility[:, a], out=current)
    return chosen


def _fill(chosen: list[int], utility: np.ndarray, sizes: np.ndarray, budget: int) -> list[int]:
    left = budget - int(sizes[chosen].sum()) if chosen else budget
    taken = set(chosen)
    total = utility.sum(axis=0) if utility.shape[0] else np.zeros(len(sizes))
    out = list(chosen)
    for a in np.argsort(-total, kind="stable"):
        a = int(a)
        if a not in taken and sizes[a] <= left:
            out.append(a)
            left -= int(sizes[a])
    return out
