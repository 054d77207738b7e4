"""The trace simulator: trace formats and generators, offline oracle bounds, device calibration.

Submodules, one job each: ``trace`` (formats, streaming readers, writers), ``generate`` (seeded
workloads), ``oracle`` (Belady/MIN and size-aware bounds), ``reuse`` (next-access arrays),
``calibrate`` (the device's paging cost model).
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
