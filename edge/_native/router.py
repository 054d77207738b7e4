"""The C core's router arithmetic (``edge_linucb_scores``, ``edge_linucb_update``,
``edge_paging_penalty``): one call each instead of a numpy call per step, which is what a
decision costs when the caches are cold (a daemon between requests). Arrays made once (the
arms' rows) are checked once, when given; per-call arrays are checked on every call
(``_vector``); statuses always."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from edge._native.index import _OK, _raise, ffi, lib

_FLOAT64 = np.dtype(np.float64)
_BOOL = np.dtype(np.bool_)


def _vector(array: Any, n: int, name: str, dtype: np.dtype = _FLOAT64,
            ctype: str = "double[]") -> Any:
    """A C buffer of ``array`` after checking it is ``n`` numbers of ``dtype``: cffi reads
    whatever bytes it is given, so a float32 or short array must never reach the C core.
    (``is`` on the dtype: numpy's built-in dtypes are singletons, and this runs on every
    decision; an equal dtype that is not the singleton is merely converted.)"""
    if type(array) is not np.ndarray or array.dtype is not dtype \
            or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array, dtype=dtype)
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {array.shape}")
    return ffi.from_buffer(ctype, array), array


def double_pointer(array: np.ndarray) -> Any:
    """A ``double *`` into a C-contiguous float64 array (kept alive by the caller)."""
    if array.dtype != np.float64 or not array.flags.c_contiguous:
        raise ValueError(f"expected a C-contiguous float64 array, got {array.dtype}")
    return ffi.cast("double *", ffi.from_buffer(array))


class LinUCBKernels:
    """One LinUCB's decision and update in the C core. ``set_arrays`` gives it the arms' blocks
    (theta then A^-1, (capacity, (d + 1) d)) and packed scoring rows (capacity, d + d(d+1)/2),
    C-contiguous float64, again whenever they are reallocated."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._weights = np.empty(dim * (dim + 1) // 2)  # the packed layout's x_i x_j
        self._weights_ptr = double_pointer(self._weights)
        self._scratch_array = np.empty(2 * dim)
        self._scratch = double_pointer(self._scratch_array)
        self._best = ffi.new("int32_t *")
        self._n_ties = ffi.new("uint32_t *")
        self._ties: Any = ffi.new("int32_t[]", 8)
        self._rows: Any = ffi.NULL
        self._row_len = 0
        self._packed = False

    def set_arrays(self, blocks: np.ndarray, packed_rows: np.ndarray, packed: bool) -> None:
        """The arrays, and which of them scores (``packed``: the packed rows)."""
        self._arrays = (blocks, packed_rows)  # kept alive with their pointers
        self._blocks, self._block_len = double_pointer(blocks), blocks.shape[1]
        self._packed_rows, self._packed_len = double_pointer(packed_rows), packed_rows.shape[1]
        rows = packed_rows if packed else blocks
        self._rows, self._row_len = double_pointer(rows), rows.shape[1]
        self._packed = packed
        if len(self._ties) < rows.shape[0]:
            self._ties = ffi.new("int32_t[]", rows.shape[0])

    def update(self, i: int, x: np.ndarray, reward: float) -> None:
        """Sherman-Morrison on arm ``i``'s block (``reward`` centred), and its packed row when
        scoring from those."""
        x_buf, x = _vector(x, self.dim, "the context")
        status = lib.edge_linucb_update(
            self._blocks + i * self._block_len, self.dim, x_buf, reward,
            self._scratch, self._packed_rows + i * self._packed_len if self._packed else ffi.NULL)
        if status != _OK:
            _raise(status, f"edge_linucb_update of arm {i} (its A^-1 is not positive definite)")

    def scores(self, n: int, x: np.ndarray, prior: float, alpha: float,
               penalty: Optional[np.ndarray], tie_tolerance: float
               ) -> tuple[np.ndarray, int, int]:
        """((3, n) array of mean, bonus, score; the best arm's index; how many arms score
        within ``tie_tolerance`` of it, ``tie(k)`` giving the k-th). ``x``: float64 (dim,)."""
        x_buf, x = _vector(x, self.dim, "the context")
        penalty_buf = ffi.NULL
        if penalty is not None:
            penalty_buf, penalty = _vector(penalty, n, "the penalty")
        out = np.empty((3, n))
        out_ptr = ffi.cast("double *", ffi.from_buffer(out))
        status = lib.edge_linucb_scores(
            self._rows, n, self._row_len, self.dim, self._packed, x_buf, self._weights_ptr, prior,
            alpha, penalty_buf, out_ptr, out_ptr + n, out_ptr + 2 * n, tie_tolerance, self._best,
            self._ties, self._n_ties)
        if status != _OK:
            _raise(status, "edge_linucb_scores")
        return out, self._best[0], self._n_ties[0]

    def tie(self, k: int) -> int:
        """The k-th arm (index order) of the last ``scores``' ties."""
        return self._ties[k]


def paging_penalty(charge: np.ndarray, share: np.ndarray, left: float,
                   extra: Optional[np.ndarray], resident: np.ndarray) -> np.ndarray:
    """out_a = 0 if resident_a else charge_a / (1 + left share_a) + extra_a (float64 arrays of
    one length; ``resident`` bool)."""
    n = len(charge)
    charge_buf, charge = _vector(charge, n, "charge")
    share_buf, share = _vector(share, n, "share")
    extra_buf = ffi.NULL
    if extra is not None:
        extra_buf, extra = _vector(extra, n, "extra")
    resident_buf, resident = _vector(resident, n, "resident", _BOOL, "uint8_t[]")
    out = np.empty(n)
    status = lib.edge_paging_penalty(n, charge_buf, share_buf, left, extra_buf, resident_buf,
                                     ffi.from_buffer("double[]", out))
    if status != _OK:
        _raise(status, "edge_paging_penalty")
    return out
