"""Eviction policies, one module each, behind ``EvictionPolicy`` and a registry by name."""

from edge.cache.policies.base import CacheView, EvictionPolicy, NoParams
from edge.cache.policies.registry import (
    POLICIES,
    make_policy,
    parse_params,
    policy_class,
    policy_names,
    register_policy,
    validate_policy,
)

# Importing a policy module registers it.
from edge.cache.policies import arc, fifo, gdsf, lfu, lru, s3fifo  # noqa: E402,F401  isort: skip

__all__ = ["POLICIES", "CacheView", "EvictionPolicy", "NoParams", "make_policy", "parse_params",
           "policy_class", "policy_names", "register_policy", "validate_policy"]
