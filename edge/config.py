"""The policy file: frozen, validated settings of every subsystem, read from and written to YAML.

Each subsystem declares its settings as frozen dataclasses next to its code (the router's in
``edge.router.config``); ``EdgeConfig`` composes them. Loading goes through
``edge.schema.from_mapping``, so unknown keys and bad values fail with their key path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

import yaml

from edge.daemon.config import DaemonSection
from edge.fileio import write_atomic
from edge.router.config import RouterConfig
from edge.scheduling import ServingConfig
from edge.schema import format_bytes, from_mapping, load_yaml, parse_bytes, to_mapping

if TYPE_CHECKING:
    from edge.catalogue import Catalogue

__all__ = ["CacheConfig", "CatalogueConfig", "EdgeConfig", "RouterConfig", "build_catalogue",
           "dump_config", "format_bytes", "from_mapping", "load_config", "parse_bytes",
           "save_config", "to_mapping"]


@dataclass(frozen=True)
class CacheConfig:
    """How the ``PagedCache`` keeps its resident set."""

    budget: Union[int, str] = "1GiB"
    policy: str = "lru"
    # Policy-specific settings, checked by the policy's own params class (see edge.cache.policies).
    policy_params: dict[str, Any] = field(default_factory=dict)
    # Threads that run prefetches and the parallel loads of acquire_many; 0 loads everything
    # on the calling thread (deterministic: the simulator's choice).
    load_workers: int = 4
    # Seconds a miss waits for pinned objects to be released when they leave no room (first
    # come, first served); 0 fails at once with CacheFullError.
    wait_timeout: float = 0.0

    def __post_init__(self) -> None:
        parse_bytes(self.budget, "budget")
        if self.load_workers < 0:
            raise ValueError(f"load_workers must be >= 0, got {self.load_workers}")
        if not 0 <= self.wait_timeout < float("inf"):
            raise ValueError(f"wait_timeout must be a finite number of seconds >= 0, "
                             f"got {self.wait_timeout}")
        # Imported here, not at the top: only a CacheConfig needs the policy registry.
        from edge.cache.policies import validate_policy

        validate_policy(self.policy, self.policy_params)

    @property
    def budget_bytes(self) -> int:
        return parse_bytes(self.budget, "budget")

    @property
    def policy_label(self) -> str:
        """The policy and its settings as tables name it: ``s3fifo(small_fraction=0.2)``."""
        if not self.policy_params:
            return self.policy
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.policy_params.items()))
        return f"{self.policy}({inner})"


@dataclass(frozen=True)
class CatalogueConfig:
    """The pageable objects a runtime serves: every file in ``directory`` matching ``pattern``
    (named by its stem), plus ``files`` (name -> path). Relative paths are taken from the
    working directory. Sizes are the files' sizes on disk."""

    directory: Optional[str] = None
    pattern: str = "*.gguf"
    files: dict[str, str] = field(default_factory=dict)
    # Read the catalogue again this often (seconds), so adapters added to or removed from the
    # directory are picked up while serving; None: only on Runtime.rescan().
    rescan_seconds: Optional[float] = None

    def __post_init__(self) -> None:
        if self.rescan_seconds is not None and not 0 < self.rescan_seconds < float("inf"):
            raise ValueError(f"rescan_seconds must be a positive number of seconds or null, "
                             f"got {self.rescan_seconds}")
        if self.directory is not None and not self.directory.strip():
            raise ValueError("directory must be a path or null, got an empty string")
        if not self.pattern.strip():
            raise ValueError("pattern must be a glob like '*.gguf', got an empty string")
        for name, path in self.files.items():
            if not str(name).strip() or not str(path).strip():
                raise ValueError(f"files: entry {name!r}: {path!r} needs a name and a path")


def build_catalogue(config: CatalogueConfig) -> Catalogue:
    """The catalogue a policy file describes; ``ConfigError`` naming a missing directory, an
    unreadable file or a name given twice."""
    from edge.catalogue import Catalogue

    entries = list(Catalogue.scan(config.directory, config.pattern).values()) \
        if config.directory else []
    entries += Catalogue.from_files(config.files).values()
    return Catalogue(entries)


@dataclass(frozen=True)
class EdgeConfig:
    """A whole policy file (``policies/*.yaml``)."""

    version: int = 1
    description: str = ""
    cache: CacheConfig = field(default_factory=CacheConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    catalogue: CatalogueConfig = field(default_factory=CatalogueConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    # How `edge serve` runs this policy: address, model, limits, what it keeps across restarts.
    daemon: DaemonSection = field(default_factory=DaemonSection)

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ValueError(f"version {self.version} is not supported (this edge reads version 1)")


def load_config(path: str | os.PathLike[str]) -> EdgeConfig:
    """Read and validate a YAML policy file; every error names the file and the key path."""
    return load_yaml(EdgeConfig, path, "policy file")


def dump_config(config: EdgeConfig) -> str:
    return yaml.safe_dump(to_mapping(config), sort_keys=False)


def save_config(config: EdgeConfig, path: str | os.PathLike[str]) -> None:
    write_atomic(path, dump_config(config).encode())
