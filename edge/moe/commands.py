"""``edge moe``: commands for MoE expert paging (``run``: generate with experts paged from disk,
``analyze``: routing locality of a trace).

The analysis modules are imported inside the command, so ``edge --help`` stays light.
"""

from __future__ import annotations

from pathlib import Path

import click

from edge.cli_errors import friendly_errors
from edge.moe.run_command import run

_TRACE_FORMATS = ("npy", "csv", "jsonl", "oracleGeneral")


class IntList(click.ParamType):
    """A comma-separated list of integers >= 1, e.g. ``4,16,64``."""

    name = "N[,N...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(int(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers.", param, ctx)
        if any(n < 1 for n in numbers):
            self.fail(f"{value!r}: every number must be >= 1.", param, ctx)
        return numbers


@click.group("moe")
def moe() -> None:
    """MoE expert paging: run a MoE GGUF with its experts paged from disk under a budget, and
    analyse routing traces."""


def _row(label: str, values, fmt: str = "{:>9.3f}") -> str:
    cells = ["{:>9}".format("-") if v is None else fmt.format(v) for v in values]
    return f"{label:<8}" + "".join(cells)


def format_report(result, source: str) -> str:
    """The text tables: SRP and the knee, SCH, and the curves at the capacity multiples."""
    k, ms, cs = result.top_k, result.windows, result.capacity_multiples
    everything = [*result.layers, result.overall]

    def label(layer):
        return "overall" if layer.layer is None else str(layer.layer)

    lines = [f"routing trace {source}: {result.n_tokens:,} tokens x {result.n_layers} layers, "
             f"top-{k} of {result.n_experts} experts",
             "first uses are hits while the cache has a free slot (FIELD-NOTES convention)", ""]
    head = f"{'layer':<8}" + "".join(f"{f'SRP({m})':>9}" for m in ms) + f"{'knee':>9}{'gain':>9}"
    lines += [head, "-" * len(head)]
    for layer in everything:
        knee = ["-" if layer.knee is None else layer.knee,
                "-" if layer.knee_gain is None else f"{layer.knee_gain:.3f}"]
        lines.append(_row(label(layer), [layer.srp[m] for m in ms])
                     + "".join(f"{v:>9}" for v in knee))
    lines += ["", f"SCH(m, C): hit rate of an m-token-lookahead cache, C in multiples of "
                  f"top_k={k}"]
    head = f"{'layer':<8}" + "".join(f"{f'{m}:{c}x':>9}" for m in ms for c in cs)
    lines += [head, "-" * len(head)]
    for layer in everything:
        lines.append(_row(label(layer), [layer.sch[m][c] for m in ms for c in cs]))
    lines += ["", f"hit rate per policy at C = multiples of top_k={k} (recommended C: the knee "
                  "of the LRU curve)"]
    head = f"{'layer':<8}" + "".join(f"{f'{p} {c}x':>10}" for p in ("lru", "lfu", "belady")
                                     for c in cs)
    lines += [head, "-" * len(head)]
    for layer in everything:
        values = []
        for policy in ("lru", "lfu", "belady"):
            curve = layer.curves[policy]
            values += [curve[c * k] if c * k < len(curve) else curve[-1] for c in cs]
        lines.append(f"{label(layer):<8}" + "".join(
            "{:>10}".format("-") if v is None else f"{v:>10.3f}" for v in values))
    return "\n".join(lines)


@moe.command("analyze")
@click.argument("trace_path", metavar="TRACE",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the full analysis (every curve) as JSON here.")
@click.option("--window", "windows", type=IntList(), default="4,16,64,256", show_default=True,
              help="Segment lengths m for SRP and SCH; those longer than the trace are skipped.")
@click.option("--capacity", "capacities", type=IntList(), default="1,2,4,8", show_default=True,
              help="SCH cache capacities, as multiples of the active experts (top_k).")
@click.option("--format", "fmt", type=click.Choice(_TRACE_FORMATS), default=None,
              help="Trace format; by default .npy is a routing array and anything else a "
                   "simulator trace of layer<<32|expert keys, sniffed from its name.")
@click.option("--experts", "n_experts", type=click.IntRange(1), default=None,
              help="Experts per layer (default: the largest id in the trace + 1).")
@friendly_errors
def analyze_command(trace_path: Path, json_path: Path | None, windows, capacities,
                    fmt: str | None, n_experts: int | None) -> None:
    """Local routing consistency of the routing trace TRACE (SRP, SCH, LRU/LFU/Belady curves,
    a recommended per-layer cache size).

    TRACE is a .npy int array (tokens, layers, top_k) of expert ids, or a simulator trace
    whose keys are layer << 32 | expert (as edge writes them). Metrics as in "Not All Models
    Suit Expert Offloading"; definitions in edge/moe/analysis.py.
    """
    import json

    from edge.fileio import write_atomic
    from edge.moe.analysis import analyze
    from edge.moe.traces import read_routing

    routing = read_routing(trace_path, fmt)
    try:
        result = analyze(routing, windows, capacities, n_experts=n_experts)
    except ValueError as exc:
        raise click.ClickException(f"{trace_path}: {exc}") from None
    click.echo(format_report(result, str(trace_path)))
    if json_path is not None:
        write_atomic(json_path, (json.dumps(result.as_dict(), indent=1) + "\n").encode())
        click.echo(f"\nwrote {json_path}")


moe.add_command(run)  # edge moe run lives with the executor (edge/moe/run_command.py)
