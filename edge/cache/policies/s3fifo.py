"""S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction", SOSP'23).

Three FIFO queues: a small one S (``small_fraction`` of the budget, in bytes) that filters
one-hit wonders, a main one M, and a ghost G that remembers keys (not data) recently evicted from
S. Each resident key has a 2-bit frequency: +1 per hit, capped at 3.

- A missed key goes to M if G remembers it (and leaves G), else to the tail of S; frequency 0.
- Evict from S when S holds at least its share of the budget (or M is empty), else from M.
- Evicting from S looks at its head: a key hit at least ``move_to_main_threshold`` times while in
  S moves to the tail of M with its frequency cleared, and the scan goes on; the first other key
  is evicted and remembered in G. If S runs out without a victim, M is evicted from.
- Evicting from M is CLOCK: a head key with frequency > 0 goes back to the tail with its frequency
  decremented; the first key with frequency 0 is evicted (not remembered in G).

Choices where the paper leaves room:

- ``move_to_main_threshold`` defaults to 1, following the paper's text ("accessed at least once"
  since insertion). libCacheSim's S3FIFO.c has since defaulted to 2; set it to compare.
- G is bounded in bytes, by the sizes the remembered keys had: ``ghost_fraction`` of the budget,
  0.9 by default, i.e. as large as M's share, as in the paper and libCacheSim. Bytes rather than
  a count keep "would this key still have been in M" meaningful when sizes vary a lot.
- Pinned keys are passed over in place: a pinned key in S that is not due for promotion stays
  where it is; a pinned key in M keeps its place and its frequency. Passing over them costs
  O(pinned) per eviction.
- An explicit discard (``on_remove``) leaves no ghost: the key was not judged unpopular.

Eviction moves keys between queues before it finds a victim, so it is split in two: ``_plan``
works out, without changing anything, which keys move where and who goes; ``victim()`` returns
the plan's victim, and ``on_evict`` recomputes the same plan and applies it. The plan costs
O(moves + pinned skipped); every move spends a hit (frequency or promotion), so evictions are
O(1) amortised apart from pinned keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from itertools import chain

from edge.cache.policies.base import EvictionPolicy
from edge.cache.policies.registry import register_policy

MAX_FREQ = 3


@dataclass(frozen=True)
class _Plan:
    promote: tuple  # keys moved from S to the tail of M, in order (frequency cleared)
    reinsert: tuple  # keys moved from the head to the tail of M, in order (frequency - 1 each)
    victim: Hashable | None
    from_small: bool


_NO_PLAN = _Plan((), (), None, False)


@register_policy
class S3FIFOPolicy(EvictionPolicy):
    name = "s3fifo"

    @dataclass(frozen=True)
    class Params:
        small_fraction: float = 0.1
        ghost_fraction: float = 0.9
        move_to_main_threshold: int = 1

        def __post_init__(self) -> None:
            if not 0.0 < self.small_fraction < 1.0:
                raise ValueError(f"small_fraction must be between 0 and 1 (exclusive), "
                                 f"got {self.small_fraction!r}")
            if not 0.0 <= self.ghost_fraction <= 10.0:
                raise ValueError(
                    f"ghost_fraction must be between 0 and 10, got {self.ghost_fraction!r}")
            if not 1 <= self.move_to_main_threshold <= MAX_FREQ:
                raise ValueError(f"move_to_main_threshold must be 1, 2 or 3 (the frequency is "
                                 f"capped at {MAX_FREQ}), got {self.move_to_main_threshold!r}")

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self._small: OrderedDict[Hashable, int] = OrderedDict()  # key -> size, head first
        self._main: OrderedDict[Hashable, int] = OrderedDict()
        self._ghost: OrderedDict[Hashable, int] = OrderedDict()
        self._freq: dict[Hashable, int] = {}
        self.small_bytes = self.main_bytes = self.ghost_bytes = 0

    # -- events ---------------------------------------------------------------------------

    def on_insert(self, key: Hashable, slot: int, size: int) -> None:
        self._freq[key] = 0
        ghost_size = self._ghost.pop(key, None)
        if ghost_size is not None:
            self.ghost_bytes -= ghost_size
            self._main[key] = size
            self.main_bytes += size
        else:
            self._small[key] = size
            self.small_bytes += size

    def on_hit(self, key: Hashable, slot: int) -> None:
        freq = self._freq[key]
        if freq < MAX_FREQ:
            self._freq[key] = freq + 1

    def on_evict(self, key: Hashable, slot: int) -> None:
        plan = self._plan()
        if plan.victim != key:  # not what victim() said: evict it where it stands
            plan = _Plan((), (), key, key in self._small)
        self._apply(plan)

    def on_remove(self, key: Hashable, slot: int) -> None:
        self._drop(key)

    def on_resize(self, budget: int) -> None:
        self._trim_ghost()

    # -- the decision ---------------------------------------------------------------------

    def victim(self) -> Hashable | None:
        return self._plan().victim

    def _plan(self) -> _Plan:
        small_first = (self.small_bytes >= self.params.small_fraction * self.view.budget
                       or not self._main)
        if small_first:
            plan = self._plan_small()
            return plan if plan.victim is not None else self._plan_main(plan.promote)
        plan = self._plan_main(())
        if plan.victim is not None:
            return plan
        plan = self._plan_small()  # everything in M is pinned
        return plan if plan.victim is not None else self._plan_main(plan.promote)

    def _plan_small(self) -> _Plan:
        threshold = self.params.move_to_main_threshold
        freq, is_pinned = self._freq, self.view.is_pinned
        promote = []
        for key in self._small:
            if freq[key] >= threshold:
                promote.append(key)
            elif not is_pinned(key):
                return _Plan(tuple(promote), (), key, True)
        return _Plan(tuple(promote), (), None, True)

    def _plan_main(self, promoted: tuple) -> _Plan:
        """CLOCK over M followed by ``promoted`` (which will join M's tail with frequency 0)."""
        freq, is_pinned, main = self._freq, self.view.is_pinned, self._main
        reinsert: list = []
        lap: list = []  # the keys sent to the tail during the current lap, in order
        left: dict[Hashable, int] = {}  # their frequency after the decrement
        for key in chain(main, promoted):
            if is_pinned(key):
                continue
            f = freq[key] if key in main else 0  # a promoted key arrives with frequency 0
            if f == 0:
                return _Plan(promoted, tuple(reinsert), key, False)
            reinsert.append(key)
            lap.append(key)
            left[key] = f - 1
        # Every unpinned key went round once; at most MAX_FREQ - 1 more laps find a 0.
        while lap:
            previous, lap = lap, []
            for key in previous:
                if left[key] == 0:
                    return _Plan(promoted, tuple(reinsert), key, False)
                reinsert.append(key)
                lap.append(key)
                left[key] -= 1
        return _Plan(promoted, (), None, False)

    # -- applying a plan ------------------------------------------------------------------

    def _apply(self, plan: _Plan) -> None:
        small, main, freq = self._small, self._main, self._freq
        for key in plan.promote:
            size = small.pop(key)
            self.small_bytes -= size
            main[key] = size
            self.main_bytes += size
            freq[key] = 0
        for key in plan.reinsert:
            main.move_to_end(key)
            freq[key] -= 1
        key = plan.victim
        size = self._drop(key)
        if plan.from_small and self.params.ghost_fraction > 0:
            self._ghost[key] = size
            self.ghost_bytes += size
            self._trim_ghost()

    def _drop(self, key: Hashable) -> int:
        del self._freq[key]
        size = self._small.pop(key, None)
        if size is not None:
            self.small_bytes -= size
        else:
            size = self._main.pop(key)
            self.main_bytes -= size
        return size

    def _trim_ghost(self) -> None:
        limit = self.params.ghost_fraction * self.view.budget
        while self.ghost_bytes > limit:
            _, size = self._ghost.popitem(last=False)
            self.ghost_bytes -= size

    # -- introspection (tests, diagnostics) -----------------------------------------------

    def queues(self) -> dict[str, list]:
        return {"small": list(self._small), "main": list(self._main), "ghost": list(self._ghost)}
