"""LFU with dynamic aging (LFU-DA; Arlitt et al., 2000): evict the lowest ``frequency + L``.

``frequency`` counts the requests for a key since it last became resident (1 on insert, +1 per
hit). ``L`` is the priority of the last evicted key, so it only grows, and a newly requested key
starts at ``1 + L``: a key that piled up hits long ago but is requested no more falls behind and
ages out, which plain LFU never does (cache pollution). Ties go to the least recently used key.
``aging: false`` gives plain in-cache LFU (``L`` stays 0) for comparison.

Per-key frequencies are the policy's own (not the index's access counter) so they restart at 1
when a key comes back, as LFU-DA specifies. Heap with lazy deletion: see ``_priority``.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from edge.cache.policies._priority import GreedyDualPolicy
from edge.cache.policies.registry import register_policy


@register_policy
class LFUPolicy(GreedyDualPolicy):
    name = "lfu"

    @dataclass(frozen=True)
    class Params:
        aging: bool = True  # false: plain LFU, no dynamic aging

        def __post_init__(self) -> None:
            if not isinstance(self.aging, bool):
                raise ValueError(f"aging must be true or false, got {self.aging!r}")

    def _weight(self, key: Hashable, slot: int, size: int) -> int:
        return 1

    def _uses_aging(self) -> bool:
        return self.params.aging
