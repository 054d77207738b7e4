"""``edge train-eviction``: train the learned eviction policy on traces, evaluate it, export it.

Training traces are files the simulator reads (``--trace``: CSV, JSONL, the daemon's access
log, oracleGeneral) and/or seeded generated workloads (``--generate KIND:key=value,...``, the
generators of ``edge trace gen``). Evaluation is on traces the model did not see: ``--eval-trace``
files, plus every ``--generate`` workload drawn again with another seed. With neither (only
``--trace`` files), the training traces are evaluated and the table says so.

Writes ``--out`` (ONNX, through ``edge.learned.onnx_model.export_onnx``), the parameters beside
it as ``.npz`` (numpy's own format, no pickle: what the exporter reads if ONNX is re-exported
later) and the evaluation and training report as JSON (``--eval-json``, default ``OUT`` with
``.eval.json``). Every file is written atomically.
"""

from __future__ import annotations

import io
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml

from edge.cli_errors import friendly_errors
from edge.config import parse_bytes
from edge.fileio import write_atomic
from edge.learned.network import FEATURE_SCHEMA_VERSION, DuelingQNet
from edge.learned.train import (
    OBJECTIVES,
    ONE_HIT_WEIGHTS,
    TrainConfig,
    TrainReport,
    compare_policies,
    default_horizon,
    prepare_trace,
    train,
)
from edge.schema import approx_bytes
from edge.sim import generate as gen
from edge.sim.cliutil import progress_bar, progress_option
from edge.sim.specs import parse_budget_list, working_set_bytes
from edge.sim.trace import Trace, read_trace

EVAL_JSON_VERSION = 1
EVAL_SEED_OFFSET = 1_000_003  # a held-out generated trace: the same workload, another seed

# KIND -> (the generator's defaults; the parameter names are the keys a spec may give).
GENERATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "zipf": {"requests": 100_000, "objects": 1000, "alpha": 0.9},
    "scan": {"requests": 100_000, "objects": 1000, "alpha": 0.9, "period": 10_000,
             "burst": 2_000, "loop": False},
    "drift": {"requests": 100_000, "objects": 1000, "alpha": 0.9, "phase": 10_000, "shift": 50},
    "tenants": {"requests": 100_000, "objects": 64, "alpha": 0.9, "tenants": 8,
                "tenant_alpha": 0.5},
}
COMMON_DEFAULTS = {"seed": 0, "size": "64KiB", "sigma": 1.0, "rate": 1000.0}


def parse_generate(spec: str) -> tuple[str, dict[str, Any]]:
    """``"scan:requests=20000,burst=400"`` -> ("scan", every parameter with defaults filled);
    ``ValueError`` naming the bad part."""
    kind, _, settings = spec.partition(":")
    kind = kind.strip()
    if kind not in GENERATOR_DEFAULTS:
        raise ValueError(f"--generate {spec!r}: unknown workload {kind!r}; use one of "
                         f"{', '.join(GENERATOR_DEFAULTS)}")
    params = {**COMMON_DEFAULTS, **GENERATOR_DEFAULTS[kind]}
    for token in filter(None, (t.strip() for t in settings.split(","))):
        key, eq, raw = token.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not raw.strip():
            raise ValueError(f"--generate {spec!r}: {token!r} is not key=value")
        if key not in params:
            raise ValueError(f"--generate {spec!r}: {kind} has no setting {key!r}; settings: "
                             f"{', '.join(sorted(params))}")
        params[key] = yaml.safe_load(raw.strip())
    return kind, params


def generate_trace(kind: str, params: dict[str, Any], seed_offset: int = 0) -> Trace:
    p = dict(params)
    seed = int(p["seed"]) + seed_offset
    size = parse_bytes(p["size"], "size")
    sizes = gen.LognormalSize(size, float(p["sigma"])) if p["sigma"] else gen.FixedSize(size)
    n, objects, alpha, rate = int(p["requests"]), int(p["objects"]), float(p["alpha"]), \
        float(p["rate"])
    if kind == "zipf":
        return gen.zipf_trace(n, objects, alpha, seed, sizes, rate)
    if kind == "scan":
        return gen.scan_bursts(n, objects, alpha, seed, int(p["period"]), int(p["burst"]), sizes,
                               fresh_scan_keys=not p["loop"], rate=rate)
    if kind == "drift":
        return gen.drifting_zipf(n, objects, alpha, seed, int(p["phase"]), int(p["shift"]),
                                 sizes, rate)
    return gen.tenant_adapter_stream(n, int(p["tenants"]), objects, seed, alpha=alpha,
                                     tenant_alpha=float(p["tenant_alpha"]), sizes=sizes,
                                     rate=rate).trace


def _spec_label(kind: str, params: dict[str, Any], seed_offset: int = 0) -> str:
    shown = {**params, "seed": int(params["seed"]) + seed_offset}
    return f"{kind}:" + ",".join(f"{k}={v}" for k, v in shown.items())


def _read(path: Path) -> Trace:
    try:
        trace = read_trace(path)
    except ValueError as exc:  # TraceError, and format sniffing's own complaints
        raise click.ClickException(str(exc) if str(path) in str(exc) else f"{path}: {exc}") \
            from None
    if len(trace) == 0:
        raise click.ClickException(f"{path}: no requests to train on")
    return trace


def _parse_weights(text: str) -> tuple[float, ...]:
    """The numbers of --one-hit-weights; TrainConfig says which of them are not weights."""
    try:
        return tuple(float(w) for w in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: not a comma-separated list of numbers",
                                 param_hint="--one-hit-weights") from None


def _budgets(text: str, trace: Trace, name: str) -> list[int]:
    try:
        budgets = [b.nbytes for b in parse_budget_list(text, working_set_bytes(trace.keys,
                                                                                 trace.sizes))]
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: {exc}", param_hint="--budget") from None
    largest = int(trace.sizes.max())
    small = [b for b in budgets if b < largest]
    if small:
        raise click.BadParameter(
            f"{text!r} gives {small[0]} bytes ({approx_bytes(small[0])}) for trace {name}, "
            f"smaller than its largest object ({largest} bytes, {approx_bytes(largest)})",
            param_hint="--budget")
    return budgets


def format_evaluation(rows: list[dict[str, Any]]) -> str:
    """One block per (trace, budget): each policy's hit ratio and byte hit ratio."""
    lines = []
    width = max(len(r["policy"]) for r in rows)
    header = f"{'policy':<{width}} {'hit ratio':>9} {'byte hits':>9}"
    seen = None
    for r in rows:
        if (r["trace"], r["budget"]) != seen:
            seen = (r["trace"], r["budget"])
            lines += ["", f"{r['trace']} at {approx_bytes(r['budget'])}"
                      + (" (a training trace: not held out)" if r.get("seen") else ""),
                      header, "-" * len(header)]
        byte_hits = "-" if r["byte_hit_ratio"] is None else f"{r['byte_hit_ratio']:.4f}"
        lines.append(f"{r['policy']:<{width}} {r['hit_ratio']:>9.4f} {byte_hits:>9}")
    return "\n".join(lines[1:])


def _save_parameters(net: DuelingQNet, path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **net.parameters())
    write_atomic(path, buffer.getvalue())


@click.command("train-eviction")
@click.option("--trace", "trace_paths", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training trace (any format the simulator reads, the access log included); "
                   "repeatable.")
@click.option("--generate", "generate_specs", multiple=True, metavar="KIND:KEY=VALUE,...",
              help=f"A generated training workload, KIND one of {', '.join(GENERATOR_DEFAULTS)} "
                   "(e.g. scan:requests=200000,objects=2000,sigma=1,seed=1); repeatable.")
@click.option("--budget", "budget_text", required=True, metavar="SIZE[,SIZE]",
              help="Cache budgets: bytes (64MiB) or % of each trace's working set (5%).")
@click.option("--out", "out_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The ONNX model to write.")
@click.option("--eval-trace", "eval_paths", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Held-out evaluation trace; repeatable.")
@click.option("--eval-json", "eval_json", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Evaluation and training report (default: OUT.eval.json).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the weights, exploration, candidate draws and minibatches.")
@click.option("--episodes", type=click.IntRange(1), default=3, show_default=True,
              help="Passes over every (trace, budget).")
@click.option("--horizon", type=click.IntRange(1), default=None,
              help="Reward horizon in requests (default: the objects a budget holds).")
@click.option("--k-tail", type=click.IntRange(0), default=16, show_default=True,
              help="Least-recently-used candidates per decision (as the policy serves).")
@click.option("--k-rand", type=click.IntRange(0), default=16, show_default=True,
              help="Uniformly drawn candidates per decision (as the policy serves).")
@click.option("--k-head", type=click.IntRange(0), default=0, show_default=True,
              help="Most-recently-used candidates per decision (as the policy serves).")
@click.option("--hidden", type=click.IntRange(1), default=32, show_default=True,
              help="Width of the network's two hidden layers.")
@click.option("--size-scaled-reward", is_flag=True,
              help="Scale rewards by median size / object size (not Cold-RL's reward).")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="dqn", show_default=True,
              help="dqn: Cold-RL's reward, Q-learning. imitation: a linear score fitted to "
                   "each decision's hindsight ranking (log of next-request distance x size); "
                   "ignores --episodes, --horizon, --hidden and --size-scaled-reward.")
@click.option("--one-hit-weights", "one_hit_text", metavar="W[,W...]",
              default=",".join(f"{w:g}" for w in ONE_HIT_WEIGHTS), show_default=True,
              help="imitation: the weights tried on the one-hit unit after the fit (1 for a "
                   "candidate with one access and no earlier one); the one with the best mean "
                   "hit ratio over the training replays is kept. 0: no unit.")
@progress_option
@friendly_errors
def train_eviction(trace_paths, generate_specs, budget_text, out_path, eval_paths, eval_json,
                   seed, episodes, horizon, k_tail, k_rand, k_head, hidden,
                   size_scaled_reward, objective, one_hit_text, show_progress):
    """Train the learned eviction policy offline on replayed traces and export it as ONNX.

    The shipped model (models/MANIFEST) is --objective imitation --k-tail 8 --k-head 16
    --k-rand 104 --one-hit-weights 0; the defaults are Cold-RL's DQN over 16 + 16 candidates.
    To learn from what a device served, train on its access log (docs/daemon.md, "Access log")
    and serve the model with cache.policy_params.model (its candidate rule comes with it).
    """
    if not trace_paths and not generate_specs:
        raise click.UsageError("give at least one --trace or --generate")
    try:
        config = TrainConfig(episodes=episodes, horizon=horizon, k_tail=k_tail, k_rand=k_rand,
                             k_head=k_head, hidden=hidden, seed=seed,
                             size_scaled_reward=size_scaled_reward, objective=objective,
                             one_hit_weights=_parse_weights(one_hit_text))
        specs = [parse_generate(s) for s in generate_specs]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    named = [(str(p), _read(p)) for p in trace_paths]
    try:
        named += [(_spec_label(k, p), generate_trace(k, p)) for k, p in specs]
        held_out = [(str(p), _read(p), False) for p in eval_paths]
        held_out += [(_spec_label(k, p, EVAL_SEED_OFFSET), generate_trace(k, p,
                                                                          EVAL_SEED_OFFSET), False)
                     for k, p in specs]
    except ValueError as exc:  # a generator names its bad parameter
        raise click.UsageError(str(exc)) from None
    if not held_out:
        held_out = [(name, trace, True) for name, trace in named]
    budgets = [_budgets(budget_text, trace, name) for name, trace in named]
    eval_budgets = [_budgets(budget_text, trace, name) for name, trace, _ in held_out]
    prepared = [prepare_trace(trace, name) for name, trace in named]

    # Imitation replays each pair once, then once per one-hit weight if there is a search.
    passes = episodes if objective != "imitation" else \
        1 if config.one_hit_weights == (0.0,) else 1 + len(config.one_hit_weights)
    total = passes * sum(len(t) * len(b) for t, b in zip(prepared, budgets, strict=True))
    with progress_bar(show_progress, total, "training") as update:
        try:
            report = train(prepared, budgets, config, progress=update)
        except ValueError as exc:  # nothing to learn from (imitation: no evictions)
            raise click.ClickException(str(exc)) from None
    click.echo(f"trained on {report.requests:,} requests ({report.decisions:,} decisions) in "
               f"{report.wall_seconds:.1f} s: {report.requests / report.wall_seconds:,.0f} "
               f"requests/s, {report.decisions / report.wall_seconds:,.0f} decisions/s", err=True)
    if report.one_hit_search is not None:
        tried = ", ".join(f"{r['weight']:g}: {r['mean_hit_ratio']:.4f}"
                          for r in report.one_hit_search)
        click.echo(f"one-hit weight {report.one_hit_weight:g}, searched in "
                   f"{report.one_hit_seconds:.1f} s (mean hit ratio over the training replays "
                   f"by weight: {tried})", err=True)

    rows: list[dict[str, Any]] = []
    for (name, trace, seen), trace_budgets in zip(held_out, eval_budgets, strict=True):
        for row in compare_policies(report.net, trace, name, trace_budgets, k_tail=k_tail,
                                    k_rand=k_rand, k_head=k_head, seed=seed):
            rows.append({**asdict(row), "seen": seen})
    click.echo(format_evaluation(rows))

    metadata = {"training_traces": [name for name, _ in named], "seed": seed,
                "train_config": asdict(config),
                "command": shlex.join(sys.argv)}
    sha256 = _export(report.net, out_path, metadata)
    _save_parameters(report.net, out_path.with_suffix(".npz"))
    eval_json = eval_json or out_path.with_suffix(".eval.json")
    document = {
        "version": EVAL_JSON_VERSION, "feature_schema_version": FEATURE_SCHEMA_VERSION,
        "model": str(out_path) if sha256 else None, "sha256": sha256,
        "parameters": str(out_path.with_suffix(".npz")),
        "training": {**metadata, **_training_summary(report, prepared, budgets)},
        "evaluation": rows,
    }
    write_atomic(eval_json, (json.dumps(document, indent=2) + "\n").encode())
    click.echo(f"wrote {out_path if sha256 else '(no ONNX: onnx is not installed)'}, "
               f"{out_path.with_suffix('.npz')}, {eval_json}", err=True)
    if sha256:  # what a policy file pins (cache.policy_params.sha256)
        click.echo(f"sha256 {sha256}  {out_path}", err=True)


def _export(net: DuelingQNet, path: Path, metadata: dict[str, Any]) -> str | None:
    """The ONNX export's sha256, or None where the ``train`` extra (``onnx``) is missing: the
    ``.npz`` parameters are still written, and can be exported later."""
    try:
        import onnx  # noqa: F401 - export_onnx imports it lazily; see here that it is missing

        from edge.learned.onnx_model import export_onnx
    except ImportError:
        click.echo("onnx is not installed (pip install 'edge[train]'): writing the parameters "
                   "only", err=True)
        return None
    return export_onnx(net, path, metadata=metadata)


def _training_summary(report: TrainReport, prepared, budgets) -> dict[str, Any]:
    summary = report.as_dict()
    summary["horizons"] = {f"{t.name}@{b}": report.config.horizon or default_horizon(t, b)
                           for t, bs in zip(prepared, budgets, strict=True) for b in bs}
    return summary
