"""Reuse structure of a key sequence, computed with numpy (no Python loop over requests).

Shared by the oracle bounds (which need each request's next access) and the oracleGeneral writer
(which stores it in every record).
"""

from __future__ import annotations

import numpy as np

NO_NEXT_ACCESS = -1


def next_access_indices(keys: np.ndarray) -> np.ndarray:
    """For each request i, the 0-based index of the next request of the same key, or -1.

    A stable argsort groups equal keys while keeping their request order, so consecutive
    entries of one group are consecutive accesses of one object: O(n log n), all in numpy.
    """
    keys = np.asarray(keys)
    n = len(keys)
    nxt = np.full(n, NO_NEXT_ACCESS, dtype=np.int64)
    if n < 2:
        return nxt
    order = np.argsort(keys, kind="stable")
    same_key = keys[order[:-1]] == keys[order[1:]]
    nxt[order[:-1][same_key]] = order[1:][same_key]
    return nxt
