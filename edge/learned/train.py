"""Offline training of the learned eviction policy: replay traces, learn Q(keep/evict) by DQN,
or imitate the hindsight ranking.

**Environment.** A trace is replayed through the C core's ``NativeIndex`` at a byte budget, with
the serving policy's candidate rule and inputs: at each eviction decision the candidates are the
``k_tail`` least-recently-used residents, the ``k_head`` most recently used ones and ``k_rand``
uniformly sampled ones (the C core's ``edge_index_candidates``, seeded the same way, as
``PagedCacheView.candidates``), their inputs
``model_inputs`` of the C core's feature matrix (demand 0: a replay
has no router; free and needed bytes as fractions of the budget). Victims are taken highest
eviction preference first until the missing object fits; when the candidates do not free enough,
a new round is drawn, as the cache asks the ``learned`` policy again. A test holds the greedy
replay to the daemon's own path (``PagedCache`` + the ``learned`` policy + ONNX Runtime): same
hits, same evictions.

**Speed.** Many replays run in lockstep (``replay_many``: every (trace, budget), long traces cut
into ``segment``-request pieces): each replay is a generator that runs to its next decision, and
the decisions of all of them are scored by one ``model_inputs`` and one network call, rewarded by
one lookup per trace and turned into transitions by a few array operations per round. Hits cost
one C call each (``edge_index_touch`` through cffi) while hits and misses alternate, and one
``lookup_many`` plus one C replay call for a long run of hits.

**Reward** (Cold-RL), computed in hindsight from the trace, so no lookahead simulation runs: at a
decision made at request ``d``, a candidate whose object is next requested at ``r`` with
``r - d <= horizon`` earns +1 if kept and costs ``-weight`` if evicted, where ``weight`` is its
load cost over the trace's median load cost (a reload that costs twice the typical one costs
two points); a candidate not requested within the horizon earns 0 either way. The next request
of every candidate comes from one ``searchsorted`` over the trace's (object, request) pairs,
sorted once.

**Transitions** are per candidate: (inputs, action, reward, next inputs, done). The next state
of a kept candidate is its own row at the next decision it is a candidate in; an evicted one
ends there (done), as does a kept one at the end of the replay. Transitions enter a ring replay
buffer when complete; minibatches are drawn uniformly.

**Learning.** DQN with a target network synced every ``target_sync`` steps, Huber loss on the
chosen action's Q, Adam, the gradient of the dueling network written out in numpy
(``loss_and_gradients``; a test holds it to finite differences). Exploration is epsilon-greedy
per decision: with probability epsilon the candidates are evicted in a random order.

Everything draws from one ``numpy.random.Generator`` made from the seed (weights, exploration,
candidate draws, minibatches), so a seed reproduces the trained parameters bit for bit.

**Imitation** (``objective="imitation"``, ``imitate``): the other way to train. One replay of
every (trace, budget) under a fixed behaviour policy (``behaviour_preference``, with random
orders mixed in) collects each decision's candidates; each is ranked in hindsight as the
size-aware furthest-next-request rule would rank it (``hindsight_ranks``: log of requests until
its next request times its size, centred per decision), and a linear score of the inputs is
fitted to those ranks by least squares (the normal equations accumulated per round: no data
kept). The model is that score in the served network form (``DuelingQNet.linear``). On the
benchmark's selection traces at the small budget it is 5.6 and 11.4 points above the DQN's seeds
0 and 1, and its seeds agree to 0.1 point (docs/cache.md). Then one more weight, by replay
rather than by the fit (``one_hit_search``): that of a unit marking one-hit candidates (one
access, no earlier residency: a scan's keys), the grid's weight whose greedy replays of the
training pairs hit most.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge._native import N_FEATURES, NativeIndex
from edge._native.index import _NOT_FOUND, _OK, _raise, ffi, lib
from edge.cache.view import candidate_seed  # the serving view's candidate-draw seed rule
from edge.learned.network import (
    EVICT,
    INPUT_NAMES,
    KEEP,
    N_INPUTS,
    DuelingQNet,
    model_inputs,
)
from edge.paging_cost import PagingCostModel
from edge.sim.trace import Trace, check_byte_total

# (requests done, requests total) -> None, as the simulator's replays report progress.
Progress = Callable[[int, int], None]
_HIT_WINDOW = 256  # keys looked up at once when searching for the next miss
_STREAK = 16  # hits in a row after which the rest of the run is found and touched in batch


OBJECTIVES = ("dqn", "imitation")
# The one-hit unit's weights the imitation tries (``one_hit_search``), in the fitted score's
# log-rank units. Measured on the shipped model's training replays (8 + 16 + 104 candidates; a
# scratch replay recording each decision, not kept):
# the score spans 4.3-6.8 over a decision's candidates (10th-90th percentile), and of the
# decisions with one-hit and other candidates, weight 0.5 ranks every one-hit one first in 35 %,
# 2 in 74 %, 8 in all: the grid runs from a nudge to a strict order.
ONE_HIT_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class TrainConfig:
    """The trainer's settings; every one is recorded with the model it produces."""

    episodes: int = 3
    horizon: int | None = None  # requests; None: per budget, the objects that fit in it
    k_tail: int = 16
    k_rand: int = 16
    k_head: int = 0  # most-recently-used candidates
    hidden: int = 32
    seed: int = 0
    gamma: float = 0.5
    learning_rate: float = 1e-3
    batch_size: int = 256
    buffer_size: int = 200_000
    train_every: int = 8  # decisions between gradient steps
    target_sync: int = 250  # gradient steps between target-network syncs
    learn_start: int = 2_000  # transitions buffered before the first step
    segment: int = 100_000  # requests per replay: longer traces are cut, replayed side by side
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_fraction: float = 0.5  # of all training requests, spent decaying epsilon
    huber_delta: float = 1.0
    # Not Cold-RL's: every reward scaled by (the trace's median size / the candidate's size), so
    # keeping a large object must earn its room. Measured on mixed-size scan bursts: +1 point of
    # hit ratio at 5% and 20% budgets (still short of GDSF/S3-FIFO there); off by default.
    size_scaled_reward: bool = False
    # "dqn": the above. "imitation": no reward and no Q-learning: a linear score of the inputs
    # fitted by least squares to the hindsight ranking of each decision's candidates (see
    # ``imitate``); of the settings above only k_tail, k_rand, k_head, seed and segment apply.
    objective: str = "dqn"
    # Imitation only: the one-hit unit's weights tried after the fit (``one_hit_search``); the
    # one with the best mean hit ratio over the training replays is kept. (0.0,): no unit.
    one_hit_weights: tuple[float, ...] = ONE_HIT_WEIGHTS

    def __post_init__(self) -> None:
        if not self.one_hit_weights or not all(
                math.isfinite(w) and w >= 0 for w in self.one_hit_weights):
            raise ValueError(f"one_hit_weights must be one or more finite weights >= 0, got "
                             f"{self.one_hit_weights}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got "
                             f"{self.objective!r}")
        for name in ("episodes", "hidden", "batch_size", "buffer_size", "train_every",
                     "target_sync", "segment"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if min(self.k_tail, self.k_rand, self.k_head) < 0 \
                or self.k_tail + self.k_rand + self.k_head < 1:
            raise ValueError(f"need k_tail, k_rand, k_head >= 0 and k_tail + k_rand + k_head >= 1, "
                             f"got {self.k_tail}, {self.k_rand}, {self.k_head}")
        if self.horizon is not None and self.horizon < 1:
            raise ValueError(f"horizon must be >= 1 request, got {self.horizon}")
        if not 0 <= self.gamma < 1:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        for name in ("epsilon_start", "epsilon_end", "epsilon_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


# ---------------------------------------------------------------------------------------------
# Traces prepared for the environment


@dataclass(frozen=True, eq=False)
class PreparedTrace:
    """A trace as the environment replays it: dense object ids as keys, a load cost per request
    (the trace's, else the device profile's model, as ``edge.sim.replay`` gives cost-aware
    policies), the eviction penalty weights, and the sorted (object, request) pairs that answer
    "next request of object o after request d"."""

    name: str
    objects: np.ndarray  # (n,) uint64 dense object ids 0..n_objects-1
    sizes: np.ndarray  # (n,) uint64
    times: np.ndarray  # (n,) float64
    load_costs: np.ndarray  # (n,) float64 seconds
    penalty_weights: np.ndarray  # (n,) float64: load cost / the trace's median load cost
    occurrences: np.ndarray  # sorted int64 object * (n + 1) + request index
    n_objects: int
    largest: int
    median_size: float

    def __len__(self) -> int:
        return len(self.objects)

    def next_requests(self, objects: np.ndarray, after: int | np.ndarray) -> np.ndarray:
        """For each object, its first request index > ``after`` (one for all, or one each),
        or -1 when there is none."""
        n1 = len(self.objects) + 1
        codes = objects.astype(np.int64) * n1 + after
        pos = np.searchsorted(self.occurrences, codes, side="right")
        found = np.minimum(pos, len(self.occurrences) - 1)
        hit = (pos < len(self.occurrences)) & (self.occurrences[found] // n1 == objects)
        return np.where(hit, self.occurrences[found] % n1, -1)


def prepare_trace(trace: Trace, name: str = "trace",
                  profile: PagingCostModel | None = None) -> PreparedTrace:
    """``trace`` made ready for ``replay_many``; ``ValueError`` naming it when it cannot be
    replayed (empty, a zero size)."""
    n = len(trace)
    if n == 0:
        raise ValueError(f"trace {name} has no requests")
    sizes = np.ascontiguousarray(trace.sizes, dtype=np.uint64)
    check_byte_total(sizes)
    if int(sizes.min()) == 0:
        raise ValueError(f"trace {name}: request {int(np.argmin(sizes))} has size 0; sizes must "
                         "be positive")
    unique, objects = np.unique(trace.keys, return_inverse=True)
    objects = objects.ravel().astype(np.int64)
    if trace.load_costs is not None:
        costs = np.asarray(trace.load_costs, dtype=np.float64)
    else:
        costs = (profile or PagingCostModel()).paging_seconds(sizes.astype(np.float64))
    costs = np.where(np.isfinite(costs) & (costs > 0), costs, 0.0)
    median = float(np.median(costs))
    weights = costs / median if median > 0 else np.ones(n)
    order = np.argsort(objects, kind="stable")
    occurrences = objects[order] * (n + 1) + order
    times = np.ascontiguousarray(trace.times, dtype=np.float64)
    return PreparedTrace(name, objects.astype(np.uint64), sizes, times, costs, weights,
                         occurrences, len(unique), int(sizes.max()),
                         float(np.median(sizes.astype(np.float64))))


def hindsight_rewards(next_request: np.ndarray, decision: int | np.ndarray, evicted: np.ndarray,
                      weights: np.ndarray, horizon: int | np.ndarray) -> np.ndarray:
    """Cold-RL's reward per candidate of a decision taken at request ``decision``: +1 for a kept
    object requested again within ``horizon`` requests, ``-weight`` for an evicted one, else 0.
    ``next_request`` is -1 for an object never requested again. Any argument may be an array
    (one value per candidate), so a round of decisions is rewarded in one call."""
    reused = (next_request > decision) & (next_request - decision <= horizon)
    return np.where(evicted, -weights * reused, reused.astype(np.float64)).astype(np.float32)


def default_horizon(trace: PreparedTrace, budget: int) -> int:
    """The horizon when none is given: as many requests as the budget holds average-sized
    objects (about how long an object stays under LRU), at least 16."""
    mean_size = float(trace.sizes.mean())
    return max(16, int(budget / mean_size))


# ---------------------------------------------------------------------------------------------
# The environment


@dataclass(frozen=True)
class Run:
    """One replay: a trace at a budget, its horizon and the seed of its candidate draws."""

    trace: PreparedTrace
    budget: int
    horizon: int = 1
    seed: int = 0
    start: int = 0  # the requests replayed: [start, stop), from an empty cache
    stop: int | None = None

    @property
    def end(self) -> int:
        return len(self.trace) if self.stop is None else self.stop


@dataclass
class EpisodeResult:
    trace: str
    budget: int
    requests: int = 0
    hits: int = 0
    bytes_requested: int = 0
    bytes_hit: int = 0
    decisions: int = 0
    evictions: int = 0
    done: int = 0  # requests replayed so far

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def byte_hit_ratio(self) -> float:
        return self.bytes_hit / self.bytes_requested if self.bytes_requested else 0.0


@dataclass
class Decision:
    """One eviction decision of one replay: what the agent sees, then what happened."""

    features: np.ndarray  # (m, N_FEATURES) the C core's feature matrix of the candidates
    free_fraction: float
    need_fraction: float
    objects: np.ndarray  # (m,) the candidates' object ids
    request: int  # index of the request that needs the room
    evicted: np.ndarray | None = None  # (m,) bool, set once the replay has evicted


Episode = Generator[Decision, np.ndarray, None]


def _episode(run: Run, result: EpisodeResult, k_tail: int, k_rand: int,
             k_head: int = 0) -> Episode:
    """Replay ``run`` as a generator: it yields each eviction ``Decision`` and is sent back the
    candidates' eviction order (indices, first victim first). Counting as in
    ``edge.sim.replay``: every request is a hit or a miss; an object larger than the budget is
    never admitted (``replay_many`` refuses such budgets anyway).

    The hot calls go straight to the C core with preallocated buffers (the ``NativeIndex``
    wrapper allocates its out-arrays per call, a third of a decision's cost), every status
    checked. Hits: one ``edge_index_touch`` each while hits and misses alternate; once
    ``_STREAK`` hits come in a row, the run up to the next miss is found by one
    ``lookup_many`` and touched by one C replay call at the requests' own timestamps (residency
    changes only at misses). Measured: the batch pair costs about as much as 15 single touches,
    so it pays only on long runs."""
    trace, budget = run.trace, run.budget
    n = run.end
    index = NativeIndex(initial_capacity=min(trace.n_objects, 1 << 20))
    ptr = index.raw_paths().ptr
    objects, sizes, times, costs = trace.objects, trace.sizes, trace.times, trace.load_costs
    object_list, size_list = objects.tolist(), sizes.tolist()
    time_list, cost_list = times.tolist(), costs.tolist()
    slot_object = np.zeros(max(16, trace.n_objects), dtype=np.int64)
    slot_size = np.zeros(len(slot_object), dtype=np.int64)
    lookup = np.empty(_HIT_WINDOW, dtype=np.int32)
    candidates = np.empty(max(k_tail + k_head + k_rand, 1), dtype=np.int32)  # one decision's
    candidates_c = ffi.from_buffer("int32_t[]", candidates, require_writable=True)
    slot_c, count_c = ffi.new("int32_t *"), ffi.new("uint32_t *")
    touch, insert, remove = lib.edge_index_touch, lib.edge_index_insert, lib.edge_index_remove
    cache_seed = run.seed
    used = 0
    evictions = 0
    streak = 0
    i = result.done = run.start
    while i < n:
        if streak >= _STREAK:
            window = objects[i:i + _HIT_WINDOW]
            found = index.lookup_many(window, out=lookup[:len(window)])
            misses = np.flatnonzero(found < 0)
            length = int(misses[0]) if len(misses) else len(window)
            if length:
                counts = index.replay("lru", window[:length], sizes[i:i + length], budget,
                                      times=times[i:i + length])
                result.hits += length
                result.bytes_hit += counts.bytes_hit
                i += length
            streak = 0
            continue
        key = object_list[i]
        now = time_list[i]
        status = touch(ptr, key, now, slot_c)
        if status == _OK:
            result.hits += 1
            result.bytes_hit += size_list[i]
            streak += 1
            i += 1
            continue
        if status != _NOT_FOUND:
            _raise(status, f"edge_index_touch(key={key})")
        streak = 0
        result.done = i
        size = size_list[i]
        if size > budget:
            i += 1
            continue
        while used + size > budget:
            # PagedCacheView.candidates' rule: the tail, then new slots of a seeded draw.
            _check(lib.edge_index_candidates(ptr, k_tail, k_head, k_rand,
                                             candidate_seed(cache_seed, evictions), candidates_c,
                                             count_c), "candidates")
            slots = candidates[:count_c[0]].copy()
            features = np.empty((len(slots), N_FEATURES), dtype=np.float32)
            _check(lib.edge_index_features(ptr, ffi.from_buffer("int32_t[]", slots), len(slots),
                                           now, ffi.from_buffer("float[]", features,
                                                                require_writable=True)),
                   "features")
            need = used + size - budget
            decision = Decision(features, (budget - used) / budget, need / budget,
                                slot_object[slots], i)
            order = yield decision
            freed = np.cumsum(slot_size[slots[order]])
            taken = min(int(np.searchsorted(freed, need)) + 1, len(order))  # until need is met
            victims = order[:taken]
            for obj in decision.objects[victims].tolist():
                _check(remove(ptr, obj), f"edge_index_remove(key={obj})")
            used -= int(freed[taken - 1])
            evictions += taken
            decision.evicted = np.zeros(len(slots), dtype=bool)
            decision.evicted[victims] = True
            result.decisions += 1
        _check(insert(ptr, key, size, cost_list[i], now, 0, slot_c),
               f"edge_index_insert(key={key})")
        slot = slot_c[0]
        if slot >= len(slot_object):
            grow = len(slot_object)
            slot_object = np.concatenate([slot_object, np.zeros(grow, np.int64)])
            slot_size = np.concatenate([slot_size, np.zeros(grow, np.int64)])
        slot_object[slot] = key
        slot_size[slot] = size
        used += size
        i += 1
    result.done = n
    result.evictions = evictions


def _check(status: int, what: str) -> None:
    if status != _OK:
        _raise(status, f"edge_index_{what}" if not what.startswith("edge_") else what)


class Agent:
    """What decides in ``replay_many``: eviction preferences for the candidates of a batch of
    decisions (one per replay), then, for learning, what became of them."""

    def preferences(self, inputs: np.ndarray, rows_per_decision: np.ndarray) -> np.ndarray:
        """One eviction preference per row of ``inputs`` (n, N_INPUTS); the rows are the
        candidates of consecutive decisions, ``rows_per_decision`` of each."""
        raise NotImplementedError

    def decide(self, inputs: np.ndarray, rows_per_decision: np.ndarray,
               decisions: list[Decision], replays: list[int]) -> np.ndarray:
        """What ``replay_many`` asks: ``preferences``, for an agent that needs only the inputs;
        one that ranks by what the decisions know (their objects, their request) overrides it."""
        return self.preferences(inputs, rows_per_decision)

    def observe(self, inputs: np.ndarray, decisions: list[Decision],
                replays: list[int]) -> None:
        """The ``decisions`` (of replays ``replays``, whose candidate rows ``inputs`` are) have
        been carried out."""

    def progress(self, done: int, total: int) -> None:
        """``done`` of ``total`` requests replayed."""


def fast_preference(net: DuelingQNet) -> Callable[[np.ndarray], np.ndarray]:
    """``net.eviction_preference`` folded for acting: Q(evict) - Q(keep) is the advantage
    difference alone (V and the mean cancel), so the value head and the mean are skipped."""
    w1, b1, w2, b2 = net.w1, net.b1, net.w2, net.b2
    d = (net.wa[:, EVICT] - net.wa[:, KEEP]).copy()
    db = np.float32(net.ba[EVICT] - net.ba[KEEP])

    def preference(x: np.ndarray) -> np.ndarray:
        h = x @ w1
        h += b1
        np.maximum(h, 0, out=h)
        h2 = h @ w2
        h2 += b2
        np.maximum(h2, 0, out=h2)
        return h2 @ d + db

    return preference


class GreedyAgent(Agent):
    """Evicts highest preference first: the trained policy, as served."""

    def __init__(self, net: DuelingQNet) -> None:
        self._preference = fast_preference(net)

    def preferences(self, inputs, rows_per_decision):
        return self._preference(inputs)


def replay_many(runs: Sequence[Run], agent: Agent, *, k_tail: int = 16, k_rand: int = 16,
                k_head: int = 0,
                progress: Progress | None = None,
                progress_offset: int = 0, progress_total: int | None = None
                ) -> list[EpisodeResult]:
    """Replay every run at once, in lockstep, letting ``agent`` choose every eviction.

    Each replay runs until its next decision; the decisions of all replays are then scored by
    one ``model_inputs`` and one network call (batch inference: numpy's per-call overhead is
    paid once per round, not once per decision), and each replay carries its own out.
    """
    for run in runs:
        if run.budget < run.trace.largest:
            raise ValueError(f"budget {run.budget} bytes is smaller than the largest object of "
                             f"trace {run.trace.name} ({run.trace.largest} bytes)")
    results = [EpisodeResult(r.trace.name, int(r.budget), requests=r.end - r.start,
                             bytes_requested=check_byte_total(r.trace.sizes[r.start:r.end]))
               for r in runs]
    total = progress_total or sum(r.end - r.start for r in runs)
    episodes = {k: _episode(run, results[k], k_tail, k_rand, k_head)
                for k, run in enumerate(runs)}
    waiting: dict[int, Decision] = {}
    for k, episode in list(episodes.items()):
        try:
            waiting[k] = next(episode)
        except StopIteration:
            del episodes[k]
    rounds = 0
    while waiting:
        replays = list(waiting)
        decisions = [waiting[k] for k in replays]
        counts = np.array([len(d.objects) for d in decisions])
        starts = np.cumsum(counts) - counts
        inputs = model_inputs(
            np.concatenate([d.features for d in decisions]), 0.0,
            np.repeat([d.free_fraction for d in decisions], counts),
            np.repeat([d.need_fraction for d in decisions], counts))
        preference = agent.decide(inputs, counts, decisions, replays)
        # Every decision's candidates by falling preference, in one sort over all of them.
        order = np.lexsort((-preference, np.repeat(np.arange(len(decisions)), counts)))
        for j, k in enumerate(replays):
            try:
                waiting[k] = episodes[k].send(order[starts[j]:starts[j] + counts[j]] - starts[j])
            except StopIteration:
                del waiting[k], episodes[k]
        agent.observe(inputs, decisions, replays)
        rounds += 1
        if rounds % 64 == 0:
            done = progress_offset + sum(r.done - run.start for r, run in zip(results, runs,
                                                                                strict=True))
            agent.progress(done, total)
            if progress:
                progress(done, total)
    if progress:
        progress(progress_offset + sum(r.requests for r in results), total)
    return results


# ---------------------------------------------------------------------------------------------
# The network's gradient and the optimiser


def loss_and_gradients(params: dict[str, np.ndarray], x: np.ndarray, actions: np.ndarray,
                       targets: np.ndarray, huber_delta: float = 1.0
                       ) -> tuple[float, dict[str, np.ndarray]]:
    """Mean Huber loss of Q(x, action) against ``targets`` and its gradient for every parameter
    of the dueling network (``DuelingQNet.forward``, written out backwards). Computes in the
    parameters' dtype, so float64 parameters give a float64 check."""
    w1, b1, w2, b2 = params["w1"], params["b1"], params["w2"], params["b2"]
    wv, bv, wa, ba = params["wv"], params["bv"], params["wa"], params["ba"]
    n = len(x)
    x = x.astype(w1.dtype, copy=False)
    z1 = x @ w1 + b1
    h1 = np.maximum(z1, 0)
    z2 = h1 @ w2 + b2
    h2 = np.maximum(z2, 0)
    advantage = h2 @ wa + ba
    q = h2 @ wv + bv + advantage - advantage.mean(axis=1, keepdims=True)
    rows = np.arange(n)
    error = q[rows, actions] - targets
    small = np.abs(error) <= huber_delta
    loss = np.where(small, 0.5 * error**2, huber_delta * (np.abs(error) - 0.5 * huber_delta))
    dq = np.zeros_like(q)
    dq[rows, actions] = np.where(small, error, huber_delta * np.sign(error)) / n
    dv = dq.sum(axis=1, keepdims=True)
    dadv = dq - dq.mean(axis=1, keepdims=True)  # through Q = V + A - mean(A)
    dh2 = dv @ wv.T + dadv @ wa.T
    dz2 = dh2 * (z2 > 0)
    dh1 = dz2 @ w2.T
    dz1 = dh1 * (z1 > 0)
    grads = {"w1": x.T @ dz1, "b1": dz1.sum(axis=0), "w2": h1.T @ dz2, "b2": dz2.sum(axis=0),
             "wv": h2.T @ dv, "bv": dv.sum(axis=0), "wa": h2.T @ dadv, "ba": dadv.sum(axis=0)}
    return float(loss.mean()), grads


class Adam:
    """Adam (Kingma and Ba, 2015) over a parameter dict, updated in place.

    The parameters are moved into one flat buffer (the dict's arrays become views of it), so a
    step is a handful of numpy calls over all of them instead of a handful per array: for a
    network this small, per-call overhead is most of the cost."""

    def __init__(self, params: dict[str, np.ndarray], learning_rate: float,
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.names = list(params)
        dtype = np.result_type(*params.values())
        self.flat = np.concatenate([params[k].ravel() for k in self.names]).astype(dtype)
        offset = 0
        for k in self.names:
            size = params[k].size
            params[k] = self.flat[offset:offset + size].reshape(params[k].shape)
            offset += size
        self.params = params
        self.lr, self.beta1, self.beta2, self.eps = learning_rate, beta1, beta2, eps
        self.m = np.zeros_like(self.flat)
        self.v = np.zeros_like(self.flat)
        self.t = 0

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        g = np.concatenate([grads[k].ravel() for k in self.names])
        scale = self.lr * math.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
        self.m *= self.beta1
        self.m += (1 - self.beta1) * g
        self.v *= self.beta2
        self.v += (1 - self.beta2) * g * g
        self.flat -= (scale * self.m / (np.sqrt(self.v) + self.eps)).astype(self.flat.dtype)


# ---------------------------------------------------------------------------------------------
# Replay buffer and the learning agent


class ReplayBuffer:
    """A ring of complete transitions; the oldest are overwritten once it is full."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.x = np.zeros((capacity, N_INPUTS), np.float32)
        self.next_x = np.zeros((capacity, N_INPUTS), np.float32)
        self.action = np.zeros(capacity, np.int64)
        self.reward = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, bool)
        self.size = 0
        self._at = 0

    def add(self, x, action, reward, next_x, done) -> None:
        n = len(x)
        if n == 0:
            return
        if n > self.capacity:  # only the newest fit
            x, action, reward, next_x, done = (a[-self.capacity:] for a in
                                               (x, action, reward, next_x, done))
            n = self.capacity
        where = (self._at + np.arange(n)) % self.capacity
        self.x[where], self.action[where], self.reward[where] = x, action, reward
        self.next_x[where], self.done[where] = next_x, done
        self._at = (self._at + n) % self.capacity
        self.size = min(self.capacity, self.size + n)

    def sample(self, rng: np.random.Generator, n: int):
        pick = rng.integers(0, self.size, n)
        return (self.x[pick], self.action[pick], self.reward[pick], self.next_x[pick],
                self.done[pick])


class LearningAgent(Agent):
    """Epsilon-greedy on eviction preference (per decision: with probability epsilon the
    candidates go in a random order); turns decisions into per-candidate transitions and takes
    a gradient step every ``train_every`` decisions."""

    def __init__(self, config: TrainConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.rng = rng
        self.params = DuelingQNet.initialise(config.hidden,
                                             seed=int(rng.integers(2**32))).parameters()
        self.adam = Adam(self.params, config.learning_rate)  # makes them views of its buffer
        self.net = DuelingQNet(**self.params)  # ... which Adam updates in place
        self.target = self.net.copy()
        self._preference = fast_preference(self.net)
        self.buffer = ReplayBuffer(config.buffer_size)
        self.epsilon = config.epsilon_start
        self.steps = 0
        self.losses: list[float] = []
        self._decay = 1.0
        self._decisions = 0
        self._offsets = np.zeros(1, np.int64)
        self._runs: list[Run] = []
        self._pending_x = np.zeros((0, N_INPUTS), np.float32)
        self._pending_reward = np.zeros(0, np.float32)
        self._pending = np.zeros(0, bool)

    def begin(self, runs: Sequence[Run], decay_requests: float) -> None:
        """Replays of ``runs`` start (together): pending transitions are keyed by object, the
        objects of run k numbered from ``offsets[k]``. Epsilon reaches its end value after
        ``decay_requests`` requests of the whole training."""
        self._decay = max(1.0, decay_requests)
        self._runs = list(runs)
        self._offsets = np.cumsum([0] + [r.trace.n_objects for r in runs])
        total = int(self._offsets[-1])
        self._pending_x = np.zeros((total, N_INPUTS), np.float32)
        self._pending_reward = np.zeros(total, np.float32)
        self._pending = np.zeros(total, bool)

    def end(self) -> None:
        """The replays are over: a kept candidate that was never a candidate again ends."""
        waiting = np.flatnonzero(self._pending)
        if len(waiting):
            self.buffer.add(self._pending_x[waiting], np.full(len(waiting), KEEP),
                            self._pending_reward[waiting], self._pending_x[waiting],
                            np.ones(len(waiting), bool))
        self._pending[:] = False

    def progress(self, done: int, total: int) -> None:
        c = self.config
        frac = min(1.0, done / self._decay)
        self.epsilon = c.epsilon_start + frac * (c.epsilon_end - c.epsilon_start)

    def preferences(self, inputs, rows_per_decision):
        preference = self._preference(inputs)
        explore = self.rng.random(len(rows_per_decision)) < self.epsilon
        if explore.any():
            rows = np.repeat(explore, rows_per_decision)
            preference[rows] = self.rng.random(int(rows.sum()))
        return preference

    def observe(self, inputs, decisions, replays) -> None:
        # Objects of different replays are numbered apart, and one replay makes one decision
        # per round, so the candidates of a round are distinct objects.
        objects = np.concatenate([d.objects + self._offsets[k]
                                  for d, k in zip(decisions, replays, strict=True)])
        evicted = np.concatenate([d.evicted for d in decisions])
        rewards = self.rewards(decisions, replays)
        # Kept candidates of earlier decisions that are candidates again: this row is their
        # next state.
        back = self._pending[objects]
        if back.any():
            again = objects[back]
            self.buffer.add(self._pending_x[again], np.full(len(again), KEEP),
                            self._pending_reward[again], inputs[back],
                            np.zeros(len(again), bool))
        gone = np.flatnonzero(evicted)
        self.buffer.add(inputs[gone], np.full(len(gone), EVICT), rewards[gone], inputs[gone],
                        np.ones(len(gone), bool))
        kept = ~evicted
        self._pending[objects] = kept
        self._pending_x[objects[kept]] = inputs[kept]
        self._pending_reward[objects[kept]] = rewards[kept]
        c = self.config
        before = self._decisions
        self._decisions += len(decisions)
        if self.buffer.size >= max(c.learn_start, c.batch_size):
            for _ in range(self._decisions // c.train_every - before // c.train_every):
                self.train_step()

    def rewards(self, decisions: list[Decision], replays: list[int]) -> np.ndarray:
        """The hindsight rewards of a round's candidates, one lookup per trace."""
        counts = [len(d.objects) for d in decisions]
        out = np.empty(sum(counts), np.float32)
        starts = np.cumsum([0] + counts)
        of_trace: dict[int, list[int]] = {}
        for j, k in enumerate(replays):
            of_trace.setdefault(id(self._runs[k].trace), []).append(j)
        for js in of_trace.values():
            run = self._runs[replays[js[0]]]
            objects = np.concatenate([decisions[j].objects for j in js])
            at = np.repeat([decisions[j].request for j in js], [counts[j] for j in js])
            horizon = np.repeat([self._runs[replays[j]].horizon for j in js],
                                [counts[j] for j in js])
            evicted = np.concatenate([decisions[j].evicted for j in js])
            nxt = run.trace.next_requests(objects, at)
            weights = run.trace.penalty_weights[np.maximum(nxt, 0)]  # the reload's cost
            rewards = hindsight_rewards(nxt, at, evicted, weights, horizon)
            if self.config.size_scaled_reward:
                sizes = np.concatenate([decisions[j].features[:, 1] for j in js])
                rewards *= (run.trace.median_size / np.maximum(sizes, 1.0)).astype(np.float32)
            rows = np.concatenate([np.arange(starts[j], starts[j + 1]) for j in js])
            out[rows] = rewards
        return out

    def train_step(self) -> None:
        c = self.config
        x, action, reward, next_x, done = self.buffer.sample(self.rng, c.batch_size)
        next_q = self.target.forward(next_x).max(axis=1)
        targets = reward + c.gamma * np.where(done, 0.0, next_q).astype(np.float32)
        loss, grads = loss_and_gradients(self.params, x, action, targets, c.huber_delta)
        self.adam.step(grads)
        self._preference = fast_preference(self.net)
        self.steps += 1
        self.losses.append(loss)
        if self.steps % c.target_sync == 0:
            self.target = self.net.copy()


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainReport:
    """What a training run did and how fast."""

    net: DuelingQNet
    config: TrainConfig
    episodes: list[EpisodeResult] = field(default_factory=list)
    gradient_steps: int = 0
    final_loss: float | None = None
    wall_seconds: float = 0.0
    # Imitation: every one-hit weight tried, {"weight", "mean_hit_ratio"}; None: no search.
    one_hit_search: list[dict] | None = None
    one_hit_weight: float = 0.0
    one_hit_seconds: float = 0.0  # the search's time (wall_seconds is the fit's)

    @property
    def requests(self) -> int:
        return sum(e.requests for e in self.episodes)

    @property
    def decisions(self) -> int:
        return sum(e.decisions for e in self.episodes)

    def as_dict(self) -> dict:
        wall = self.wall_seconds or float("nan")
        return {"requests": self.requests, "decisions": self.decisions,
                "gradient_steps": self.gradient_steps, "final_loss": self.final_loss,
                "wall_seconds": self.wall_seconds,
                "requests_per_second": self.requests / wall,
                "decisions_per_second": self.decisions / wall,
                "replays": [{"trace": e.trace, "budget": e.budget, "hit_ratio": e.hit_ratio,
                             "byte_hit_ratio": e.byte_hit_ratio, "decisions": e.decisions}
                            for e in self.episodes],
                **({"one_hit_search": self.one_hit_search, "one_hit_weight": self.one_hit_weight,
                    "one_hit_seconds": self.one_hit_seconds}
                   if self.one_hit_search is not None else {})}


def train(traces: Sequence[PreparedTrace], budgets: Sequence[Sequence[int]],
          config: TrainConfig = TrainConfig(), progress: Progress | None = None) -> TrainReport:
    """Train a ``DuelingQNet`` on ``traces``, trace ``t`` replayed at each of ``budgets[t]``;
    an episode replays all of them together (``replay_many``), ``config.episodes`` times.
    Deterministic for a seed. With ``config.objective == "imitation"``: ``imitate``."""
    if not traces:
        raise ValueError("no training traces")
    if len(budgets) != len(traces):
        raise ValueError(f"{len(traces)} traces but {len(budgets)} budget lists")
    pairs = [(t, int(b)) for t, bs in zip(traces, budgets, strict=True) for b in bs]
    if not pairs:
        raise ValueError("no training budgets")
    if config.objective == "imitation":
        return imitate(pairs, config, progress)
    rng = np.random.default_rng(config.seed)
    agent = LearningAgent(config, rng)
    report = TrainReport(agent.net, config)
    per_episode = sum(len(t) for t, _ in pairs)
    total = config.episodes * per_episode
    start = time.perf_counter()
    for episode in range(config.episodes):
        runs = [Run(t, b, config.horizon or default_horizon(t, b), int(rng.integers(2**63)),
                    start, min(start + config.segment, len(t)))
                for t, b in pairs for start in range(0, len(t), config.segment)]
        agent.begin(runs, config.epsilon_fraction * total)
        report.episodes += replay_many(runs, agent, k_tail=config.k_tail, k_rand=config.k_rand,
                                       k_head=config.k_head, progress=progress,
                                       progress_offset=episode * per_episode,
                                       progress_total=total)
        agent.end()
    if agent.steps == 0:
        raise ValueError(f"no gradient step was taken: the replays made "
                         f"{sum(e.decisions for e in report.episodes)} eviction decisions, "
                         f"{agent.buffer.size} transitions, fewer than learn_start "
                         f"({config.learn_start}); give smaller budgets, longer traces or more "
                         "episodes")
    report.wall_seconds = time.perf_counter() - start
    report.gradient_steps = agent.steps
    report.final_loss = float(np.mean(agent.losses[-100:])) if agent.losses else None
    return report


# ---------------------------------------------------------------------------------------------
# Imitation of the hindsight ranking

# Inputs the imitation score leaves out. Load cost: in a generated trace it is a function of
# size (the paging cost model), so its weight would only record how the two co-vary there (a
# scratch fit gave it -3.7 and lost 9 points on a trace with other sizes); demand: 0 in training.
IMITATION_LEFT_OUT = ("log_load_cost_ms", "demand")
IMITATION_EPSILON = 0.1  # decisions taken in a random order while collecting


def behaviour_preference(x: np.ndarray) -> np.ndarray:
    """The policy that collects the imitation data: log size - log accesses + log age / 2
    (evict big, rarely used, long-unused objects first; ``scripts/probe_candidate_scores.py``
    measures it as a ranking of its own)."""
    return (x[:, 1] - x[:, 2] + 0.5 * x[:, 0]).astype(np.float64)


def hindsight_ranks(next_request: np.ndarray, decision: int, sizes: np.ndarray,
                    never: int) -> np.ndarray:
    """One decision's candidates as the size-aware furthest-next-request rule ranks them:
    log(requests until the next request x size), centred on the decision's mean (only the order
    within a decision matters). An object never requested again is ``never`` requests away."""
    distance = np.where(next_request > decision, next_request - decision, never)
    score = np.log(distance.astype(np.float64)) + np.log(np.maximum(sizes, 1.0))
    return score - score.mean()


def decision_ranks(runs: Sequence[Run], decisions: list[Decision],
                   replays: list[int]) -> np.ndarray:
    """``hindsight_ranks`` of every decision's candidates, concatenated in row order."""
    ranks = []
    for d, k in zip(decisions, replays, strict=True):
        trace = runs[k].trace
        nxt = trace.next_requests(d.objects, d.request)
        ranks.append(hindsight_ranks(nxt, d.request, d.features[:, 1], 2 * len(trace)))
    return np.concatenate(ranks)


class HindsightAgent(Agent):
    """Ranks each decision's candidates by ``hindsight_ranks``, the imitation's target, knowing
    every run's future: what any score fitted to that ranking could do at best over the same
    candidates (``scripts/probe_candidate_scores.py``'s hindsight column). Not a policy that
    can run: it reads the trace ahead."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self._runs = list(runs)

    def decide(self, inputs, rows_per_decision, decisions, replays):
        return decision_ranks(self._runs, decisions, replays)


class ImitationAgent(Agent):
    """Decides by ``behaviour_preference`` (random order with probability IMITATION_EPSILON)
    and accumulates the least-squares normal equations of ranks ~ inputs + 1."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.columns = [i for i, name in enumerate(INPUT_NAMES) if name not in IMITATION_LEFT_OUT]
        k = len(self.columns) + 1
        self.gram = np.zeros((k, k))
        self.moment = np.zeros(k)
        self.sum_sq = 0.0
        self.rows = 0
        self._runs: list[Run] = []

    def begin(self, runs: Sequence[Run]) -> None:
        self._runs = list(runs)

    def preferences(self, inputs, rows_per_decision):
        preference = behaviour_preference(inputs)
        explore = self.rng.random(len(rows_per_decision)) < IMITATION_EPSILON
        if explore.any():
            rows = np.repeat(explore, rows_per_decision)
            preference[rows] = self.rng.random(int(rows.sum()))
        return preference

    def observe(self, inputs, decisions, replays) -> None:
        self.accumulate(inputs, decision_ranks(self._runs, decisions, replays))

    def accumulate(self, inputs: np.ndarray, t: np.ndarray) -> None:
        """Add rows ``inputs`` with hindsight ranks ``t`` to the normal equations."""
        a = np.empty((len(t), len(self.columns) + 1))
        a[:, :-1] = inputs[:, self.columns]
        a[:, -1] = 1.0
        self.gram += a.T @ a
        self.moment += a.T @ t
        self.sum_sq += float(t @ t)
        self.rows += len(t)

    def solve(self) -> tuple[np.ndarray, float, float]:
        """(weights over all N_INPUTS, the left-out ones 0; intercept; mean squared residual)."""
        if self.rows <= len(self.moment):
            raise ValueError(f"imitation saw {self.rows} eviction candidates, too few to fit "
                             f"{len(self.moment)} weights: the budgets evict (almost) nothing "
                             "on these traces; give smaller budgets or longer traces")
        fit = np.linalg.lstsq(self.gram, self.moment, rcond=None)[0]
        residual = (self.sum_sq - 2 * fit @ self.moment + fit @ self.gram @ fit) / self.rows
        weights = np.zeros(N_INPUTS)
        weights[self.columns] = fit[:-1]
        return weights, float(fit[-1]), max(0.0, float(residual))


def imitate(pairs: Sequence[tuple[PreparedTrace, int]], config: TrainConfig,
            progress: Progress | None = None) -> TrainReport:
    """The ``imitation`` objective: replay every (trace, budget) once under the behaviour
    policy, rank each decision's candidates in hindsight (``hindsight_ranks``) and fit a linear
    score of the inputs to those ranks by least squares; the model is that score in the served
    network form (``DuelingQNet.linear``). Deterministic for a seed (the exploration and the
    candidate draws)."""
    rng = np.random.default_rng(config.seed)
    agent = ImitationAgent(rng)
    runs = [Run(t, b, 1, int(rng.integers(2**63)), start, min(start + config.segment, len(t)))
            for t, b in pairs for start in range(0, len(t), config.segment)]
    agent.begin(runs)
    start = time.perf_counter()
    episodes = replay_many(runs, agent, k_tail=config.k_tail, k_rand=config.k_rand,
                           k_head=config.k_head, progress=progress)
    weights, intercept, residual = agent.solve()
    report = TrainReport(DuelingQNet.linear(weights, intercept), config)
    report.episodes = episodes
    report.final_loss = residual
    report.wall_seconds = time.perf_counter() - start
    if config.one_hit_weights != (0.0,):
        total = sum(r.end - r.start for r in runs)
        start = time.perf_counter()
        report.one_hit_weight, report.one_hit_search = one_hit_search(
            pairs, weights, intercept, config, progress, progress_offset=total,
            progress_total=total * (1 + len(config.one_hit_weights)))
        report.net = DuelingQNet.linear(weights, intercept, report.one_hit_weight)
        report.one_hit_seconds = time.perf_counter() - start
    return report


class _PerReplayNetAgent(Agent):
    """Greedy under one of several networks, chosen per replay (``net_of_replay[k]``)."""

    def __init__(self, nets: Sequence[DuelingQNet], net_of_replay: Sequence[int]) -> None:
        self._preferences = [fast_preference(net) for net in nets]
        self._net_of_replay = np.asarray(net_of_replay)

    def decide(self, inputs, rows_per_decision, decisions, replays):
        which = np.repeat(self._net_of_replay[replays], rows_per_decision)
        out = np.empty(len(inputs), dtype=np.float32)
        for n, preference in enumerate(self._preferences):
            rows = which == n
            if rows.any():
                out[rows] = preference(inputs[rows])
        return out


def one_hit_search(pairs: Sequence[tuple[PreparedTrace, int]], weights: np.ndarray,
                   intercept: float, config: TrainConfig, progress: Progress | None = None, *,
                   progress_offset: int = 0, progress_total: int | None = None
                   ) -> tuple[float, list[dict]]:
    """The one-hit unit's weight (``DuelingQNet.linear``'s ``one_hit``) for the fitted score:
    every (trace, budget) replayed greedily under the score with each of
    ``config.one_hit_weights`` (all in lockstep, the same candidate draws for every weight), and
    the weight with the highest mean hit ratio over the pairs kept (the first of equals, so the
    smallest). Returns it and every weight's mean hit ratio.

    Why a search and not the fit: the least squares weighs a one-hit candidate's rank like any
    other's: a one-hit input fitted with the others gained 0.5-0.7 point on the scan selection
    traces at the small budget (8 + 56 candidates), the weight this search chose 1.3 and 2.1
    (8 + 16 + 104; docs/cache.md, "The one-hit unit"); the replay measures the hits themselves,
    what Cold-RL's reward counts."""
    grid = list(config.one_hit_weights)
    nets = [DuelingQNet.linear(weights, intercept, w) for w in grid]
    runs, net_of_run, pair_of_run = [], [], []
    for n in range(len(grid)):
        for p, (t, b) in enumerate(pairs):
            for begin in range(0, len(t), config.segment):
                runs.append(Run(t, b, 1, config.seed, begin, min(begin + config.segment, len(t))))
                net_of_run.append(n)
                pair_of_run.append(p)
    results = replay_many(runs, _PerReplayNetAgent(nets, net_of_run), k_tail=config.k_tail,
                          k_rand=config.k_rand, k_head=config.k_head, progress=progress,
                          progress_offset=progress_offset, progress_total=progress_total)
    hits = np.zeros((len(grid), len(pairs)))
    requests = np.zeros((len(grid), len(pairs)))
    for result, n, p in zip(results, net_of_run, pair_of_run, strict=True):
        hits[n, p] += result.hits
        requests[n, p] += result.requests
    mean = (hits / requests).mean(axis=1)
    best = int(np.argmax(mean))
    return grid[best], [{"weight": w, "mean_hit_ratio": float(m)}
                        for w, m in zip(grid, mean, strict=True)]


def evaluate(net: DuelingQNet, runs: Sequence[Run], *, k_tail: int = 16, k_rand: int = 16,
             k_head: int = 0, progress: Progress | None = None) -> list[EpisodeResult]:
    """The trained policy's hits on each run: greedy, through the serving candidate rule and
    inputs, all runs in lockstep."""
    return replay_many(runs, GreedyAgent(net), k_tail=k_tail, k_rand=k_rand, k_head=k_head,
                       progress=progress)


# ---------------------------------------------------------------------------------------------
# Evaluation against the classical policies and the offline references

CLASSICAL_POLICIES = ("lru", "lfu", "gdsf", "arc", "s3fifo")


@dataclass(frozen=True)
class EvaluationRow:
    trace: str
    budget: int
    policy: str  # "learned", a classical policy, "belady-size" or "pfoo-l bound"
    hit_ratio: float
    byte_hit_ratio: float | None  # None for the PFOO-L bound (it bounds hits, not bytes)


def compare_policies(net: DuelingQNet, trace: Trace, name: str, budgets: Sequence[int], *,
                     k_tail: int = 16, k_rand: int = 16, k_head: int = 0, seed: int = 0,
                     policies: Sequence[str] = CLASSICAL_POLICIES,
                     profile: PagingCostModel | None = None) -> list[EvaluationRow]:
    """The trained policy beside the classical ones (``edge.sim.replay``, the daemon's own
    code), the furthest-next-request schedule (``belady_size_hits``, feasible) and the PFOO-L
    upper bound, on ``trace`` at each budget."""
    from edge.sim.oracle import belady_size_hits, pfoo_l_hits
    from edge.sim.replay import replay_trace

    prepared = prepare_trace(trace, name, profile)
    n = len(trace)
    rows = []
    learned = evaluate(net, [Run(prepared, int(b), seed=seed) for b in budgets],
                       k_tail=k_tail, k_rand=k_rand, k_head=k_head)
    classical = replay_trace(trace, list(policies), list(budgets), profile=profile)
    hit_flags = np.zeros(n, dtype=np.uint8)
    for k, budget in enumerate(budgets):
        rows.append(EvaluationRow(name, int(budget), "learned", learned[k].hit_ratio,
                                  learned[k].byte_hit_ratio))
        rows += [EvaluationRow(name, int(budget), r.policy, r.hit_ratio, r.byte_hit_ratio)
                 for r in classical if r.budget == budget]
        hits = belady_size_hits(trace.keys, trace.sizes, int(budget), hits_out=hit_flags)
        bytes_hit = int(trace.sizes[hit_flags[:n] == 1].sum(dtype=np.uint64))
        rows.append(EvaluationRow(name, int(budget), "belady-size", hits / n,
                                  bytes_hit / prepared_bytes(prepared)))
        rows.append(EvaluationRow(name, int(budget), "pfoo-l bound",
                                  pfoo_l_hits(trace.keys, trace.sizes, int(budget)) / n, None))
    return rows


def prepared_bytes(trace: PreparedTrace) -> int:
    return check_byte_total(trace.sizes)
