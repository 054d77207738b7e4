"""The router's demand estimate in the cache: ``PagedCache.set_demand`` keeps it per key and the
learned policy's network inputs carry each candidate's own value (``INPUT_NAMES``' demand
column), for keys resident when it is set and for keys loaded after; a ``Runtime`` hands the
router's estimate to its cache after each epoch plan and when it starts from a saved state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.cache import PagedCache
from edge.catalogue import Catalogue
from edge.config import CacheConfig, EdgeConfig
from edge.learned.network import INPUT_NAMES
from edge.learned.serving import decision_inputs
from edge.router.config import FeatureConfig, PolarConfig, RouterConfig, StateConfig
from edge.runtime import InferenceRequest, Runtime
from edge.sim.backend import SimulatedBackend

DEMAND = INPUT_NAMES.index("demand")
MiB = 2**20


def cache_of(keys, budget=10_000):
    cache = PagedCache(budget, "lru", load_workers=0, loader=lambda k: (f"v{k}", 100, 0.01))
    for key in keys:
        with cache.acquire(key):
            pass
    return cache


def demand_inputs(cache) -> dict:
    """Each candidate's demand input as the learned policy would read it (every unpinned
    resident key is a candidate here)."""
    view = cache.view
    slots, inputs = decision_inputs(view, k_tail=len(cache), k_rand=0, need_bytes=1)
    assert len(slots) == len(cache)
    return {view.key_of_slot(int(s)): float(row[DEMAND])
            for s, row in zip(slots, inputs, strict=True)}


def test_each_candidate_carries_its_own_demand_and_keys_left_out_have_none():
    cache = cache_of(["a", "b", "c"])
    assert demand_inputs(cache) == {"a": 0.0, "b": 0.0, "c": 0.0}
    cache.set_demand({"a": 0.75, "c": 0.25, "elsewhere": 0.5})
    assert demand_inputs(cache) == {"a": 0.75, "b": 0.0, "c": 0.25}
    assert cache.demand() == {"a": 0.75, "c": 0.25, "elsewhere": 0.5}
    # A new estimate replaces the old one: "a" is left out of it, so it has none now.
    cache.set_demand({"b": 0.5})
    assert demand_inputs(cache) == {"a": 0.0, "b": 0.5, "c": 0.0}


def test_a_key_loaded_after_the_estimate_gets_its_value_and_keeps_it_across_reloads():
    cache = cache_of(["a"], budget=200)  # two keys of 100 bytes fit
    cache.set_demand({"b": 0.5, "c": 0.125})
    with cache.acquire("b"):
        pass
    assert demand_inputs(cache) == {"a": 0.0, "b": 0.5}
    with cache.acquire("c"):  # evicts "a" (LRU)
        pass
    assert demand_inputs(cache) == {"b": 0.5, "c": 0.125}
    with cache.acquire("a"):  # evicts "b"; "b" comes back with its value below
        pass
    with cache.acquire("b"):
        pass
    assert demand_inputs(cache) == {"a": 0.0, "b": 0.5}


@pytest.mark.parametrize("value", [-0.25, math.nan, math.inf, 1e39, "0.5x", None, True])
def test_a_bad_demand_is_refused_by_key_and_changes_nothing(value):
    cache = cache_of(["a", "b"])
    cache.set_demand({"a": 0.5})
    with pytest.raises(ValueError, match=r"demand for 'b' must be a finite number >= 0"):
        cache.set_demand({"a": 0.25, "b": value})
    assert cache.demand() == {"a": 0.5}
    assert demand_inputs(cache) == {"a": 0.5, "b": 0.0}


def runtime(state_path=None) -> Runtime:
    sizes = {"sql": 40 * MiB, "poetry": 30 * MiB, "legal": 50 * MiB}
    cfg = EdgeConfig(cache=CacheConfig(budget=80 * MiB, policy="lru", load_workers=0),
                     router=RouterConfig(features=FeatureConfig(dim=32),
                                         polar=PolarConfig(mode="polar", epoch_length=4),
                                         state=StateConfig(path=state_path)))
    return Runtime.from_config(cfg, backend=SimulatedBackend(),
                               catalogue=Catalogue.from_sizes(sizes))


def test_runtime_gives_its_cache_the_routers_estimate_at_each_plan_and_at_start(tmp_path):
    state = str(tmp_path / "router.state")
    with runtime(state) as rt:
        assert rt.router.demand() == {} and rt.cache.demand() == {}  # no plan yet
        for i in range(4):  # the 4th decision closes the first epoch
            rt.handle(InferenceRequest(prompt=f"request {i}", request_id=i))
            rt.feedback(i, 1.0)
        demand = rt.router.demand()
        assert demand and math.isclose(sum(demand.values()), 1.0)
        assert rt.cache.demand() == demand
        seen = demand_inputs(rt.cache)
        assert seen and all(np.isclose(v, demand.get(k, 0.0)) for k, v in seen.items())
    with runtime(state) as rt:  # the saved state's estimate, before any request
        assert rt.router.demand() == demand
        assert rt.cache.demand() == demand


def test_the_shipped_model_gives_demand_no_weight():
    # docs/cache.md: it was fitted on trace replays, which have no router (demand 0 there), and
    # the imitation fit leaves the column out; so a router's estimate cannot change its order.
    from edge.learned.onnx_model import SHIPPED_MODEL_PATH
    from edge.learned.serving import OnnxScorer

    scorer = OnnxScorer(SHIPPED_MODEL_PATH)
    rng = np.random.default_rng(0)
    x = (rng.random((64, len(INPUT_NAMES))) * 3).astype(np.float32)
    with_demand = x.copy()
    with_demand[:, DEMAND] = rng.random(64) * 5
    assert np.array_equal(scorer.preferences(x), scorer.preferences(with_demand))
