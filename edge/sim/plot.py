"""``edge sim --plot``: hit ratio and modelled paging time against budget, one curve per policy.

matplotlib is an optional extra (``pip install 'edge[plot]'``), imported only when a plot is
asked for, so the simulator itself never needs it. The figure is drawn on a bare ``Figure`` with
the Agg canvas rather than through ``pyplot``: no global figure state, no GUI backend chosen
behind the caller's back, safe inside a process that already uses matplotlib.
"""

from __future__ import annotations

import io
import os

from edge.errors import EdgeError
from edge.fileio import write_atomic
from edge.schema import approx_bytes
from edge.sim.sweep import Sweep


class PlotUnavailable(EdgeError):
    """matplotlib is not installed."""


def require_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FixedLocator, NullLocator
    except ImportError:
        raise PlotUnavailable("plotting needs matplotlib: pip install 'edge[plot]'") from None
    return Figure, FigureCanvasAgg, FixedLocator, NullLocator


def plot_sweep(sweep: Sweep, path: str | os.PathLike[str], title: str) -> None:
    """Write a PNG with two panels: hit ratio (with the offline reference) and paging seconds."""
    Figure, FigureCanvasAgg, FixedLocator, NullLocator = require_matplotlib()
    fig = Figure(figsize=(11, 4.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    hit_ax, paging_ax = fig.subplots(1, 2)
    budgets = [b.nbytes for b in sweep.budgets]
    labels = [f"{b.label}\n({approx_bytes(b.nbytes)})" if b.label.endswith("%") else b.label
              for b in sweep.budgets]
    by_policy: dict[str, list] = {}
    for row in sweep.rows:
        by_policy.setdefault(row.result.policy, []).append(row)
    markers = "osD^vP*Xh"
    for i, (policy, rows) in enumerate(by_policy.items()):
        style = {"marker": markers[i % len(markers)], "linewidth": 1.8, "label": policy}
        x = [r.result.budget for r in rows]
        hit_ax.plot(x, [r.result.hit_ratio for r in rows], **style)
        paging_ax.plot(x, [r.result.paging_seconds for r in rows], **style)
    if sweep.optimal_kind:
        first = next(iter(by_policy.values()))
        name = ("Belady (optimal)" if sweep.optimal_kind == "belady"
                else "PFOO-L (upper bound)")
        hit_ax.plot([r.result.budget for r in first], [r.optimal_hit_ratio for r in first],
                    linestyle="--", color="black", linewidth=1.4, label=name)
    for ax in (hit_ax, paging_ax):
        if len(budgets) > 1 and max(budgets) / min(budgets) >= 4:
            ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(budgets))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(budgets, labels)
        ax.set_xlabel("cache budget")
        ax.grid(True, alpha=0.3)
    hit_ax.set_ylabel("object hit ratio")
    hit_ax.set_ylim(0, 1)
    hit_ax.set_title("hit ratio (higher is better)")
    paging_ax.set_ylabel("modelled paging time (s)")
    paging_ax.set_ylim(bottom=0)
    paging_ax.set_title("paging time (lower is better)")
    hit_ax.legend(loc="best", fontsize="small")
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_atomic(path, buf.getvalue())
