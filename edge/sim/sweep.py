"""One ``edge sim`` run: every policy at every budget, placed between LRU and an offline reference.

The reference is Belady's MIN when every request has the same size (then it is the exact optimum
of demand paging, in objects of that size) and the PFOO-L upper bound otherwise (the optimum is
NP-hard with variable sizes; PFOO-L is a bound no policy reaches, so "gap closed" against it is
conservative). ``gap closed = (policy - lru) / (optimal - lru)`` in hits: 0 is LRU, 1 the
reference. LRU is always replayed, listed or not, because every gap is measured from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge.config import CacheConfig
from edge.paging_cost import PagingCostModel
from edge.sim.oracle import belady_hits, gap_closed, pfoo_l_hits
from edge.sim.replay import ReplayResult, replay_arrays
from edge.sim.specs import Budget
from edge.sim.trace import Trace, check_byte_total

OPTIMAL_KINDS = {
    "belady": "Belady MIN (exact optimum, uniform sizes)",
    "pfoo_l": "PFOO-L upper bound (variable sizes; not achievable)",
}

# (requests replayed so far over the whole sweep, requests in the whole sweep) -> None
SweepProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class SweepRow:
    result: ReplayResult
    budget_label: str
    optimal_hits: int | None  # None when the oracle was skipped
    lru_hits: int

    @property
    def gap_closed(self) -> float | None:
        if self.optimal_hits is None:
            return None
        return gap_closed(self.result.hits, self.lru_hits, self.optimal_hits)

    @property
    def optimal_hit_ratio(self) -> float | None:
        if self.optimal_hits is None or not self.result.requests:
            return None
        return self.optimal_hits / self.result.requests


@dataclass(frozen=True)
class Sweep:
    rows: list[SweepRow]  # policy-major, in the order the policies and budgets were given
    optimal_kind: str | None  # a key of OPTIMAL_KINDS, or None when skipped
    budgets: list[Budget]
    policies: list[str]  # labels, LRU first if it had to be added


def uniform_size(sizes: np.ndarray) -> int | None:
    """The one size every request has, or None."""
    if len(sizes) == 0:
        return None
    first = int(sizes[0])
    return first if bool((sizes == first).all()) else None


def optimal_hits(keys: np.ndarray, sizes: np.ndarray, budget: int) -> tuple[str, int]:
    """(kind, hits) of the offline reference at ``budget`` bytes."""
    size = uniform_size(sizes)
    if size is not None:
        return "belady", belady_hits(keys, budget // size)
    return "pfoo_l", pfoo_l_hits(keys, sizes, budget)


def with_lru(policies: Sequence[CacheConfig]) -> list[CacheConfig]:
    """``policies`` with plain LRU put first if it is not among them."""
    policies = list(policies)
    if not any(p.policy == "lru" and not p.policy_params for p in policies):
        policies.insert(0, CacheConfig(policy="lru"))
    return policies


def run_sweep(trace: Trace, policies: Sequence[CacheConfig], budgets: Sequence[Budget], *,
              profile: PagingCostModel | None = None, with_optimal: bool = True,
              progress: SweepProgress | None = None) -> Sweep:
    """Replay every policy at every budget (policy-major), plus LRU and the reference."""
    check_byte_total(trace.sizes)
    policies = with_lru(policies)
    total = len(trace) * len(policies) * len(budgets)
    done_before = 0

    def cell_progress(done: int, _cell_total: int) -> None:
        if progress:
            progress(done_before + done, total)

    results: dict[tuple[int, int], ReplayResult] = {}
    for p, spec in enumerate(policies):
        for b, budget in enumerate(budgets):
            results[p, b] = replay_arrays(trace.keys, trace.sizes, spec, budget.nbytes,
                                          times=trace.times, load_costs=trace.load_costs,
                                          profile=profile, progress=cell_progress)
            done_before += len(trace)
    lru_index = next(i for i, p in enumerate(policies) if p.policy == "lru" and not p.policy_params)
    kind = None
    optimal: list[int | None] = [None] * len(budgets)
    if with_optimal:
        for b, budget in enumerate(budgets):
            kind, optimal[b] = optimal_hits(trace.keys, trace.sizes, budget.nbytes)
    rows = [SweepRow(results[p, b], budget.label, optimal[b], results[lru_index, b].hits)
            for p in range(len(policies)) for b, budget in enumerate(budgets)]
    return Sweep(rows, kind, list(budgets), [p.policy_label for p in policies])
