"""The command line's small languages for policies and budgets, parsed into plain values.

Policies: a comma-separated list of names, each optionally followed by ``:`` and its settings
as ``key=value`` pairs, themselves separated by commas::

    lru,s3fifo:small_fraction=0.2,move_to_main_threshold=2,arc

A token with ``=`` and no ``:`` continues the settings of the policy before it (policy names
never contain ``=``), so no second separator is needed. Values are read as YAML scalars
(``0.2`` is a float, ``true`` a bool, ``size`` a string), as they would be in a policy file, and
checked by the policy's own ``Params`` class.

Budgets: a comma-separated list of byte sizes (``64MiB``, ``1GB``, ``1048576``) or percentages
of the trace's working set (``5%``: 5% of the bytes of all distinct objects), which lets one
command line fit traces of any scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, InvalidOperation, localcontext

import numpy as np
import yaml

from edge.cache.policies import validate_policy
from edge.config import CacheConfig, format_bytes, parse_bytes
from edge.errors import ConfigError
from edge.schema import MAX_BYTES
from edge.sim.trace import total_bytes


def parse_policy_list(text: str) -> list[CacheConfig]:
    """``"lru,s3fifo:small_fraction=0.2"`` -> validated cache sections (policy and settings;
    the budget is the sweep's); ValueError names the bad part."""
    specs: list[tuple[str, dict]] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            raise ValueError(f"empty entry in {text!r}")
        if "=" in token and ":" not in token:
            if not specs:
                raise ValueError(f"setting {token!r} comes before any policy name")
            _add_setting(specs[-1], token)
            continue
        name, _, settings = token.partition(":")
        name = name.strip()
        if not name:
            raise ValueError(f"{token!r} has no policy name before ':'")
        specs.append((name, {}))
        if settings:
            _add_setting(specs[-1], settings)
    out = []
    for name, params in specs:
        try:
            validate_policy(name, params)
        except ConfigError as exc:
            raise ValueError(f"{_spec_text(name, params)}: {exc}") from None
        out.append(CacheConfig(policy=name, policy_params=params))
    return out


def _add_setting(spec: tuple[str, dict], token: str) -> None:
    key, eq, raw = token.partition("=")
    key, raw = key.strip(), raw.strip()
    if not eq or not key or not raw:
        raise ValueError(f"setting {token!r} of policy {spec[0]!r} is not key=value")
    if key in spec[1]:
        raise ValueError(f"setting {key!r} of policy {spec[0]!r} is given twice")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    spec[1][key] = value


def _spec_text(name: str, params: dict) -> str:
    if not params:
        return name
    return name + ":" + ",".join(f"{k}={v}" for k, v in params.items())


def working_set_bytes(keys: np.ndarray, sizes: np.ndarray) -> int:
    """Bytes of all distinct objects, each counted at the size of its first request."""
    if len(keys) == 0:
        return 0
    _, first = np.unique(keys, return_index=True)
    return total_bytes(np.asarray(sizes)[first])


@dataclass(frozen=True)
class Budget:
    nbytes: int
    label: str  # as the user wrote it: "5%" stays "5%", "64MiB" stays "64MiB"


def parse_budget(text: str, working_set: int) -> Budget:
    """One budget: a byte size or a percentage of ``working_set`` (rounded down, at least 1).

    A percentage is applied exactly (no float rounding, whatever the working set's size); the
    result, like any budget, must be below 2**64 bytes.
    """
    text = text.strip()
    if text.endswith("%"):
        try:
            percent = Decimal(text[:-1])
        except InvalidOperation:
            percent = Decimal("nan")
        if not percent.is_finite():
            raise ValueError(f"budget {text!r} is not a percentage like '5%'")
        if not 0 < percent <= 100:
            raise ValueError(f"budget {text!r} must be a percentage in (0, 100]")
        if working_set <= 0:
            raise ValueError(f"budget {text!r} is relative, but the trace is empty")
        # Exact: enough digits for the whole product, however large the working set.
        digits = len(str(working_set)) + len(percent.as_tuple().digits) + 2
        with localcontext(prec=digits):
            nbytes = max(1, int((working_set * percent / 100).to_integral_value(ROUND_FLOOR)))
        if nbytes > MAX_BYTES:
            raise ValueError(f"budget {text!r} of the {working_set}-byte working set is "
                             f"{nbytes} bytes, above the largest budget, 2**64-1 bytes")
        return Budget(nbytes, text)
    nbytes = parse_bytes(text, "budget")
    return Budget(nbytes, text if not text.isdigit() else format_bytes(nbytes))


def parse_budget_list(text: str, working_set: int) -> list[Budget]:
    """Budgets in the order given, duplicates (same byte count) dropped."""
    seen: set[int] = set()
    budgets = []
    for token in text.split(","):
        if not token.strip():
            raise ValueError(f"empty entry in {text!r}")
        budget = parse_budget(token, working_set)
        if budget.nbytes not in seen:
            seen.add(budget.nbytes)
            budgets.append(budget)
    return budgets
