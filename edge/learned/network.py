"""The learned eviction policy's inputs and network, defined once for training and serving.

**Inputs** (``FEATURE_SCHEMA``, version 2): one row per eviction candidate,

    log1p(age_s), log1p(size_bytes), log1p(accesses), log1p(iat_s), log1p(load_cost_ms),
    log1p(residency_s), log1p(past_accesses), log1p(past_residencies), demand, free_fraction,
    need_fraction

the first eight from the C core's feature matrix (``edge_feature`` order: age, size, accesses,
inter-access time, load cost, residency, and from its ghost list the accesses and the number of
the object's earlier residencies, 0 for an object seen for the first time or forgotten; version
1 had the first six only); ``demand`` the router's estimate that the object is
asked for soon (``Router.demand``: the share of the router's recent requests whose best adapter
it is, measured at each epoch plan; kept per key by the cache, 0 where no router runs); the
last two describe the cache at the decision (free
bytes / budget, bytes needed / budget) and repeat on every row. ``log1p`` because every C
feature is a non-negative quantity spanning orders of magnitude (bytes from KiB to GiB,
seconds from microseconds to days); load cost in milliseconds so its log has range. The
normalisation is fixed, part of the schema a model is trained and shipped with.

**Network**: a dueling Q-network (Wang et al., 2016) scoring each candidate alone: a shared
trunk of two ReLU layers, a value head V(x) and an advantage head A(x, a) over the two actions
``KEEP`` and ``EVICT``, combined as Q = V + A - mean(A). A candidate's *eviction preference* is
Q(evict) - Q(keep); victims are taken highest preference first until enough bytes are freed.

``forward`` is the reference the ONNX export must equal (tests hold it to 1e-5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FEATURE_SCHEMA_VERSION = 2
CANDIDATE_FEATURES = ("age", "size", "accesses", "iat", "load_cost", "residency",
                      "past_accesses", "past_residencies")
INPUT_NAMES = ("log_age", "log_size", "log_accesses", "log_iat", "log_load_cost_ms",
               "log_residency", "log_past_accesses", "log_past_residencies", "demand",
               "free_fraction", "need_fraction")
N_INPUTS = len(INPUT_NAMES)
KEEP, EVICT = 0, 1
N_ACTIONS = 2


def one_hit_unit() -> tuple[np.ndarray, float]:
    """The weights and bias of one ReLU unit that is 1 for a *one-hit* candidate (one access in
    its first residency, no earlier accesses in the ghost list: what a scan leaves behind, the
    objects S3-FIFO's small queue evicts first) and 0 for any other candidate.

    The inputs are log1p of whole counts, so one hinge separates them exactly: accesses 1 ->
    log 2 and 2 -> log 3 (a step of log 1.5), earlier accesses and residencies 0 -> 0 and 1 ->
    log 2. relu(1 - (log_accesses - log 2) / log 1.5 - log_past_accesses / log 2
    - log_past_residencies / log 2) is 1 at (1, 0, 0) and at most 0 one step away from it."""
    w = np.zeros(N_INPUTS)
    step = math.log(1.5)
    w[INPUT_NAMES.index("log_accesses")] = -1.0 / step
    w[INPUT_NAMES.index("log_past_accesses")] = -1.0 / math.log(2.0)
    w[INPUT_NAMES.index("log_past_residencies")] = -1.0 / math.log(2.0)
    return w, 1.0 + math.log(2.0) / step


def model_inputs(features: np.ndarray, demand: np.ndarray | float,
                 free_fraction: np.ndarray | float, need_fraction: np.ndarray | float
                 ) -> np.ndarray:
    """The network's (n, N_INPUTS) float32 input from the C core's (n, 8) feature matrix."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != len(CANDIDATE_FEATURES):
        raise ValueError(f"features must be (n, {len(CANDIDATE_FEATURES)}), got "
                         f"{features.shape}")
    n = len(features)
    x = np.empty((n, N_INPUTS), dtype=np.float32)
    clipped = np.maximum(features, 0.0)
    m = len(CANDIDATE_FEATURES)
    x[:, 0:m] = np.log1p(clipped)
    x[:, 4] = np.log1p(clipped[:, 4] * 1e3)  # load cost in milliseconds
    x[:, m] = demand
    x[:, m + 1] = free_fraction
    x[:, m + 2] = need_fraction
    return x


@dataclass
class DuelingQNet:
    """The network's weights (float32); ``forward`` computes Q for a batch of candidates."""

    w1: np.ndarray  # (N_INPUTS, hidden)
    b1: np.ndarray  # (hidden,)
    w2: np.ndarray  # (hidden, hidden)
    b2: np.ndarray
    wv: np.ndarray  # (hidden, 1): value head
    bv: np.ndarray  # (1,)
    wa: np.ndarray  # (hidden, N_ACTIONS): advantage head
    ba: np.ndarray  # (N_ACTIONS,)

    PARAMS = ("w1", "b1", "w2", "b2", "wv", "bv", "wa", "ba")

    @classmethod
    def initialise(cls, hidden: int = 32, seed: int = 0) -> DuelingQNet:
        """He-initialised weights, zero biases, from ``seed``."""
        rng = np.random.default_rng(seed)

        def he(n_in: int, n_out: int) -> np.ndarray:
            return (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)

        return cls(he(N_INPUTS, hidden), np.zeros(hidden, np.float32),
                   he(hidden, hidden), np.zeros(hidden, np.float32),
                   he(hidden, 1), np.zeros(1, np.float32),
                   he(hidden, N_ACTIONS), np.zeros(N_ACTIONS, np.float32))

    @classmethod
    def linear(cls, weights: np.ndarray, bias: float = 0.0,
               one_hit: float = 0.0) -> DuelingQNet:
        """The network whose eviction preference is ``weights @ x + bias`` for every input x,
        plus ``one_hit`` for a one-hit candidate (``one_hit_unit``), in the served form: the
        trunk passes x through as relu(x) and relu(-x) (x = relu(x) - relu(-x)) and, where
        ``one_hit`` is not 0, the one-hit unit beside them (hidden width 2 N_INPUTS, + 1); the
        second layer passes the first on; the value head is 0 and the advantage head puts half
        the score on EVICT and minus half on KEEP."""
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (N_INPUTS,):
            raise ValueError(f"weights must have shape ({N_INPUTS},), got {weights.shape}")
        if not math.isfinite(one_hit):
            raise ValueError(f"one_hit must be finite, got {one_hit}")
        eye = np.eye(N_INPUTS)
        w1 = np.hstack([eye, -eye])
        b1 = np.zeros(2 * N_INPUTS)
        head = np.concatenate([weights, -weights])
        if one_hit:
            unit, unit_bias = one_hit_unit()
            w1 = np.hstack([w1, unit[:, None]])
            b1 = np.append(b1, unit_bias)
            head = np.append(head, one_hit)
        width = len(b1)
        wa = np.zeros((width, N_ACTIONS))
        wa[:, EVICT], wa[:, KEEP] = head / 2, -head / 2
        ba = np.zeros(N_ACTIONS)
        ba[EVICT], ba[KEEP] = bias / 2, -bias / 2
        f32 = np.float32
        return cls(w1.astype(f32), b1.astype(f32),
                   np.eye(width, dtype=f32), np.zeros(width, f32),
                   np.zeros((width, 1), f32), np.zeros(1, f32), wa.astype(f32), ba.astype(f32))

    @property
    def hidden(self) -> int:
        return self.w1.shape[1]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Q values, (n, N_ACTIONS) float32, for inputs ``x`` (n, N_INPUTS)."""
        h1 = np.maximum(x @ self.w1 + self.b1, 0.0)
        h2 = np.maximum(h1 @ self.w2 + self.b2, 0.0)
        value = h2 @ self.wv + self.bv
        advantage = h2 @ self.wa + self.ba
        return (value + advantage - advantage.mean(axis=1, keepdims=True)).astype(np.float32)

    def eviction_preference(self, x: np.ndarray) -> np.ndarray:
        q = self.forward(x)
        return q[:, EVICT] - q[:, KEEP]

    def parameters(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.PARAMS}

    @classmethod
    def from_parameters(cls, params: dict[str, np.ndarray]) -> DuelingQNet:
        missing = [name for name in cls.PARAMS if name not in params]
        if missing:
            raise ValueError(f"network parameters missing: {missing}")
        net = cls(**{name: np.asarray(params[name], dtype=np.float32) for name in cls.PARAMS})
        net.check()
        return net

    def check(self) -> None:
        """``ValueError`` naming the first parameter whose shape does not fit the others."""
        h = self.hidden
        expected = {"w1": (N_INPUTS, h), "b1": (h,), "w2": (h, h), "b2": (h,), "wv": (h, 1),
                    "bv": (1,), "wa": (h, N_ACTIONS), "ba": (N_ACTIONS,)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"network parameter {name} has shape "
                                 f"{getattr(self, name).shape}, expected {shape}")
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"network parameter {name} is not finite")

    def copy(self) -> DuelingQNet:
        return DuelingQNet(**{name: getattr(self, name).copy() for name in self.PARAMS})
