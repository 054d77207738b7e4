"""The runtime's serving slots: waiting requests' adapters are prefetched, a full queue is
refused with QueueFullError, a cancelled request stops and releases its adapters, and the slot
count comes from the policy file or the backend.

The backend is the simulator's with a gate: a request whose prompt is "hold" generates until
the test opens the gate, so the test decides who waits behind whom.
"""

from __future__ import annotations

import threading
import time

import pytest
from threads import run_threads

from edge.catalogue import Catalogue
from edge.config import CacheConfig, EdgeConfig
from edge.errors import QueueFullError
from edge.router.config import FeatureConfig, RouterConfig
from edge.runtime import InferenceRequest, Runtime
from edge.scheduler import RequestCancelled
from edge.scheduling import ServingConfig
from edge.sim.backend import SimulatedBackend

MiB = 2**20
SIZES = {"sql": 40 * MiB, "poetry": 30 * MiB, "legal": 50 * MiB}


class GatedBackend(SimulatedBackend):
    """Serves in pieces; a "hold" prompt waits for ``gate`` after its first piece."""

    def __init__(self, slots: int = 1) -> None:
        super().__init__()
        self.slots = slots
        self.gate = threading.Event()
        self.generating = threading.Event()
        self.pieces_served = 0

    def serve_stream(self, request, objects):
        for i in range(3):
            if i == 1 and request.prompt == "hold":
                self.generating.set()
                assert self.gate.wait(20), "the test never opened the gate"
            self.pieces_served += 1
            yield f"piece{i} "
        return "done"

    def serve(self, request, objects):
        run = self.serve_stream(request, objects)
        while True:
            try:
                next(run)
            except StopIteration as done:
                return done.value


def make(serving: ServingConfig, budget=80 * MiB, backend=None) -> Runtime:
    cfg = EdgeConfig(cache=CacheConfig(budget=budget, policy="lru", load_workers=2),
                     router=RouterConfig(features=FeatureConfig(dim=16)), serving=serving)
    return Runtime.from_config(cfg, backend=backend or GatedBackend(),
                               catalogue=Catalogue.from_sizes(SIZES))


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def one_waits_behind_a_holder(rt: Runtime, waiting_adapter: str):
    """"hold" on sql generates; a request for ``waiting_adapter`` queues behind it; the gate
    opens once it waits (and, with prefetch, once its adapter is resident). Its outcome."""
    outcomes = {}

    def holder() -> None:
        outcomes["holder"] = rt.handle(InferenceRequest("hold", "sql"))

    def waiter() -> None:
        assert rt.backend.generating.wait(10)
        outcomes["waiter"] = rt.handle(InferenceRequest("next", waiting_adapter))

    def opener() -> None:
        wait_until(lambda: rt.scheduler.stats().waiting == 1)
        if rt.config.serving.prefetch:
            wait_until(lambda: waiting_adapter in rt.resident())
        else:
            time.sleep(0.05)  # the same chance to (wrongly) load it
        rt.backend.gate.set()

    run_threads([holder, waiter, opener], timeout=30)
    return outcomes["waiter"]


def test_a_waiting_requests_adapter_is_prefetched_so_it_is_a_hit():
    rt = make(ServingConfig(slots=1, prefetch=True))
    outcome = one_waits_behind_a_holder(rt, "poetry")
    assert outcome.hit and outcome.timings["queue"] > 0
    assert rt.stats()["cache"]["prefetches"] >= 1
    rt.close()


def test_without_prefetch_the_same_request_pages_in():
    rt = make(ServingConfig(slots=1, prefetch=False))
    outcome = one_waits_behind_a_holder(rt, "poetry")
    assert not outcome.hit
    rt.close()


def test_prefetch_never_evicts_what_the_running_request_pinned():
    # 80 MiB: sql (40, pinned by the holder) + legal (50) do not fit: no prefetch can happen,
    # and the waiter pages legal in once sql is released.
    rt = make(ServingConfig(slots=1, prefetch=True))
    outcomes = {}

    def holder() -> None:
        outcomes["holder"] = rt.handle(InferenceRequest("hold", "sql"))

    def waiter() -> None:
        assert rt.backend.generating.wait(10)
        outcomes["waiter"] = rt.handle(InferenceRequest("next", "legal"))

    def opener() -> None:
        wait_until(lambda: rt.scheduler.stats().waiting == 1)
        time.sleep(0.05)
        assert "sql" in rt.resident() and "legal" not in rt.resident()
        rt.backend.gate.set()

    run_threads([holder, waiter, opener], timeout=30)
    assert outcomes["holder"].hit is False and outcomes["waiter"].hit is False
    assert rt.stats()["cache"]["resident_bytes"] <= 80 * MiB
    rt.close()


def test_a_full_queue_refuses_and_forgets_the_routing_decision():
    rt = make(ServingConfig(slots=1, queue_limit=1))
    refused = []

    def holder() -> None:
        rt.handle(InferenceRequest("hold", "sql"))

    def waiter() -> None:
        assert rt.backend.generating.wait(10)
        rt.handle(InferenceRequest("next", "poetry"))

    def third() -> None:
        wait_until(lambda: rt.scheduler.stats().waiting == 1)
        with pytest.raises(QueueFullError, match="queue_limit"):
            rt.handle(InferenceRequest("routed one", request_id="r3"))  # routed
        refused.append(True)
        rt.backend.gate.set()

    run_threads([holder, waiter, third], timeout=30)
    assert refused
    stats = rt.stats()
    assert stats["requests"]["failed"] == 1 and stats["requests"]["requests"] == 2
    assert stats["scheduler"]["refused"] == 1 and stats["router"]["pending"] == 0
    rt.close()


def test_cancel_stops_a_generating_request_and_releases_its_adapter():
    rt = make(ServingConfig(slots=1))
    cancel = threading.Event()

    def cancelled() -> None:
        with pytest.raises(RequestCancelled):
            rt.handle(InferenceRequest("hold", "sql", cancel=cancel))

    def canceller() -> None:
        assert rt.backend.generating.wait(10)
        cancel.set()
        rt.backend.gate.set()

    run_threads([cancelled, canceller], timeout=30)
    assert rt.backend.pieces_served == 2  # stopped at the first piece after the cancel
    stats = rt.stats()
    assert stats["cache"]["pinned_bytes"] == 0 and stats["scheduler"]["running"] == 0
    assert stats["requests"]["failed"] == 1
    # The slot is free again.
    assert rt.handle(InferenceRequest("x", "poetry")).output == "done"
    rt.close()


def test_the_slot_count_comes_from_the_policy_file_else_the_backend():
    assert make(ServingConfig(), backend=GatedBackend(slots=3)).scheduler.slots == 3
    assert make(ServingConfig(slots=2), backend=GatedBackend(slots=3)).scheduler.slots == 2
    plain = SimulatedBackend()
    assert make(ServingConfig(), backend=plain).scheduler.slots == 1


def test_closing_the_runtime_fails_the_waiters_cleanly():
    rt = make(ServingConfig(slots=1))
    errors = []

    def holder() -> None:
        rt.handle(InferenceRequest("hold", "sql"))

    def waiter() -> None:
        assert rt.backend.generating.wait(10)
        try:
            rt.handle(InferenceRequest("next", "poetry"))
        except Exception as exc:  # noqa: BLE001 - recorded and checked below
            errors.append(exc)

    def closer() -> None:
        wait_until(lambda: rt.scheduler.stats().waiting == 1)
        rt.scheduler.close()
        rt.backend.gate.set()

    run_threads([holder, waiter, closer], timeout=30)
    assert len(errors) == 1 and "closed" in str(errors[0])
    rt.close()


@pytest.mark.parametrize("field,value", [("slots", 0), ("queue_limit", -1), ("max_bypass", -2)])
def test_bad_serving_settings_name_the_setting(field, value):
    with pytest.raises(ValueError, match=field):
        ServingConfig(**{field: value})
