"""The C core's learned-policy inputs (``edge_learned_inputs``): network input rows from a
feature matrix in one call (``edge.learned.network.model_inputs`` is the numpy definition, used
for training; the tests hold the two together). Serving asks for a decision's candidates and
their rows at once (``NativeIndex.decision_inputs``, ``edge_learned_decision_inputs``, which
applies this same transform)."""

from __future__ import annotations

import numpy as np

from edge._native.index import _OK, N_FEATURES, _raise, ffi, lib

N_LEARNED_INPUTS: int = lib.EDGE_N_LEARNED_INPUTS


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
