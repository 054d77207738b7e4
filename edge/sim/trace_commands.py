"""``edge trace gen KIND`` (one subcommand per generator) and ``edge trace info``.

Each generator gets its own subcommand so ``edge trace gen scan --help`` lists exactly the
options that shape a scan workload; an option that means nothing for a kind cannot be given.
The output format follows ``--out``'s extension (or ``--format``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from edge.cli_errors import friendly_errors
from edge.config import parse_bytes
from edge.schema import approx_bytes
from edge.sim import generate as gen
from edge.sim.cliutil import FiniteFloat, load_trace, trace_options
from edge.sim.specs import working_set_bytes
from edge.sim.sweep import uniform_size
from edge.sim.trace import Trace, sniff_format, write_trace

WRITABLE_FORMATS = ("csv", "jsonl", "oracleGeneral")


class ByteSize(click.ParamType):
    name = "SIZE"

    def convert(self, value, param, ctx):
        try:
            return parse_bytes(value, "size")
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _common(default_size: str, default_rate: float, requests: bool = True,
            objects: str | None = "objects") -> Callable:
    """--out/--format/--seed/--size/--size-sigma/--rate, plus --requests/--objects/--alpha."""
    options = [
        click.option("--out", "out_path", required=True,
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="Output file: .csv, .jsonl or .oracleGeneral.bin."),
        click.option("--format", "fmt", type=click.Choice(WRITABLE_FORMATS), default=None,
                     help="Output format; from --out's extension when omitted."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the generator: the same seed writes the same trace."),
        click.option("--size", type=ByteSize(), default=default_size, show_default=True,
                     help="Object size (the median with --size-sigma)."),
        click.option("--size-sigma", type=FiniteFloat(0), default=0.0, show_default=True,
                     help="Log-normal spread of sizes; 0 gives every object --size."),
        click.option("--rate", type=FiniteFloat(0, min_open=True), default=default_rate,
                     show_default=True, help="Mean requests per second (Poisson arrivals)."),
    ]
    if requests:
        options.append(click.option("--requests", "n_requests", type=click.IntRange(1),
                                    default=100_000, show_default=True,
                                    help="Requests in the trace."))
    if objects:
        options.append(click.option("--objects", "n_objects", type=click.IntRange(1),
                                    default=1000, show_default=True, help=f"Number of {objects}."))
        options.append(click.option("--alpha", type=FiniteFloat(0), default=0.9,
                                    show_default=True, help="Zipf popularity exponent."))

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _sizes(size: int, sigma: float) -> gen.SizeModel:
    if sigma == 0:
        return gen.FixedSize(size)
    if size > gen.LognormalSize.max_bytes:
        raise click.BadParameter(
            f"with --size-sigma, sizes are drawn up to {gen.LognormalSize.max_bytes} bytes "
            f"(oracleGeneral's uint32), so the median {size} cannot be reached",
            param_hint="--size")
    return gen.LognormalSize(size, sigma)


def _write(trace: Trace, out_path: Path, fmt: str | None) -> None:
    fmt = fmt or sniff_format(out_path)
    if fmt not in WRITABLE_FORMATS:
        raise click.BadParameter(f"cannot write {fmt}; use one of {', '.join(WRITABLE_FORMATS)}",
                                 param_hint="--out")
    write_trace(trace, out_path, fmt)
    click.echo(f"wrote {out_path} ({fmt}): {_describe(trace)}")


def _describe(trace: Trace) -> str:
    objects = int(np.unique(trace.keys).size)
    size = uniform_size(trace.sizes)
    sizes = f"all {approx_bytes(size)}" if size else (
        f"sizes {approx_bytes(int(trace.sizes.min()))}..{approx_bytes(int(trace.sizes.max()))}")
    return (f"{len(trace):,} requests, {objects:,} objects, working set "
            f"{approx_bytes(working_set_bytes(trace.keys, trace.sizes))}, {sizes}")


def _build(make: Callable[[], Trace]) -> Trace:
    try:
        return make()
    except ValueError as exc:  # the generators name the bad parameter
        raise click.UsageError(str(exc)) from None


@click.group("trace")
def trace() -> None:
    """Generate and inspect traces."""


@trace.group("gen")
def trace_gen() -> None:
    """Write a seeded synthetic trace (one subcommand per workload kind)."""


@trace_gen.command("zipf")
@_common("4KiB", 1000.0)
@friendly_errors
def gen_zipf(out_path, fmt, seed, size, size_sigma, rate, n_requests, n_objects, alpha):
    """Independent requests with Zipf(alpha) popularity."""
    _write(_build(lambda: gen.zipf_trace(n_requests, n_objects, alpha, seed,
                                         _sizes(size, size_sigma), rate)), out_path, fmt)


@trace_gen.command("scan")
@_common("4KiB", 1000.0)
@click.option("--period", type=click.IntRange(2), default=10_000, show_default=True,
              help="Requests per cycle; each cycle ends in a scan burst.")
@click.option("--burst", type=click.IntRange(1), default=2_000, show_default=True,
              help="Scan requests at the end of each period (one-off keys).")
@click.option("--loop", is_flag=True,
              help="Rescan the same keys every burst instead of fresh ones.")
@friendly_errors
def gen_scan(out_path, fmt, seed, size, size_sigma, rate, n_requests, n_objects, alpha, period,
             burst, loop):
    """Zipf traffic interrupted by sequential scans: LRU's adversarial case."""
    _write(_build(lambda: gen.scan_bursts(n_requests, n_objects, alpha, seed, period, burst,
                                          _sizes(size, size_sigma), fresh_scan_keys=not loop,
                                          rate=rate)), out_path, fmt)


@trace_gen.command("drift")
@_common("4KiB", 1000.0)
@click.option("--phase", type=click.IntRange(1), default=10_000, show_default=True,
              help="Requests per popularity phase.")
@click.option("--shift", type=click.IntRange(0), default=50, show_default=True,
              help="Keys the hot set slides by each phase.")
@friendly_errors
def gen_drift(out_path, fmt, seed, size, size_sigma, rate, n_requests, n_objects, alpha, phase,
              shift):
    """Zipf popularity whose hot set slides over time."""
    _write(_build(lambda: gen.drifting_zipf(n_requests, n_objects, alpha, seed, phase, shift,
                                            _sizes(size, size_sigma), rate)), out_path, fmt)


@trace_gen.command("tenants")
@_common("16MiB", 10.0, objects="adapters")
@click.option("--tenants", "n_tenants", type=click.IntRange(1), default=8, show_default=True,
              help="Number of tenants sending requests.")
@click.option("--tenant-alpha", type=FiniteFloat(0), default=0.5, show_default=True,
              help="Zipf exponent of the tenants' traffic shares.")
@click.option("--context-dim", type=click.IntRange(0), default=0, show_default=True,
              help="Write a context vector of this dimension per request (for routers).")
@friendly_errors
def gen_tenants(out_path, fmt, seed, size, size_sigma, rate, n_requests, n_objects, alpha,
                n_tenants, tenant_alpha, context_dim):
    """Adapter requests from tenants with their own preferences."""
    _write(_build(lambda: gen.tenant_adapter_stream(
        n_requests, n_tenants, n_objects, seed, alpha=alpha, tenant_alpha=tenant_alpha,
        context_dim=context_dim, sizes=_sizes(size, size_sigma), rate=rate).trace),
        out_path, fmt)


@trace_gen.command("moe")
@_common("4MiB", 20.0, requests=False, objects=None)
@click.option("--tokens", "n_tokens", type=click.IntRange(1), default=2000, show_default=True,
              help="Tokens generated.")
@click.option("--layers", "n_layers", type=click.IntRange(1), default=16, show_default=True,
              help="MoE layers per token.")
@click.option("--experts", "n_experts", type=click.IntRange(1), default=64, show_default=True,
              help="Experts per layer.")
@click.option("--top-k", type=click.IntRange(1), default=2, show_default=True,
              help="Experts each token activates per layer.")
@click.option("--locality", type=FiniteFloat(0, 1), default=0.5, show_default=True,
              help="Probability a token reuses the previous token's experts in a layer.")
@click.option("--alpha", type=FiniteFloat(0), default=1.0, show_default=True,
              help="Zipf exponent of expert popularity per layer.")
@friendly_errors
def gen_moe(out_path, fmt, seed, size, size_sigma, rate, n_tokens, n_layers, n_experts, top_k,
            locality, alpha):
    """Expert activations of a top-k MoE (one request per token, layer and chosen expert).

    --rate is tokens per second; every expert slice has --size bytes (--size-sigma must be 0).
    """
    if size_sigma:
        raise click.BadParameter("expert slices all have one size", param_hint="--size-sigma")
    _write(_build(lambda: gen.moe_routing(n_tokens, n_layers, n_experts, top_k, locality, seed,
                                          alpha=alpha, expert_bytes=size,
                                          tokens_per_second=rate).trace), out_path, fmt)


@trace_gen.command("azure")
@_common("16MiB", 1.0, requests=False, objects="adapters")
@click.option("--arrivals", "arrivals_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Azure LLM inference CSV (TIMESTAMP,ContextTokens,GeneratedTokens).")
@click.option("--phase-seconds", type=FiniteFloat(0, min_open=True), default=None,
              help="Drift popularity by --shift ranks every this many seconds.")
@click.option("--shift", type=click.IntRange(0), default=1, show_default=True,
              help="Ranks the adapter popularity slides by each --phase-seconds.")
@friendly_errors
def gen_azure(out_path, fmt, seed, size, size_sigma, rate, n_objects, alpha, arrivals_path,
              phase_seconds, shift):
    """Zipf adapter choices laid on a real arrival process (--rate is not used)."""
    arrivals = gen.read_azure_llm_arrivals(arrivals_path)
    _write(_build(lambda: gen.adapters_on_arrivals(arrivals, n_objects, alpha, seed,
                                                   _sizes(size, size_sigma), phase_seconds,
                                                   shift)), out_path, fmt)


@trace.command("info")
@trace_options
@friendly_errors
def trace_info(trace_path, fmt, columns, no_header, skip_bad, limit):
    """Print a trace's size, objects, working set and reuse statistics."""
    t = load_trace(trace_path, fmt, columns, no_header, skip_bad, limit)
    keys, counts = np.unique(t.keys, return_counts=True)
    top = np.sort(counts)[::-1]
    click.echo(f"{trace_path}: {_describe(t)}")
    click.echo(f"  time span {float(t.times[-1] - t.times[0]):.3f} s; one-hit objects "
               f"{np.mean(counts == 1):.1%}; top 1% of objects get "
               f"{top[:max(1, len(top) // 100)].sum() / len(t):.1%} of requests")
    if t.skipped:
        click.echo(f"  {t.skipped:,} bad lines skipped")
