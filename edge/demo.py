"""``edge demo`` (what ``make demo`` runs): the daemon end to end on a fresh machine, offline.

1. Models: a tiny llama GGUF base and six LoRA adapters for it, written by
   ``edge.tiny_models`` into ``WORKDIR/tiny-models`` the first time and reused after
   (seconds; no download). ``WORKDIR`` is ``--workdir``, default ``$XDG_CACHE_HOME/edge/demo``
   (``~/.cache/edge/demo``).
2. The daemon: ``edge.daemon.server.Daemon`` in this process, in a thread, on a free loopback
   port, over a runtime with POLAR+ routing (``policies/polar.yaml``'s settings) and a cache
   budget that holds only part of the adapters, so serving pages them in and out. The router's
   features are its own ``hashing`` extractor over the prompt text (polar.yaml's, and the same
   whatever the model; the llama backend's ``llama-embedding`` would read the tiny base's
   random weights).
3. The workload (``edge.demo_workload``): five tenants, each with its own kind of prompt and its
   own best adapter, send ``model: "auto"`` completions over real HTTP; each answer's reward
   comes from a known utility model (the tiny models' text is noise, so nothing could score it)
   and goes back with ``POST /v1/feedback``.
4. The summary: how often the router chose the tenant's best adapter, per fifth of the run (it
   starts knowing nothing), the hit ratio and page-ins, the client's HTTP latency, and the
   runtime's own overhead per request (routing + acquiring: the daemon's ``edge.timings_ms``
   total minus serve). Every figure is computed from what this run measured; the per-request
   log, the summary and the router's saved state are left in ``WORKDIR/last-run``.

The default 500 requests take 15-35 s on 2 cores (one request at a time, 4 tokens each).
``edge cache-demo`` (edge.cache_demo) is the cache-only replay this command used to be.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import click
import numpy as np

from edge.cli_errors import os_error_message
from edge.demo_workload import TENANTS, Record, Summary, UtilityModel, make_workload, summarise
from edge.errors import EdgeError
from edge.fileio import write_atomic
from edge.schema import approx_bytes

N_ADAPTERS = 6
# Ranks of the demo's adapters (file sizes 20-80 KiB): mixed, like a real library.
ADAPTER_RANKS = (4, 8, 16, 8, 4, 16)
MODEL_SEED = 0  # the models do not depend on --seed: built once, reused by every run
BUDGET_SHARE = 0.4  # of all adapters' bytes: two to four of the six fit at once
EPOCH_LENGTH = 64  # POLAR+'s first epoch; polar.yaml's 256 would plan once in a short run
MAX_TOKENS = 4
N_CTX = 512
# The client, the server's event loop and generation share this process, and a model this small
# gains nothing from a second thread: on a busy 2-core machine, serving page-ins measured p99
# 2.3 s with two llama.cpp threads and 0.3 s with one.
LLAMA_THREADS = 1
WINDOWS = 5
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 60.0
ADAPTER_PATTERN = "lora-*.gguf"
def default_workdir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "edge" / "demo"


# ---- models -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DemoModels:
    base: Path
    adapters: tuple[Path, ...]


def tiny_models(directory: Path) -> tuple[DemoModels, bool]:
    """The demo's models in ``directory``, built if any file is missing; (models, built)."""
    names = [f"lora-{i}-r{ADAPTER_RANKS[i]}.gguf" for i in range(N_ADAPTERS)]
    models = DemoModels(directory / "base.gguf", tuple(directory / n for n in names))
    # make_tiny_models writes each file under a temporary name and renames it, so a file that
    # is there is whole.
    if all(p.is_file() for p in (models.base, *models.adapters)):
        return models, False
    from edge.tiny_models import make_tiny_models  # gguf is heavy; only a first run needs it

    made = make_tiny_models(directory, n_adapters=N_ADAPTERS, seed=MODEL_SEED,
                            ranks=ADAPTER_RANKS)
    return DemoModels(Path(made.base), tuple(Path(p) for p in made.adapters)), True


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
          utility: UtilityModel) -> list[Record]:
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
                "model": "auto", "prompt": request.prompt, "max_tokens": MAX_TOKENS,
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
@click.option("--requests", "n_requests", default=500, show_default=True,
              type=click.IntRange(min=25), help="Requests to send.")
@click.option("--seed", default=0, show_default=True,
              help="Seed of the workload, the utility table and the reward noise.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the tiny models are kept (built once) and the run's files are "
                   "written. [default: $XDG_CACHE_HOME/edge/demo, i.e. ~/.cache/edge/demo]")
def demo(n_requests: int, seed: int, workdir: Optional[Path]) -> None:
    """Serve a multi-tenant workload through the daemon with POLAR+ routing, and summarise
    what the router learned and what serving cost."""
    workdir = workdir if workdir is not None else default_workdir()
    try:
        summary, info = run_demo(workdir, n_requests, seed)
    except (EdgeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(os_error_message(exc)) from None
    print_summary(summary, info)


def run_demo(workdir: Path, n_requests: int, seed: int) -> tuple[Summary, dict]:
    from edge.backends.llama import LlamaBackend
    from edge.config import CatalogueConfig
    from edge.daemon.config import DaemonConfig
    from edge.daemon.server import Daemon
    from edge.runtime import Runtime

    models, built = tiny_models(workdir / "tiny-models")
    click.echo(f"models: {'built' if built else 'reusing'} {models.base.parent} "
               f"(tiny llama base, {len(models.adapters)} LoRA adapters)", err=True)
    run_dir = workdir / "last-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "router.state"
    state_path.unlink(missing_ok=True)  # the router starts knowing nothing: the demo is learning
    adapter_bytes = sum(p.stat().st_size for p in models.adapters)
    backend = LlamaBackend(models.base, n_ctx=N_CTX, n_threads=LLAMA_THREADS)
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
            records = drive(client, n_requests, seed, adapter_names, utility)
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
    echo(f"models: {info['models']}")
    echo(f"requests log: {info['requests_log']}")
    echo(f"summary: {info['summary_file']}")
    echo(f"router state: {info['router_state']}")
