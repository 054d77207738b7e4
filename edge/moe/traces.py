"""Routing traces: which experts each token chose in each layer, and their two file forms.

A routing trace is an integer array ``routing[t, l, j]``: the j-th of token t's top-k experts in
layer l. Its interchange form is a plain ``.npy`` file of that array (``save_routing`` /
``load_routing``), which the executor writes and which routing dumps from other MoE runtimes can
be turned into with two lines of numpy.

Its simulator form is an ``edge.sim.trace.Trace`` with one request per (layer, expert) use, in
the order the executor runs them (token by token, layer by layer, the top-k in their order), key
``layer << 32 | expert`` (``edge.sim.generate.moe_expert_key``), size the expert's bytes and time
the token index, so ``edge sim`` replays it. ``routing_from_trace`` reads it back: requests with
equal times form one token (times must not decrease), a token's requests must cover the same
layers as every other token's, top_k each.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.errors import TraceError
from edge.fileio import write_atomic
from edge.sim.generate import moe_expert_key
from edge.sim.trace import Trace, read_trace, write_trace

_LOW32 = np.uint64(0xFFFFFFFF)


def validate_routing(routing, source: str) -> np.ndarray:
    """``routing`` as a C-contiguous int64 array, or ``TraceError`` naming ``source``.

    Checks: integer dtype, 3-D ``(tokens, layers, top_k)`` with no empty axis, every id >= 0 and
    below 2**32 (it must fit the key's low half), and no expert twice in one token's top-k of a
    layer (a router picks distinct experts; a duplicate means a corrupt dump).
    """
    a = np.asarray(routing)
    if a.dtype.kind not in "iu":
        raise TraceError(f"{source}: routing must hold integer expert ids, got dtype {a.dtype}")
    if a.ndim != 3:
        raise TraceError(f"{source}: routing must be 3-D (tokens, layers, top_k), got shape "
                         f"{a.shape}")
    if 0 in a.shape:
        raise TraceError(f"{source}: routing has an empty axis, shape {a.shape} "
                         "(tokens, layers, top_k)")
    if a.dtype.kind == "i" and a.min() < 0:
        t, layer, j = np.argwhere(a < 0)[0]
        raise TraceError(f"{source}: negative expert id {a[t, layer, j]} at token {t}, "
                         f"layer {layer}, position {j}")
    if int(a.max()) > 0xFFFFFFFF:
        raise TraceError(f"{source}: expert id {int(a.max())} does not fit in 32 bits")
    a = np.ascontiguousarray(a, dtype=np.int64)
    ordered = np.sort(a, axis=2)
    dup = np.argwhere(ordered[:, :, 1:] == ordered[:, :, :-1])
    if len(dup):
        t, layer, j = dup[0]
        raise TraceError(f"{source}: expert {ordered[t, layer, j]} appears twice in the top-k "
                         f"of token {t}, layer {layer}")
    return a


def load_routing(path: str | os.PathLike[str]) -> np.ndarray:
    """Read and validate a ``.npy`` routing trace (no pickles: ``allow_pickle=False``)."""
    try:
        a = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read routing trace: {exc.strerror or exc}") from None
    except ValueError as exc:  # not a .npy file, an object array, a truncated file
        raise TraceError(f"{path}: not a .npy routing array: {exc}") from None
    if not isinstance(a, np.ndarray):  # np.load returns an NpzFile for .npz archives
        raise TraceError(f"{path}: expected one .npy array, got an .npz archive")
    return validate_routing(a, str(path))


def save_routing(routing, path: str | os.PathLike[str]) -> None:
    """Validate ``routing`` and write it as ``.npy``, atomically."""
    a = validate_routing(routing, str(path))
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    write_atomic(path, buf.getvalue())


def _expert_bytes_per_layer(expert_bytes: int | Sequence[int], n_layers: int) -> np.ndarray:
    sizes = np.asarray(expert_bytes, dtype=object)
    if sizes.ndim == 0:
        sizes = np.full(n_layers, expert_bytes, dtype=object)
    if sizes.shape != (n_layers,):
        raise ValueError(f"expert_bytes must be one size or one per layer ({n_layers}), got "
                         f"{sizes.shape[0]}")
    for layer, size in enumerate(sizes):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"expert_bytes of layer {layer} must be a positive integer, got "
                             f"{size!r}")
    return sizes.astype(np.uint64)


def routing_to_trace(routing, expert_bytes: int | Sequence[int]) -> Trace:
    """The simulator trace of ``routing``: one request per (layer, expert) use, token-major.

    ``expert_bytes`` is one size for every expert or one size per layer.
    """
    a = validate_routing(routing, "routing")
    n_tokens, n_layers, top_k = a.shape
    layers = np.broadcast_to(np.arange(n_layers, dtype=np.uint64)[None, :, None], a.shape)
    keys = moe_expert_key(layers.ravel(), a.ravel().astype(np.uint64))
    sizes = np.repeat(_expert_bytes_per_layer(expert_bytes, n_layers), top_k)
    times = np.repeat(np.arange(n_tokens, dtype=np.float64), n_layers * top_k)
    return Trace(times, keys, np.tile(sizes, n_tokens))


def routing_from_trace(trace: Trace, source: str = "trace") -> np.ndarray:
    """The routing array of a simulator trace whose keys are ``layer << 32 | expert``.

    Requests with equal times are one token; within it, each layer's requests in order are its
    top-k. Every token must use the same layers, each with the same number of experts.
    """
    n = len(trace)
    if n == 0:
        raise TraceError(f"{source}: the trace has no requests")
    times = trace.times
    step = np.flatnonzero(times[1:] != times[:-1])
    if (times[1:][step] < times[:-1][step]).any():
        i = int(step[times[1:][step] < times[:-1][step]][0]) + 1
        raise TraceError(f"{source}: time goes back at request {i + 1} ({times[i - 1]} -> "
                         f"{times[i]}); a routing trace's times are token indices")
    token = np.zeros(n, dtype=np.int64)
    token[step + 1] = 1
    token = np.cumsum(token)
    layer = (trace.keys >> np.uint64(32)).astype(np.int64)
    expert = (trace.keys & _LOW32).astype(np.int64)
    layer_ids = np.unique(layer)
    n_tokens, n_layers = int(token[-1]) + 1, len(layer_ids)
    if n % (n_tokens * n_layers):
        raise TraceError(f"{source}: {n} requests do not split into {n_tokens} tokens x "
                         f"{n_layers} layers x top_k")
    top_k = n // (n_tokens * n_layers)
    # A stable sort by (token, layer) keeps each layer's experts in request order.
    order = np.lexsort((layer, token))
    counts = np.bincount(token * n_layers + np.searchsorted(layer_ids, layer),
                         minlength=n_tokens * n_layers)
    if (counts != top_k).any():
        cell = int(np.flatnonzero(counts != top_k)[0])
        raise TraceError(f"{source}: token {cell // n_layers} has {counts[cell]} requests in "
                         f"layer {layer_ids[cell % n_layers]}, expected top_k={top_k} (every "
                         "token must use every layer equally)")
    if not np.array_equal(layer_ids, np.arange(n_layers)):
        raise TraceError(f"{source}: layers must be numbered 0..{n_layers - 1}, got "
                         f"{layer_ids[:8].tolist()}...")
    return validate_routing(expert[order].reshape(n_tokens, n_layers, top_k), source)


def write_routing_trace(routing, path: str | os.PathLike[str], expert_bytes: int | Sequence[int],
                        fmt: str | None = None) -> None:
    """Write ``routing`` as a simulator trace file (format sniffed from the name when None)."""
    write_trace(routing_to_trace(routing, expert_bytes), path, fmt)


def read_routing(path: str | os.PathLike[str], fmt: str | None = None) -> np.ndarray:
    """A routing array from a ``.npy`` file or from a simulator trace file of expert keys."""
    path = Path(path)
    if fmt in (None, "npy") and path.suffix == ".npy":
        return load_routing(path)
    if fmt == "npy":
        return load_routing(path)
    return routing_from_trace(read_trace(path, fmt), str(path))
