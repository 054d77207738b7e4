"""The pager: ``PagedCache`` and its eviction policies.

A lazy facade (PEP 562): each name is imported from its module on first use, so
``import edge.cache.policies`` (what configuration validation needs) loads neither the C core
nor numpy; only ``PagedCache`` and ``CacheStats`` bring in ``edge.cache.paged`` and the C core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.cache.paged import CacheStats, PagedCache
    from edge.cache.policies import (
        CacheView,
        EvictionPolicy,
        make_policy,
        policy_names,
        register_policy,
    )

_HOME = {
    "CacheStats": "edge.cache.paged",
    "PagedCache": "edge.cache.paged",
    "CacheView": "edge.cache.policies",
    "EvictionPolicy": "edge.cache.policies",
    "make_policy": "edge.cache.policies",
    "policy_names": "edge.cache.policies",
    "register_policy": "edge.cache.policies",
}

__all__ = ["CacheStats", "CacheView", "EvictionPolicy", "PagedCache", "make_policy",
           "policy_names", "register_policy"]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
