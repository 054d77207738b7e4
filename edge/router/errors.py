"""Errors the router raises on purpose; all are ``EdgeError`` so callers catch one family."""

from __future__ import annotations

from edge.errors import EdgeError


class RouterError(EdgeError):
    """Base class of the router's errors."""


class UnknownArmError(RouterError, KeyError):
    """An adapter id is not in the router's catalogue."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateArmError(RouterError, ValueError):
    """An adapter id is already in the catalogue."""


class UnknownRequestError(RouterError, KeyError):
    """Feedback names a request id the router has no pending decision for."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RewardError(RouterError, ValueError):
    """A reward is not a finite number inside the configured range."""


class StateError(RouterError):
    """A saved router state cannot be used."""


class StateCorruptError(StateError):
    """The state file is truncated, damaged or not a router state file."""


class StateMismatchError(StateError):
    """The state file was written under different settings (feature extractor, dimension)."""
