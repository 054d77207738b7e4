"""The C core's priority-stack depth histograms for the MoE routing analysis
(``edge_priority_stack_hist``, ``edge_lookahead_stack_hist``; definitions in native/include/edge.h
and edge/moe/analysis.py)."""

from __future__ import annotations

import numpy as np

from edge._native.index import _OK, _raise, ffi, lib


def _experts(values: np.ndarray, n_experts: int, what: str) -> np.ndarray:
    a = np.ascontiguousarray(values, dtype=np.int32)
    if a.size and (int(a.min()) < 0 or int(a.max()) >= n_experts):
        raise ValueError(f"{what}: experts must lie in 0..{n_experts - 1}, got "
                         f"{int(a.min())}..{int(a.max())}")
    return a


def _check(n_experts: int, cap: int) -> None:
    if n_experts < 1 or cap < 1:
        raise ValueError(f"n_experts and cap must be >= 1, got {n_experts} and {cap}")


def priority_stack_hist(uses: np.ndarray, after: np.ndarray, n_experts: int,
                        cap: int) -> list[int]:
    """Depth histogram (cap + 1 counts) of a priority policy: ``uses[i]``'s expert has priority
    ``after[i]`` from use i on (higher = kept longer)."""
    _check(n_experts, cap)
    u = _experts(np.ravel(uses), n_experts, "uses")
    p = np.ascontiguousarray(np.ravel(after), dtype=np.int64)
    if len(p) != len(u):
        raise ValueError(f"uses ({len(u)}) and after ({len(p)}) must have the same length")
    hist = np.empty(cap + 1, dtype=np.uint64)
    status = lib.edge_priority_stack_hist(
        ffi.from_buffer("int32_t[]", u), ffi.from_buffer("int64_t[]", p), len(u), n_experts,
        cap, ffi.from_buffer("uint64_t[]", hist, require_writable=True))
    if status != _OK:
        _raise(status, "edge_priority_stack_hist")
    return hist.tolist()


def lookahead_stack_hist(tokens: np.ndarray, m: int, n_experts: int, cap: int) -> list[int]:
    """Depth histogram (cap + 1 counts) of SCH's m-token-lookahead cache over ``tokens``
    (n_tokens, top_k)."""
    _check(n_experts, cap)
    if m < 1:
        raise ValueError(f"the window m must be >= 1, got {m}")
    t = _experts(tokens, n_experts, "tokens")
    if t.ndim != 2 or t.shape[1] < 1:
        raise ValueError(f"tokens must be (n_tokens, top_k) with top_k >= 1, got {t.shape}")
    hist = np.empty(cap + 1, dtype=np.uint64)
    status = lib.edge_lookahead_stack_hist(
        ffi.from_buffer("int32_t[]", t), t.shape[0], t.shape[1], n_experts, m, cap,
        ffi.from_buffer("uint64_t[]", hist, require_writable=True))
    if status != _OK:
        _raise(status, "edge_lookahead_stack_hist")
    return hist.tolist()
