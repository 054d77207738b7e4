"""One-line command-line errors: what every ``edge`` command does with an error it expects.

edge's own errors already name the input and what is wrong; a file-system error is reduced to
``path: reason``. Either becomes a ``click.ClickException`` (``Error: ...``, exit 1), never a
traceback. Light on purpose: the command modules import it at ``edge --help`` time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import click

from edge.errors import EdgeError


def os_error_message(exc: OSError) -> str:
    return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")


def friendly_errors(fn: Callable) -> Callable:
    """Run a command body, turning EdgeError and OSError into one-line click errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgeError as exc:
            # A KeyError subclass (UnknownObjectError) would print its message in quotes.
            message = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 \
                and isinstance(exc.args[0], str) else str(exc)
            raise click.ClickException(message) from None
        except OSError as exc:
            raise click.ClickException(os_error_message(exc)) from None

    return wrapper
