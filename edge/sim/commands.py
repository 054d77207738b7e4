"""``edge sim``, ``edge tune`` and ``edge calibrate``: the simulator's commands.

Each command only parses options, calls the library (``sweep``, ``tune``, ``calibrate``) and
prints; the work and its checks live in those modules so scripts and tests use them directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import numpy as np

from edge.cli_errors import friendly_errors
from edge.config import CacheConfig, load_config, save_config
from edge.errors import ConfigError
from edge.paging_cost import PagingCostModel, load_paging_cost, save_paging_cost
from edge.sim import tune as tuning
from edge.sim.calibrate import calibrate as measure_device
from edge.sim.cliutil import (
    load_trace,
    progress_bar,
    progress_option,
    trace_options,
)
from edge.sim.specs import parse_budget_list, parse_policy_list, working_set_bytes
from edge.sim.sweep import run_sweep, uniform_size, with_lru
from edge.sim.table import TraceSummary, format_table, sweep_json
from edge.sim.trace import total_bytes

DEFAULT_POLICIES = "lru,arc,s3fifo,gdsf"
DEFAULT_BUDGETS = "1%,5%,10%"


def _profile(path: Path | None) -> PagingCostModel:
    return load_paging_cost(path) if path else PagingCostModel()


def _write_json(path: Path, data: dict) -> None:
    from edge.fileio import write_atomic

    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


@click.command()
@trace_options
@click.option("--policy", "policy_texts", multiple=True, metavar="LIST",
              help=f"Policies, e.g. 'lru,s3fifo:small_fraction=0.2,arc' (repeatable; default "
                   f"{DEFAULT_POLICIES}, or the --config file's policy).")
@click.option("--budget", "budget_texts", multiple=True, metavar="LIST",
              help=f"Budgets: sizes or percentages of the working set, e.g. '64MiB,1GiB' or "
                   f"'1%,5%' (repeatable; default {DEFAULT_BUDGETS}, or the --config budget).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Policy file whose cache section (policy, params, budget) to replay.")
@click.option("--profile", "profile_path", type=click.Path(path_type=Path), default=None,
              help="Device profile YAML (edge calibrate) for paging seconds.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write every figure to this JSON file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write hit ratio / paging time vs budget curves (PNG).")
@click.option("--no-optimal", is_flag=True,
              help="Skip the offline reference (Belady / PFOO-L) and the gap-closed column.")
@click.option("--router", "route", is_flag=True,
              help="Route instead: replay the trace's contexts through routing strategies "
                   "(the labelled adapter is the right one); see docs/router.md.")
@click.option("--strategy", "strategy_texts", multiple=True, metavar="LIST",
              help="With --router: strategies, e.g. 'linucb+lru,polar+' (default "
                   "random,linucb+lru,polar,polar+,oracle).")
@progress_option
@friendly_errors
def sim(trace_path, fmt, columns, no_header, skip_bad, limit, policy_texts, budget_texts,
        config_path, profile_path, json_path, plot_path, no_optimal, route, strategy_texts,
        show_progress):
    """Replay a trace through policies x budgets; print hit ratios, paging time, gap closed.

    LRU is always replayed (the gap is measured from it). The reference is Belady's MIN for
    uniform-size traces and the PFOO-L upper bound for variable sizes; the table says which.
    With --router, the trace's contexts are routed by each strategy over a PagedCache instead.
    """
    if route:
        _route(trace_path, fmt, columns, no_header, skip_bad, limit, budget_texts, config_path,
               profile_path, json_path, strategy_texts)
        return
    if strategy_texts:
        raise click.BadParameter("only applies with --router", param_hint="--strategy")
    if plot_path is not None:
        from edge.sim.plot import require_matplotlib

        require_matplotlib()  # fail before a long replay, not after it
    config = load_config(config_path) if config_path else None
    profile = _profile(profile_path)
    trace = load_trace(trace_path, fmt, columns, no_header, skip_bad, limit)
    working_set = working_set_bytes(trace.keys, trace.sizes)

    policies: list[CacheConfig] = []
    if config is not None:
        policies.append(config.cache)
    if policy_texts or config is None:
        for text in policy_texts or (DEFAULT_POLICIES,):
            try:
                policies += parse_policy_list(text)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--policy") from None
    # A policy given twice is replayed once; LRU is added because every gap is measured from it.
    unique: dict[str, CacheConfig] = {}
    for cache in policies:
        unique.setdefault(cache.policy_label, cache)
    policies = with_lru(list(unique.values()))

    if budget_texts:
        texts = budget_texts
    else:
        texts = (str(config.cache.budget),) if config is not None else (DEFAULT_BUDGETS,)
    try:
        budgets = parse_budget_list(",".join(texts), working_set)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--budget") from None

    cells = len(trace) * len(policies) * len(budgets)
    with progress_bar(show_progress, cells, "replaying") as progress:
        sweep = run_sweep(trace, policies, budgets, profile=profile,
                          with_optimal=not no_optimal, progress=progress)
    summary = TraceSummary(
        path=str(trace_path), format=fmt or ("lcs_csv" if columns else _sniffed(trace_path)),
        requests=len(trace), objects=int(np.unique(trace.keys).size),
        working_set_bytes=working_set, uniform_size=uniform_size(trace.sizes),
        skipped=trace.skipped)
    click.echo(format_table(sweep, summary))
    if json_path:
        _write_json(json_path, sweep_json(sweep, summary, profile))
        click.echo(f"wrote {json_path}")
    if plot_path:
        from edge.sim.plot import plot_sweep

        plot_sweep(sweep, plot_path, title=f"edge sim: {trace_path.name} "
                                            f"({len(trace):,} requests)")
        click.echo(f"wrote {plot_path}")


def _route(trace_path, fmt, columns, no_header, skip_bad, limit, budget_texts, config_path,
           profile_path, json_path, strategy_texts) -> None:
    from edge.config import EdgeConfig
    from edge.sim.routing import (
        DEFAULT_STRATEGIES,
        format_routing_table,
        routing_events,
        run_routing,
    )

    config = load_config(config_path) if config_path else EdgeConfig()
    profile = _profile(profile_path)
    trace = load_trace(trace_path, fmt, columns, no_header, skip_bad, limit)
    try:
        events = routing_events(trace, config.router.features)
    except ValueError as exc:
        raise click.ClickException(f"{trace_path}: {exc}") from None
    strategies = tuple(name for text in strategy_texts for name in text.split(",") if name) \
        or DEFAULT_STRATEGIES
    texts = budget_texts or ((str(config.cache.budget),) if config_path else ("25%",))
    try:
        budgets = parse_budget_list(",".join(texts), total_bytes(events.sizes))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--budget") from None
    report = []
    for budget in budgets:
        try:
            results = run_routing(events, strategies, budget.nbytes, profile, config=config)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--strategy/--budget") from None
        click.echo(format_routing_table(results, budget.nbytes) + "\n")
        report.append({"budget": budget.nbytes, "budget_label": budget.label,
                       "results": results})
    if json_path:
        _write_json(json_path, {"trace": str(trace_path), "requests": len(trace),
                                "adapters": len(events.arm_ids), "budgets": report})
        click.echo(f"wrote {json_path}")


def _sniffed(path: Path) -> str:
    from edge.sim.trace import sniff_format

    return sniff_format(path)


@click.command()
@trace_options
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="Base policy file; the space's paths are set on top of it.")
@click.option("--space", "space_path", required=True, type=click.Path(path_type=Path),
              help="Search space YAML (see docs/sim.md).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the best configuration (a policy file).")
@click.option("--jobs", type=click.IntRange(1), default=None,
              help="Worker processes (default: all cores). Results do not depend on it.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the whole ranking to this JSON file.")
@click.option("--profile", "profile_path", type=click.Path(path_type=Path), default=None,
              help="Device profile YAML (edge calibrate) for paging seconds.")
@click.option("--top", type=click.IntRange(1), default=10, show_default=True,
              help="Rows of the ranking to print.")
@progress_option
@friendly_errors
def tune(trace_path, fmt, columns, no_header, skip_bad, limit, config_path, space_path,
         out_path, jobs, json_path, profile_path, top, show_progress):
    """Search policy-file settings on a trace; write the best as a policy file."""
    base = load_config(config_path)
    space = tuning.load_space(space_path)
    profile = _profile(profile_path)
    # Every candidate is validated before the trace is even read: a bad space fails fast.
    # A large space takes a while here: say how many, then a line every few seconds.
    size = tuning.space_size(space)
    click.echo(f"validating {size:,} assignments of {space_path.name}", err=True)
    validating = tuning.ProgressLines("validating", interval=5.0) if size > 1000 else None
    try:
        candidates = tuning.build_candidates(base, space, on_progress=validating)
    except ConfigError as exc:
        raise ConfigError(f"{space_path}: {exc}") from None
    replay = "routing replay" if space.routing else "cache replay"
    for path in space.unreplayed_paths():
        hint = ("" if space.routing or not path.startswith("router.") else
                f" (the objective {tuning.ROUTING_OBJECTIVES[0]} or "
                f"{tuning.ROUTING_OBJECTIVES[1]} replays the router)")
        click.echo(f"warning: {path} is not read by the {replay}; candidates that differ "
                   f"only there tie{hint}", err=True)
    trace = load_trace(trace_path, fmt, columns, no_header, skip_bad, limit)
    if space.routing:
        tuning.check_routing_trace(trace, base)
    jobs = jobs or os.cpu_count() or 1
    click.echo(f"{len(candidates)} candidates ({space.method}), {len(trace):,} requests, "
               f"{min(jobs, len(candidates))} worker(s)")
    # Time the first few candidates alone and print the estimate before the long part.
    # Every candidate is scored with the base file's lambda (a candidate's router may charge
    # paging less; its objective still counts every paging second at the base's rate).
    weight = base.router.polar.paging_weight
    first, estimate = tuning.measure_first(trace, candidates, space, profile=profile,
                                           sample=min(3, len(candidates)), jobs=jobs,
                                           objective_weight=weight)
    click.echo(estimate.describe(), err=True)
    lines = tuning.ProgressLines("replaying", interval=10.0)
    with progress_bar(show_progress, len(candidates), "tuning") as progress:
        def report(done: int) -> None:
            progress(done, len(candidates))
            if not show_progress:  # no bar drawn: periodic lines on stderr instead
                lines(done, len(candidates))

        evaluations = tuning.evaluate(trace, candidates, space, profile=profile, jobs=jobs,
                                      on_result=report, done=first, objective_weight=weight)
    ranked = tuning.rank(evaluations, space.objective)
    click.echo(tuning.format_ranking(ranked, space, top))
    best = tuning.best_config(ranked[0], space.objective, len(candidates), trace_path.name)
    save_config(best, out_path)
    if load_config(out_path) != best:  # the contract with the daemon: it loads as written
        raise ConfigError(f"{out_path}: the written configuration does not read back equal; "
                          "this is a bug in edge.config")
    rank1 = ranked[0].candidate.label(tuning.short_names(space.paths()))
    click.echo(f"wrote {out_path} (rank 1: {rank1 or 'the base'})")
    if json_path:
        _write_json(json_path, tuning.tune_json(ranked, space, str(trace_path), jobs))
        click.echo(f"wrote {json_path}")


@click.command()
@click.option("--dir", "directory", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory of files to read (ideally the adapters or experts to be paged).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the device profile YAML.")
@click.option("--name", default="calibrated", show_default=True, help="Profile name.")
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True,
              help="Times each file is read cold and warm; the medians are kept.")
@click.option("--max-files", type=click.IntRange(1), default=64, show_default=True,
              help="Read at most this many files of --dir (in name order).")
@friendly_errors
def calibrate(directory, out_path, name, repeats, max_files):
    """Measure this device's cold and warm read latency and bandwidth; write a profile."""
    profile = measure_device(directory, name=name, repeats=repeats, max_files=max_files)
    save_paging_cost(profile, out_path)
    click.echo(f"cold: {profile.cold_latency_s * 1e6:.0f} us latency, "
               f"{profile.cold_bandwidth_bytes_per_s / 1e9:.2f} GB/s")
    click.echo(f"warm: {profile.warm_latency_s * 1e6:.0f} us latency, "
               f"{profile.warm_bandwidth_bytes_per_s / 1e9:.2f} GB/s")
    click.echo(f"wrote {out_path}")

