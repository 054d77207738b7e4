"""Learned eviction (Cold-RL style, adapted to paging): a dueling Q-network ranks candidates.

Each decision takes the ``k_tail`` least-recently-used unpinned objects, the ``k_head`` most
recently used ones and ``k_rand`` drawn uniformly (``view.candidates``; the LRU tail alone is
too narrow to beat size-aware policies on mixed sizes, and the MRU head holds the objects just
loaded, which a one-hit object should leave first), reads their feature matrix from the C core,
and asks the network (ONNX Runtime, ``edge.learned.serving``) for each one's eviction
preference. Victims are the candidates by preference, highest first; the cache takes them in
order and stops once ``need_bytes`` are free. If it has evicted them all and still needs
bytes, the same answer makes a new decision over fresh candidates (the C core draws afresh
after each eviction), as the trainer's replay does, so one answer always covers the need when
the unpinned bytes allow.

The decision has a hard budget (``budget_us``, candidates and features included) and a circuit
breaker (``breaker_*``, counted in decisions); a decision over budget, a runtime error, a
missing, corrupt or mismatched model, or an open breaker falls back to LRU for that decision
(``view.lru_victim_slot``, exactly as the ``lru`` policy). ``stats()`` counts every path.

``model`` null means the shipped ``models/eviction.onnx``. A model that cannot be served is
not a configuration error: the cache is built, every decision is LRU counted as ``no_model``, and
the reason is logged once per process and file and shown in ``stats()["model_error"]``. Each
candidate's demand input is the router's estimate the cache was given (``PagedCache.set_demand``;
``Runtime`` passes ``Router.demand()`` after each epoch plan), 0 where no router runs; the
shipped model was fitted on trace replays, which have no router, so it leaves that input out.

numpy, ONNX Runtime and the model are loaded when a cache binds the policy, never on import
(``base`` says why).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from edge.cache.policies.base import CacheView, EvictionPolicy
from edge.cache.policies.registry import register_policy

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_warned: set[tuple[str, str]] = set()  # (model path, reason) already logged in this process


@register_policy
class LearnedPolicy(EvictionPolicy):
    name = "learned"

    @dataclass(frozen=True)
    class Params:
        # The ONNX file (a relative path is read from the working directory); null: the
        # shipped models/eviction.onnx of this edge checkout.
        model: str | None = None
        sha256: str | None = None  # expected sha256 of the file, when pinned by the config
        # Candidates: least-recently-used ones, most-recently-used ones and uniformly drawn
        # unpinned ones. null: the rule the model was trained with (its train_config), else
        # 16 + 0 + 16.
        k_tail: int | None = None
        k_rand: int | None = None
        k_head: int | None = None
        budget_us: float = 500.0  # hard budget of one decision, microseconds
        breaker_overruns: int = 5  # failures (overruns, errors) that open the breaker ...
        breaker_window: int = 100  # ... within this many decisions
        breaker_cooldown: int = 1000  # decisions the model stays off once it opened
        threads: int = 1  # ONNX Runtime intra-op threads

        def __post_init__(self) -> None:
            for name in ("k_tail", "k_rand", "k_head"):
                value = getattr(self, name)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                          or value < 0):
                    raise ValueError(f"{name} must be an int >= 0 or null, got {value!r}")
            if self.k_tail is not None and self.k_rand is not None \
                    and self.k_tail + self.k_rand + (self.k_head or 0) < 1:
                raise ValueError("k_tail + k_head + k_rand must be at least 1 (no candidates to "
                                 "rank)")
            if isinstance(self.budget_us, bool) or not isinstance(self.budget_us, (int, float)) \
                    or not 0 < self.budget_us < math.inf:
                raise ValueError(f"budget_us must be a finite number of microseconds > 0, "
                                 f"got {self.budget_us!r}")
            for name in ("breaker_overruns", "breaker_window", "breaker_cooldown", "threads"):
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{name} must be an int >= 1, got {value!r}")
            if self.breaker_window < self.breaker_overruns:
                raise ValueError(f"breaker_window ({self.breaker_window}) must be at least "
                                 f"breaker_overruns ({self.breaker_overruns})")
            if self.sha256 is not None and not _SHA256.match(self.sha256):
                raise ValueError(f"sha256 must be 64 hex digits, got {self.sha256!r}")
            if self.model is not None and not self.model.strip():
                raise ValueError("model must be a path to an ONNX file, or null for the "
                                 "shipped model")

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._serving = None  # edge.learned.serving.TimedScorer, made by bind()
        self._inputs = None  # edge.learned.serving.decision_inputs
        self.model_path: str | None = None
        self.model_error: str | None = None
        self.k_tail, self.k_rand, self.k_head = DEFAULT_CANDIDATES  # resolved by bind()

    def bind(self, view: CacheView) -> None:
        super().bind(view)
        # First use: the cache that binds us has loaded numpy and the C core already.
        from edge.learned.onnx_model import SHIPPED_MODEL_PATH, ModelError
        from edge.learned.serving import (
            CircuitBreaker,
            OnnxScorer,
            TimedScorer,
            check_feature_names,
            decision_inputs,
        )

        p = self.params
        path = p.model if p.model is not None else SHIPPED_MODEL_PATH
        self.model_path = str(path)
        scorer = None
        try:
            check_feature_names(view.feature_names)
            scorer = OnnxScorer(path, expected_sha256=p.sha256, threads=p.threads)
        except ModelError as exc:
            self.model_error = str(exc)
            if (self.model_path, self.model_error) not in _warned:
                _warned.add((self.model_path, self.model_error))
                log.warning("learned eviction policy serves LRU: %s", exc)
        self.k_tail, self.k_rand, self.k_head = candidate_rule(
            p, scorer.model.metadata if scorer else {})
        if self.k_tail + self.k_head + self.k_rand < 1:
            raise ValueError(f"learned policy: k_tail {self.k_tail} + k_head {self.k_head} + "
                             f"k_rand {self.k_rand} leaves no candidates to rank")
        breaker = CircuitBreaker(p.breaker_overruns, p.breaker_window, p.breaker_cooldown)
        self._serving = TimedScorer(scorer, budget_us=p.budget_us, breaker=breaker)
        self._inputs = decision_inputs

    # -- the decision ---------------------------------------------------------------------

    def victims(self, need_bytes: int) -> Iterable[Hashable]:
        if self.view.lru_victim_slot() < 0:
            return []  # every resident key is pinned: nothing to decide
        ranked = self._decide(need_bytes)  # the first round is decided now, not when iterated
        if ranked is None:
            return self._lru_victims()
        return self._rounds(ranked, need_bytes)

    def victim(self) -> Hashable | None:
        return next(iter(self.victims(1)), None)

    def _decide(self, need_bytes: int) -> list[int] | None:
        """One decision: candidate slots by eviction preference, or None to fall back."""
        serving, view = self._serving, self.view
        started = serving.begin()
        if started is None:
            return None
        slots, inputs = self._inputs(view, self.k_tail, self.k_rand, need_bytes,
                                     k_head=self.k_head)
        return serving.rank(inputs, started, slots)

    def _rounds(self, ranked: list[int], need_bytes: int) -> Iterator[Hashable]:
        """The ranked candidates in order; if the cache asks for more once it has evicted them
        all, a new decision over fresh candidates for the bytes still missing (the round the
        trainer plays in that case), or LRU if that one falls back.

        Keys already given are never given again, so a caller that iterates without evicting
        (nothing in edge does) sees the answer end instead of repeating itself."""
        view, given = self.view, set()
        missing = need_bytes
        while True:
            for slot in ranked:
                key = view.key_of_slot(slot)
                if key in given:
                    return
                given.add(key)
                missing -= view.size_of(key)  # bytes from the cache: the float32 features round
                yield key
            # Asked for more: every key above is evicted, and bytes are still missing.
            if missing <= 0 or view.lru_victim_slot() < 0:
                return
            ranked = self._decide(missing)
            if ranked is None:
                for key in self._lru_victims():
                    if key in given:
                        return
                    given.add(key)
                    yield key
                return

    def stats(self) -> dict[str, Any]:
        """Decisions by path (model, or fallback by reason), overruns, the breaker, the model."""
        if self._serving is None:
            from edge.learned.serving import ServingStats

            counters = ServingStats().as_dict()
            state = "closed"
        else:
            counters = self._serving.stats.as_dict()
            state = self._serving.breaker.state
        scorer = self._serving.scorer if self._serving is not None else None
        return {**counters, "breaker_state": state, "budget_us": self.params.budget_us,
                "k_tail": self.k_tail, "k_rand": self.k_rand, "k_head": self.k_head,
                "model": self.model_path, "model_error": self.model_error,
                "model_sha256": scorer.model.sha256 if scorer is not None else None}

    # -- LRU, for fallbacks -----------------------------------------------------------------

    def _lru_victims(self) -> Iterable[Hashable]:
        # Asked anew after each eviction, as the lru policy's default victims() does.
        return iter(self._lru_victim, None)

    def _lru_victim(self) -> Hashable | None:
        slot = self.view.lru_victim_slot()
        return None if slot < 0 else self.view.key_of_slot(slot)


DEFAULT_CANDIDATES = (16, 16, 0)  # k_tail, k_rand, k_head when neither config nor model says


def candidate_rule(params: Any, metadata: dict[str, Any]) -> tuple[int, int, int]:
    """(k_tail, k_rand, k_head): each as configured, else as the model was trained (its
    metadata's ``train_config``; a model trained before ``k_head`` existed has none: 0), else
    ``DEFAULT_CANDIDATES``. A model ranks best over the candidate set it learned on: the shipped
    one was trained on 8 + 8 + 56 (tail, head, drawn)."""
    trained = metadata.get("train_config")
    trained = trained if isinstance(trained, dict) else {}
    rule = []
    for name, default in zip(("k_tail", "k_rand", "k_head"), DEFAULT_CANDIDATES, strict=True):
        value = getattr(params, name)
        if value is None:
            value = trained.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                value = default
        rule.append(value)
    return rule[0], rule[1], rule[2]
