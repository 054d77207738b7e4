"""The policy file: frozen, validated settings of every subsystem, read from and written to YAML.

Each subsystem declares its settings as frozen dataclasses next to its code (the router's in
``edge.router.config``); ``EdgeConfig`` composes them. Loading goes through
``edge.schema.from_mapping``, so unknown keys and bad values fail with their key path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Union

import yaml

from edge.fileio import write_atomic
from edge.router.config import RouterConfig
from edge.schema import format_bytes, from_mapping, load_yaml, parse_bytes, to_mapping

__all__ = ["CacheConfig", "EdgeConfig", "RouterConfig", "dump_config", "format_bytes",
           "from_mapping", "load_config", "parse_bytes", "save_config", "to_mapping"]


@dataclass(frozen=True)
class CacheConfig:
    """How the ``PagedCache`` keeps its resident set."""

    budget: Union[int, str] = "1GiB"
    policy: str = "lru"
    # Policy-specific settings, checked by the policy's own params class (see edge.cache.policies).
    policy_params: dict[str, Any] = field(default_factory=dict)
    load_workers: int = 4
    # Seconds a miss waits for pinned objects to be released when they leave no room (first
    # come, first served); 0 fails at once with CacheFullError.
    wait_timeout: float = 0.0

    def __post_init__(self) -> None:
        parse_bytes(self.budget, "budget")
        if self.load_workers < 1:
            raise ValueError(f"load_workers must be at least 1, got {self.load_workers}")
        if not 0 <= self.wait_timeout < float("inf"):
            raise ValueError(f"wait_timeout must be a finite number of seconds >= 0, "
                             f"got {self.wait_timeout}")
        # Imported here: the policy registry imports the native core, config must not.
        from edge.cache.policies import validate_policy

        validate_policy(self.policy, self.policy_params)

    @property
    def budget_bytes(self) -> int:
        return parse_bytes(self.budget, "budget")


@dataclass(frozen=True)
class EdgeConfig:
    """A whole policy file (``policies/*.yaml``)."""

    version: int = 1
    description: str = ""
    cache: CacheConfig = field(default_factory=CacheConfig)
    router: RouterConfig = field(default_factory=RouterConfig)

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
