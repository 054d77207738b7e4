"""Every ``edge`` command and subcommand has complete ``--help``: it exits 0, the command says what
it does, every option has help text, every argument is named in the command's description, and
the help lists every option.

The walk starts at ``edge.cli.main``, so a command added later is checked without editing this
file. ``help_problems`` is shown to catch each gap on a small click command built here.
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from edge.cli import main


def walk(command: click.Command, path: tuple[str, ...] = ()):
    """(path, command) for ``command`` and every command below it, depth first."""
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from walk(command.commands[name], (*path, name))


def help_problems(command: click.Command) -> list[str]:
    """What the command's help lacks: a description, an option's help, an argument's mention."""
    problems = []
    description = (command.help or "").strip()
    if not description:
        problems.append("no description")
    for param in command.params:
        if isinstance(param, click.Option):
            if not param.hidden and not (param.help or "").strip():
                problems.append(f"option {'/'.join(param.opts)} has no help")
        elif isinstance(param, click.Argument):
            # click arguments carry no help of their own: the description must name them.
            name = param.human_readable_name
            if name not in description:
                problems.append(f"argument {name} is not named in the description")
    return problems


COMMANDS = list(walk(main))

# Options without help text, by command path: none left. A new gap fails the test.
KNOWN_GAPS: dict[tuple[str, ...], list[str]] = {}


@pytest.mark.parametrize(("path", "command"), [
    pytest.param(path, command, id=" ".join(path) or "edge") for path, command in COMMANDS])
def test_help_is_complete(path, command):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    known = [f"option {option} has no help" for option in KNOWN_GAPS.get(path, ())]
    assert help_problems(command) == known
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.opts[0] in result.output, f"{param.opts[0]} is missing from --help"


def test_the_walk_reaches_the_new_commands():
    paths = {path for path, _ in COMMANDS}
    assert {("run",), ("stats",), ("adapters", "list"), ("adapters", "verify"),
            ("adapters", "check"), ("adapters", "import"), ("serve",)} <= paths
    assert len(paths) >= 20


# ---- the check itself can fail ------------------------------------------------------------------

def test_help_problems_catches_each_gap():
    @click.command()
    @click.argument("source")
    @click.option("--good", help="Has help.")
    @click.option("--bare")
    @click.option("--blank", help="   ")
    @click.option("--secret", hidden=True)
    def tool(source, good, bare, blank, secret):
        """Copy a file somewhere."""

    assert help_problems(tool) == ["argument SOURCE is not named in the description",
                                   "option --bare has no help", "option --blank has no help"]

    @click.command()
    @click.argument("source", nargs=-1)
    def undocumented(source):
        pass

    assert help_problems(undocumented) == ["no description",
                                           "argument SOURCE is not named in the description"]
    assert "SOURCE" in CliRunner().invoke(undocumented, ["--help"]).output

    @click.command()
    @click.argument("source")
    @click.option("--good", help="Has help.")
    def complete(source, good):
        """Copy SOURCE somewhere."""

    assert help_problems(complete) == []
