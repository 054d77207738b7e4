"""What the simulator's commands share: trace options, error translation, the progress bar.

Library code raises ``EdgeError``s (``TraceError``, ``ConfigError``) naming the input; the
commands turn them into ``click.ClickException``s so a user sees one line and exit status 1,
never a traceback. The progress bar goes to stderr and only when it is a terminal (or
``--progress`` asks for it), so piped output, tests and CI logs stay clean.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from edge.sim.trace import FORMATS, LcsCsvColumns, Trace, read_trace


class FiniteFloat(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf``: click lets both through any
    range (nan compares false with every bound), and a generator fed them writes a degenerate
    trace without a word."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def trace_options(fn: Callable) -> Callable:
    """--trace, --format, --columns, --skip-bad, --limit."""
    options = [
        click.option("--trace", "trace_path", required=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Trace file (.csv, .jsonl, .oracleGeneral.bin)."),
        click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                     help="Trace format; sniffed from the file name when omitted."),
        click.option("--columns", default=None, metavar="TIME,KEY[,SIZE]",
                     help="A libCacheSim-style CSV's 1-based columns (0 = absent); implies "
                          "--format lcs_csv."),
        click.option("--no-header", is_flag=True, help="The lcs_csv file has no header line."),
        click.option("--skip-bad", is_flag=True,
                     help="Skip and count malformed lines instead of stopping at the first."),
        click.option("--limit", type=click.IntRange(1), default=None,
                     help="Read only the first N requests."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def parse_columns(text: str | None, no_header: bool) -> LcsCsvColumns | None:
    if text is None:
        if no_header:
            raise click.BadParameter("only applies with --columns", param_hint="--no-header")
        return None
    try:
        numbers = [int(t) for t in text.split(",")]
        if len(numbers) not in (2, 3):
            raise ValueError("give TIME,KEY or TIME,KEY,SIZE")
        return LcsCsvColumns(*numbers, has_header=not no_header)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: {exc}", param_hint="--columns") from None


def load_trace(trace_path: Path, fmt: str | None, columns: str | None, no_header: bool,
               skip_bad: bool, limit: int | None) -> Trace:
    cols = parse_columns(columns, no_header)
    if cols is None and fmt == "lcs_csv":
        raise click.BadParameter("lcs_csv needs --columns TIME,KEY[,SIZE]", param_hint="--format")
    if cols is not None and fmt not in (None, "lcs_csv"):
        raise click.BadParameter(f"--columns reads lcs_csv, not {fmt}", param_hint="--format")
    try:
        trace = read_trace(trace_path, "lcs_csv" if cols else fmt, skip_bad=skip_bad,
                           limit=limit, columns=cols)
    except ValueError as exc:  # TraceError, and format sniffing's own complaints
        raise click.ClickException(str(exc) if str(trace_path) in str(exc)
                                   else f"{trace_path}: {exc}") from None
    if len(trace) == 0:
        raise click.ClickException(f"{trace_path}: no requests to replay")
    return trace


def progress_option(fn: Callable) -> Callable:
    return click.option("--progress/--no-progress", "show_progress", default=None,
                        help="Progress bar on stderr; default: only when stderr is a terminal.")(fn)


@contextmanager
def progress_bar(show: bool | None, length: int, label: str) -> Iterator[Callable[[int, int],
                                                                                   None]]:
    """A ``(done, total)`` callback that drives a click progress bar, or does nothing."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        yield lambda done, total: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        shown = [0]

        def update(done: int, _total: int) -> None:
            if done > shown[0]:
                bar.update(done - shown[0])
                shown[0] = done

        yield update
