"""edge.Runtime: composed from a policy file, driven in-process over the simulated backend.

The backend is the simulator's (declared sizes, modelled paging time on a virtual clock); the
cache, router, catalogue and request path are the real ones the daemon serves with.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threads import run_threads

from edge.catalogue import Catalogue, UnknownObjectError
from edge.config import CacheConfig, CatalogueConfig, EdgeConfig, save_config
from edge.errors import BudgetError, CacheClosedError, ConfigError, RequestError
from edge.paging_cost import PagingCostModel
from edge.router.config import FeatureConfig, PolarConfig, RouterConfig, StateConfig
from edge.router.errors import RewardError, UnknownRequestError
from edge.runtime import InferenceRequest, Runtime
from edge.sim.backend import SimulatedBackend

MiB = 2**20
SIZES = {"sql": 40 * MiB, "poetry": 30 * MiB, "legal": 50 * MiB}


def config(budget=100 * MiB, policy="lru", wait_timeout=0.0, **router) -> EdgeConfig:
    router.setdefault("features", FeatureConfig(dim=32))
    return EdgeConfig(cache=CacheConfig(budget=budget, policy=policy, load_workers=0,
                                        wait_timeout=wait_timeout),
                      router=RouterConfig(**router))


def runtime(cfg=None, backend=None, sizes=SIZES) -> Runtime:
    return Runtime.from_config(cfg or config(), backend=backend or SimulatedBackend(),
                               catalogue=Catalogue.from_sizes(sizes))


def test_route_acquire_serve_feedback_stats_close():
    backend = SimulatedBackend(PagingCostModel(), serve_seconds=0.25)
    rt = runtime(backend=backend)
    first = rt.handle(InferenceRequest(prompt="SELECT name FROM users", request_id="r1"))
    assert first.routed and first.adapter in SIZES and first.decision.arm_id == first.adapter
    assert not first.hit  # nothing was resident
    # Timings are the virtual clock's: the page-in is the cost model's time for that size, the
    # serve the backend's 0.25 s, routing takes no modelled time.
    paging = PagingCostModel().paging_seconds(SIZES[first.adapter])
    assert first.timings["route"] == 0.0
    assert first.timings["acquire"] == pytest.approx(paging)
    assert first.timings["serve"] == pytest.approx(0.25)
    assert first.timings["total"] == pytest.approx(paging + 0.25)
    assert [row["arm"] for row in first.explain()][0] in SIZES
    assert sum(row["chosen"] for row in first.explain()) == 1

    again = rt.handle(InferenceRequest(prompt="poem", adapter=first.adapter, request_id="r2"))
    assert not again.routed and again.hit and again.explain() == []
    assert again.timings["acquire"] == 0.0

    assert rt.feedback("r1", 0.75) is True
    with pytest.raises(UnknownRequestError):
        rt.feedback("r1", 0.5)  # given already
    with pytest.raises(UnknownRequestError):
        rt.feedback("r2", 0.5)  # named its adapter: nothing to learn
    rt.handle(InferenceRequest(prompt="x", request_id="r3"))
    with pytest.raises(RewardError, match=r"must lie in \[0, 1\]"):
        rt.feedback("r3", 7.0)

    stats = rt.stats()
    counts = stats["requests"]
    assert (counts["requests"], counts["routed"], counts["named"], counts["failed"],
            counts["feedback"]) == (3, 2, 1, 0, 1)
    assert counts["hits"] + counts["misses"] == 3 and counts["hits"] >= 1  # r2 at least
    assert stats["cache"]["hits"] == stats["requests"]["hits"]
    assert stats["router"]["updates"] == 1 and stats["router"]["pending"] == 1  # r3's
    assert stats["catalogue"] == {"objects": 3, "bytes": sum(SIZES.values())}
    assert backend.served == 3

    rt.close()
    assert rt.closed and backend.loads == backend.unloads and backend.held_bytes == 0
    with pytest.raises(CacheClosedError):
        rt.handle(InferenceRequest(prompt="late"))
    rt.close()  # idempotent


def test_a_miss_makes_room_first_and_counts_a_page_in():
    backend = SimulatedBackend()
    with runtime(config(budget=80 * MiB), backend) as rt:
        rt.handle(InferenceRequest(adapter="sql"))  # 40
        rt.handle(InferenceRequest(adapter="poetry"))  # 70
        out = rt.handle(InferenceRequest(adapter="legal"))  # 50: sql (LRU) goes
        assert not out.hit and set(rt.resident()) == {"poetry", "legal"}
        assert rt.cache.stats().evictions == 1 and backend.unloads == 1
    assert backend.held_bytes == 0


def test_a_set_of_adapters_is_pinned_together_and_none_means_the_base_model():
    class Recording(SimulatedBackend):
        def serve(self, request, objects):
            served.append([entry.name for entry, _ in objects])
            return super().serve(request, objects)

    served = []
    backend = Recording()
    with runtime(backend=backend) as rt:
        both = rt.handle(InferenceRequest(prompt="x", adapter=["sql", "poetry"]))
        assert both.adapters == ("sql", "poetry") and both.adapter is None and not both.hit
        again = rt.handle(InferenceRequest(prompt="x", adapter=("poetry", "sql")))
        assert again.hit
        base = rt.handle(InferenceRequest(prompt="x", adapter=[]))
        assert base.adapters == () and base.hit and not base.routed
        assert served == [["sql", "poetry"], ["poetry", "sql"], []]
        assert backend.loads == 2 and rt.cache.stats().pinned_bytes == 0


def test_unknown_adapter_is_a_clear_error_and_changes_nothing():
    with runtime() as rt:
        with pytest.raises(UnknownObjectError, match=r"'medical' is not in the catalogue "
                                                      r"\(it holds: sql, poetry, legal\)"):
            rt.handle(InferenceRequest(adapter="medical"))
        assert rt.resident() == {} and rt.stats()["requests"]["failed"] == 1


def test_malformed_requests_are_refused_before_anything_happens():
    with pytest.raises(RequestError, match="routing needs its prompt"):
        InferenceRequest()
    with pytest.raises(RequestError, match="adapter must be a catalogue name"):
        InferenceRequest(prompt="x", adapter=7)
    with pytest.raises(RequestError, match="request_id must be hashable"):
        InferenceRequest(prompt="x", request_id=["r"])
    with pytest.raises(RequestError, match="lists a name twice"):
        InferenceRequest(prompt="x", adapter=["sql", "sql"])
    with pytest.raises(RequestError, match="adapter must be a catalogue name"):
        InferenceRequest(prompt="x", adapter=["sql", "auto"])
    with runtime() as rt:
        with pytest.raises(ValueError, match=r"context vector must be finite with shape \(32,\)"):
            rt.handle(InferenceRequest(prompt=np.ones(3)))
        assert rt.resident() == {} and rt.stats()["router"]["pending"] == 0


class FailingBackend(SimulatedBackend):
    def serve(self, request, objects):
        raise RuntimeError("llama.cpp fell over")


def test_a_failed_serve_releases_the_adapter_and_forgets_the_decision():
    backend = FailingBackend()
    with runtime(backend=backend) as rt:
        with pytest.raises(RuntimeError, match="fell over"):
            rt.handle(InferenceRequest(prompt="q", request_id="bad"))
        assert rt.cache.stats().pinned_bytes == 0  # released
        with pytest.raises(UnknownRequestError):
            rt.feedback("bad", 1.0)  # no reward can refer to a failed request
        assert rt.stats()["router"]["pending"] == 0
    assert backend.held_bytes == 0


def test_from_a_policy_file_path_and_from_a_mapping(tmp_path):
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    for name, size in (("sql", 3000), ("poetry", 2000)):
        (adapters / f"{name}.gguf").write_bytes(b"\0" * size)
    (adapters / "notes.txt").write_text("not an adapter")
    cfg = EdgeConfig(cache=CacheConfig(budget="4KB", load_workers=0),
                     router=RouterConfig(features=FeatureConfig(dim=16)),
                     catalogue=CatalogueConfig(directory=str(adapters)))
    path = tmp_path / "policy.yaml"
    save_config(cfg, path)
    with Runtime.from_config(path, backend=SimulatedBackend()) as rt:
        assert rt.catalogue.sizes() == {"poetry": 2000, "sql": 3000}
        assert rt.catalogue["sql"].location == str(adapters / "sql.gguf")
        assert rt.handle(InferenceRequest(prompt="hello")).adapter in ("sql", "poetry")
    mapping = {"cache": {"budget": "4KB", "load_workers": 0},
               "catalogue": {"files": {"s": str(adapters / "sql.gguf")}}}
    with Runtime.from_config(mapping, backend=SimulatedBackend()) as rt:
        assert rt.catalogue.sizes() == {"s": 3000}
    with pytest.raises(ConfigError, match=r"config.cache.budgt: unknown key"):
        Runtime.from_config({"cache": {"budgt": 1}}, backend=SimulatedBackend())


def test_catalogue_problems_are_named():
    with pytest.raises(ConfigError, match="the catalogue is empty"):
        Runtime.from_config(config(), backend=SimulatedBackend())
    with pytest.raises(BudgetError, match="'legal' is 52428800 bytes, more than the whole cache "
                                          "budget of 41943040 bytes"):
        runtime(config(budget=40 * MiB))
    with pytest.raises(ConfigError, match="catalogue directory '/nonexistent' does not exist"):
        Runtime.from_config(EdgeConfig(catalogue=CatalogueConfig(directory="/nonexistent")),
                            backend=SimulatedBackend())


def test_an_epoch_plan_is_prefetched_after_the_request_that_closed_it():
    # polar with 4-request epochs: the 4th routing decision closes the epoch; its plan reaches
    # the cache (one prefetch call with the planned adapters that are not resident) only after
    # that request was served, so the page-ins never delay it.
    backend = SimulatedBackend()
    cfg = config(budget=80 * MiB, polar=PolarConfig(mode="polar", epoch_length=4))
    with runtime(cfg, backend) as rt:
        calls = []
        real_prefetch = rt.cache.prefetch

        def recording_prefetch(keys, *args, **kwargs):
            keys = list(keys)
            calls.append((backend.served, keys))
            return real_prefetch(keys, *args, **kwargs)

        rt.cache.prefetch = recording_prefetch
        for i in range(4):
            out = rt.handle(InferenceRequest(prompt=f"request {i}", request_id=i))
            rt.feedback(i, 1.0 if out.adapter == "sql" else 0.0)
            assert len(calls) == (1 if i == 3 else 0)
        served_before, prefetched = calls[0]
        assert served_before == 4 and set(prefetched) <= set(SIZES)
        assert set(prefetched) <= set(rt.resident())
        assert rt.stats()["requests"]["plans_applied"] == 1


def test_router_state_is_saved_on_close_and_read_back(tmp_path):
    state = tmp_path / "router.state"
    cfg = config(state=StateConfig(path=str(state)))
    with runtime(cfg) as rt:
        for i in range(6):
            rt.handle(InferenceRequest(prompt=f"q{i}", request_id=i))
            rt.feedback(i, 0.5)
    assert state.exists()
    with runtime(cfg) as rt:
        assert rt.router.updates == 6


def test_concurrent_requests_keep_the_budget_and_every_count():
    backend = SimulatedBackend()
    lock = threading.Lock()
    seen = []
    sizes = {f"a{i}": (i + 1) * MiB for i in range(12)}
    # 8 threads, adapters of 1-12 MiB in 20 MiB: a miss that finds the budget held by other
    # requests' pins or loads waits for them (as a loaded server should) instead of failing.
    cfg = config(budget=20 * MiB, wait_timeout=30.0,
                 features=FeatureConfig(extractor="vector", dim=4))
    rt = runtime(cfg, backend, sizes)
    rng = np.random.default_rng(0)
    contexts = rng.normal(size=(8, 50, 4))

    def worker(w):
        def run():
            for j in range(50):
                rid = f"{w}-{j}"
                out = rt.handle(InferenceRequest(prompt=contexts[w, j], request_id=rid))
                rt.feedback(rid, float(j % 2))
                with lock:
                    seen.append(out.adapter)
                assert rt.cache.stats().resident_bytes <= 20 * MiB
        return run

    run_threads([worker(w) for w in range(8)])
    stats = rt.stats()
    assert len(seen) == 400 and stats["requests"]["requests"] == 400
    assert stats["router"]["updates"] == 400 and stats["router"]["pending"] == 0
    assert stats["requests"]["hits"] + stats["requests"]["misses"] == 400
    rt.close()
    assert backend.loads == backend.unloads and backend.held_bytes == 0


def test_a_new_catalogue_keeps_what_was_learned_and_drops_what_left():
    backend = SimulatedBackend()
    with runtime(backend=backend) as rt:
        for i in range(3):
            rt.handle(InferenceRequest(prompt=f"q{i}", adapter="sql"))
        rt.handle(InferenceRequest(prompt="q", request_id="r", adapter="auto"))
        rt.feedback("r", 1.0)
        rt.handle(InferenceRequest(prompt="q", adapter="poetry"))
        learned = rt.router.linucb.state_arrays()["counts"].sum()
        grown = dict(SIZES, poetry=35 * MiB, medical=20 * MiB)
        del grown["legal"]
        report = rt.update_catalogue(Catalogue.from_sizes(grown))
        assert report == {"added": ["medical"], "removed": ["legal"], "changed": ["poetry"]}
        assert set(rt.router.arm_ids) == {"sql", "poetry", "medical"}
        assert rt.router.linucb.state_arrays()["counts"].sum() <= learned
        assert "poetry" not in rt.resident()  # changed on disk: dropped, reloaded when asked
        out = rt.handle(InferenceRequest(prompt="q", adapter="poetry"))
        assert not out.hit and rt.resident()["poetry"] == 35 * MiB
        with pytest.raises(UnknownObjectError):
            rt.handle(InferenceRequest(prompt="q", adapter="legal"))
        with pytest.raises(BudgetError, match="'huge' is"):
            rt.update_catalogue(Catalogue.from_sizes({"huge": 10**12}))
        assert set(rt.catalogue) == {"sql", "poetry", "medical"}  # unchanged by the refusal
    assert backend.held_bytes == 0 and backend.loads == backend.unloads


def test_the_catalogue_is_rescanned_every_rescan_seconds(tmp_path):
    from edge.sim.backend import VirtualClock

    (tmp_path / "a.gguf").write_bytes(b"x" * 100)
    clock = VirtualClock()
    cfg = EdgeConfig(cache=CacheConfig(budget=1000, load_workers=0),
                     router=RouterConfig(features=FeatureConfig(dim=8)),
                     catalogue=CatalogueConfig(directory=str(tmp_path), rescan_seconds=60))
    with Runtime.from_config(cfg, backend=SimulatedBackend(clock=clock)) as rt:
        (tmp_path / "b.gguf").write_bytes(b"x" * 200)
        clock.advance(59)
        with pytest.raises(UnknownObjectError):
            rt.handle(InferenceRequest(adapter="b"))  # not due yet
        clock.advance(1)
        assert rt.handle(InferenceRequest(adapter="b")).adapter == "b"
        assert set(rt.router.arm_ids) == {"a", "b"}
    with pytest.raises(ValueError, match="rescan_seconds must be a positive number"):
        CatalogueConfig(rescan_seconds=0)


def test_complete_chat_route_and_stream_are_the_same_path():
    backend = SimulatedBackend()
    with runtime(backend=backend) as rt:
        preview = rt.route("SELECT 1")
        assert preview.arm_id in SIZES and preview.reason == "preview"
        assert rt.stats()["router"]["pending"] == 0  # a preview waits for no reward
        # Nothing moved: the same preview again, and routing now picks the previewed adapter.
        assert rt.route("SELECT 1").arm_id == preview.arm_id
        out = rt.complete("SELECT 1", request_id="c1")
        assert out.adapter == preview.arm_id and out.routed
        assert rt.feedback("c1", 1.0)
        named = rt.complete("x", adapter="legal")
        assert named.adapter == "legal" and not named.routed
        chat = rt.chat([{"role": "user", "content": "hi"}], adapter="sql")
        assert chat.adapter == "sql"
        with pytest.raises(RequestError, match="message 0 must have a string role"):
            rt.chat([{"role": "user"}])
        with rt.stream(InferenceRequest(prompt="s", adapter="poetry", request_id="s1")) as s:
            assert s.adapters == ("poetry",) and s.request_id == "s1"
            assert rt.cache.stats().pinned_bytes == SIZES["poetry"]  # pinned while streaming
            assert list(s) == []  # the simulated backend produces no text
        assert s.outcome.adapter == "poetry" and rt.cache.stats().pinned_bytes == 0
        # A stream closed before its end releases its adapter and forgets its decision.
        early = rt.stream(InferenceRequest(prompt="s", request_id="s2"))
        assert rt.cache.stats().pinned_bytes > 0
        early.close()
        assert rt.cache.stats().pinned_bytes == 0 and early.outcome is None
        with pytest.raises(UnknownRequestError):
            rt.feedback("s2", 1.0)


def test_an_adapter_paged_in_again_comes_back_with_its_history():
    """The request path keys the cache by adapter name; a name evicted and paged in again must
    carry its earlier residencies into the feature matrix the learned policy reads (until
    2026-12-06 every page-in looked like an adapter never seen)."""
    with runtime(config(budget=60 * MiB)) as rt:  # one adapter at a time
        for name in ("sql", "poetry", "sql", "legal", "sql"):
            rt.handle(InferenceRequest(prompt="x", adapter=name))
        view = rt.cache.view
        row = dict(zip(view.feature_names, view.features([view.slot_of("sql")])[0].tolist(),
                       strict=True))
    assert (row["past_residencies"], row["past_accesses"]) == (2.0, 2.0)
