"""Eviction policies by name: a dict, filled by the ``register_policy`` class decorator."""

from __future__ import annotations

from typing import Any

from edge.errors import ConfigError

POLICIES: dict[str, type] = {}


def register_policy(cls: type) -> type:
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no policy name")
    if cls.name in POLICIES and POLICIES[cls.name] is not cls:
        raise TypeError(f"policy name {cls.name!r} is taken by {POLICIES[cls.name].__name__}")
    POLICIES[cls.name] = cls
    return cls


def policy_names() -> list[str]:
    return sorted(POLICIES)


def policy_class(name: str) -> type:
    try:
        return POLICIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown eviction policy {name!r} (known: {', '.join(policy_names())})") from None


def parse_params(name: str, params: dict[str, Any] | None, path: str = "policy_params") -> Any:
    """The policy's validated params object from a plain mapping (YAML)."""
    from edge.schema import from_mapping

    return from_mapping(policy_class(name).Params, params or {}, path)


def validate_policy(name: str, params: dict[str, Any] | None = None) -> None:
    parse_params(name, params)


def make_policy(name: str, params: dict[str, Any] | Any | None = None):
    """A fresh, unbound policy instance; ``params`` may be a mapping or the Params object."""
    cls = policy_class(name)
    if params is None or isinstance(params, dict):
        params = parse_params(name, params)
    return cls(params)
