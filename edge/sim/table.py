"""How an ``edge sim`` sweep is shown: a fixed-width text table and a JSON document.

Both are built from the same ``Sweep`` so the numbers a person reads and the numbers a script
parses cannot drift apart. The JSON keeps full precision; the table rounds for reading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edge.paging_cost import PagingCostModel
from edge.schema import approx_bytes
from edge.sim.sweep import OPTIMAL_KINDS, Sweep

JSON_VERSION = 1


@dataclass(frozen=True)
class TraceSummary:
    path: str
    format: str
    requests: int
    objects: int
    working_set_bytes: int
    uniform_size: int | None
    skipped: int


def format_table(sweep: Sweep, trace: TraceSummary) -> str:
    """The policy x budget table, with a header naming the trace and the reference used."""
    lines = [f"trace {trace.path} ({trace.format}): {trace.requests:,} requests, "
             f"{trace.objects:,} objects, working set {approx_bytes(trace.working_set_bytes)}"
             + (f", {trace.skipped:,} bad lines skipped" if trace.skipped else "")]
    if sweep.optimal_kind:
        lines.append(f"optimal: {OPTIMAL_KINDS[sweep.optimal_kind]}")
    lines.append("")
    w = max([len(r.result.policy) for r in sweep.rows] + [len("pfoo-l bound")])
    head = (f"{'policy':<{w}} {'budget':>10} {'bytes':>9} {'hit ratio':>9} {'byte hits':>9} "
            f"{'paging s':>10} {'gap closed':>10}")
    lines += [head, "-" * len(head)]
    for row in sweep.rows:
        r = row.result
        gap = row.gap_closed
        gap_text = "-" if gap is None else f"{gap:+.3f}"
        lines.append(f"{r.policy:<{w}} {row.budget_label:>10} {approx_bytes(r.budget):>9} "
                     f"{r.hit_ratio:>9.4f} {r.byte_hit_ratio:>9.4f} {r.paging_seconds:>10.2f} "
                     f"{gap_text:>10}")
    if sweep.optimal_kind:
        name = "belady" if sweep.optimal_kind == "belady" else "pfoo-l bound"
        seen = set()
        for row in sweep.rows:
            if row.budget_label in seen:
                continue
            seen.add(row.budget_label)
            lines.append(f"{name:<{w}} {row.budget_label:>10} {approx_bytes(row.result.budget):>9}"
                         f" {row.optimal_hit_ratio:>9.4f} {'':>9} {'':>10} {'+1.000':>10}")
        lines.append("")
        lines.append("gap closed = (policy hits - lru hits) / (optimal hits - lru hits); "
                     "paging s: modelled load time")
    return "\n".join(lines)


def sweep_json(sweep: Sweep, trace: TraceSummary, profile: PagingCostModel) -> dict[str, Any]:
    """Everything in the table at full precision, plus the inputs needed to reproduce it."""
    rows = []
    for row in sweep.rows:
        item = row.result.as_dict()
        item.update(budget_label=row.budget_label, bytes_hit=row.result.bytes_hit,
                    bytes_requested=row.result.bytes_requested,
                    optimal_hits=row.optimal_hits, optimal_hit_ratio=row.optimal_hit_ratio,
                    gap_closed=row.gap_closed)
        rows.append(item)
    return {
        "version": JSON_VERSION,
        "trace": asdict(trace),
        "optimal": None if sweep.optimal_kind is None else {
            "kind": sweep.optimal_kind, "description": OPTIMAL_KINDS[sweep.optimal_kind]},
        "profile": asdict(profile),
        "policies": sweep.policies,
        "budgets": [{"label": b.label, "bytes": b.nbytes} for b in sweep.budgets],
        "results": rows,
    }
