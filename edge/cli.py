"""The ``edge`` command line: one click group; each subsystem keeps its commands by its code."""

from __future__ import annotations

import click

from edge import __version__
from edge.backends.commands import adapters
from edge.cache_demo import cache_demo
from edge.daemon.commands import serve
from edge.daemon.stats_command import stats
from edge.demo import demo
from edge.learned.train_command import train_eviction
from edge.moe.commands import moe
from edge.run_command import run
from edge.sim.commands import calibrate, sim, tune
from edge.sim.routing_commands import route_bench
from edge.sim.trace_commands import trace


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge")
def main() -> None:
    """edge: page LoRA adapters and MoE experts under a byte budget on one device."""


for _command in (demo, cache_demo, sim, tune, calibrate, trace, route_bench, adapters, serve,
                 run, stats, train_eviction, moe):
    main.add_command(_command)


if __name__ == "__main__":
    main()
