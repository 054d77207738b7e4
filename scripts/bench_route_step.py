"""The route step of an ``auto`` request, piece by piece, with warm and with cold CPU caches.

In the daemon, llama.cpp's evaluation streams the model's weights through the CPU caches between
two requests, so the route step (the hashing features of the prompt, then the POLAR+ decision)
runs with cold caches, where every Python and numpy call costs several times its warm time.
This measures, per call, in microseconds (medians over ``--calls`` calls):

- ``features``: ``Router.features(prompt)`` (the C core's hashing for an ASCII prompt);
- ``route``: ``Router.route`` of the extracted context (POLAR+: the paging penalty, the
  eviction charge, forced exploration, LinUCB's scores, the pending table), then
  ``Router.cancel``;
- ``linucb_decide``: ``LinUCB.decide`` alone, given the penalty (scores, best arm, ties);
- ``numpy_scores``: ``LinUCB.mean_and_bonus``, the penalty subtracted and argmax: the numpy
  scoring that ``LinUCB.decide`` did before it called the C core;

each ``warm`` (called back to back) and ``cold`` (a ``--flush-mib`` array summed before each
call, evicting the caches as an evaluation does), at ``--arms`` adapters, d = 32.

    python scripts/bench_route_step.py [--arms 3 16 256] [--calls 300] [--out F]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import emit, machine  # noqa: E402

from edge.config import EdgeConfig  # noqa: E402
from edge.router.router import Router  # noqa: E402

PROMPT = "Translate to SQL: the ten newest orders of every customer in Berlin"
ADAPTER_BYTES = 15 << 20


def build(n_arms: int) -> tuple[Router, np.ndarray]:
    """A POLAR+ router (the default settings) over ``n_arms`` adapters, a quarter resident,
    trained on 200 rewarded decisions so arms are past the prior."""
    router = Router(EdgeConfig().router, {f"a{i}": ADAPTER_BYTES for i in range(n_arms)},
                    budget_bytes=max(1, n_arms // 4) * ADAPTER_BYTES)
    resident = np.zeros(n_arms, dtype=bool)
    resident[: max(1, n_arms // 4)] = True
    rng = np.random.default_rng(0)
    for i in range(200):
        x = router.features(f"{PROMPT} {i}")
        decision = router.route(f"warm-{i}", x, resident)
        router.update(f"warm-{i}", float(rng.uniform()) * (decision.arm_index % 3 == 0))
    return router, resident


def timed(call, calls: int, flush: np.ndarray | None) -> float:
    """Median microseconds of ``call()``; with ``flush``, summed before each call."""
    times = []
    for _ in range(calls):
        if flush is not None:
            flush.sum()
        start = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - start) / 1e3)
    return round(statistics.median(times), 2)


def measure(n_arms: int, calls: int, flush: np.ndarray) -> dict:
    router, resident = build(n_arms)
    x = router.features(PROMPT)
    counter = iter(range(10**9))

    def route() -> None:
        request = f"r{next(counter)}"
        router.route(request, x, resident)
        router.cancel(request)

    linucb, polar = router.linucb, router.polar
    penalty = polar._charge(resident).copy()

    def numpy_scores() -> None:
        mean, bonus = linucb.mean_and_bonus(x)
        score = mean + bonus
        score -= penalty
        int(score.argmax())

    out = {}
    for name, call in (("features", lambda: router.features(PROMPT)), ("route", route),
                       ("linucb_decide", lambda: linucb.decide(x, penalty)),
                       ("numpy_scores", numpy_scores)):
        out[name] = {"warm_us": timed(call, calls, None), "cold_us": timed(call, calls, flush)}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", type=int, nargs="+", default=[3, 16, 256])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--flush-mib", type=int, default=64)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    flush = np.ones(args.flush_mib << 17)  # float64: MiB * 2**20 / 8
    emit({"benchmark": "bench_route_step", "prompt": PROMPT, "calls": args.calls,
          "flush_mib": args.flush_mib,
          "arms": {str(n): measure(n, args.calls, flush) for n in args.arms},
          "machine": machine()}, args.out)


if __name__ == "__main__":
    main()
