"""Prefetching a MoE model's next-layer experts while the current layer runs.

While layer l's experts are pinned (``ExpertExecutor.forward``), ``Prefetcher.issue`` predicts
which experts layer l + 1 will choose and starts their loads with ``PagedCache.prefetch``, on the
cache's background load workers: the reads overlap layer l's expert compute and layer l + 1's
attention. The cache keeps the budget (a prefetch reserves its declared size, evicts only
unpinned objects and is not started when there is no room), so the running layer's pinned
experts are never evicted and resident + reserved bytes never exceed the budget. The predicted
experts already resident are held (``PagedCache.hold``: pinned without recording an access)
while the others' prefetches make room, so a prefetch never evicts an expert it predicts (the
cache's policy would otherwise pick them first at a small budget: they are the next layer's, the
least recently used), and neither the hit counts nor the policy's statistics see the hold.

Two ways to prefetch, chosen by ``mode``:

``load``
    As above: the predicted experts are loaded into the cache (counted in its budget) by its
    load workers. On CPython those workers need the GIL for the load's Python code, which the
    layer's own numpy calls on small arrays seldom give up, so a prefetch often completes only
    when the layer waits for it.
``readahead``
    The kernel reads the predicted experts' bytes into the OS page cache in the background
    (``ExpertStore.readahead``: posix_fadvise WILLNEED), with no thread of ours; nothing enters
    the cache until the layer asks, when the load copies them from memory. The budget is then
    untouched; the bytes in flight (one layer's predictions) sit in the OS page cache, and with
    ``ExpertStore(page_cache=False)`` the load drops them, or, for predictions the layer did
    not use, ``ExpertStore.forget`` does once the layer's own loads are done (at its
    ``issue``, when those readaheads have most likely finished too). Issued bytes count file
    bytes.

Two predictors, chosen by ``predictor``:

``router``
    Layer l + 1's router applied to the residual stream *entering layer l's MoE* (after layer
    l's attention), normed with layer l + 1's ``ffn_norm``, top-k by the model's gating rule.
    The true input of layer l + 1's router differs from it by layer l's MoE output and layer
    l + 1's attention output (both small updates of the residual stream), so the prediction is
    close; using this state rather than the one after layer l's MoE lets the loads start before
    layer l's experts are computed.
``transitions``
    ``TransitionTable``: counts of (layer l expert i) -> (layer l + 1 expert j) over the tokens
    seen so far, updated online after every layer; the prediction for a token is the k experts
    with the most counts from its layer-l experts (none before anything was learned).
``both``
    The union of the two predictions.

For a batch of tokens (a prompt) the prediction is the union of the tokens' predictions.

Counters (``PrefetchCounters``), per (layer step): ``predicted`` experts (distinct), ``used``
experts (distinct, what the layer chose), ``correct`` = |predicted & used| (precision =
correct / predicted, recall = correct / used); ``issued`` = loads the cache started (the
predicted experts neither resident nor loading, with room); ``useful`` = issued experts the
next layer used that were still resident or loading when it asked; ``wasted`` = issued - useful
(their bytes were read for nothing); ``not_started`` = predicted, absent, but no room.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from edge.backends.experts import expert_key, split_key

PREDICTORS = ("router", "transitions", "both")
MODES = ("load", "readahead")

Normaliser = Callable[[int, np.ndarray], np.ndarray]  # (layer, residual) -> that layer's input


@dataclass(frozen=True)
class PrefetchCounters:
    predicted: int = 0
    used: int = 0
    correct: int = 0
    issued: int = 0
    useful: int = 0
    wasted: int = 0
    not_started: int = 0
    bytes_issued: int = 0
    useful_bytes: int = 0
    wasted_bytes: int = 0

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.correct / self.used if self.used else 0.0

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(precision=self.precision, recall=self.recall)
        return out

    def __sub__(self, other: PrefetchCounters) -> PrefetchCounters:
        return PrefetchCounters(*(getattr(self, f.name) - getattr(other, f.name)
                                  for f in fields(self)))


class TransitionTable:
    """Online counts of (layer l expert i) -> (layer l + 1 expert j), one token at a time."""

    def __init__(self, n_layers: int, n_experts: int) -> None:
        if n_layers < 1 or n_experts < 1:
            raise ValueError(f"a transition table needs n_layers >= 1 and n_experts >= 1, got "
                             f"{n_layers} and {n_experts}")
        self.n_experts = n_experts
        # counts[l, i, j]: tokens that chose i in layer l and j in layer l + 1.
        self.counts = np.zeros((max(n_layers - 1, 1), n_experts, n_experts), dtype=np.int64)

    def update(self, layer: int, experts: np.ndarray, next_experts: np.ndarray) -> None:
        """Count every token's pairs: ``experts`` (n_tokens, k) in ``layer`` and
        ``next_experts`` (n_tokens, k') in ``layer + 1``."""
        a, b = np.asarray(experts), np.asarray(next_experts)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
            raise ValueError(f"experts {a.shape} and next_experts {b.shape} must be "
                             "(n_tokens, k) arrays of the same tokens")
        np.add.at(self.counts[layer], (a[:, :, None], b[:, None, :]), 1)

    def predict(self, layer: int, experts: np.ndarray, k: int) -> np.ndarray:
        """Each token's k most likely next-layer experts (n_tokens, k), -1 where fewer than k
        have been seen after its experts."""
        scores = self.counts[layer][np.asarray(experts)].sum(axis=1)  # (n_tokens, n_experts)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.where(np.take_along_axis(scores, order, axis=1) > 0, order, -1)


class Prefetcher:
    """Predicts layer l + 1's experts during layer l and prefetches them (see the module doc).

    ``routers``: layer -> router matrix (n_expert, n_embd), k experts per token;
    ``normalise(layer, residual)``: that layer's router input from a residual stream, up to a
    positive factor per token (which changes no token's top k; identity when None)."""

    def __init__(self, cache, store, routers: dict[int, np.ndarray], k: int, *,
                 predictor: str = "router", normalise: Normaliser | None = None,
                 mode: str = "load") -> None:
        if predictor not in PREDICTORS:
            raise ValueError(f"predictor must be one of {', '.join(PREDICTORS)}, "
                             f"got {predictor!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.cache = cache
        self.store = store
        self.routers = routers
        self.k = k
        self.predictor = predictor
        self.normalise = normalise
        self.layers = sorted(routers)
        self._next_layer = dict(zip(self.layers, self.layers[1:], strict=False))
        self._position = {layer: i for i, layer in enumerate(self.layers)}
        self.table = TransitionTable(len(self.layers), store.n_expert)
        self._learns = predictor != "router"  # the table costs time; only learned when used
        self._lock = threading.Lock()  # the load workers mark loads done
        self._loading: set[int] = set()
        # (next layer, predicted experts, issued key -> bytes) until that layer runs.
        self._pending: tuple[int, set[int], dict[int, int]] | None = None
        self._previous: tuple[int, np.ndarray] | None = None  # the last layer and its experts
        self._unused: list[tuple[int, int]] = []  # readaheads the layer did not use: to forget
        self._totals = dict.fromkeys((f.name for f in fields(PrefetchCounters)), 0)

    # ---- called by the executor --------------------------------------------------------------

    def observe(self, layer: int, experts: np.ndarray) -> None:
        """Layer ``layer`` chose ``experts`` (n_tokens, k): score the prediction made for it,
        learn the transition from the layer before (same tokens), before its acquire."""
        self._forget_unused()  # left over if the last layer raised before its issue
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == layer:
            _, predicted, issued = pending
            used = set(experts.ravel().tolist())
            useful = useful_bytes = 0
            for key, size in issued.items():
                expert = split_key(key)[1]
                if expert in used and (self.mode == "readahead" or self._still_there(key)):
                    useful += 1
                    useful_bytes += size
                elif self.mode == "readahead":
                    self._unused.append((layer, expert))
            issued_bytes = sum(issued.values())
            self._add(predicted=len(predicted), used=len(used),
                      correct=len(predicted & used), useful=useful, useful_bytes=useful_bytes,
                      wasted=len(issued) - useful, wasted_bytes=issued_bytes - useful_bytes)
        if not self._learns:
            return
        previous = self._previous
        if previous is not None and self._next_layer.get(previous[0]) == layer \
                and previous[1].shape[0] == experts.shape[0]:
            self.table.update(self._position[previous[0]], previous[1], experts)
        self._previous = (layer, np.asarray(experts))

    def issue(self, layer: int, residual: np.ndarray, experts: np.ndarray) -> None:
        """Predict and prefetch the experts of the MoE layer after ``layer`` (call with
        ``layer``'s experts pinned). ``residual``: the residual stream entering ``layer``'s
        MoE; ``experts``: what ``layer`` chose."""
        self._forget_unused()
        nxt = self._next_layer.get(layer)
        if nxt is None:
            return
        predicted = self.predict(layer, residual, experts)
        size = self.store.nbytes(nxt, 0)
        keys = [expert_key(nxt, expert) for expert in sorted(predicted)]
        resident, absent = [], []
        for key in keys:
            (resident if key in self.cache else absent).append(key)
        issued: dict[int, int] = {}
        not_started = 0
        if self.mode == "readahead":
            for key in absent:
                advised = self.store.readahead(*split_key(key))
                if advised:
                    issued[key] = advised
            self._pending = (nxt, predicted, issued)
            self._add(issued=len(issued), bytes_issued=sum(issued.values()))
            return
        # The predicted experts already resident are held while the others' prefetches make
        # room: a prefetch evicts by the cache's policy, which would otherwise pick among them
        # (at a small budget the next layer's resident experts are the least recently used). A
        # hold records no access, so neither the hit counts nor the policy's statistics (LFU's
        # frequencies, the learned policy's features) see it: the layer's own use is the access.
        with self.cache.hold(resident if absent else ()):
            for key in absent:
                with self._lock:
                    self._loading.add(key)
                # One key per call: the return value then says exactly which loads started.
                if self.cache.prefetch([key], self._load, nbytes=[size]):
                    issued[key] = size
                else:
                    with self._lock:
                        self._loading.discard(key)
                    if key not in self.cache:
                        not_started += 1
        self._pending = (nxt, predicted, issued)
        self._add(issued=len(issued), bytes_issued=sum(issued.values()),
                  not_started=not_started)

    def _forget_unused(self) -> None:
        unused, self._unused = self._unused, []
        for layer, expert in unused:
            self.store.forget(layer, expert)

    def predict(self, layer: int, residual: np.ndarray, experts: np.ndarray) -> set[int]:
        """The distinct experts predicted for the MoE layer after ``layer``."""
        nxt = self._next_layer[layer]
        chosen: set[int] = set()
        if self.predictor in ("router", "both"):
            h = residual if self.normalise is None else self.normalise(nxt, residual)
            logits = np.asarray(h, dtype=np.float32) @ self.routers[nxt].T
            # The top k of the gating probabilities are the top k of the logits (softmax and
            # sigmoid are increasing), so no gating and no sort: a partition finds them.
            if logits.shape[-1] > self.k:
                top = np.argpartition(logits, -self.k, axis=-1)[:, -self.k:]
            else:
                top = np.broadcast_to(np.arange(logits.shape[-1]), logits.shape)
            chosen.update(top.ravel().tolist())
        if self.predictor in ("transitions", "both"):
            guess = self.table.predict(self._position[layer], experts, self.k)
            chosen.update(e for e in guess.ravel().tolist() if e >= 0)
        return chosen

    def reset_sequence(self) -> None:
        """Forget the last layer's experts (a new batch of tokens starts at the first layer)."""
        self._previous = None
        self._pending = None

    # ---- counters --------------------------------------------------------------------------

    def counters(self) -> PrefetchCounters:
        return PrefetchCounters(**self._totals)

    def _add(self, **deltas: int) -> None:
        for name, delta in deltas.items():
            self._totals[name] += delta

    # ---- loads -----------------------------------------------------------------------------

    def _load(self, key: int):
        """The store's loader, marking the key done when its bytes are in (on a load worker)."""
        try:
            return self.store.load_key(key)
        finally:
            with self._lock:
                self._loading.discard(key)

    def _still_there(self, key: int) -> bool:
        """Its prefetch still loading (the layer's acquire then joins that load), or resident.
        A load whose loader returned but which the cache has not yet inserted (a few
        microseconds under the cache's lock) reads as neither and is counted wasted."""
        with self._lock:
            loading = key in self._loading
        return loading or key in self.cache
