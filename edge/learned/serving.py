"""Serving the learned eviction network: ONNX Runtime scoring under a hard per-decision budget.

``OnnxScorer`` runs a checked model file (``onnx_model.open_model``) in one ONNX Runtime session
and turns its Q values into eviction preferences, ``q[:, EVICT] - q[:, KEEP]``.

``TimedScorer`` wraps it with the rules of a decision the cache is waiting on:

- **The budget covers the whole decision**: the clock starts at ``begin()``, before the policy
  asks the view for candidates and features, and stops after the ranking. An ONNX Runtime call
  cannot be interrupted, so the budget is enforced by measuring, honestly: when candidates and
  features alone have used it up the model is not called at all; when the call ends past it the
  decision is an **overrun** and its answer is **discarded** for LRU. The time is spent either
  way; discarding it means a decision the model did not make in time is never the model's, so a
  budget too small for the device turns the policy into exactly LRU (what tests and operators can
  check), and the circuit breaker, not luck, is what limits the time lost.
- **Every path is counted** (``ServingStats``): ``decisions`` = ``model_decisions`` + the
  ``fallback_decisions`` by reason: ``timeout`` (over budget), ``error`` (the runtime raised or
  answered a non-finite number), ``no_model`` (no usable model file), ``breaker_open``.
- **Circuit breaker** (``CircuitBreaker``): after ``overruns`` failed decisions (overruns and
  errors) within the last ``window`` decisions the model is switched off for the next
  ``cooldown`` decisions, then one decision tries it again: success closes the breaker, another
  failure opens it for a new cooldown. Windows and cooldowns are counted in decisions, not
  seconds: the model costs time per decision, a cache that evicts nothing costs nothing however
  long it waits, and a replay in virtual time behaves the same as the device (and tests can drive
  it exactly).

A decision with the model is otherwise deterministic (one intra-op thread, sequential
execution), so it is as side-effect-free as the cache asks, except that each question advances
the counters and the breaker's decision count; decisions differ only when the budget is hit.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from edge._native.learned import N_LEARNED_INPUTS, Q_EVICT, Q_KEEP, rank_by_preference
from edge.learned.network import CANDIDATE_FEATURES, EVICT, KEEP, N_INPUTS
from edge.learned.onnx_model import INPUT, OUTPUT, ModelError, ModelFile, open_model

if N_LEARNED_INPUTS != N_INPUTS:  # the C core's input rows are the network's schema
    raise ImportError(f"edge.h's EDGE_N_LEARNED_INPUTS ({N_LEARNED_INPUTS}) is not the learned "
                      f"policy's input width ({N_INPUTS}): rebuild the C core")
if (Q_KEEP, Q_EVICT) != (KEEP, EVICT):  # the C core ranks the network's Q rows
    raise ImportError(f"edge.h's Q columns (keep {Q_KEEP}, evict {Q_EVICT}) are not the "
                      f"network's (keep {KEEP}, evict {EVICT}): rebuild the C core")

log = logging.getLogger(__name__)

FALLBACK_REASONS = ("timeout", "error", "no_model", "breaker_open")


class OnnxScorer:
    """Eviction preferences from the model file at ``path`` (checked as ``load_model_file``
    does: ``ModelError`` when it is missing, not ``expected_sha256``, corrupt or of another
    feature schema)."""

    def __init__(self, path: str | os.PathLike[str], *, expected_sha256: str | None = None,
                 threads: int = 1) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        self.model: ModelFile
        self.model, self._session = open_model(path, expected_sha256=expected_sha256,
                                               threads=threads)
        self._outputs = [OUTPUT]
        # Made once: without it every run() builds a RunOptions, a visible share of a
        # decision's ONNX Runtime time on a network this small.
        self._run_options = ort.RunOptions()
        # The first run of a session allocates its buffers; pay for it here, not in a decision
        # (and a file ORT parses but cannot run is refused now, not at the first eviction).
        try:
            q = self.q_values(np.zeros((1, self._session.get_inputs()[0].shape[1]), np.float32))
        except Exception as exc:
            raise ModelError(f"eviction model {self.model.path}: ONNX Runtime cannot run it "
                             f"({exc})") from None
        if q.shape != (1, 2):
            raise ModelError(f"eviction model {self.model.path}: answered shape {q.shape} for "
                             "one candidate, expected (1, 2)")

    def q_values(self, x: np.ndarray) -> np.ndarray:
        """Q values, (n, 2) float32, for network inputs ``x`` (n, N_INPUTS) float32."""
        return self._session.run(self._outputs, {INPUT: x}, self._run_options)[0]

    def preferences(self, x: np.ndarray) -> np.ndarray:
        """Eviction preference per row of ``x``: higher is a better victim."""
        q = self.q_values(x)
        return q[:, EVICT] - q[:, KEEP]


@dataclass
class ServingStats:
    """Counters of a ``TimedScorer``; ``decisions`` is always ``model_decisions`` plus the sum
    of ``fallback_decisions``."""

    decisions: int = 0
    model_decisions: int = 0
    fallback_decisions: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(FALLBACK_REASONS, 0))
    overruns: int = 0  # decisions whose wall time passed the budget (each also a timeout)
    breaker_opens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"decisions": self.decisions, "model_decisions": self.model_decisions,
                "fallback_decisions": dict(self.fallback_decisions),
                "overruns": self.overruns, "breaker_opens": self.breaker_opens}


class CircuitBreaker:
    """Switches the model off after ``overruns`` failures within ``window`` decisions, for
    ``cooldown`` decisions; then one trial decision closes it or opens it again."""

    def __init__(self, overruns: int, window: int, cooldown: int) -> None:
        for name, value in (("overruns", overruns), ("window", window), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"breaker {name} must be an int >= 1, got {value!r}")
        if window < overruns:
            raise ValueError(f"breaker window ({window} decisions) must be at least its "
                             f"overruns ({overruns}), or it can never open")
        self.overruns, self.window, self.cooldown = overruns, window, cooldown
        self.opens = 0
        self._decision = 0  # decisions seen by ``allows``
        self._failures: deque[int] = deque()  # decision numbers of recent failures
        self._open_until = 0  # while open: the last decision refused
        self._trial = False  # the current decision is the trial after a cooldown

    @property
    def state(self) -> str:
        if self._decision < self._open_until:
            return "open"
        return "half-open" if self._open_until else "closed"

    def allows(self) -> bool:
        """Called once per decision: whether the model may be asked this time."""
        self._decision += 1
        if self._decision <= self._open_until:
            return False
        self._trial = self._open_until > 0
        return True

    def record(self, failed: bool) -> None:
        """The outcome of a decision ``allows`` let through."""
        if self._trial:
            self._open_until = 0
            self._trial = False
            if failed:
                self._open()
            return
        if not failed:
            return
        self._failures.append(self._decision)
        while self._failures[0] <= self._decision - self.window:
            self._failures.popleft()
        if len(self._failures) >= self.overruns:
            self._open()

    def _open(self) -> None:
        self.opens += 1
        self._failures.clear()
        self._open_until = self._decision + self.cooldown


class TimedScorer:
    """Ranks candidates with ``scorer`` within ``budget_us`` per decision (see the module doc);
    ``scorer`` None means no usable model: every decision falls back with ``no_model``."""

    def __init__(self, scorer: OnnxScorer | None, *, budget_us: float,
                 breaker: CircuitBreaker | None = None,
                 clock: Callable[[], int] = time.perf_counter_ns) -> None:
        if not budget_us > 0 or budget_us == float("inf"):
            raise ValueError(f"budget_us must be a finite number of microseconds > 0, "
                             f"got {budget_us!r}")
        self.scorer = scorer
        self.budget_ns = budget_us * 1e3
        self.breaker = breaker
        self.clock = clock
        self.stats = ServingStats()
        self._error_logged = False

    def begin(self) -> int | None:
        """Start a decision: its start time, or None when the model is not to be asked (the
        fallback counted). Call before choosing candidates: they are inside the budget."""
        self.stats.decisions += 1
        if self.scorer is None:
            return self._fallback("no_model")
        if self.breaker is not None and not self.breaker.allows():
            return self._fallback("breaker_open")
        return self.clock()

    def rank(self, x: np.ndarray, started: int, labels: np.ndarray | None = None
             ) -> list[int] | None:
        """``labels`` (int32, one per row of ``x``; default: the row indices) by eviction
        preference, highest first (ties: row order), or None when the decision falls back
        (counted): over budget, or the model failed (an error, or a non-finite preference)."""
        if self.clock() - started > self.budget_ns:  # no time left to ask the model at all
            return self._failed("timeout")
        try:
            if labels is None:
                labels = np.arange(len(x), dtype=np.int32)
            order = rank_by_preference(self.scorer.q_values(x), labels)
        except Exception:  # any runtime failure costs this decision, never the cache
            if not self._error_logged:
                self._error_logged = True
                log.warning("eviction model %s failed; falling back to LRU (logged once, "
                            "counted in stats)", self.scorer.model.path, exc_info=True)
            return self._failed("error")
        if self.clock() - started > self.budget_ns:
            return self._failed("timeout")
        if self.breaker is not None:
            self.breaker.record(False)
        self.stats.model_decisions += 1
        return order

    def _failed(self, reason: str) -> None:
        if reason == "timeout":
            self.stats.overruns += 1
        if self.breaker is not None:
            opens = self.breaker.opens
            self.breaker.record(True)
            self.stats.breaker_opens += self.breaker.opens - opens
        return self._fallback(reason)

    def _fallback(self, reason: str) -> None:
        self.stats.fallback_decisions[reason] += 1
        return None


def check_feature_names(names: Sequence[str]) -> None:
    """``ModelError`` unless the C core's feature columns are the schema's, in its order."""
    if tuple(names) != CANDIDATE_FEATURES:
        raise ModelError(f"the cache's feature columns {tuple(names)} are not the learned "
                         f"policy's feature schema {CANDIDATE_FEATURES}")


def decision_inputs(view: Any, k_tail: int, k_rand: int, need_bytes: int,
                    k_head: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A decision's candidate slots of a ``CacheView`` asked to free ``need_bytes`` and the
    network's inputs for them: the C core's features, each candidate's demand (the router's
    estimate, ``PagedCache.set_demand``; 0 without a router), then the cache-level columns,
    in one C call (``edge_learned_decision_inputs``)."""
    budget = view.budget
    free_fraction = max(view.free_bytes(), 0) / budget
    return view.decision_inputs(k_tail, k_rand, free_fraction, need_bytes / budget,
                                k_mru=k_head)
