"""``Router``: the request-facing object that ties features, POLAR, feedback and state together.

    router = Router(config, {"sql": 48 << 20, "poetry": 32 << 20}, budget_bytes=cache.budget)
    decision = router.route("req-1", prompt, cache.resident())   # decision.arm_id, .explain()
    plan = router.take_plan()       # at an epoch end: apply_resident_set(cache, plan, sizes)
    ...
    router.update("req-1", 0.8)                                 # any time later, any order
    router.close()                                              # saves state if configured

``edge.Runtime.handle`` is the caller that does all of this per request; use it rather than
wiring a router to a cache by hand.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Container, Hashable, Mapping
from typing import Any, Optional

import numpy as np

from edge.paging_cost import PagingCostModel
from edge.router.config import RouterConfig
from edge.router.errors import StateCorruptError, StateMismatchError, UnknownArmError
from edge.router.features import FeatureExtractor, make_extractor
from edge.router.feedback import PendingTable, check_reward, make_reward_source
from edge.router.linucb import Decision, LinUCB
from edge.router.polar import PolarRouter
from edge.router.state import read_state, write_state
from edge.schema import to_mapping

_LINUCB_ARRAYS = ("A", "A_inv", "b", "theta", "counts", "since_refactor")


class Router:
    def __init__(self, config: RouterConfig, catalogue: Optional[Mapping[str, int]] = None, *,
                 paging_cost: Optional[PagingCostModel] = None, budget_bytes: Optional[int] = None,
                 rng: Optional[np.random.Generator] = None,
                 extractor: Optional[FeatureExtractor] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.extractor = extractor if extractor is not None else make_extractor(config.features)
        self.rng = rng if rng is not None else np.random.default_rng(config.seed)
        self.linucb = LinUCB(self.extractor.dim, config.linucb, self.rng)
        self.polar = PolarRouter(self.linucb, config.polar, paging_cost or PagingCostModel(),
                                 budget_bytes)
        self.pending = PendingTable(config.feedback, clock)
        self.reward_source = make_reward_source(config.feedback.reward_source)
        self._clock = clock
        self._last_save = clock()
        self.updates = 0
        self.stale_feedback = 0  # rewards for adapters deleted since their request was routed
        path = config.state.path
        if path is not None and os.path.exists(path):
            self.load(path)
        if catalogue is not None:
            self.sync_catalogue(catalogue)

    # ---- catalogue -----------------------------------------------------------------------------

    @property
    def arm_ids(self) -> tuple[str, ...]:
        return self.linucb.arm_ids

    def add_arm(self, arm_id: str, size_bytes: int) -> None:
        self.polar.add_arm(arm_id, size_bytes)

    def remove_arm(self, arm_id: str) -> None:
        self.polar.remove_arm(arm_id)
        self.pending.drop_arm(arm_id)

    def sync_catalogue(self, catalogue: Mapping[str, int]) -> None:
        """Make the arms exactly ``catalogue`` (id -> bytes), keeping what was learned for the
        adapters that are still there."""
        for arm_id in [a for a in self.arm_ids if a not in catalogue]:
            self.remove_arm(arm_id)
        for arm_id, size in catalogue.items():
            if arm_id in self.linucb:
                if self.polar.size_of(arm_id) != size:
                    self.polar.set_size(arm_id, size)
            else:
                self.add_arm(arm_id, size)

    # ---- routing -------------------------------------------------------------------------------

    def features(self, prompt: str | np.ndarray) -> np.ndarray:
        if isinstance(prompt, np.ndarray):
            x = prompt if prompt.dtype == np.float64 else prompt.astype(np.float64)
            # ndarray.all(), not np.all(): the wrapper costs a few µs per request.
            if x.shape != (self.extractor.dim,) or not np.isfinite(x).all():
                raise ValueError(f"a context vector must be finite with shape "
                                 f"({self.extractor.dim},), got {x.shape}")
            return x
        return self.extractor.extract(prompt)

    def route(self, request_id: Hashable, prompt: str | np.ndarray,
              resident: Container[str] | np.ndarray = ()) -> Decision:
        """Pick the adapter for one request and remember the decision for its reward."""
        return self.route_features(request_id, self.features(prompt), resident)

    def route_features(self, request_id: Hashable, x: np.ndarray,
                       resident: Container[str] | np.ndarray = ()) -> Decision:
        """``route`` for a context ``features`` returned (checked already: not again)."""
        decision = self.polar.decide(x, resident)
        self.pending.add(request_id, decision.arm_id, x)
        return decision

    def preview(self, prompt: str | np.ndarray, resident: Container[str] | np.ndarray = ()
                ) -> Decision:
        """The decision ``route`` would make now (an ordinary round), changing nothing."""
        if self.linucb.n_arms == 0:
            raise UnknownArmError("cannot route: the catalogue has no arms")
        return self.polar.preview(self.features(prompt), resident)

    def demand(self) -> dict[str, float]:
        """The epoch controller's demand estimate per adapter (``PolarRouter.demand``)."""
        return self.polar.demand()

    def take_plan(self) -> Optional[list[str]]:
        """The resident set planned when the last epoch closed (once), or None."""
        return self.polar.take_plan()

    # ---- feedback ------------------------------------------------------------------------------

    def update(self, request_id: Hashable, reward: float) -> bool:
        """Apply a late reward. False if its adapter was deleted meanwhile (counted as stale).

        Raises ``UnknownRequestError`` for an id with no pending decision, ``RewardError`` for a
        reward outside the configured range."""
        value = check_reward(reward, self.config.feedback, request_id)
        pending = self.pending.pop(request_id)
        if pending.arm_id not in self.linucb:
            self.stale_feedback += 1
            return False
        # The context was checked when the request was routed.
        self.linucb.update_index(self.linucb.index_of(pending.arm_id), pending.context, value)
        self.updates += 1
        self.maybe_save()
        return True

    def cancel(self, request_id: Hashable) -> bool:
        """Forget a routed request that failed before it was served: no reward will come."""
        return self.pending.discard(request_id)

    def on_response(self, request_id: Hashable, prompt: Optional[str], response: Any
                    ) -> Optional[bool]:
        """Ask the reward source to score a finished request; None if it waits for feedback."""
        reward = self.reward_source.reward_for(request_id, prompt, response)
        return None if reward is None else self.update(request_id, reward)

    # ---- persistence ---------------------------------------------------------------------------

    def maybe_save(self) -> bool:
        path = self.config.state.path
        interval = self.config.state.save_interval_seconds
        if path is None or self._clock() - self._last_save < interval:
            return False
        self.save(path)
        return True

    def save(self, path: Optional[str | os.PathLike[str]] = None) -> None:
        path = path if path is not None else self.config.state.path
        if path is None:
            raise ValueError("no state path: pass one or set router.state.path")
        polar_meta, polar_arrays = self.polar.state()
        header = {
            "kind": "edge-router-state",
            "feature_fingerprint": self.extractor.fingerprint,
            "features": to_mapping(self.config.features),
            "dim": self.linucb.dim,
            "linucb": to_mapping(self.config.linucb),
            "polar": polar_meta,
            "arm_ids": list(self.linucb.arm_ids),
            "rng": {"bit_generator": type(self.rng.bit_generator).__name__,
                    "state": self.rng.bit_generator.state},
            "updates": self.updates,
        }
        arrays = {f"linucb_{k}": v for k, v in self.linucb.state_arrays().items()}
        arrays.update({f"polar_{k}": v for k, v in polar_arrays.items()})
        write_state(path, header, arrays)
        self._last_save = self._clock()

    def load(self, path: str | os.PathLike[str]) -> None:
        """Replace the learned state with a saved one; refuses one from other feature settings."""
        header, arrays = read_state(path)
        if header.get("kind") != "edge-router-state":
            raise StateCorruptError(f"{path}: not a router state (kind {header.get('kind')!r})")
        if header.get("feature_fingerprint") != self.extractor.fingerprint:
            raise StateMismatchError(
                f"{path}: saved with feature settings {header.get('features')} (fingerprint "
                f"{header.get('feature_fingerprint')}), but this router extracts features with "
                f"fingerprint {self.extractor.fingerprint}; its model would be meaningless here. "
                "Move the file away to start fresh, or restore the old feature settings.")
        saved = header.get("linucb", {})
        for key in ("ridge_lambda", "prior_reward"):
            if saved.get(key) != getattr(self.config.linucb, key):
                raise StateMismatchError(
                    f"{path}: saved with linucb.{key}={saved.get(key)!r}, this router has "
                    f"{getattr(self.config.linucb, key)!r}; the saved A and b depend on it")
        arm_ids = list(header["arm_ids"])
        n, d = len(arm_ids), self.linucb.dim
        shapes = {"A": (n, d, d), "A_inv": (n, d, d), "b": (n, d), "theta": (n, d),
                  "counts": (n,), "since_refactor": (n,)}
        lin = {}
        for key, shape in shapes.items():
            arr = arrays.get(f"linucb_{key}")
            if arr is None or arr.shape != shape:
                raise StateCorruptError(f"{path}: array linucb_{key} is "
                                        f"{None if arr is None else arr.shape}, expected {shape}")
            lin[key] = arr
        polar_arrays = {k[len("polar_"):]: v for k, v in arrays.items() if k.startswith("polar_")}
        self.linucb.load_state(arm_ids, lin)
        try:
            self.polar.restore(arm_ids, header["polar"], polar_arrays)
        except (KeyError, ValueError) as exc:
            raise StateMismatchError(f"{path}: controller state does not fit: {exc}") from None
        rng_state = header.get("rng", {})
        if rng_state.get("bit_generator") == type(self.rng.bit_generator).__name__:
            self.rng.bit_generator.state = rng_state["state"]
        self.updates = int(header.get("updates", 0))

    def close(self) -> None:
        """Save the state at shutdown (if a path is configured)."""
        if self.config.state.path is not None:
            self.save()
