"""``Runtime``: the composition root and the one path every request takes.

A policy file (or mapping, or ``EdgeConfig``) becomes a ``PagedCache`` (cache section), a
``Router`` (router section), a ``Catalogue`` of pageable objects (catalogue section, or given)
and a ``Backend`` (given). ``handle`` is the request path the daemon serves and the simulator
replays; only the backend and its clock differ between them.

    with Runtime.from_config("policies/polar.yaml", backend=backend) as runtime:
        outcome = runtime.handle(InferenceRequest(prompt="SELECT ...", request_id="r1"))
        outcome.adapter, outcome.hit, outcome.timings, outcome.explain(top=3)
        runtime.feedback("r1", 0.9)          # any time later, in any order
        runtime.stats()

Per request: features -> route (unless the request names its adapter) -> a serving slot
(``edge.scheduler``: the backend serves ``serving.slots`` requests at once; the rest wait in a
bounded queue ordered by adapter affinity, and their adapters are prefetched meanwhile) ->
acquire (hit: pin; miss: make room for the declared size, load through the backend, pin) ->
serve -> release -> the reward source (or a later ``feedback``). When an epoch of the router
closes, its resident set is handed to the cache after the request is served, so the plan's
prefetches never delay the request that closed the epoch.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Hashable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from edge.backends.base import Backend
from edge.cache.paged import PagedCache
from edge.catalogue import Catalogue, CatalogueEntry
from edge.config import EdgeConfig, build_catalogue, load_config
from edge.errors import BudgetError, CacheClosedError, ConfigError, EdgeError, RequestError
from edge.paging_cost import PagingCostModel
from edge.router.linucb import Decision
from edge.router.polar import apply_resident_set
from edge.router.router import Router
from edge.scheduler import RequestCancelled, Scheduler
from edge.schema import from_mapping

# The adapter name that asks the router to choose (OpenAI's ``model: auto`` convention).
AUTO = "auto"


@dataclass(frozen=True)
class InferenceRequest:
    """One request. ``prompt``: the text (or a context vector when the router's features are
    vectors); ``adapter``: a catalogue name, ``None``/``"auto"`` to let the router choose, or a
    sequence of names to apply together (empty: the base model alone); ``request_id``: the key
    a later reward refers to (one is made up when omitted); ``params``: passed to the backend
    untouched (max_tokens, temperature, ...); ``tenant``: who sent it (OpenAI's ``user``),
    recorded in the access log and nowhere else; ``cancel``: an event that cancels it."""

    prompt: Any = None
    adapter: Optional[str | tuple[str, ...]] = None
    request_id: Optional[Hashable] = None
    params: Mapping[str, Any] = field(default_factory=dict)
    tenant: Optional[str] = None
    # Set it to cancel the request (its client went away): a waiting request leaves the
    # queue, a generating one stops at its next token; either raises RequestCancelled.
    cancel: Optional[threading.Event] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        adapter = self.adapter
        if adapter is None or isinstance(adapter, str):
            names = (adapter,) if adapter is not None else ()
        elif isinstance(adapter, (list, tuple)):
            names = tuple(adapter)
        else:
            names = (None,)  # refused just below
        if any(not isinstance(n, str) or not n or (n == AUTO and len(names) > 1) for n in names):
            raise RequestError(f"adapter must be a catalogue name, \"{AUTO}\", None or a list "
                               f"of names, got {adapter!r}")
        if len(set(names)) != len(names):
            raise RequestError(f"adapter lists a name twice: {list(names)}")
        if self.cancel is not None and not callable(getattr(self.cancel, "is_set", None)):
            raise RequestError(f"cancel must be a threading.Event or None, got "
                               f"{type(self.cancel).__name__}")
        if isinstance(adapter, list):
            object.__setattr__(self, "adapter", names)  # frozen and hashable like the rest
        if self.routed and self.prompt is None:
            raise RequestError("a request without an adapter is routed, and routing needs its "
                               "prompt (or context vector); give one, or name the adapter")
        try:
            hash(self.request_id)
        except TypeError:
            raise RequestError(f"request_id must be hashable (a string or a number), got "
                               f"{type(self.request_id).__name__}") from None

    @property
    def routed(self) -> bool:
        return self.adapter is None or self.adapter == AUTO

    @property
    def named(self) -> tuple[str, ...]:
        """The adapters the request names itself (empty when routed, or for the base model)."""
        if self.routed:
            return ()
        return (self.adapter,) if isinstance(self.adapter, str) else self.adapter


@dataclass
class Outcome:
    """What happened to one request.

    ``timings`` are seconds on the runtime's clock (modelled time under the simulator):
    ``route`` (features and the decision), ``queue`` (waiting for a serving slot),
    ``acquire`` (for a miss, the page-in, including any
    wait for room), ``serve`` and ``total``."""

    request_id: Hashable
    adapters: tuple[str, ...]  # what served it: the routed adapter, or the ones named (maybe none)
    decision: Optional[Decision]  # None when the request named its adapters
    hit: bool  # every adapter was resident (or being loaded by another request) when acquired
    output: Any
    timings: dict[str, float]
    # The router's feature vector for this request (None when it named its adapters).
    context: Optional[np.ndarray] = None

    @property
    def adapter(self) -> Optional[str]:
        """The one adapter that served the request (None for the base model or a set)."""
        return self.adapters[0] if len(self.adapters) == 1 else None

    @property
    def routed(self) -> bool:
        return self.decision is not None

    def explain(self, top: Optional[int] = None) -> list[dict]:
        """The router's per-adapter scores, best first ([] for a named adapter)."""
        return self.decision.explain(top) if self.decision is not None else []


@dataclass(frozen=True)
class Started:
    """A request whose adapters are pinned, before its output: what a stream knows first."""

    request_id: Hashable
    adapters: tuple[str, ...]
    decision: Optional[Decision]
    hit: bool


class Stream(Iterator[str]):
    """The text of one request as it is generated (``Runtime.stream``). ``request_id``,
    ``adapters``, ``decision`` and ``hit`` are known from the start; ``outcome`` once the last
    piece was read. Close it (or use ``with``) if you stop early: that releases the adapters."""

    def __init__(self, run: Generator[Started | str, None, Outcome]) -> None:
        self._run = run
        self.outcome: Optional[Outcome] = None
        head = next(run)  # routes and acquires now, raising what they raise
        self.request_id, self.adapters = head.request_id, head.adapters
        self.decision, self.hit = head.decision, head.hit

    def __next__(self) -> str:
        try:
            return next(self._run)
        except StopIteration as done:
            if self.outcome is None:
                self.outcome = done.value
            raise StopIteration from None

    def close(self) -> None:
        self._run.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def render_chat_plainly(messages: Sequence[Mapping[str, str]]) -> str:
    """``role: content`` per line, then ``assistant:`` (for a base without a chat template)."""
    lines = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise RequestError(f"message {i} must have a string role and content, "
                               f"got {message!r}")
        lines.append(f"{message['role']}: {message['content']}")
    if not lines:
        raise RequestError("a chat needs at least one message")
    return "\n".join(lines) + "\nassistant:"


class Runtime:
    """Cache, router, catalogue and backend, composed; thread-safe ``handle``."""

    def __init__(self, config: EdgeConfig, backend: Backend, catalogue: Catalogue, *,
                 paging_cost: Optional[PagingCostModel] = None,
                 clock: Optional[Callable[[], float]] = None) -> None:
        if not len(catalogue):
            raise ConfigError("the catalogue is empty: a runtime needs at least one adapter "
                              "(set catalogue.directory or catalogue.files in the policy file)")
        budget = config.cache.budget_bytes
        _check_fits(catalogue, budget)
        self.config = config
        self.backend = backend
        self.catalogue = catalogue
        self.clock = clock or getattr(backend, "clock", None) or time.monotonic
        self.cache = PagedCache.from_config(
            config.cache, loader=self._load, unloader=self._unload,
            sizer=self._declared_size, clock=self.clock)
        # A backend may compute the router's features itself (the llama backend: the base
        # model's own embedding, features.extractor: llama-embedding); None: the router's own.
        extractor_for = getattr(backend, "feature_extractor", None)
        self._extractor = None
        try:
            if extractor_for is not None:
                self._extractor = extractor_for(config.router.features)
            self.router = Router(config.router, catalogue.sizes(), paging_cost=paging_cost,
                                 budget_bytes=budget, clock=self.clock, extractor=self._extractor)
        except BaseException:
            self.cache.close()
            self._close_extractor()
            raise
        # A restored router state carries its last demand estimate: the learned eviction
        # policy reads it from the first decision (then after each epoch plan, _apply_plan).
        self.cache.set_demand(self.router.demand())
        if getattr(self.router.reward_source, "needs_logprobs", False) \
                and hasattr(backend, "track_logprobs"):
            backend.track_logprobs = True  # the reward is Completion.mean_logprob
        serving = config.serving
        self.scheduler = Scheduler(
            serving.slots or getattr(backend, "slots", None) or 1,
            queue_limit=serving.queue_limit, max_bypass=serving.max_bypass,
            resident=self.cache.resident,
            on_queue=self._prefetch_for_queue if serving.prefetch else None)
        # The router's arrays are not thread-safe; routing and rewards take this lock, the
        # cache has its own, and serving holds neither.
        self._router_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._loaded_from: dict[str, CatalogueEntry] = {}
        self._rescan_lock = threading.Lock()
        self._last_scan = self.clock()
        self._sizes = catalogue.sizes()
        self._ids = itertools.count()
        self._closed = False
        self._observers: tuple[Callable[[InferenceRequest, Outcome], None], ...] = ()
        self._counts = {"requests": 0, "routed": 0, "named": 0, "hits": 0, "misses": 0,
                        "failed": 0, "plans_applied": 0, "feedback": 0}
        self._seconds = {"route": 0.0, "queue": 0.0, "acquire": 0.0, "serve": 0.0}

    @classmethod
    def from_config(cls, config: EdgeConfig | Mapping[str, Any] | str | os.PathLike[str], *,
                    backend: Backend, catalogue: Optional[Catalogue] = None,
                    paging_cost: Optional[PagingCostModel] = None,
                    clock: Optional[Callable[[], float]] = None) -> Runtime:
        """A runtime from a policy file path, a mapping of its contents, or an ``EdgeConfig``.

        ``catalogue`` overrides the file's catalogue section (the simulator passes the
        trace's adapters); ``clock`` defaults to the backend's ``clock`` attribute if it has
        one, else ``time.monotonic``."""
        if isinstance(config, (str, os.PathLike)):
            config = load_config(config)
        elif isinstance(config, Mapping):
            config = from_mapping(EdgeConfig, config, "config")
        elif not isinstance(config, EdgeConfig):
            raise TypeError(f"config must be a policy file path, a mapping or an EdgeConfig, "
                            f"not {type(config).__name__}")
        if catalogue is None:
            catalogue = _catalogue_for(backend, config)
        return cls(config, backend, catalogue, paging_cost=paging_cost, clock=clock)

    def _rescan_in_passing(self, now: float) -> None:
        # One request rescans; the others go on with the catalogue they have.
        if not self._rescan_lock.acquire(blocking=False):
            return
        try:
            self._last_scan = now
            self.rescan()
        except EdgeError as exc:  # a directory gone for a moment must not fail the request
            logging.getLogger("edge.runtime").warning("catalogue rescan failed: %s", exc)
        finally:
            self._rescan_lock.release()

    def rescan(self) -> dict[str, list[str]]:
        """Read the catalogue section again (the adapter directory may have changed) and serve
        what it holds now; see ``update_catalogue``."""
        return self.update_catalogue(_catalogue_for(self.backend, self.config))

    # ---- the cache's side of the backend ---------------------------------------------------

    def _declared_size(self, name: str) -> int:
        return self.catalogue[name].size

    def _load(self, name: str):
        entry = self.catalogue[name]
        result = self.backend.load(entry)
        # The entry it was loaded from, for its unload: the catalogue may change meanwhile.
        self._loaded_from[name] = entry
        return result

    def _unload(self, name: str, value: Any) -> None:
        entry = self._loaded_from.pop(name, None) or self.catalogue[name]
        self.backend.unload(entry, value)

    def update_catalogue(self, catalogue: Catalogue) -> dict[str, list[str]]:
        """Serve ``catalogue`` from now on (a rescan of the adapter directory): the router keeps
        what it learned of adapters still there, removed and changed ones are dropped from the
        cache unless in use (then they go when evicted; a changed one is reloaded after).
        Returns the names added, removed and changed."""
        _check_fits(catalogue, self.cache.budget)
        old = self.catalogue
        report = {"added": [n for n in catalogue if n not in old],
                  "removed": [n for n in old if n not in catalogue],
                  "changed": [n for n in catalogue if n in old and catalogue[n] != old[n]]}
        with self._router_lock:
            self.router.sync_catalogue(catalogue.sizes())
            demand = self.router.demand()  # removed adapters' shares went with them
        self.cache.set_demand(demand)
        self.catalogue, self._sizes = catalogue, catalogue.sizes()
        for name in report["removed"] + report["changed"]:
            try:
                self.cache.discard(name)
            except EdgeError:
                pass  # pinned by a request in flight; unloaded with its old entry later
        return report

    # ---- the request path --------------------------------------------------------------------

    def handle(self, request: InferenceRequest) -> Outcome:
        """Route (or take the named adapter), acquire, serve, release; see the module doc."""
        run = self._run(request, streaming=False)
        while True:
            try:
                next(run)
            except StopIteration as done:
                return done.value

    def stream(self, request: InferenceRequest) -> Stream:
        """``handle`` that yields the output's text as the backend generates it. Routing and
        acquiring happen now (their errors are raised here); the adapters stay pinned until
        the stream is exhausted or closed (``with runtime.stream(req) as s: for piece in s``)."""
        return Stream(self._run(request, streaming=True))

    def _run(self, request: InferenceRequest, streaming: bool
             ) -> Generator[Started | str, None, Outcome]:
        """The request path, as a generator: first a ``Started`` once the adapters are pinned,
        then (streaming) the text pieces; returns the ``Outcome``."""
        if self._closed:
            raise CacheClosedError("the runtime is closed")
        clock = self.clock
        request_id = request.request_id if request.request_id is not None \
            else f"req-{next(self._ids)}"
        started = clock()
        interval = self.config.catalogue.rescan_seconds
        if interval is not None and started - self._last_scan >= interval:
            self._rescan_in_passing(started)
        decision, plan, demand, x = None, None, None, None
        if request.routed:
            with self._router_lock:
                x = self.router.features(request.prompt)
                decision = self.router.route_features(request_id, x, self.cache.resident())
                plan = self.router.take_plan()
                demand = self.router.demand() if plan is not None else None
            names = (decision.arm_id,)
        else:
            names = request.named
        routed_at = clock()
        try:
            # UnknownObjectError for a name the catalogue does not hold, before anything moves.
            entries = [self.catalogue[name] for name in names]
            with contextlib.ExitStack() as pins:
                # Released last (after the adapters are unpinned): the next request chosen for
                # this slot may need their room.
                pins.enter_context(self.scheduler.slot(names, request.cancel))
                queued_at = clock()
                if len(names) == 1:  # the common case: one adapter, the cache's fastest path
                    acquisition = self.cache.acquire(names[0])
                    values = [pins.enter_context(acquisition)]
                    hit = acquisition.hit
                else:
                    # A set is pinned all together or not at all; "hit" is read before
                    # acquiring, so under concurrency it can miss a load another one started.
                    hit = set(names) <= self.cache.resident().keys()
                    values = pins.enter_context(self.cache.acquire_many(names))
                acquired_at = clock()
                yield Started(request_id, names, decision, hit)
                objects = list(zip(entries, values, strict=True))
                serve_stream = getattr(self.backend, "serve_stream", None)
                if serve_stream is not None and (streaming or request.cancel is not None):
                    output = yield from _pieces(serve_stream(request, objects), request.cancel)
                else:
                    output = self.backend.serve(request, objects)
                    if streaming and output is not None:
                        yield str(getattr(output, "text", output))
            served_at = clock()
        except BaseException:  # GeneratorExit too: a stream closed early served nobody
            with self._stats_lock:
                self._counts["failed"] += 1
            if decision is not None:
                with self._router_lock:
                    self.router.cancel(request_id)  # no reward can refer to a failed request
            raise
        finally:
            if plan is not None:
                self._apply_plan(plan, demand)
        timings = {"route": routed_at - started, "queue": queued_at - routed_at,
                   "acquire": acquired_at - queued_at,
                   "serve": served_at - acquired_at, "total": served_at - started}
        self._count(decision is not None, hit, timings)
        if decision is not None and self.config.router.feedback.reward_source != "explicit":
            with self._router_lock:
                self.router.on_response(request_id, request.prompt, output)
        outcome = Outcome(request_id, names, decision, hit, output, timings, x)
        for observer in self._observers:
            try:
                observer(request, outcome)
            except Exception:  # an observer (the access log) must never fail a served request
                logging.getLogger("edge.runtime").exception(
                    "observer %r failed on request %s", observer, request_id)
        return outcome

    def add_observer(self, observer: Callable[[InferenceRequest, Outcome], None]) -> None:
        """Call ``observer(request, outcome)`` after every request served (not the failed
        ones), in the serving thread: the daemon's access log. An exception it raises is
        logged and ignored."""
        self._observers = (*self._observers, observer)

    # ---- conveniences for embedding ------------------------------------------------------------

    def complete(self, prompt: Any, *, adapter: Optional[str | Sequence[str]] = AUTO,
                 request_id: Optional[Hashable] = None, **params: Any) -> Outcome:
        """``handle`` of one prompt: ``runtime.complete("...", max_tokens=32).output.text``."""
        return self.handle(InferenceRequest(prompt, adapter, request_id, params))

    def chat(self, messages: Sequence[Mapping[str, str]], *,
             adapter: Optional[str | Sequence[str]] = AUTO,
             request_id: Optional[Hashable] = None, **params: Any) -> Outcome:
        """``complete`` of a conversation, rendered by the backend's chat template if it has
        one (``format_chat``), else as ``role: content`` lines ending with ``assistant:``."""
        return self.complete(self.render_chat(messages), adapter=adapter,
                             request_id=request_id, **params)

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        template = getattr(self.backend, "format_chat", None)
        if template is not None:
            return template(messages)
        return render_chat_plainly(messages)

    def route(self, prompt: Any) -> Decision:
        """The adapter the router would choose for ``prompt`` now, with its explanation, without
        serving, learning or moving an epoch (nothing waits for a reward)."""
        with self._router_lock:
            return self.router.preview(prompt, self.cache.resident())

    def _prefetch_for_queue(self, queue: list[tuple[str, ...]]) -> None:
        """Page in the adapters of waiting requests, most urgent first, as far as they fit
        beside the pinned ones: so a request that waited finds its adapter resident. Stops at
        the first that would not fit, so prefetching for a later request never evicts what an
        earlier one needs (resident adapters count against the room too)."""
        room = self.config.cache.budget_bytes - self.cache.stats().pinned_bytes
        resident = self.cache.resident()
        wanted: list[str] = []
        for name in dict.fromkeys(name for names in queue for name in names):
            size = self._sizes.get(name)
            if size is None:
                continue  # not in the catalogue: that request fails when it is served
            room -= size
            if room < 0:
                break
            if name not in resident:
                wanted.append(name)
        if wanted:
            try:
                self.cache.prefetch(wanted)
            except EdgeError as exc:  # advice only: a closing cache must not fail anyone
                logging.getLogger("edge.runtime").debug("prefetch of %s failed: %s", wanted,
                                                        exc)

    def _apply_plan(self, plan: list[str], demand: dict[str, float]) -> None:
        try:
            # The estimate the plan was made with, before the plan's loads evict anything.
            self.cache.set_demand(demand)
            # Empty with polar.prefetch_plan false: nothing is discarded or prefetched.
            apply_resident_set(self.cache, plan, self._sizes)
            with self._stats_lock:
                self._counts["plans_applied"] += 1
        except EdgeError:
            pass  # a plan is advice: the cache closing or filling up must not fail a request

    def _count(self, routed: bool, hit: bool, timings: dict[str, float]) -> None:
        with self._stats_lock:
            counts = self._counts
            counts["requests"] += 1
            counts["routed" if routed else "named"] += 1
            counts["hits" if hit else "misses"] += 1
            for step in self._seconds:
                self._seconds[step] += timings[step]

    def feedback(self, request_id: Hashable, reward: float) -> bool:
        """The reward of a routed request; False if its adapter left the catalogue meanwhile.
        ``UnknownRequestError`` for an id with no pending decision, ``RewardError`` for a
        reward outside the configured range."""
        with self._router_lock:
            applied = self.router.update(request_id, reward)
        with self._stats_lock:
            self._counts["feedback"] += 1
        return applied

    def add_counts(self, requests: Mapping[str, int], seconds: Mapping[str, float]) -> None:
        """Add saved counters to this runtime's (a daemon restarting continues its counts).
        ``KeyError`` for a counter this runtime does not keep."""
        with self._stats_lock:
            unknown = sorted((set(requests) - set(self._counts))
                             | (set(seconds) - set(self._seconds)))
            if unknown:
                raise KeyError(f"not a counter of this runtime: {unknown}")
            for name, count in requests.items():
                self._counts[name] += count
            for name, value in seconds.items():
                self._seconds[name] += value

    def save_router_state(self) -> bool:
        """Save the router's learned state now (to ``router.state.path``), consistent with
        routing and rewards; False when no path is configured."""
        if self.config.router.state.path is None:
            return False
        with self._router_lock:
            self.router.save()
        return True

    def resident(self) -> dict[str, int]:
        """Resident adapters (name -> bytes), least recently used first."""
        return self.cache.resident()

    def resident_mask(self) -> np.ndarray:
        """Residency as a bool array indexed like ``self.router.arm_ids``."""
        return self.router.polar.resident_mask(self.cache.resident())

    def stats(self) -> dict[str, Any]:
        with self._router_lock:
            pending = self.router.pending
            router = {"arms": len(self.router.arm_ids), "updates": self.router.updates,
                      "pending": len(pending), "expired": pending.expired,
                      "overflowed": pending.overflowed,
                      "stale_feedback": self.router.stale_feedback}
        cache = self.cache.stats()
        scheduler = {"slots": self.scheduler.slots, **asdict(self.scheduler.stats())}
        with self._stats_lock:
            requests, seconds = dict(self._counts), dict(self._seconds)
        return {"requests": requests, "seconds": seconds,
                "cache": {**asdict(cache), "hit_ratio": cache.hit_ratio}, "router": router,
                "scheduler": scheduler,
                "catalogue": {"objects": len(self.catalogue),
                              "bytes": sum(self._sizes.values())}}

    # ---- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Unload everything, save the router's state (if configured), then close what the
        backend made for the router before the backend itself (its model outlives them)."""
        if self._closed:
            return
        self._closed = True
        self.scheduler.close()
        try:
            self.cache.close()
        finally:
            try:
                with self._router_lock:
                    self.router.close()
            finally:
                try:
                    self._close_extractor()
                finally:
                    self.backend.close()

    def _close_extractor(self) -> None:
        close = getattr(self._extractor, "close", None)
        if close is not None:
            close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pieces(generation: Generator[str, None, Any], cancel: Optional[threading.Event]
            ) -> Generator[str, None, Any]:
    """The backend's text pieces, stopping (``RequestCancelled``) at the first one after
    ``cancel`` is set; returns the generation's output. Closing it closes the generation."""
    with contextlib.closing(generation):
        while True:
            try:
                piece = next(generation)
            except StopIteration as done:
                return done.value
            if cancel is not None and cancel.is_set():
                raise RequestCancelled("the request was cancelled while it generated")
            yield piece


def _catalogue_for(backend: Backend, config: EdgeConfig) -> Catalogue:
    """The backend's own catalogue of the section if it validates its objects (the llama
    backend checks every adapter file against its base model), else the files as they are."""
    build = getattr(backend, "build_catalogue", None)
    return build(config.catalogue) if build is not None else build_catalogue(config.catalogue)


def _check_fits(catalogue: Catalogue, budget: int) -> None:
    too_large = [e for e in catalogue.values() if e.size > budget]
    if too_large:
        e = too_large[0]
        raise BudgetError(f"catalogue entry {e.name!r} is {e.size} bytes, more than the whole "
                          f"cache budget of {budget} bytes ({len(too_large)} such entries): it "
                          "could never be loaded")


__all__ = ["AUTO", "CatalogueEntry", "InferenceRequest", "Outcome", "Runtime", "Started",
           "Stream", "render_chat_plainly"]
