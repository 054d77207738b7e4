"""The stress tests' thread harness must turn a worker's exception or hang into a failure."""

from __future__ import annotations

import threading

import pytest
from threads import WorkerFailed, run_threads


def test_a_worker_that_raises_fails_the_run():
    def ok():
        pass

    def bad():
        raise RuntimeError("injected")

    with pytest.raises(WorkerFailed, match="1 worker.*RuntimeError: injected") as info:
        run_threads([ok, bad, ok])
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_worker_that_hangs_fails_the_run():
    release = threading.Event()
    try:
        with pytest.raises(WorkerFailed, match="still running"):
            run_threads([lambda: release.wait(10)], timeout=0.2)
    finally:
        release.set()


def test_workers_that_finish_pass():
    done = []
    run_threads([lambda i=i: done.append(i) for i in range(8)])
    assert sorted(done) == list(range(8))
