"""The serving-slot scheduler: the order it serves a queue in (each expected order derived by
hand from the rules in edge/scheduler.py's docstring), its fairness bound, its queue limit,
cancellation and closing."""

from __future__ import annotations

import threading
import time

import pytest
from threads import run_threads

from edge.errors import CacheClosedError, QueueFullError
from edge.scheduler import RequestCancelled, Scheduler


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def served_order(scheduler: Scheduler, held: tuple[str, ...], queue: list[tuple[str, ...]]
                 ) -> list[int]:
    """One request holds the only slot while ``queue`` lines up behind it, in that order;
    returns the queue's indices in the order they were served."""
    order: list[int] = []
    holding = threading.Event()

    def holder() -> None:
        with scheduler.slot(held):
            holding.set()
            wait_until(lambda: scheduler.stats().waiting == len(queue))

    def waiter(i: int):
        def run() -> None:
            holding.wait(10)
            wait_until(lambda: scheduler.stats().waiting == i)  # line up in index order
            with scheduler.slot(queue[i]):
                order.append(i)
        return run

    run_threads([holder] + [waiter(i) for i in range(len(queue))], timeout=30)
    return order


def scheduler(max_bypass: int, resident=("b", "x"), queue_limit: int = 16, slots: int = 1,
              on_queue=None) -> Scheduler:
    return Scheduler(slots, queue_limit=queue_limit, max_bypass=max_bypass,
                     resident=lambda: dict.fromkeys(resident, 1), on_queue=on_queue)


def test_without_bypass_the_queue_is_first_come_first_served():
    queue = [("a",), ("b",), ("x",)]
    assert served_order(scheduler(max_bypass=0), ("x",), queue) == [0, 1, 2]


def test_affinity_serves_the_freed_slots_set_then_resident_adapters_then_the_oldest():
    # Released ("x",): index 2 asks for exactly that set -> first. Then released ("x",) again:
    # nobody else asks for it; ("b",) is resident -> index 1; then ("a",) (cold) -> 0.
    queue = [("a",), ("b",), ("x",)]
    assert served_order(scheduler(max_bypass=4), ("x",), queue) == [2, 1, 0]


def test_a_cold_request_is_bypassed_at_most_max_bypass_times():
    # ("a",) is cold and first in line; five requests for resident ("b",) behind it. Two of
    # them may go first (a's bypass count reaches 2), then a goes, then the rest in order.
    queue = [("a",)] + [("b",)] * 5
    s = scheduler(max_bypass=2)
    order = served_order(s, ("x",), queue)
    assert order == [1, 2, 0, 3, 4, 5]
    stats = s.stats()
    assert stats.forced == 1 and stats.reordered == 2 and stats.waited == 6


def test_a_base_model_request_counts_as_resident():
    # () names no adapter: nothing to page, so it goes before the cold ("a",).
    assert served_order(scheduler(max_bypass=4), ("x",), [("a",), ()]) == [1, 0]


def test_a_full_queue_refuses_at_once_naming_the_limit():
    s = scheduler(max_bypass=4, queue_limit=1)
    holding, waiting_done = threading.Event(), threading.Event()
    refused: list[Exception] = []

    def holder() -> None:
        with s.slot(("x",)):
            holding.set()
            wait_until(lambda: s.stats().waiting == 1)
            started = time.monotonic()
            with pytest.raises(QueueFullError, match="queue_limit") as info:
                with s.slot(("b",)):
                    pass
            assert time.monotonic() - started < 1.0  # refused, not queued
            refused.append(info.value)

    def waiter() -> None:
        holding.wait(10)
        with s.slot(("a",)):
            waiting_done.set()

    run_threads([holder, waiter], timeout=30)
    assert refused and waiting_done.is_set()
    assert s.stats().refused == 1 and s.stats().served == 2


def test_a_zero_queue_limit_refuses_whenever_the_slots_are_busy():
    s = scheduler(max_bypass=4, queue_limit=0)
    with s.slot(("x",)):
        with pytest.raises(QueueFullError):
            with s.slot(("x",)):
                pass
    with s.slot(("x",)):  # free again
        pass


def test_a_cancelled_waiter_leaves_the_queue_without_taking_the_slot():
    s = scheduler(max_bypass=0)
    cancel = threading.Event()
    holding, release = threading.Event(), threading.Event()
    order: list[str] = []

    def holder() -> None:
        with s.slot(("x",)):
            holding.set()
            release.wait(10)

    def cancelled() -> None:
        holding.wait(10)
        with pytest.raises(RequestCancelled):
            with s.slot(("a",), cancel):
                order.append("cancelled")  # must never run

    def later() -> None:
        holding.wait(10)
        wait_until(lambda: s.stats().waiting == 1)  # behind the one to be cancelled
        with s.slot(("b",)):
            order.append("later")

    def canceller() -> None:
        wait_until(lambda: s.stats().waiting == 2)
        cancel.set()
        wait_until(lambda: s.stats().waiting == 1)
        release.set()

    run_threads([holder, cancelled, later, canceller], timeout=30)
    assert order == ["later"]
    stats = s.stats()
    assert stats.cancelled == 1 and stats.running == 0 and stats.waiting == 0


def test_closing_wakes_the_waiters_with_a_clear_error():
    s = scheduler(max_bypass=0)
    holding = threading.Event()
    errors: list[Exception] = []

    def holder() -> None:
        with s.slot(("x",)):
            holding.set()
            wait_until(lambda: s.stats().waiting == 2)
            s.close()

    def waiter() -> None:
        holding.wait(10)
        with pytest.raises(CacheClosedError, match="closed") as info:
            with s.slot(("a",)):
                pass
        errors.append(info.value)

    run_threads([holder, waiter, waiter], timeout=30)
    assert len(errors) == 2
    with pytest.raises(CacheClosedError):
        with s.slot(("a",)):
            pass


def test_the_queue_is_reported_for_prefetch_oldest_first():
    reports: list[list[tuple[str, ...]]] = []
    s = scheduler(max_bypass=0, on_queue=reports.append)
    served_order(s, ("x",), [("a",), ("b", "c")])
    assert [("a",)] in reports and [("a",), ("b", "c")] in reports
    assert all(r for r in reports)  # an empty queue is not reported


def test_several_slots_run_at_once_and_never_more():
    s = scheduler(max_bypass=2, slots=3)
    running, peak = 0, 0
    lock = threading.Lock()

    def worker(i: int):
        def run() -> None:
            nonlocal running, peak
            for _ in range(20):
                with s.slot((f"a{i % 4}",)):
                    with lock:
                        running += 1
                        peak = max(peak, running)
                    time.sleep(0.001)
                    with lock:
                        running -= 1
        return run

    run_threads([worker(i) for i in range(8)], timeout=60)
    assert peak == 3
    stats = s.stats()
    assert stats.served == 160 and stats.running == 0 and stats.waiting == 0


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_bad_slot_counts_are_refused(bad):
    with pytest.raises(ValueError, match="slots"):
        Scheduler(bad, queue_limit=1, max_bypass=0, resident=dict)
