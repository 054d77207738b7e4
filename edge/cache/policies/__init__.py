"""Eviction policies, one module each, behind ``EvictionPolicy`` and a registry by name.

Every module of this package is imported here, and importing a policy module registers its
``@register_policy`` classes: adding a policy is adding one module, nothing else. Modules whose
name starts with ``_`` (shared machinery) and the interface modules are skipped. A policy that
lives outside this package registers itself by calling ``register_policy`` (its module must be
imported before the name is used).
"""

import importlib
import pkgutil

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

NOT_POLICY_MODULES = frozenset({"base", "registry"})


def policy_modules() -> list[str]:
    """Names of this package's modules that hold policies, sorted (the import order)."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__)
                  if not info.name.startswith("_") and info.name not in NOT_POLICY_MODULES)


def _import_policy_modules() -> None:
    for module in policy_modules():
        importlib.import_module(f"{__name__}.{module}")


_import_policy_modules()

__all__ = ["POLICIES", "CacheView", "EvictionPolicy", "NoParams", "make_policy", "parse_params",
           "policy_class", "policy_modules", "policy_names", "register_policy", "validate_policy"]
