"""Slow, obvious models of S3-FIFO, ARC and libCacheSim's LFUDA, for the cross-checks.

Each model replays ``(key, size)`` requests into a cache of ``budget`` bytes and returns its hits.
The S3-FIFO and ARC models follow the published algorithms, with every rule on which
libCacheSim's implementation departs from them behind a switch (a field of ``S3FIFORules`` /
``ARCRules``). With every switch off a model must hit request for request as our policy through
``PagedCache``; with every switch on, as libcachesim 0.3.5. The switches are then the complete
list of differences, and the effect of each can be measured alone
(tests/test_libcachesim_crosscheck.py).

The libCacheSim rules were read from its source (libCacheSim/cache/eviction/S3FIFO.c, ARC.c,
LFUDA.c) and are described here in our own words; libCacheSim is GPL-3.0 and none of its code is
copied. Plain dicts and scans: fine for a few thousand requests, not for benchmarks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import libcachesim as lcs

Requests = Sequence[tuple[Hashable, int]]


# ---- S3-FIFO ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class S3FIFORules:
    """Where libCacheSim's S3FIFO.c departs from the paper's Algorithm 1 (Yang et al., SOSP'23).

    All False is the paper, which is what ``edge``'s ``s3fifo`` implements.
    """

    # The ghost is looked up, and the key dropped from it, when the request arrives. The paper
    # (INSERT: evict until there is room, then "if x in G") and we look after the evictions, so a
    # key whose ghost entry those very evictions push out goes to S, not M.
    ghost_checked_on_request: bool = False
    # S's share and G's size are whole bytes, rounded down: int(0.1 * budget), int(0.9 * budget).
    integer_shares: bool = False
    # Evict from M when M holds more than budget - S's share (or S is empty), else from S. The
    # paper: from S when S holds at least its share, else from M. The same rule when the cache is
    # exactly full; with variable sizes a miss often needs room while both are under their share.
    evict_main_when_over_share: bool = False
    # Until the first eviction, a new key goes to M once S holds its share (S3FIFO.c's documented
    # change to the paper); the paper always fills S.
    warmup_to_main: bool = False
    # An object at least as large as S's share is never cached (objects larger are refused
    # before any eviction; one exactly S's size evicts for room, then is not inserted). The paper
    # and we cache every object that fits the budget.
    refuse_objects_as_large_as_small: bool = False


PAPER_S3FIFO = S3FIFORules()
LIBCACHESIM_S3FIFO = S3FIFORules(True, True, True, True, True)


def s3fifo_hits(requests: Requests, budget: int, threshold: int = 1,
                rules: S3FIFORules = PAPER_S3FIFO) -> int:
    """S3-FIFO with small share 0.1, ghost 0.9 of the budget (in bytes), 2-bit frequencies; a
    key in S moves to M at eviction time when hit ``threshold`` times."""
    small_share = int(0.1 * budget) if rules.integer_shares else 0.1 * budget
    ghost_limit = int(0.9 * budget) if rules.integer_shares else 0.9 * budget
    small: OrderedDict = OrderedDict()  # key -> size, oldest first
    main: OrderedDict = OrderedDict()
    ghost: OrderedDict = OrderedDict()
    freq: dict = {}
    used = {"small": 0, "main": 0, "ghost": 0}
    evicted_any = False
    hits = 0

    def evict_small() -> bool:
        while small:
            key, size = small.popitem(last=False)
            used["small"] -= size
            if freq[key] >= threshold:
                main[key] = size
                used["main"] += size
                freq[key] = 0
                continue
            del freq[key]
            ghost[key] = size
            used["ghost"] += size
            while used["ghost"] > ghost_limit:
                used["ghost"] -= ghost.popitem(last=False)[1]
            return True
        return False

    def evict_main() -> bool:
        while main:
            key, size = main.popitem(last=False)
            if freq[key] > 0:
                main[key] = size  # back to the tail, one frequency spent
                freq[key] = min(freq[key], 3) - 1
                continue
            used["main"] -= size
            del freq[key]
            return True
        return False

    def take_from_ghost(key) -> bool:
        if key not in ghost:
            return False
        used["ghost"] -= ghost.pop(key)
        return True

    for key, size in requests:
        if key in small or key in main:
            hits += 1
            freq[key] = min(freq[key] + 1, 3)
            continue
        from_ghost = take_from_ghost(key) if rules.ghost_checked_on_request else False
        too_large = rules.refuse_objects_as_large_as_small
        if size > budget or (too_large and size > small_share):
            continue
        while used["small"] + used["main"] + size > budget:
            evicted_any = True
            if rules.evict_main_when_over_share:
                if used["main"] > budget - small_share or not small:
                    evict_main()
                else:
                    evict_small()
            elif used["small"] >= small_share or not main:
                if not evict_small():
                    evict_main()
            else:
                evict_main()
        if not rules.ghost_checked_on_request:
            from_ghost = take_from_ghost(key)
        if too_large and size >= small_share and not from_ghost:
            continue
        freq[key] = 0
        if from_ghost or (rules.warmup_to_main and not evicted_any
                          and used["small"] >= small_share):
            main[key] = size
            used["main"] += size
        else:
            small[key] = size
            used["small"] += size
    return hits


# ---- ARC ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ARCRules:
    """Where libCacheSim's ARC.c departs from ``edge``'s byte-sized ARC (all False: ours).

    With unit sizes both rules change nothing: both are the paper's algorithm.
    """

    # A ghost hit moves p by max(1, |B2|/|B1|) (or the inverse) bytes: the paper's step of one
    # page taken as one byte. Ours moves it by that times the size of the object that missed.
    # With objects of kilobytes p hardly leaves 0 (at most 30 bytes on the golden trace) and
    # REPLACE takes from T1 whenever T1 holds a key: ARC without its adaptation.
    p_step_in_bytes_not_objects: bool = False
    # The paper's case IV is applied once per eviction, one ghost entry at a time: if
    # |T1| + |B1| + size > c, drop B1's LRU and REPLACE, or, when B1 is empty, evict T1's LRU
    # without a ghost entry whatever p says; else, if the four lists hold 2c or more, drop B2's
    # LRU, then REPLACE. Ghosts are trimmed nowhere else, so with variable sizes the lists can
    # exceed the paper's bounds. Ours REPLACEs and then, after the insert, drops ghost LRUs until
    # |T1| + |B1| <= c and the total <= 2c.
    ghosts_trimmed_per_eviction: bool = False


OURS_ARC = ARCRules()
LIBCACHESIM_ARC = ARCRules(True, True)


def arc_hits(requests: Requests, budget: int, rules: ARCRules = OURS_ARC) -> int:
    """ARC (Megiddo & Modha, FAST'03) in bytes, p starting at 0, the paper's tie rule included."""
    lists = {name: OrderedDict() for name in ("t1", "t2", "b1", "b2")}  # key -> size, LRU first
    used = dict.fromkeys(lists, 0)
    p = 0.0
    hits = 0

    def move(key, src: str, dst: str | None) -> None:
        size = lists[src].pop(key)
        used[src] -= size
        if dst is not None:
            lists[dst][key] = size
            used[dst] += size

    def lru(name: str):
        return next(iter(lists[name]))

    def replace(missed_from_b2: bool) -> None:
        t1 = used["t1"]
        if (t1 > 0 and (t1 > p or (t1 == p and missed_from_b2))) or not lists["t2"]:
            move(lru("t1"), "t1", "b1")
        else:
            move(lru("t2"), "t2", "b2")

    for key, size in requests:
        if key in lists["t1"]:
            hits += 1
            move(key, "t1", "t2")
            continue
        if key in lists["t2"]:
            hits += 1
            lists["t2"].move_to_end(key)
            continue
        if size > budget:
            continue
        in_b1, in_b2 = key in lists["b1"], key in lists["b2"]
        if in_b1 or in_b2:
            mine, other = ("b1", "b2") if in_b1 else ("b2", "b1")
            step = max(1.0, used[other] / used[mine])
            if not rules.p_step_in_bytes_not_objects:
                step *= size
            p = min(float(budget), p + step) if in_b1 else max(0.0, p - step)
            move(key, mine, None)
        while used["t1"] + used["t2"] + size > budget:
            if not rules.ghosts_trimmed_per_eviction or in_b1 or in_b2:
                replace(in_b2)
            elif used["t1"] + used["b1"] + size > budget:
                if lists["b1"]:
                    move(lru("b1"), "b1", None)
                    replace(False)
                else:
                    move(lru("t1"), "t1", None)
            else:
                if sum(used.values()) >= 2 * budget and lists["b2"]:
                    move(lru("b2"), "b2", None)
                replace(False)
        target = "t2" if in_b1 or in_b2 else "t1"
        lists[target][key] = size
        used[target] += size
        if not rules.ghosts_trimmed_per_eviction:
            while lists["b1"] and used["t1"] + used["b1"] > budget:
                move(lru("b1"), "b1", None)
            while (lists["b1"] or lists["b2"]) and sum(used.values()) > 2 * budget:
                ghost = "b2" if lists["b2"] else "b1"
                move(lru(ghost), ghost, None)
    return hits


# ---- libCacheSim's LFUDA ------------------------------------------------------------------------

class LibCacheSimWouldCrash(Exception):
    """The model reached the state in which libCacheSim's LFUDA dereferences a null pointer."""


def libcachesim_lfuda_hits(requests: Requests, budget: int) -> tuple[int, int]:
    """What libCacheSim's LFUDA.c does, which is not LFU-DA as published (see
    tests/test_libcachesim_crosscheck.py). Keys sit in buckets by priority, oldest first in each,
    and a running ``lowest`` stands for the cache age L:

    - a new key gets priority ``lowest + 1``;
    - a hit adds ``lowest`` to the key's priority (so nothing before the first eviction), where
      LFU-DA sets it to reference count + L;
    - eviction takes the oldest key of bucket ``lowest`` (bucket 1 while ``lowest`` <= 1) and
      sets ``lowest`` to that bucket's priority; if the bucket is left empty, ``lowest`` moves up
      to the next non-empty bucket, looking no higher than ``highest``. LFU-DA sets L to the
      victim's priority and keeps it there;
    - a hit that empties bucket ``lowest`` moves it up the same way, before the hit key is filed
      under its new priority;
    - ``highest`` is raised by hits and by inserts that open a new bucket. When the upward search
      finds nothing, ``lowest`` stays on an empty bucket and the next eviction has no key to take:
      libCacheSim crashes there, this model raises ``LibCacheSimWouldCrash``.

    Returns (hits, highest): libCacheSim's upward search steps through every integer up to
    ``highest``, which grows quickly (a hit adds the current ``lowest``), so where ``highest`` is
    large libCacheSim runs for seconds to minutes on a trace of a few hundred requests.
    """
    buckets: dict[int, OrderedDict] = {1: OrderedDict()}  # every bucket ever opened
    priority: dict = {}
    size_of: dict = {}
    lowest = highest = used = hits = 0

    def move_lowest_up() -> int:
        # libCacheSim steps through lowest + 1 .. highest; the first non-empty bucket is the same.
        found = [level for level, bucket in buckets.items() if bucket and lowest < level <= highest]
        return min(found, default=lowest)

    for key, size in requests:
        if key in priority:
            hits += 1
            old = priority[key]
            new = old + lowest
            highest = max(highest, new)
            del buckets[old][key]
            if lowest == old and not buckets[old]:
                lowest = move_lowest_up()
            buckets.setdefault(new, OrderedDict())[key] = None
            priority[key] = new
            continue
        if size > budget:
            continue
        while used + size > budget:
            level = max(lowest, 1)
            bucket = buckets[level]
            if not bucket:
                raise LibCacheSimWouldCrash(f"no key in bucket {level} (highest {highest})")
            victim = next(iter(bucket))
            del bucket[victim], priority[victim]
            used -= size_of.pop(victim)
            lowest = level
            if not bucket:
                lowest = move_lowest_up()
        new = lowest + 1
        if new not in buckets:
            highest = max(highest, new)
            buckets[new] = OrderedDict()
        buckets[new][key] = None
        priority[key] = new
        size_of[key] = size
        used += size
    return hits, highest


def libcachesim_hits(name: str, requests, budget: int, **params) -> int:
    """libCacheSim's own policy ``name`` over (key, size) requests: a fresh
    ``lcs.<name>(cache_size=budget, hashpower=12, **params)``, ``cache.get(req)`` per request,
    the True answers counted."""
    cache = getattr(lcs, name)(cache_size=budget, hashpower=12, **params)
    req = lcs.Request()
    hits = 0
    for key, size in requests:
        req.obj_id, req.obj_size = key, size
        hits += bool(cache.get(req))
    return hits
