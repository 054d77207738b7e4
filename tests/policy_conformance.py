"""The conformance suite every eviction policy must pass (cachetools-style mixin).

A test class inherits ``PolicyConformance`` and provides a ``new_policy`` fixture: a zero-argument
callable that returns a fresh, unbound policy. ``tests/test_policy_conformance.py`` runs it for
every registered policy name, so a new policy gets it by registering.

What it checks, driving a real ``PagedCache`` (synchronous loads, seeded random workloads with
variable sizes and explicit load costs, a virtual clock that ticks once per read and stands still
while a check asks its questions: a decision may read the time, so "the same state" includes it):

- resident bytes never exceed the budget and ``cache.verify()`` passes after every operation;
- pinned objects are never evicted;
- hits and misses equal a count the test keeps itself;
- ``victim()`` is side-effect-free: asking twice gives the same key, it is an unpinned resident key
  (None only when every resident key is pinned), and a cache whose policy was asked extra times
  evicts exactly the same keys as a twin that was not;
- ``victims(need_bytes)``, as the cache takes it (key by key, evicting in between): distinct,
  resident, unpinned keys that free at least ``need_bytes`` whenever the unpinned bytes allow,
  with objects up to 40% of the budget so that one miss needs several victims; asked outside an
  eviction it changes nothing (same answer twice, twin caches evict the same keys), and a list
  answer is checked whole;
- when pinned objects leave no room, acquiring a new object raises ``CacheFullError`` and neither
  the resident set nor the policy's later decisions change.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from itertools import islice

import pytest

from edge.cache import PagedCache
from edge.cache.policies import EvictionPolicy
from edge.errors import CacheFullError

N_KEYS = 60
BUDGET = 4000
MAX_SIZE = 400  # an object is at most a tenth of the budget, so MAX_PINS pins always leave room
MAX_PINS = 4


BIG_SIZE = 1600  # with big objects on: one key in six, so a miss may need many victims


class Store:
    """Loader/unloader with a fixed size and load cost per key; records the unload order."""

    def __init__(self, seed: int, big: bool = False) -> None:
        rng = random.Random(seed)
        self.sizes = {k: rng.randint(20, MAX_SIZE) for k in range(N_KEYS)}
        if big:
            self.sizes.update({k: rng.randint(MAX_SIZE, BIG_SIZE) for k in range(3, N_KEYS, 6)})
        self.costs = {k: rng.uniform(0.001, 0.05) for k in range(N_KEYS)}
        self.unloaded: list[Hashable] = []

    def load(self, key):
        return f"v{key}", self.sizes[key], self.costs[key]

    def unload(self, key, value) -> None:
        assert value == f"v{key}"
        self.unloaded.append(key)


class TickClock:
    """Virtual time: every read is the next tick, so each access has a time of its own."""

    def __init__(self) -> None:
        self.t = 0.0
        self.stopped = False

    def __call__(self) -> float:
        if not self.stopped:
            self.t += 1.0
        return self.t

    @contextmanager
    def frozen(self):
        """Time stands still while a check asks the policy questions the twin is not asked."""
        self.stopped = True
        try:
            yield
        finally:
            self.stopped = False


def frozen(cache: PagedCache):
    clock = cache._clock
    return clock.frozen() if isinstance(clock, TickClock) else nullcontext()


def skewed_key(rng: random.Random) -> int:
    """About Zipf(1) over N_KEYS: a mix of hot keys, a warm middle and one-hit wonders."""
    return min(int(rng.paretovariate(0.7)) - 1, N_KEYS - 1)


def unpinned_bytes(cache: PagedCache) -> int:
    """Bytes of resident unpinned objects (lock held)."""
    return sum(entry.size for key, entry in cache._entries.items()
               if not cache.view.is_pinned(key))


class VictimsChecker:
    """Checks a bound policy's ``victims()`` as the cache uses it, key by key.

    Installed as an instance attribute, so the cache's call ``policy.victims(need)`` goes through
    it; each key is checked when the cache takes it (the keys before it already evicted), and an
    answer that runs out is checked for having freed ``need`` when the unpinned bytes allowed.
    Problems are collected (raising inside the cache's eviction would test the cache instead).
    """

    def __init__(self, cache: PagedCache) -> None:
        self.cache = cache
        self.policy = cache.policy
        self.inner = self.policy.victims
        self.problems: list[str] = []
        self.rounds: list[list[Hashable]] = []  # the keys each call gave (as far as taken)
        self.policy.victims = self

    def __call__(self, need: int) -> Iterator[Hashable]:
        return self._checked(need)

    def _checked(self, need: int) -> Iterator[Hashable]:
        cache = self.cache
        if not (isinstance(need, int) and need >= 1):
            self.problems.append(f"victims() asked for need_bytes={need!r}")
        could_free = unpinned_bytes(cache)
        given: list[Hashable] = []
        self.rounds.append(given)
        freed = 0
        for key in self.inner(need):
            entry = cache._entries.get(key)
            if key in given:
                self.problems.append(f"victims({need}) gave {key!r} twice")
            elif entry is None:
                self.problems.append(f"victims({need}) gave {key!r}, not resident")
            elif cache.view.is_pinned(key):
                self.problems.append(f"victims({need}) gave {key!r}, which is pinned")
            else:
                freed += entry.size
            given.append(key)
            yield key
        if freed < need <= could_free:
            self.problems.append(f"victims({need}) ran out after {freed} bytes although "
                                 f"{could_free} unpinned bytes were resident")


class PolicyConformance:
    """Mixin: subclasses provide the ``new_policy`` fixture."""

    @pytest.fixture
    def new_policy(self) -> Callable[[], EvictionPolicy]:  # pragma: no cover - overridden
        raise NotImplementedError("a conformance test class must provide new_policy")

    def make_cache(self, new_policy, seed: int = 0, budget: int = BUDGET):
        store = Store(seed)
        cache = PagedCache(budget, new_policy(), loader=store.load, unloader=store.unload,
                           load_workers=0, clock=TickClock())
        return cache, store

    @staticmethod
    def check_victim(cache: PagedCache) -> Hashable | None:
        """Ask twice; the answer must be stable and legal."""
        with cache._lock, frozen(cache):  # the policy contract: called under the cache's lock
            first = cache.policy.victim()
            second = cache.policy.victim()
            resident = list(cache._entries)
            unpinned = [k for k in resident if not cache.view.is_pinned(k)]
        assert first == second, f"victim() changed between two calls: {first!r} then {second!r}"
        if unpinned:
            assert first in unpinned, f"victim() gave {first!r}, not an unpinned resident key"
        else:
            assert first is None, f"victim() gave {first!r} while every resident key is pinned"
        return first

    @staticmethod
    def check_victims(cache: PagedCache, need: int) -> list[Hashable]:
        """Ask ``victims(need)`` outside an eviction, twice; the answers must agree and be legal.

        A list or tuple answer is checked whole; of any other iterable only the first key is
        taken (the default one names the next key only once the cache has evicted this one)."""
        with cache._lock, frozen(cache):
            first, whole = PolicyConformance._answer(cache, need)
            second, _ = PolicyConformance._answer(cache, need)
            unpinned = {k: e.size for k, e in cache._entries.items()
                        if not cache.view.is_pinned(k)}
        assert first == second, f"victims({need}) changed between two calls: {first} {second}"
        assert len(set(first)) == len(first), f"victims({need}) repeats a key: {first}"
        illegal = [k for k in first if k not in unpinned]
        assert not illegal, f"victims({need}) gave keys not unpinned and resident: {illegal}"
        if unpinned:
            assert first, f"victims({need}) gave nothing while {len(unpinned)} keys are unpinned"
        if whole and need <= sum(unpinned.values()):
            freed = sum(unpinned[k] for k in first)
            assert freed >= need, f"victims({need}) frees only {freed} bytes: {first}"
        return first

    @staticmethod
    def _answer(cache: PagedCache, need: int) -> tuple[list[Hashable], bool]:
        answer = cache.policy.victims(need)
        if isinstance(answer, (list, tuple)):
            return list(answer), True
        keys = list(islice(answer, 1))
        close = getattr(answer, "close", None)
        if close is not None:
            close()
        return keys, False

    # -- the tests ------------------------------------------------------------------------

    def test_budget_pins_accounting_and_verify_under_a_random_workload(self, new_policy):
        rng = random.Random(7)
        cache, store = self.make_cache(new_policy, seed=1)
        budget = BUDGET
        held: list = []  # (key, context manager) of acquires kept open
        hits = misses = 0
        with ExitStack() as stack:
            for step in range(2500):
                op = rng.random()
                if op < 0.02:  # shrink or grow the budget, always leaving room for the pins
                    budget = rng.randint((MAX_PINS + 1) * MAX_SIZE, BUDGET)
                    cache.resize(budget)
                elif op < 0.04:
                    key = skewed_key(rng)
                    if key in cache and all(k != key for k, _ in held):
                        assert cache.discard(key)
                elif op < 0.14 and held:
                    key, cm = held.pop(rng.randrange(len(held)))
                    cm.__exit__(None, None, None)
                else:
                    key = skewed_key(rng)
                    if key in cache:
                        hits += 1
                    else:
                        misses += 1
                    cm = cache.acquire(key)
                    assert cm.__enter__() == f"v{key}"
                    if len(held) < MAX_PINS and rng.random() < 0.3:
                        held.append((key, cm))
                    else:
                        cm.__exit__(None, None, None)
                stats = cache.stats()
                assert stats.resident_bytes <= budget, f"over budget at step {step}"
                for key, _ in held:
                    assert key in cache, f"pinned {key!r} was evicted at step {step}"
                assert (stats.hits, stats.misses) == (hits, misses)
                cache.verify()
            for _, cm in held:
                stack.callback(cm.__exit__, None, None, None)
        assert cache.stats().evictions > 100, "the workload must exercise eviction"
        cache.close()

    def test_objects_held_open_survive_many_other_acquires(self, new_policy):
        rng = random.Random(11)
        cache, store = self.make_cache(new_policy, seed=2)
        # Pin keys the policy has every reason to evict: inserted first, never hit again.
        pinned = [N_KEYS - 1, N_KEYS - 2, N_KEYS - 3]
        with ExitStack() as stack:
            for key in pinned:
                stack.enter_context(cache.acquire(key))
            for _ in range(1500):
                with cache.acquire(rng.randrange(N_KEYS - 3)):
                    pass
                assert all(key in cache for key in pinned)
                self.check_victim(cache)
            assert cache.stats().evictions > 100
        cache.verify()

    def test_victim_is_side_effect_free(self, new_policy):
        """Twin caches see the same workload; one has its policy asked extra questions."""
        rng = random.Random(3)
        asked, asked_store = self.make_cache(new_policy, seed=3)
        quiet, quiet_store = self.make_cache(new_policy, seed=3)
        held: list = []
        for step in range(1500):
            key = skewed_key(rng)
            hold = rng.random() < 0.1 and len(held) < MAX_PINS
            release = held and rng.random() < 0.15
            self.check_victim(asked)
            pair = (asked.acquire(key), quiet.acquire(key))
            for cm in pair:
                cm.__enter__()
            if hold:
                held.append(pair)
            else:
                for cm in pair:
                    cm.__exit__(None, None, None)
            if release:
                for cm in held.pop(0):
                    cm.__exit__(None, None, None)
            assert asked_store.unloaded == quiet_store.unloaded, f"decisions differ at step {step}"
        for pair in held:
            for cm in pair:
                cm.__exit__(None, None, None)
        assert len(asked_store.unloaded) > 100
        assert asked.resident() == quiet.resident()
        self.check_victim(asked)

    def test_cache_full_of_pins_raises_and_changes_nothing(self, new_policy):
        rng = random.Random(5)
        full, full_store = self.make_cache(new_policy, seed=4)
        twin, twin_store = self.make_cache(new_policy, seed=4)
        for _ in range(400):  # warm both the same way
            key = skewed_key(rng)
            for cache in (full, twin):
                with cache.acquire(key):
                    pass
        with ExitStack() as stack:
            # Pin every resident key (in both), then more new ones until the next cannot fit.
            for cache in (full, twin):
                for key in list(cache.resident()):
                    stack.enter_context(cache.acquire(key))
            newcomers = (k for k in range(N_KEYS) if k not in full)
            while True:
                key = next(newcomers)
                room = BUDGET - full.stats().pinned_bytes
                if full_store.sizes[key] > room:
                    break
                for cache in (full, twin):
                    stack.enter_context(cache.acquire(key))
            assert self.check_victim(full) is None
            before = (full.resident(), full.stats().evictions, list(full_store.unloaded))
            with pytest.raises(CacheFullError):
                with full.acquire(key):
                    pass  # pragma: no cover - must not be reached
            # The loaded object that did not fit is handed back to the unloader, nothing else.
            assert full_store.unloaded.pop() == key
            assert (full.resident(), full.stats().evictions, full_store.unloaded) == before
            assert key not in full
            full.verify()
        # With the pins gone both evict the same keys in the same order: the failed acquire left
        # no trace in the policy.
        assert full_store.unloaded == twin_store.unloaded
        for key in [skewed_key(rng) for _ in range(300)] + list(range(N_KEYS)):
            for cache in (full, twin):
                with cache.acquire(key):
                    pass
        assert len(full_store.unloaded) > len(before[2]) + 50
        assert full_store.unloaded == twin_store.unloaded
        assert full.resident() == twin.resident()

    def test_victims_as_the_cache_takes_them_are_legal_and_enough(self, new_policy):
        """Big and small objects, a varying budget, pins: every eviction round is checked."""
        rng = random.Random(13)
        store = Store(6, big=True)
        cache = PagedCache(BUDGET, new_policy(), loader=store.load, unloader=store.unload,
                           load_workers=0, clock=TickClock())
        checker = VictimsChecker(cache)
        budget = BUDGET
        held: list = []
        with ExitStack() as stack:
            for step in range(2000):
                op = rng.random()
                if op < 0.02:  # room for the pins (small objects only) and one big object
                    budget = rng.randint(MAX_PINS * MAX_SIZE + BIG_SIZE, BUDGET)
                    cache.resize(budget)
                elif op < 0.12 and held:
                    held.pop(rng.randrange(len(held))).__exit__(None, None, None)
                else:
                    key = skewed_key(rng)
                    cm = cache.acquire(key)
                    cm.__enter__()
                    if len(held) < MAX_PINS and store.sizes[key] <= MAX_SIZE \
                            and rng.random() < 0.3:
                        held.append(cm)
                    else:
                        cm.__exit__(None, None, None)
                assert not checker.problems, f"step {step}: {checker.problems[:3]}"
                stats = cache.stats()
                assert stats.resident_bytes + stats.reserved_bytes <= budget, f"step {step}"
                assert stats.pinned_bytes <= stats.resident_bytes
                cache.verify()
            for cm in held:
                stack.callback(cm.__exit__, None, None, None)
        several = sum(len(keys) > 1 for keys in checker.rounds)
        assert several > 20, "the workload must make misses that need several victims"
        assert cache.stats().evictions > 200
        cache.close()

    def test_victims_is_side_effect_free(self, new_policy):
        """Twin caches; one has ``victims(need)`` asked for many needs before every request."""
        rng = random.Random(17)
        asked, asked_store = self.make_cache(new_policy, seed=5)
        quiet, quiet_store = self.make_cache(new_policy, seed=5)
        held: list = []
        for step in range(1200):
            with asked._lock:
                could_free = unpinned_bytes(asked)
            for need in {1, rng.randint(1, BUDGET), max(could_free, 1), could_free + 1}:
                self.check_victims(asked, need)
            key = skewed_key(rng)
            pair = (asked.acquire(key), quiet.acquire(key))
            for cm in pair:
                cm.__enter__()
            if rng.random() < 0.1 and len(held) < MAX_PINS:
                held.append(pair)
            else:
                for cm in pair:
                    cm.__exit__(None, None, None)
            if held and rng.random() < 0.15:
                for cm in held.pop(0):
                    cm.__exit__(None, None, None)
            assert asked_store.unloaded == quiet_store.unloaded, f"decisions differ at step {step}"
        for pair in held:
            for cm in pair:
                cm.__exit__(None, None, None)
        assert len(asked_store.unloaded) > 100
        assert asked.resident() == quiet.resident()
