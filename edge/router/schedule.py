"""Epoch boundaries and forced-exploration rounds of the POLAR controllers.

``polar``: every epoch has ``epoch_length`` requests and no forced rounds.
``polar+``: epoch e has L_e = min(L0 * 2^e, max_epoch_length) requests, of which
m_e = min(L_e, ceil(scale * sqrt(L_e))) are forced-exploration rounds, spread evenly through the
epoch (round k of m_e sits at floor((k + 1/2) * L_e / m_e)) so exploration is not bunched.
Summed over epochs that is O(sqrt(T)) forced rounds, the rate the POLAR+ bound tolerates.
"""

from __future__ import annotations

import math

from edge.router.config import PolarConfig


class EpochSchedule:
    def __init__(self, config: PolarConfig) -> None:
        self.config = config
        self.epoch = 0
        self.step = 0  # requests routed in the current epoch
        self._start_epoch()

    @property
    def length(self) -> int:
        return self._length

    @property
    def forced_rounds(self) -> frozenset[int]:
        return self._forced

    def _start_epoch(self) -> None:
        cfg = self.config
        if cfg.mode == "polar+":
            self._length = min(cfg.epoch_length * 2 ** min(self.epoch, 62), cfg.max_epoch_length)
            m = min(self._length, math.ceil(cfg.forced_exploration_scale * math.sqrt(self._length)))
            self._forced = frozenset(int((k + 0.5) * self._length / m) for k in range(m))
        else:
            self._length = cfg.epoch_length
            self._forced = frozenset()

    def is_forced(self) -> bool:
        """Whether the request about to be routed is a forced-exploration round."""
        return self.step in self._forced

    def advance(self) -> bool:
        """Count one routed request; True when it closed the epoch (the next one has begun)."""
        self.step += 1
        if self.step < self._length:
            return False
        self.epoch += 1
        self.step = 0
        self._start_epoch()
        return True

    def state(self) -> dict:
        return {"epoch": self.epoch, "step": self.step}

    def restore(self, state: dict) -> None:
        epoch, step = int(state["epoch"]), int(state["step"])
        if epoch < 0 or step < 0:
            raise ValueError(f"bad epoch schedule state {state!r}")
        self.epoch, self.step = epoch, 0
        self._start_epoch()
        if step >= self._length:
            raise ValueError(f"bad epoch schedule state {state!r}: step beyond epoch length "
                             f"{self._length}")
        self.step = step
