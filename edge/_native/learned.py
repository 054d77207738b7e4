"""The C core's learned-policy inputs (``edge_learned_inputs``): network input rows from a
feature matrix in one call (``edge.learned.network.model_inputs`` is the numpy definition, used
for training; the tests hold the two together). Serving asks for a decision's candidates and
their rows at once (``NativeIndex.decision_inputs``, ``edge_learned_decision_inputs``, which
applies this same transform), and the network's answer is turned into the decision's order
by ``rank_by_preference`` (``edge_learned_rank``)."""

from __future__ import annotations

import numpy as np

from edge._native.index import _OK, N_FEATURES, _raise, ffi, lib

N_LEARNED_INPUTS: int = lib.EDGE_N_LEARNED_INPUTS
Q_KEEP: int = lib.EDGE_Q_KEEP  # the Q rows' columns (edge/learned/network.py KEEP, EVICT)
Q_EVICT: int = lib.EDGE_Q_EVICT


def learned_inputs(features: np.ndarray, demand: float, free_fraction: float,
                   need_fraction: float) -> np.ndarray:
    """The (n, N_LEARNED_INPUTS) float32 inputs of an (n, N_FEATURES) float32 feature matrix."""
    if type(features) is not np.ndarray or features.dtype != np.float32 \
            or not features.flags.c_contiguous:
        features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != N_FEATURES:
        raise ValueError(f"features must be (n, {N_FEATURES}) float32, got {features.shape}")
    n = len(features)
    out = np.empty((n, N_LEARNED_INPUTS), dtype=np.float32)
    status = lib.edge_learned_inputs(ffi.from_buffer("float[]", features), n, demand,
                                     free_fraction, need_fraction,
                                     ffi.from_buffer("float[]", out, require_writable=True))
    if status != _OK:
        _raise(status, "edge_learned_inputs")
    return out


def rank_by_preference(q: np.ndarray, labels: np.ndarray) -> list[int]:
    """``labels`` (int32, one per row of ``q``) by eviction preference ``q[:, EVICT] -
    q[:, KEEP]`` of the network's (n, 2) float32 Q rows, highest first, equal ones in row order:
    ``labels[np.argsort(-preference, kind="stable")]`` in one C call (a decision's numpy
    subtraction, finiteness check, argsort and gather cost about four times as much).
    ``ValueError`` for a NaN or infinite preference, or rows not of that shape."""
    n = len(labels)
    if type(q) is not np.ndarray or q.dtype != np.float32 or q.shape != (n, 2) \
            or not q.flags.c_contiguous:
        raise ValueError(f"Q rows must be a C-contiguous ({n}, 2) float32 array, one row per "
                         f"label; got {getattr(q, 'shape', type(q).__name__)} "
                         f"{getattr(q, 'dtype', '')}")
    if type(labels) is not np.ndarray or labels.dtype != np.int32 \
            or not labels.flags.c_contiguous:
        labels = np.ascontiguousarray(labels, dtype=np.int32)
    out = ffi.new("int32_t[]", n)
    status = lib.edge_learned_rank(ffi.from_buffer("float[]", q), n,
                                   ffi.from_buffer("int32_t[]", labels), out)
    if status != _OK:
        if status == lib.EDGE_ERR_INVALID:
            raise ValueError("the model answered a non-finite eviction preference")
        _raise(status, "edge_learned_rank")
    return ffi.unpack(out, n)
