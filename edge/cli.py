"""The ``edge`` command line: one click group; each subsystem contributes its commands."""

from __future__ import annotations

import importlib

import click

from edge import __version__

# Each subsystem keeps its commands next to its code; this table puts them on the group.
_COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "edge.demo": ("demo",),
    "edge.sim.commands": ("sim", "tune", "calibrate"),
    "edge.sim.trace_commands": ("trace",),
    "edge.router.commands": ("route_bench",),
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge")
def main() -> None:
    """edge: page LoRA adapters and MoE experts under a byte budget on one device."""


for _module, _names in _COMMAND_MODULES.items():
    _mod = importlib.import_module(_module)
    for _name in _names:
        main.add_command(getattr(_mod, _name))


if __name__ == "__main__":
    main()
