"""The epoch controller's quadratic forms over its context window, kept between plans.

A plan scores every context of the window against every arm, mean + alpha * sqrt(x'A_a^-1 x).
The means are one (W x d) @ (d x N) product; the W x N quadratic forms, d(d+1)/2 terms each,
are most of a plan's time (at N = 256, d = 32, 512 contexts, a plan every 64 requests: about
5 ms, 80 us a request). Between two plans only the contexts written since (one epoch's worth,
the slots just before the ring's next one) and the arms updated since have changed, so only
those rows and columns are recomputed (the changed columns by the per-arm products, so equal to
a full recomputation up to rounding: tested to 1e-10). A changed arm set (indices may move) or a
restored window recomputes everything. Memory: one float64 per slot and arm (4 MiB at 512 slots
and N = 1024). Nothing is done per request: what changed is read off the ring's position, the
count of contexts written and the arms' update counts when a plan asks.
"""

from __future__ import annotations

import numpy as np

from edge.router.linucb import LinUCB


class WindowQuadForms:
    """x'A_a^-1 x for each slot of a ring window of contexts and each arm of a LinUCB."""

    def __init__(self, window_len: int) -> None:
        self._quad = np.zeros((window_len, 0))
        self._layout: int | None = None  # the LinUCB layout the columns belong to
        self._versions = np.zeros(0, dtype=np.int64)
        self._written = 0  # contexts written when the forms were last brought up to date

    def invalidate(self) -> None:
        """Recompute everything at the next call (the window was replaced)."""
        self._layout = None

    def compute(self, linucb: LinUCB, window: np.ndarray, filled: int, next_slot: int,
                written: int) -> np.ndarray:
        """The forms of the first ``filled`` slots of the ring ``window`` (shape (filled,
        n_arms)), whose next write goes to ``next_slot`` and which has had ``written`` contexts
        written in all; a view, valid until the next call."""
        layout, versions = linucb.change_marks()
        size = len(self._quad)
        stale = np.zeros(size, dtype=bool)
        if layout != self._layout or self._quad.shape[1] != len(versions):
            self._quad = np.zeros((size, len(versions)))
            stale[:] = True
            changed = np.zeros(0, dtype=np.intp)
        else:
            stale[(next_slot - np.arange(1, min(written - self._written, size) + 1)) % size] = True
            changed = np.flatnonzero(versions != self._versions)
        stale = stale[:filled]
        rows = np.flatnonzero(stale)
        if len(rows):
            self._quad[rows] = linucb.quad_forms(window[rows])
        if len(changed):
            kept = np.flatnonzero(~stale)
            if len(kept):
                self._quad[np.ix_(kept, changed)] = linucb.quad_forms(window[kept], changed)
        self._layout, self._versions, self._written = layout, versions, written
        return self._quad[:filled]
