"""``NativeIndex``: the C core's key -> slot index, every return code checked.

The wrapper is deliberately thin: one method per C function, statuses turned into ``edge.errors``
exceptions, numpy arrays passed zero-copy with ``ffi.from_buffer``. Like the C index it is not
thread-safe; ``PagedCache`` serialises access with its lock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.errors import error_for_status

try:
    from edge._native._edge_core import ffi, lib
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "edge's C core (edge._native._edge_core) is not built. Install the package with "
        "`pip install .` (or `make install` in a checkout), which compiles native/ through cffi; "
        f"a C compiler and the Python headers are required. Original error: {exc}"
    ) from exc

N_FEATURES: int = lib.EDGE_N_FEATURES


def _feature_names() -> tuple[str, ...]:
    """The feature matrix's column names, read from the header's ``edge_feature`` enum through
    cffi (``EDGE_FEAT_LOAD_COST = 4`` is column 4, ``"load_cost"``): the header is the one list,
    so the names cannot drift from the columns the C core writes."""
    columns = {value: name.removeprefix("EDGE_FEAT_").lower()
               for value, name in ffi.typeof("edge_feature").elements.items()
               if name.startswith("EDGE_FEAT_")}
    if sorted(columns) != list(range(N_FEATURES)):
        raise ImportError(f"edge.h's edge_feature enum must number its EDGE_FEAT_ columns 0 .. "
                          f"EDGE_N_FEATURES - 1 = {N_FEATURES - 1}, got {sorted(columns)}")
    return tuple(columns[i] for i in range(N_FEATURES))


FEATURE_NAMES: tuple[str, ...] = _feature_names()

_OK = lib.EDGE_OK
_MASK64 = (1 << 64) - 1
_NOT_FOUND = lib.EDGE_ERR_NOT_FOUND
REPLAY_POLICIES = {"lru": lib.EDGE_REPLAY_LRU, "fifo": lib.EDGE_REPLAY_FIFO}


def _raise(status: int, what: str) -> None:
    raise error_for_status(status, f"{what}: {ffi.string(lib.edge_status_str(status)).decode()}")


@dataclass(frozen=True)
class SlotInfo:
    key: int
    size: int
    accesses: int
    inserted_at: float
    last_access: float
    iat_ewma: float
    load_cost: float
    pin_count: int
    flags: int
    past_accesses: int  # accesses in earlier residencies (the ghost list)
    past_residencies: int
    demand: float = 0.0  # the router's estimate (set_demand); 0 from insert until set


@dataclass(frozen=True)
class Totals:
    count: int
    pinned_count: int
    bytes: int
    pinned_bytes: int
    capacity: int
    remembered: int  # removed keys in the ghost list


@dataclass(frozen=True)
class NativeReplayCounts:
    """The counters of one replay in C (``NativeIndex.replay``); the simulator's per-policy
    result is ``edge.sim.replay.ReplayResult``."""

    hits: int
    bytes_hit: int
    evictions: int
    requests: int


@dataclass(frozen=True)
class RawPaths:
    ptr: object
    acquire_slot: object  # (ptr, slot, now) -> status
    unpin: object  # (ptr, slot) -> status
    acquire_many: object  # (ptr, keys, n, now, out_slots, n_found) -> status
    unpin_many: object  # (ptr, slots, n) -> status
    new_keys: object  # list of ints -> uint64_t[] (OverflowError/TypeError if not uint64s)
    new_slots: object  # n -> int32_t[n]
    n_found: object  # a uint32_t * out-parameter
    raise_status: object  # (status, what) -> raises


class NativeIndex:
    """Key (uint64) -> slot index with LRU order, pins and per-slot access statistics."""

    def __init__(self, initial_capacity: int = 0, seed: int = 0,
                 remember_removed: bool = True) -> None:
        """``remember_removed=False``: no ghost list (the past_* feature columns stay 0), for
        replays that never read features; inserts and removes then skip its table."""
        out = ffi.new("edge_index **")
        status = lib.edge_index_init(out, initial_capacity, seed & 0xFFFFFFFFFFFFFFFF)
        if status != _OK:
            _raise(status, "edge_index_init")
        self._ptr = ffi.gc(out[0], lib.edge_index_free)
        if not remember_removed:
            status = lib.edge_index_forget_removed(self._ptr)
            if status != _OK:
                _raise(status, "edge_index_forget_removed")
        # Reused out-parameters: the index is single-threaded by contract, so one of each is enough
        # and the hit path allocates nothing.
        self._slot = ffi.new("int32_t *")
        self._n = ffi.new("uint32_t *")
        self._totals = ffi.new("edge_index_totals *")
        self._decision_buffers = None  # decision_inputs(reuse=True): arrays and their C views

    # -- single keys ------------------------------------------------------------------------

    def lookup(self, key: int) -> int:
        """Slot of ``key`` or -1, without recording an access."""
        status = lib.edge_index_lookup(self._ptr, key, self._slot)
        if status not in (_OK, _NOT_FOUND):
            _raise(status, "edge_index_lookup")
        return self._slot[0]

    def touch(self, key: int, now: float) -> int:
        """Record an access; the slot, or -1 if ``key`` is not resident."""
        status = lib.edge_index_touch(self._ptr, key, now, self._slot)
        if status not in (_OK, _NOT_FOUND):
            _raise(status, "edge_index_touch")
        return self._slot[0]

    def acquire(self, key: int, now: float) -> int:
        """Touch and pin ``key``; the slot, or -1 (nothing changed) if it is not resident."""
        status = lib.edge_index_acquire(self._ptr, key, now, self._slot)
        if status not in (_OK, _NOT_FOUND):
            _raise(status, "edge_index_acquire")
        return self._slot[0]

    def acquire_slot(self, slot: int, now: float) -> None:
        status = lib.edge_index_acquire_slot(self._ptr, slot, now)
        if status != _OK:
            _raise(status, f"edge_index_acquire_slot(slot={slot})")

    def raw_paths(self) -> RawPaths:
        """The C entry points of PagedCache's hit paths, where one Python-level call per
        operation is a measurable share of the cost. The caller must check every status with
        ``raise_status(status, what)``."""
        return RawPaths(self._ptr, lib.edge_index_acquire_slot, lib.edge_index_unpin,
                        lib.edge_index_acquire_many, lib.edge_index_unpin_many,
                        lambda keys: ffi.new("uint64_t[]", keys),
                        lambda n: ffi.new("int32_t[]", n), ffi.new("uint32_t *"), _raise)

    def insert(self, key: int, size: int, now: float, load_cost: float = 0.0, pins: int = 0) -> int:
        status = lib.edge_index_insert(self._ptr, key, size, load_cost, now, pins, self._slot)
        if status != _OK:
            _raise(status, f"edge_index_insert(key={key}, size={size})")
        return self._slot[0]

    def remove(self, key: int) -> None:
        status = lib.edge_index_remove(self._ptr, key)
        if status != _OK:
            _raise(status, f"edge_index_remove(key={key})")

    def pin(self, slot: int) -> None:
        status = lib.edge_index_pin(self._ptr, slot)
        if status != _OK:
            _raise(status, f"edge_index_pin(slot={slot})")

    def unpin(self, slot: int) -> None:
        status = lib.edge_index_unpin(self._ptr, slot)
        if status != _OK:
            _raise(status, f"edge_index_unpin(slot={slot})")

    def set_flags(self, slot: int, flags: int) -> None:
        status = lib.edge_index_set_flags(self._ptr, slot, flags)
        if status != _OK:
            _raise(status, f"edge_index_set_flags(slot={slot})")

    def set_demand(self, slot: int, demand: float) -> None:
        """The router's demand estimate for a resident slot's key (the learned policy's demand
        input); finite and >= 0."""
        status = lib.edge_index_set_demand(self._ptr, slot, demand)
        if status != _OK:
            _raise(status, f"edge_index_set_demand(slot={slot}, demand={demand!r})")

    def slot_info(self, slot: int) -> SlotInfo:
        info = ffi.new("edge_slot_info *")
        status = lib.edge_index_slot_info(self._ptr, slot, info)
        if status != _OK:
            _raise(status, f"edge_index_slot_info(slot={slot})")
        return SlotInfo(info.key, info.size, info.accesses, info.inserted_at, info.last_access,
                        info.iat_ewma, info.load_cost, info.pin_count, info.flags,
                        info.past_accesses, info.past_residencies, info.demand)

    def totals(self) -> Totals:
        t = self._raw_totals()
        return Totals(t.count, t.pinned_count, t.bytes, t.pinned_bytes, t.capacity,
                      t.remembered)

    def resident_bytes(self) -> int:
        return self._raw_totals().bytes

    def pinned_bytes(self) -> int:
        return self._raw_totals().pinned_bytes

    def byte_totals(self) -> tuple[int, int]:
        """(resident bytes, pinned bytes) from one C call (the eviction path wants both)."""
        t = self._raw_totals()
        return t.bytes, t.pinned_bytes

    def _raw_totals(self):
        status = lib.edge_index_totals_get(self._ptr, self._totals)
        if status != _OK:
            _raise(status, "edge_index_totals_get")
        return self._totals

    def pin_count(self, slot: int) -> int:
        status = lib.edge_index_pin_count(self._ptr, slot, self._n)
        if status != _OK:
            _raise(status, f"edge_index_pin_count(slot={slot})")
        return self._n[0]

    # -- many keys --------------------------------------------------------------------------

    def lookup_many(self, keys: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Slots (int32, -1 where absent) of a uint64 key array, in one C call."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        if out is None:
            out = np.empty(len(keys), dtype=np.int32)
        status = lib.edge_index_lookup_many(
            self._ptr, ffi.from_buffer("uint64_t[]", keys), len(keys),
            ffi.from_buffer("int32_t[]", out, require_writable=True), self._n)
        if status != _OK:
            _raise(status, "edge_index_lookup_many")
        return out

    def touch_many(self, keys: np.ndarray, now: float) -> np.ndarray:
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        out = np.empty(len(keys), dtype=np.int32)
        status = lib.edge_index_touch_many(
            self._ptr, ffi.from_buffer("uint64_t[]", keys), len(keys), now,
            ffi.from_buffer("int32_t[]", out, require_writable=True), self._n)
        if status != _OK:
            _raise(status, "edge_index_touch_many")
        return out

    def acquire_many(self, keys, now: float, out: np.ndarray) -> int:
        """Touch and pin every key of a uint64 array, all or nothing; ``out`` (int32, len(keys))
        receives the slots. Returns how many keys were resident: ``len(keys)`` when all were
        (and are now pinned), fewer when nothing changed (``out`` then has -1 where absent)."""
        status = lib.edge_index_acquire_many(
            self._ptr, ffi.from_buffer("uint64_t[]", keys), len(keys), now,
            ffi.from_buffer("int32_t[]", out, require_writable=True), self._n)
        if status not in (_OK, _NOT_FOUND):
            _raise(status, "edge_index_acquire_many")
        return self._n[0]

    def pin_many(self, slots: np.ndarray) -> None:
        status = lib.edge_index_pin_many(self._ptr, ffi.from_buffer("int32_t[]", slots),
                                         len(slots))
        if status != _OK:
            _raise(status, "edge_index_pin_many")

    def unpin_many(self, slots: np.ndarray) -> None:
        status = lib.edge_index_unpin_many(self._ptr, ffi.from_buffer("int32_t[]", slots),
                                           len(slots))
        if status != _OK:
            _raise(status, "edge_index_unpin_many")

    def touch_slots(self, slots: np.ndarray, now: float) -> None:
        status = lib.edge_index_touch_slots(self._ptr, ffi.from_buffer("int32_t[]", slots),
                                            len(slots), now)
        if status != _OK:
            _raise(status, "edge_index_touch_slots")

    # -- eviction candidates ----------------------------------------------------------------

    def walk_lru(self, k: int, skip_pinned: bool = True) -> list[int]:
        """Up to ``k`` slots from the least-recently-used end (pinned ones passed over)."""
        buf = ffi.new("int32_t[]", max(k, 1))
        status = lib.edge_index_walk_lru(self._ptr, k, int(skip_pinned), buf, self._n)
        if status != _OK:
            _raise(status, "edge_index_walk_lru")
        return ffi.unpack(buf, self._n[0])

    def lru_victim(self) -> int:
        """The least-recently-used unpinned slot, or -1 if every resident key is pinned."""
        status = lib.edge_index_walk_lru(self._ptr, 1, 1, self._slot, self._n)
        if status != _OK:
            _raise(status, "edge_index_walk_lru")
        return self._slot[0] if self._n[0] else -1

    def sample_unpinned(self, k: int) -> list[int]:
        """Up to ``k`` distinct unpinned slots, uniformly, from the index's seeded generator
        (which advances: the next call draws anew)."""
        buf = ffi.new("int32_t[]", max(k, 1))
        status = lib.edge_index_sample_unpinned(self._ptr, k, buf, self._n)
        if status != _OK:
            _raise(status, "edge_index_sample_unpinned")
        return ffi.unpack(buf, self._n[0])

    def sample_unpinned_seeded(self, k: int, seed: int) -> list[int]:
        """The same draw from a generator started at ``seed``; the index is left unchanged, so
        the same seed on the same state gives the same slots (a side-effect-free choice)."""
        buf = ffi.new("int32_t[]", max(k, 1))
        status = lib.edge_index_sample_unpinned_seeded(self._ptr, seed & 0xFFFFFFFFFFFFFFFF, k,
                                                       buf, self._n)
        if status != _OK:
            _raise(status, "edge_index_sample_unpinned_seeded")
        return ffi.unpack(buf, self._n[0])

    def candidates(self, k_tail: int, k_rand: int, seed: int, k_head: int = 0) -> np.ndarray:
        """``edge_index_candidates``: up to ``k_tail`` unpinned slots from the LRU end, then the
        new ones of up to ``k_head`` from the MRU end, then the new slots of a
        ``sample_unpinned_seeded(k_rand, seed)`` draw (int32)."""
        out = np.empty(max(k_tail + k_head + k_rand, 1), dtype=np.int32)
        status = lib.edge_index_candidates(self._ptr, k_tail, k_head, k_rand, seed & _MASK64,
                                           ffi.from_buffer("int32_t[]", out,
                                                           require_writable=True), self._n)
        if status != _OK:
            _raise(status, "edge_index_candidates")
        return out[:self._n[0]]

    def decision_inputs(self, k_tail: int, k_rand: int, seed: int, now: float,
                        free_fraction: float, need_fraction: float, k_head: int = 0,
                        reuse: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``edge_learned_decision_inputs``: the candidates (as ``candidates``) and their
        (n, EDGE_N_LEARNED_INPUTS) float32 network input rows at ``now`` (each with its slot's
        ``set_demand`` value), in one call. With ``reuse`` both are written into buffers the
        index keeps: valid only until its next ``reuse`` call (the serving path's, which reads
        them before it decides again; new arrays and their C views cost a decision about 2 us)."""
        n = max(k_tail + k_head + k_rand, 1)
        if reuse:
            if self._decision_buffers is None or len(self._decision_buffers[0]) < n:
                slots = np.empty(n, dtype=np.int32)
                inputs = np.empty((n, lib.EDGE_N_LEARNED_INPUTS), dtype=np.float32)
                self._decision_buffers = (
                    slots, inputs, ffi.from_buffer("int32_t[]", slots, require_writable=True),
                    ffi.from_buffer("float[]", inputs, require_writable=True))
            slots, inputs, c_slots, c_inputs = self._decision_buffers
        else:
            slots = np.empty(n, dtype=np.int32)
            inputs = np.empty((n, lib.EDGE_N_LEARNED_INPUTS), dtype=np.float32)
            c_slots = ffi.from_buffer("int32_t[]", slots, require_writable=True)
            c_inputs = ffi.from_buffer("float[]", inputs, require_writable=True)
        status = lib.edge_learned_decision_inputs(
            self._ptr, k_tail, k_head, k_rand, seed & _MASK64, now, free_fraction,
            need_fraction, c_slots, c_inputs, self._n)
        if status != _OK:
            _raise(status, "edge_learned_decision_inputs")
        found = self._n[0]
        return slots[:found], inputs[:found]

    def features(self, slots, now: float, out: np.ndarray | None = None) -> np.ndarray:
        """The (len(slots), N_FEATURES) float32 feature matrix, written in place into ``out``."""
        slots = np.ascontiguousarray(slots, dtype=np.int32)
        if out is None:
            out = np.empty((len(slots), N_FEATURES), dtype=np.float32)
        elif out.dtype != np.float32 or not out.flags.c_contiguous or out.shape[0] < len(slots) \
                or out.shape[1] != N_FEATURES:
            raise ValueError(f"out must be a C-contiguous float32 array of shape (>={len(slots)}, "
                             f"{N_FEATURES})")
        status = lib.edge_index_features(
            self._ptr, ffi.from_buffer("int32_t[]", slots), len(slots), now,
            ffi.from_buffer("float[]", out, require_writable=True))
        if status != _OK:
            _raise(status, "edge_index_features")
        return out

    # -- replay -----------------------------------------------------------------------------

    def replay(self, policy: str, keys: np.ndarray, sizes: np.ndarray, budget: int,
               times: np.ndarray | None = None, hits_out: np.ndarray | None = None
               ) -> NativeReplayCounts:
        """Replay a whole trace in C with the built-in ``lru`` or ``fifo`` policy."""
        if policy not in REPLAY_POLICIES:
            raise ValueError(f"replay policy {policy!r} is not one of {sorted(REPLAY_POLICIES)}")
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        sizes = np.ascontiguousarray(sizes, dtype=np.uint64)
        if len(sizes) != len(keys):
            raise ValueError(f"keys and sizes differ in length ({len(keys)} != {len(sizes)})")
        times_ptr = ffi.NULL
        if times is not None:
            times = np.ascontiguousarray(times, dtype=np.float64)
            times_ptr = ffi.from_buffer("double[]", times)
        hits_ptr = ffi.NULL
        if hits_out is not None:
            if hits_out.dtype != np.uint8 or len(hits_out) < len(keys):
                raise ValueError("hits_out must be a uint8 array at least as long as the trace")
            hits_ptr = ffi.from_buffer("uint8_t[]", hits_out, require_writable=True)
        counters = ffi.new("uint64_t[4]")
        status = lib.edge_index_replay(
            self._ptr, REPLAY_POLICIES[policy], ffi.from_buffer("uint64_t[]", keys),
            ffi.from_buffer("uint64_t[]", sizes), times_ptr, len(keys), budget, hits_ptr,
            counters + 0, counters + 1, counters + 2, counters + 3)
        if status != _OK:
            _raise(status, f"edge_index_replay (stopped at request {counters[3]})")
        return NativeReplayCounts(counters[0], counters[1], counters[2], counters[3])

    # -- checking ---------------------------------------------------------------------------

    def verify(self) -> None:
        """Raise ``NativeCorrupt`` if any invariant of the C index is broken."""
        status = lib.edge_index_verify(self._ptr)
        if status != _OK:
            _raise(status, "edge_index_verify")
