"""The paging cost model: how long this device takes to bring N bytes from storage into memory.

One frozen ``PagingCostModel`` is shared by the simulator (modelled paging time) and the router
(the penalty POLAR charges for a non-resident adapter). ``edge calibrate`` measures one and
writes it as YAML; the defaults describe a modest NVMe laptop so nothing needs calibrating to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from edge.fileio import write_atomic
from edge.schema import load_yaml, to_mapping


@dataclass(frozen=True)
class PagingCostModel:
    name: str = "default"
    # Reads that miss the OS page cache (first load of a file).
    cold_latency_s: float = 100e-6
    cold_bandwidth_bytes_per_s: float = 1.5e9
    # Reads served from the OS page cache (an object evicted recently and loaded again).
    warm_latency_s: float = 10e-6
    warm_bandwidth_bytes_per_s: float = 8e9
    # Work after the bytes are read (e.g. llama.cpp adapter init), per MiB; 0 until measured.
    load_seconds_per_mib: float = 0.0

    def __post_init__(self) -> None:
        for name in ("cold_latency_s", "warm_latency_s", "load_seconds_per_mib"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("cold_bandwidth_bytes_per_s", "warm_bandwidth_bytes_per_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def paging_seconds(self, nbytes: int | float, warm: bool = False) -> float:
        """Modelled time to page ``nbytes`` in: latency + size / bandwidth + per-MiB load work."""
        if warm:
            latency, bandwidth = self.warm_latency_s, self.warm_bandwidth_bytes_per_s
        else:
            latency, bandwidth = self.cold_latency_s, self.cold_bandwidth_bytes_per_s
        return latency + nbytes / bandwidth + self.load_seconds_per_mib * nbytes / 2**20


def load_paging_cost(path: str | Path) -> PagingCostModel:
    return load_yaml(PagingCostModel, path, "paging-cost profile")


def save_paging_cost(profile: PagingCostModel, path: str | Path) -> None:
    write_atomic(path, yaml.safe_dump(to_mapping(profile), sort_keys=False).encode())
