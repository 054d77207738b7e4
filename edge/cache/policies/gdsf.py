"""GreedyDual-Size-Frequency (Cherkasova, 1998): evict the lowest ``L + frequency * cost / size``.

``frequency`` counts requests since the key last became resident; ``L`` is the priority of the
last evicted key (dynamic aging, as in LFU-DA). ``cost`` says what a miss costs:

- ``load_cost`` (default): the index's per-object load cost, i.e. the cost the loader returned or,
  without one, the measured load time in seconds. A cheap-to-reload, large object goes first;
  this is what a pager that wants to minimise time spent loading should use.
- ``uniform``: cost 1, the classic GDSF that maximises the object hit ratio by favouring small
  objects.
- ``size``: cost = size, so the weight is 1 and the policy is exactly LFU-DA (maximises the byte
  hit ratio); offered so one policy name can sweep the trade-off.

A negative or non-finite load cost is read as 0 (the object is free to reload), so one bad
loader value cannot push every later priority to infinity through ``L``. Ties go to the least
recently used key. Heap with lazy deletion: see ``_priority``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

from edge.cache.policies._priority import GreedyDualPolicy
from edge.cache.policies.registry import register_policy

COSTS = ("load_cost", "uniform", "size")


@register_policy
class GDSFPolicy(GreedyDualPolicy):
    name = "gdsf"

    @dataclass(frozen=True)
    class Params:
        cost: Literal["load_cost", "uniform", "size"] = "load_cost"

        def __post_init__(self) -> None:
            if self.cost not in COSTS:
                raise ValueError(f"cost must be one of {', '.join(map(repr, COSTS))}, "
                                 f"got {self.cost!r}")

    def _weight(self, key: Hashable, slot: int, size: int) -> float:
        mode = self.params.cost
        if mode == "size":
            return 1.0
        if mode == "uniform":
            return 1.0 / size
        cost = self.view.load_cost(slot)
        return cost / size if cost > 0 and math.isfinite(cost) else 0.0
