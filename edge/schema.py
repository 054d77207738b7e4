"""Plain data <-> frozen, validated dataclasses, and byte sizes: the machinery under every
settings class in edge (``edge.config`` composes them into a policy file).

A settings class is a frozen dataclass whose ``__post_init__`` checks values (raising
``ValueError`` with the reason). ``from_mapping`` builds one from YAML-shaped data and turns every
problem into a ``ConfigError`` naming the key path (``cache.budget``), so a typo fails loudly
instead of silently falling back to a default.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types
import typing
from fractions import Fraction
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from edge.errors import ConfigError

T = TypeVar("T")

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
# The C core keeps sizes and budgets as uint64.
MAX_BYTES = 2**64 - 1


def parse_bytes(value: int | float | str, what: str = "size") -> int:
    """``"512MiB"``, ``"2GB"``, ``"1.5 GiB"`` or a whole number -> bytes, 1 to 2**64-1.

    Decimal units (kB, MB, GB) are powers of 1000, binary units (KiB, MiB, GiB) powers of 1024;
    bare K/M/G are read as binary, the way memory is usually meant. The number is read exactly
    (never through a float). A fraction of a unit larger than a byte is rounded down to whole
    bytes (``"1.0001KiB"`` is 1024 bytes); a byte count itself must be whole, so ``1.5``,
    ``"1.5"`` and ``"0.5B"`` are errors, not 1 byte or 0. ``ValueError`` names ``what``.
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a byte count or a string like '512MiB', not {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} {value!r} is not a finite number of bytes")
        if not value.is_integer():
            raise ValueError(f"{what} {value!r} is not a whole number of bytes")
        n = int(value)
    elif isinstance(value, str):
        m = _SIZE_RE.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(
                f"{what} {value!r} is not a size; use a byte count or a number with a unit "
                "(B, kB, MB, GB, KiB, MiB, GiB)")
        try:
            number = Fraction(m.group(1))
        except ValueError:  # more digits than Python converts to an int
            raise ValueError(f"{what} {value[:24]!r}... has too many digits") from None
        if _UNITS[unit] == 1 and number.denominator != 1:
            raise ValueError(f"{what} {value!r} is not a whole number of bytes")
        n = math.floor(number * _UNITS[unit])
        if n == 0 and number > 0:
            raise ValueError(f"{what} {value!r} is less than one byte")
    else:
        raise ValueError(f"{what} must be a byte count or a string like '512MiB', not {value!r}")
    if n <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    if n > MAX_BYTES:
        raise ValueError(f"{what} {value!r} is too large: at most 2**64-1 "
                         f"({MAX_BYTES}) bytes")
    return n


def format_bytes(n: int) -> str:
    """Bytes -> the shortest exact binary-unit string (``268435456 -> '256MiB'``)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def approx_bytes(n: int) -> str:
    """Bytes -> a readable size with one decimal (``approx_bytes(10**9) -> '953.7MiB'``); for
    display, where ``format_bytes`` is exact."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n}B"


# ---------------------------------------------------------------------------------------------
# Generic dataclass <-> mapping conversion


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    # Resolving a dataclass's annotations is most of the cost of validating a small mapping
    # (edge tune validates hundreds of thousands); a class's hints never change.
    return get_type_hints(cls)


def from_mapping(cls: type[T], data: Any, path: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``, rejecting unknown keys and bad values."""
    where = path or "<top>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{_join(path, unknown[0])}: unknown key (known keys: {known})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, _join(path, name))
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # from a nested check (e.g. a policy's params): add our path
        raise ConfigError(f"{path}.{exc}" if path else str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def to_mapping(obj: Any) -> Any:
    """A dataclass (recursively) -> plain dicts, lists and scalars fit for YAML."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_mapping(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        allowed = " or ".join(getattr(o, "__name__", repr(o)) for o in options
                              if o is not type(None))
        raise ConfigError(f"{path}: {value!r} matches no allowed type ({allowed})")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, path)
    if origin in (dict, typing.Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        args = get_args(tp) or (str, Any)
        return {_convert(args[0], k, _join(path, str(k))): _convert(args[1], v, _join(path, str(k)))
                for k, v in value.items()}
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        args = get_args(tp)
        item = args[0] if args else Any
        items = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported setting type {tp!r}")  # a bug in a config class


def load_yaml(cls: type[T], path: str | os.PathLike[str], what: str = "settings") -> T:
    """Read the YAML file at ``path`` into ``cls``; every error names the file and key path."""
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return from_mapping(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
