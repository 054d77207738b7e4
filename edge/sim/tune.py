"""``edge tune``: search policy-file settings by replaying a trace, keep the best as a policy file.

A search space is YAML::

    method: grid            # or random (then samples and seed)
    samples: 20
    seed: 0
    objective: hit_ratio    # or byte_hit_ratio, paging_seconds (minimised); routing_objective
                            # or regret (minimised): the router's replay, below
    budgets: [64MiB, 5%]    # optional: average over these instead of the base's cache.budget
    space:
      cache.policy:                       # a mapping: each key is a choice, its value the
        lru: {}                           # settings that only exist under that choice
        s3fifo:
          cache.policy_params.small_fraction: [0.05, 0.1, 0.2]
        arc:
          cache.policy_params.initial_p_fraction: [0.0, 0.5]
      cache.budget: [256MiB]              # a list: plain choices, crossed with the rest

Every key of ``space`` is a dotted path into the policy file (``section.key.subkey``); a
candidate is the base file with those paths set. Every candidate is validated by the real
loader (``edge.config.from_mapping(EdgeConfig, ...)``) before anything is replayed, so a space
entry that would make a bad policy file is an error naming it, and the winner written by
``save_config`` loads unchanged. Paths reach any section the loader knows, which is how new
sections (the router's) become tunable without touching this module.

Routing objectives (``routing_objective``: reward minus lambda x every second spent paging;
``regret``: reward-only regret) replay each candidate's router *and* cache over the trace's
contexts instead (``edge.sim.routing.replay_routing`` with the ``configured`` strategy: the
candidate exactly as written, through ``Runtime.handle`` over the simulated backend), so
``router.*`` paths are searched like ``cache.*`` ones. The trace needs a context per request
(``edge sim --router``'s traces: the labelled adapter earns utility 1, the others 0); text
contexts are featurised by each candidate's ``router.features``. Only ``router.state`` is not
read by that replay.

Choosing a ``cache.policy`` other than the base's drops the base's ``cache.policy_params``:
they belong to the base's policy and would not validate under another. Candidates that
validate to the same settings (``small_fraction: 0.1`` is s3fifo's default) are run once.

Each candidate is one process-pool task; results are collected in candidate order and ranked
by (objective, candidate order), so the ranking does not depend on ``--jobs``.

A large space takes a while twice: validating every candidate (a policy-file load each) and
replaying them. ``build_candidates`` reports ``(done, total)`` as it validates (``total`` is the
space's size before de-duplication, ``space_size``), ``ProgressLines`` turns such reports into a
line on stderr every few seconds with the rate and the time left, and ``measure_first`` replays
the first few candidates alone and times them, so the caller can print an estimate (candidates x
seconds per candidate / workers) before the long part starts; ``evaluate(..., done=...)`` then
reuses those results instead of replaying them twice.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import yaml

from edge.cache.policies import parse_params
from edge.config import CacheConfig, EdgeConfig, from_mapping, to_mapping
from edge.errors import ConfigError
from edge.paging_cost import PagingCostModel
from edge.sim.replay import ReplayResult, replay_arrays
from edge.sim.specs import parse_budget, working_set_bytes
from edge.sim.trace import Trace, check_byte_total

METHODS = ("grid", "random")
# objective -> True when larger is better
OBJECTIVES = {"hit_ratio": True, "byte_hit_ratio": True, "paging_seconds": False,
              "routing_objective": True, "regret": False}
# Objectives of the routing replay (router and cache over the trace's contexts).
ROUTING_OBJECTIVES = ("routing_objective", "regret")
_SPACE_FILE_KEYS = ("method", "samples", "seed", "objective", "budgets", "space")
# Choosing a new value at the key drops the base's value at the paired path (see docstring).
_RESET_WITH = {"cache.policy": "cache.policy_params"}
# The cache replay reads only these sections; varying anything else cannot change a result.
_REPLAYED_SECTIONS = ("cache.",)
# The routing replay reads the router too, but not where its state would be saved.
_ROUTING_SECTIONS = ("cache.", "router.")
_ROUTING_UNREAD = ("router.state.",)

Assignment = tuple[tuple[str, Any], ...]  # (dotted path, value) in space order


# ---------------------------------------------------------------------------------------------
# The space


@dataclass(frozen=True)
class Option:
    value: Any
    subspace: tuple[Dimension, ...] = ()  # settings that exist only under this choice


@dataclass(frozen=True)
class Dimension:
    path: str
    options: tuple[Option, ...]


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]
    method: str = "grid"
    samples: int = 20
    seed: int = 0
    objective: str = "hit_ratio"
    budgets: tuple[str, ...] | None = None  # None: each candidate's own cache.budget

    def paths(self) -> list[str]:
        out: list[str] = []

        def walk(dims: Sequence[Dimension]) -> None:
            for d in dims:
                if d.path not in out:
                    out.append(d.path)
                for o in d.options:
                    walk(o.subspace)

        walk(self.dimensions)
        return out

    @property
    def routing(self) -> bool:
        """Whether candidates are replayed through the router (a routing objective)."""
        return self.objective in ROUTING_OBJECTIVES

    def unreplayed_paths(self) -> list[str]:
        """Paths the replay does not read: candidates differing only there tie."""
        if self.routing:
            return [p for p in self.paths()
                    if not p.startswith(_ROUTING_SECTIONS) or p.startswith(_ROUTING_UNREAD)]
        return [p for p in self.paths() if not p.startswith(_REPLAYED_SECTIONS)]


def load_space(path: str | os.PathLike[str]) -> SearchSpace:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read search space: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_space(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_space(data: Any) -> SearchSpace:
    if not isinstance(data, dict):
        raise ConfigError(f"a search space is a mapping with a 'space' key, got "
                          f"{type(data).__name__}")
    unknown = sorted(set(data) - set(_SPACE_FILE_KEYS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key (known keys: "
                          f"{', '.join(_SPACE_FILE_KEYS)})")
    if "space" not in data:
        raise ConfigError("space: missing (the dotted paths to search)")
    method = data.get("method", "grid")
    if method not in METHODS:
        raise ConfigError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    objective = data.get("objective", "hit_ratio")
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")
    samples, seed = data.get("samples", 20), data.get("seed", 0)
    for name, value, low in (("samples", samples, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
    budgets = data.get("budgets")
    if budgets is not None:
        if isinstance(budgets, (str, int)):
            budgets = [budgets]
        if not isinstance(budgets, list) or not budgets:
            raise ConfigError(f"budgets: expected a list of sizes or percentages, got "
                              f"{budgets!r}")
        budgets = tuple(str(b) for b in budgets)
        for budget in budgets:  # the syntax and bounds now; percentages resolve on the trace
            try:
                parse_budget(budget, 1)
            except ValueError as exc:
                raise ConfigError(f"budgets: {exc}") from None
    dims = _parse_dimensions(data["space"], "space")
    if not dims:
        raise ConfigError("space: empty; give at least one dotted path and its choices")
    return SearchSpace(dims, method, samples, seed, objective, budgets)


def _parse_dimensions(data: Any, where: str) -> tuple[Dimension, ...]:
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of dotted paths to choices, got "
                          f"{type(data).__name__}")
    dims = []
    for path, choices in data.items():
        entry = f"{where}[{path!r}]"
        if not isinstance(path, str) or not all(path.split(".")):
            raise ConfigError(f"{entry}: a path is dotted keys like 'cache.policy'")
        if isinstance(choices, list):
            if not choices:
                raise ConfigError(f"{entry}: no choices")
            options = tuple(Option(v) for v in choices)
        elif isinstance(choices, dict):
            if not choices:
                raise ConfigError(f"{entry}: no choices")
            options = tuple(Option(v, _parse_dimensions(sub, f"{entry}[{v!r}]"))
                            for v, sub in choices.items())
        else:
            raise ConfigError(f"{entry}: expected a list of choices, or a mapping from each "
                              f"choice to the settings that apply under it; got {choices!r}")
        dims.append(Dimension(path, options))
    return tuple(dims)


def _count(dims: Sequence[Dimension]) -> int:
    return math.prod(sum(_count(o.subspace) for o in d.options) for d in dims)


def grid(dims: Sequence[Dimension]) -> Iterator[Assignment]:
    """Every assignment, in the order the space file lists its choices (the first varies
    slowest)."""
    if not dims:
        yield ()
        return
    first, rest = dims[0], dims[1:]
    for option in first.options:
        for sub in grid(option.subspace):
            for tail in grid(rest):
                yield ((first.path, option.value),) + sub + tail


def _sample_one(dims: Sequence[Dimension], rng: np.random.Generator) -> Assignment:
    out: Assignment = ()
    for d in dims:
        option = d.options[int(rng.integers(len(d.options)))]
        out += ((d.path, option.value),) + _sample_one(option.subspace, rng)
    return out


# ---------------------------------------------------------------------------------------------
# Candidates: validated configurations


@dataclass(frozen=True)
class Candidate:
    index: int
    assignment: Assignment
    config: EdgeConfig

    def label(self, short: Mapping[str, str] | None = None) -> str:
        short = short or {}
        return " ".join(f"{short.get(p, p)}={_show(v)}" for p, v in self.assignment)



def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def short_names(paths: Sequence[str]) -> dict[str, str]:
    """Each path's last key where no other path shares it, else the whole path."""
    last = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: (s if last.count(s) == 1 else p) for p, s in zip(paths, last, strict=True)}


def _set_path(mapping: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    node = mapping
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"space entry {path!r}: {'.'.join(keys[:depth + 1])} is a "
                              f"{type(child).__name__}, not a section")
        node = child
    node[keys[-1]] = copy.deepcopy(value)


def _get_path(mapping: dict, path: str) -> Any:
    node: Any = mapping
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def apply_assignment(base: Mapping[str, Any], assignment: Assignment) -> dict:
    """The base policy file (as a mapping) with the assignment's paths set."""
    out = copy.deepcopy(dict(base))
    for path, value in assignment:
        reset = _RESET_WITH.get(path)
        if reset and value != _get_path(base, path):
            _set_path(out, reset, {})
    for path, value in assignment:
        _set_path(out, path, value)
    return out


def _canonical(config: EdgeConfig) -> str:
    """A key equal for configurations that behave the same: policy params with defaults filled
    in, budgets in bytes, the free-text description left out."""
    data = to_mapping(config)
    data.pop("description", None)
    cache = config.cache
    data["cache"]["policy_params"] = to_mapping(parse_params(cache.policy, cache.policy_params))
    data["cache"]["budget"] = cache.budget_bytes  # "160KiB" and 163840 are one budget
    return json.dumps(data, sort_keys=True, default=str)


def space_size(space: SearchSpace) -> int:
    """Assignments ``build_candidates`` will validate at most: the whole grid, or ``samples``
    draws of a random search (de-duplication can only make the candidates fewer)."""
    total = _count(space.dimensions)
    return total if space.method == "grid" else min(total, space.samples)


def build_candidates(base: EdgeConfig, space: SearchSpace,
                     on_progress: Callable[[int, int], None] | None = None) -> list[Candidate]:
    """Validated, de-duplicated candidates: the whole grid, or ``samples`` random draws.

    ``on_progress(done, total)`` is called after each assignment is validated (``total`` =
    ``space_size``; a random search may try more draws than that when many are duplicates, so
    ``done`` is capped at ``total``)."""
    base_mapping = to_mapping(base)
    total = space_size(space)
    tried = 0
    if space.method == "grid" or _count(space.dimensions) <= space.samples:
        assignments: Iterator[Assignment] = grid(space.dimensions)
        limit = None
    else:
        rng = np.random.default_rng(space.seed)
        # Draw until enough distinct configurations; duplicates are rejected below, and the
        # attempt cap ends the loop when the space is smaller after de-duplication.
        assignments = (_sample_one(space.dimensions, rng) for _ in range(space.samples * 100))
        limit = space.samples
    seen: set[str] = set()
    out: list[Candidate] = []
    for assignment in assignments:
        mapping = apply_assignment(base_mapping, assignment)
        try:
            config = from_mapping(EdgeConfig, mapping)
        except ConfigError as exc:
            choice = ", ".join(f"{p}={_show(v)}" for p, v in assignment)
            hint = ""
            if "policy_params" in str(exc) and "unknown key" in str(exc):
                hint = (" (to tie a setting to one policy, nest it under that choice: "
                        "'cache.policy: {s3fifo: {cache.policy_params.small_fraction: [..]}}')")
            raise ConfigError(f"candidate {{{choice}}}: {exc}{hint}") from None
        tried += 1
        if on_progress is not None:
            on_progress(min(tried, total), total)
        key = _canonical(config)
        if key in seen:
            continue
        seen.add(key)
        out.append(Candidate(len(out), assignment, config))
        if limit is not None and len(out) == limit:
            break
    return out


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class Evaluation:
    candidate: Candidate
    results: tuple[ReplayResult, ...]  # one per budget

    @property
    def hit_ratio(self) -> float:
        return _mean(r.hit_ratio for r in self.results)

    @property
    def byte_hit_ratio(self) -> float:
        return _mean(r.byte_hit_ratio for r in self.results)

    @property
    def paging_seconds(self) -> float:
        return _mean(r.paging_seconds for r in self.results)

    def score(self, objective: str) -> float:
        return getattr(self, objective)


@dataclass(frozen=True)
class RoutingEvaluation:
    """A candidate's router and cache over the trace's contexts, one result per budget (the
    dicts of ``edge.sim.routing.replay_routing``); figures are means over the budgets."""

    candidate: Candidate
    results: tuple[dict[str, Any], ...]

    @property
    def routing_objective(self) -> float:
        return _mean(r["objective"] for r in self.results)

    @property
    def regret(self) -> float:
        return _mean(r["regret"] for r in self.results)

    @property
    def reward(self) -> float:
        return _mean(r["reward"] for r in self.results)

    @property
    def hit_ratio(self) -> float:
        return _mean(r["hit_ratio"] for r in self.results)

    @property
    def paging_seconds(self) -> float:
        return _mean(r["total_paging_s"] for r in self.results)

    def score(self, objective: str) -> float:
        return getattr(self, objective)


def _mean(values) -> float:
    values = list(values)
    return math.fsum(values) / len(values)


def candidate_budgets(candidate: Candidate, space: SearchSpace, working_set: int) -> list[int]:
    if space.budgets is None:
        return [candidate.config.cache.budget_bytes]
    try:
        return [parse_budget(b, working_set).nbytes for b in space.budgets]
    except ValueError as exc:
        raise ConfigError(f"budgets: {exc}") from None


_WORKER: dict[str, Any] = {}


def _init_worker(keys, sizes, times, load_costs, profile) -> None:
    _WORKER.update(keys=keys, sizes=sizes, times=times, load_costs=load_costs, profile=profile)


def _init_routing_worker(trace, profile) -> None:
    _WORKER.update(trace=trace, profile=profile, events={})


def _routing_events(features):
    """The trace's routing problem under these feature settings (kept: candidates that share
    them share it)."""
    from edge.sim.routing import routing_events

    key = json.dumps(to_mapping(features), sort_keys=True, default=str)
    events = _WORKER["events"].get(key)
    if events is None:
        events = _WORKER["events"][key] = routing_events(_WORKER["trace"], features)
    return events


def _run_routing_candidate(task: tuple[EdgeConfig, list[int], float | None]
                           ) -> tuple[dict[str, Any], ...]:
    from edge.sim.routing import replay_routing

    config, budgets, objective_weight = task
    events = _routing_events(config.router.features)
    out = []
    for budget in budgets:
        # The conventions of edge sim --router (run_routing): rewards as labelled, no noise.
        try:
            result = replay_routing("configured", events.contexts, events.utilities,
                                    events.sizes, config=config, budget_bytes=budget,
                                    paging_cost=_WORKER["profile"],
                                    rng=np.random.default_rng(config.router.seed + 1),
                                    reward_noise=0.0, arm_ids=events.arm_ids,
                                    objective_weight=objective_weight)
        except ValueError as exc:  # e.g. a budget below the largest adapter
            raise ConfigError(f"budget {budget} bytes: {exc}") from None
        result.pop("regret_curve")
        out.append(result)
    return tuple(out)


def check_routing_trace(trace: Trace, base: EdgeConfig) -> None:
    """``ConfigError`` when the trace cannot be routed (no contexts), before any replay."""
    from edge.sim.routing import routing_events

    try:
        routing_events(trace, base.router.features)
    except ValueError as exc:
        raise ConfigError(f"a routing objective replays the router: {exc}") from None


def _run_candidate(task: tuple[CacheConfig, list[int]]) -> tuple[ReplayResult, ...]:
    cache, budgets = task
    w = _WORKER
    return tuple(replay_arrays(w["keys"], w["sizes"], cache, budget,
                               times=w["times"], load_costs=w["load_costs"],
                               profile=w["profile"])
                 for budget in budgets)


def evaluate(trace: Trace, candidates: Sequence[Candidate], space: SearchSpace, *,
             profile: PagingCostModel | None = None, jobs: int = 1,
             on_result: Callable[[int], None] | None = None,
             done: Sequence[Evaluation | RoutingEvaluation] = (),
             objective_weight: float | None = None
             ) -> list[Evaluation] | list[RoutingEvaluation]:
    """Replay every candidate (``jobs`` processes); results in candidate order. A routing
    objective replays router and cache (``RoutingEvaluation``), else the cache alone.

    ``objective_weight``: the routing objective's lambda for every candidate (the base policy
    file's ``router.polar.paging_weight``: a candidate that lowers its router's weight must not
    lower the charge it is scored with); None: each candidate's own.

    ``done``: evaluations of the first candidates already replayed (``measure_first``); they
    are kept, not replayed again, and count in ``on_result``."""
    profile = profile or PagingCostModel()
    check_byte_total(trace.sizes)
    for i, e in enumerate(done):
        if i >= len(candidates) or e.candidate != candidates[i]:
            raise ValueError(f"done[{i}] is not an evaluation of candidate {i}: pass the "
                             "evaluations of the first candidates, in order")
    # The working set is every adapter's bytes once: percentages of it for both replays.
    working_set = working_set_bytes(trace.keys, trace.sizes)
    if space.routing:
        kind, run, init = RoutingEvaluation, _run_routing_candidate, _init_routing_worker
        tasks = [(c.config, candidate_budgets(c, space, working_set), objective_weight)
                 for c in candidates[len(done):]]
        init_args: tuple = (trace, profile)
    else:
        kind, run, init = Evaluation, _run_candidate, _init_worker
        tasks = [(c.config.cache, candidate_budgets(c, space, working_set))
                 for c in candidates[len(done):]]
        init_args = (trace.keys, trace.sizes, trace.times, trace.load_costs, profile)
    results: list[tuple] = [e.results for e in done]
    if jobs <= 1 or len(tasks) <= 1:
        init(*init_args)
        try:
            for task in tasks:
                results.append(run(task))
                if on_result:
                    on_result(len(results))
        finally:
            _WORKER.clear()
    else:
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), initializer=init,
                                 initargs=init_args) as pool:
            # map keeps candidate order whatever order the workers finish in.
            for result in pool.map(run, tasks):
                results.append(result)
                if on_result:
                    on_result(len(results))
    return [kind(c, r) for c, r in zip(candidates, results, strict=True)]


@dataclass(frozen=True)
class Estimate:
    """How long replaying every candidate should take, from the first few timed alone."""

    candidates: int
    sampled: int
    seconds_per_candidate: float
    workers: int

    @property
    def seconds(self) -> float:
        # Candidates left after the sampled ones, spread over the workers.
        left = self.candidates - self.sampled
        return self.seconds_per_candidate * left / max(1, min(self.workers, left))

    def describe(self) -> str:
        return (f"estimated {format_duration(self.seconds)} for the replays: "
                f"{self.candidates - self.sampled:,} candidates left x "
                f"{self.seconds_per_candidate:.3g} s each (measured on the first "
                f"{self.sampled}) / {max(1, min(self.workers, self.candidates - self.sampled))} "
                "worker(s)")


def measure_first(trace: Trace, candidates: Sequence[Candidate], space: SearchSpace, *,
                  profile: PagingCostModel | None = None, sample: int = 3, jobs: int = 1,
                  clock: Callable[[], float] = time.perf_counter,
                  objective_weight: float | None = None
                  ) -> tuple[list[Evaluation], Estimate]:
    """Replay the first ``sample`` candidates in this process, timed: their evaluations (pass
    them to ``evaluate`` as ``done``) and the estimate for the rest on ``jobs`` workers."""
    if sample < 1:
        raise ValueError(f"sample must be at least 1, got {sample}")
    first = list(candidates[:sample])
    started = clock()
    evaluations = evaluate(trace, first, space, profile=profile, jobs=1,
                           objective_weight=objective_weight)
    per = (clock() - started) / len(first) if first else 0.0
    return evaluations, Estimate(len(candidates), len(first), per, jobs)


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class ProgressLines:
    """A ``(done, total)`` callback writing ``label: done/total (pct), rate/s, ~time left`` to
    ``stream`` (stderr) at most every ``interval`` seconds and at the end: visible in logs and
    pipes, where a progress bar is not drawn."""

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.interval, self.clock = label, interval, clock
        self.stream = stream
        self.started = clock()
        self.last_line: float | None = None
        self.lines = 0
        self.finished = False

    def __call__(self, done: int, total: int) -> None:
        if self.finished:
            return
        now = self.clock()
        finished = self.finished = done >= total
        if not finished and now - (self.started if self.last_line is None
                                   else self.last_line) < self.interval:
            return
        self.last_line = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else float("inf")
        left = (total - done) / rate if 0 < rate < float("inf") else 0.0
        pct = 100.0 * done / total if total else 100.0
        text = f"{self.label}: {done:,}/{total:,} ({pct:.0f} %), {rate:,.1f}/s"
        text += f", {format_duration(elapsed)} in total" if finished else \
            f", about {format_duration(left)} left"
        print(text, file=self.stream or sys.stderr, flush=True)
        self.lines += 1


def rank(evaluations: Sequence[Evaluation], objective: str) -> list[Evaluation]:
    """Best first; ties keep candidate order, so the ranking is reproducible."""
    sign = -1.0 if OBJECTIVES[objective] else 1.0
    return sorted(evaluations, key=lambda e: (sign * e.score(objective), e.candidate.index))


def best_config(best: Evaluation, objective: str, n_candidates: int,
                trace_name: str) -> EdgeConfig:
    """The winner, with a description that says where it came from."""
    note = (f"edge tune: best of {n_candidates} candidates on {trace_name} by {objective} "
            f"({best.score(objective):.6g})")
    return replace(best.candidate.config, description=note)


def tune_json(ranked: Sequence[Evaluation | RoutingEvaluation], space: SearchSpace,
              trace_path: str, jobs: int) -> dict[str, Any]:
    if space.routing:
        figures = [{"routing_objective": e.routing_objective, "regret": e.regret,
                    "reward": e.reward, "hit_ratio": e.hit_ratio,
                    "paging_seconds": e.paging_seconds, "per_budget": list(e.results)}
                   for e in ranked]
    else:
        figures = [{"hit_ratio": e.hit_ratio, "byte_hit_ratio": e.byte_hit_ratio,
                    "paging_seconds": e.paging_seconds,
                    "per_budget": [r.as_dict() for r in e.results]} for e in ranked]
    return {
        "version": 1,
        "trace": trace_path,
        "method": space.method,
        "objective": space.objective,
        "seed": space.seed,
        "budgets": list(space.budgets) if space.budgets else None,
        "jobs": jobs,
        "candidates": len(ranked),
        "ranking": [{
            "rank": i + 1, "candidate": e.candidate.index,
            "assignment": {p: v for p, v in e.candidate.assignment},
            "config": to_mapping(e.candidate.config),
            "objective": e.score(space.objective), **figures[i],
        } for i, e in enumerate(ranked)],
    }


def format_ranking(ranked: Sequence[Evaluation | RoutingEvaluation], space: SearchSpace,
                   top: int | None) -> str:
    short = short_names(space.paths())
    shown = ranked if top is None else ranked[:top]
    if space.routing:
        head = (f"{'rank':>4} {'objective':>11} {'regret':>9} {'hit ratio':>9} {'paging s':>10}"
                "  configuration")
    else:
        head = f"{'rank':>4} {'hit ratio':>9} {'byte hits':>9} {'paging s':>10}  configuration"
    lines = [f"objective: {space.objective}"
             + (" (lower is better)" if not OBJECTIVES[space.objective] else "")
             + (f", mean over budgets {', '.join(space.budgets)}" if space.budgets else
                ", at each candidate's cache.budget"),
             head, "-" * len(head)]
    for i, e in enumerate(shown, 1):
        label = e.candidate.label(short) or "(base)"
        if space.routing:
            lines.append(f"{i:>4} {e.routing_objective:>11.2f} {e.regret:>9.2f} "
                         f"{e.hit_ratio:>9.4f} {e.paging_seconds:>10.2f}  {label}")
        else:
            lines.append(f"{i:>4} {e.hit_ratio:>9.4f} {e.byte_hit_ratio:>9.4f} "
                         f"{e.paging_seconds:>10.2f}  {label}")
    if len(shown) < len(ranked):
        lines.append(f"     ... {len(ranked) - len(shown)} more (--top, or --json for all)")
    return "\n".join(lines)

