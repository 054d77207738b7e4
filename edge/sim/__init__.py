"""The trace simulator: trace formats and generators, offline oracle bounds, device calibration.

Submodules, one job each: ``trace`` (formats, streaming readers, writers), ``generate`` (seeded
workloads), ``oracle`` (Belady/MIN and size-aware bounds), ``reuse`` (next-access arrays),
``calibrate`` (the device's paging cost model), ``replay`` (policies x budgets through the
pager), ``specs`` (the CLI's policy and budget lists), ``sweep`` (one ``edge sim`` run against
LRU and the offline reference), ``table`` and ``plot`` (its table, JSON and PNG), ``tune``
(config search); offline routing through ``edge.Runtime``: ``backend`` (the simulated
backend and virtual clock), ``strategies``, ``synthetic`` (seeded problems), ``routing`` (the
replay and its metrics); the click commands live in ``commands``, ``trace_commands`` and
``routing_commands``.
"""

from edge.sim.oracle import belady_hits, belady_size_hits, gap_closed, pfoo_l_hits
from edge.sim.trace import (
    LcsCsvColumns,
    Request,
    Trace,
    TraceReader,
    iter_requests,
    read_trace,
    write_trace,
)

__all__ = [
    "LcsCsvColumns", "Request", "Trace", "TraceReader", "belady_hits", "belady_size_hits",
    "gap_closed", "iter_requests", "pfoo_l_hits", "read_trace", "write_trace",
]
