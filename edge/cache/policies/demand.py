"""Router demand: evict the adapter the router expects the fewest requests for.

The router's epoch controller measures, at each epoch end, each adapter's share of its recent
requests whose best adapter it is (``Router.demand``), and ``Runtime`` hands it to the cache
(``PagedCache.set_demand``). This policy evicts the lowest share first and, among equal shares
(most often 0: the adapters no recent request prefers), the least recently used first. Without
a router every share is 0 and it is LRU.

Why: with POLAR+'s paging charge at 0 (``router.polar.paging_weight: 0``, and
``prefetch_plan: false``) the router routes exactly as the cache-unaware learner with the same
settings does, so the rewards are the same request for request and only the paging differs;
evicting by what the router will route to pages less than the classical policies, which see
only the past requests (docs/router-results.md, "Routing as the learner does, paging by its
demand").
``one_hit_first: true`` (default false) evicts, among the adapters of share 0, those not
requested again since they were loaded before the others (LRU within each group): S3-FIFO's
filter of one-hit adapters (it paged less than the LRU order in 69 of 88 tuning instances;
docs/router-results.md, "S3-FIFO's one-hit filter inside the demand order"). The routing
benchmark's learner-routes form and ``policies/demand.yaml`` set it.
Each decision reads every unpinned resident: meant for adapter catalogues (hundreds to a few
thousand residents), not for object caches of millions.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from edge.cache.policies.base import EvictionPolicy
from edge.cache.policies.registry import register_policy


@register_policy
class DemandPolicy(EvictionPolicy):
    name = "demand"
    needs_router = True

    @dataclass(frozen=True)
    class Params:
        one_hit_first: bool = False

        def __post_init__(self) -> None:
            if not isinstance(self.one_hit_first, bool):
                raise ValueError(f"one_hit_first must be true or false, "
                                 f"got {self.one_hit_first!r}")

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self._resident = 0  # how many slots to ask the LRU walk for

    def on_insert(self, key: Hashable, slot: int, size: int) -> None:
        self._resident += 1

    def on_evict(self, key: Hashable, slot: int) -> None:
        self._resident -= 1

    def victims(self, need_bytes: int) -> list[Hashable]:
        view = self.view
        one_hit_first = self.params.one_hit_first
        unwanted: list[Hashable] = []  # share 0, least recently used first
        unwanted_hit_again: list[Hashable] = []  # with one_hit_first: share 0, hit since loaded
        wanted: list[tuple[float, Hashable]] = []
        freed = 0
        slots = view.candidates(self._resident, 0)  # every unpinned slot, LRU end first
        # Requested again since loaded: the C core counts each resident's accesses since its
        # load, the load included (read only when asked for).
        if one_hit_first:
            accesses = view.features(slots)[:, view.feature_names.index("accesses")]
            hit_again = (accesses > 1).tolist()
        else:
            hit_again = [False] * len(slots)
        for slot, again in zip(slots, hit_again, strict=True):
            key = view.key_of_slot(int(slot))
            share = view.demand_of(key)
            if share > 0.0:
                wanted.append((share, key))
                continue
            if again:
                unwanted_hit_again.append(key)
                continue
            unwanted.append(key)
            freed += view.size_of(key)
            if freed >= need_bytes:  # the common case: enough bytes nobody is expected to ask for
                return unwanted
        wanted.sort(key=lambda pair: pair[0])  # stable: LRU order among equal shares
        return unwanted + unwanted_hit_again + [key for _, key in wanted]

    def victim(self) -> Hashable | None:
        keys = self.victims(1)
        return keys[0] if keys else None
