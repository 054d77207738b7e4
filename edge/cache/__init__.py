"""The pager: ``PagedCache`` and its eviction policies."""

from edge.cache.paged import CacheStats, PagedCache
from edge.cache.policies import EvictionPolicy, make_policy, policy_names, register_policy

__all__ = ["CacheStats", "EvictionPolicy", "PagedCache", "make_policy", "policy_names",
           "register_policy"]
