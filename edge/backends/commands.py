"""``edge adapters``: bring Hugging Face PEFT LoRA adapters into an adapter directory, and check
a directory against the base model.

Each command parses options, calls the library (``edge.backends.peft``, the adapter catalog) and
prints; errors are one line and a non-zero exit, never a traceback. The library modules are
imported inside the commands so that ``edge --help`` stays light.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import click

from edge.cli_errors import friendly_errors


def adapter_name(peft_dir: Path, name: str | None) -> str:
    """The adapter's file stem: ``name`` as given, else the PEFT directory's name with every run
    of characters outside ``[A-Za-z0-9._-]`` replaced by ``-`` (and no leading ``.``/``_``/``-``,
    no ``..``, at most 128 characters: the adapter catalog's name rule, which it must pass)."""
    from edge.backends.catalog import name_problem

    if name is not None:
        stem = name.removesuffix(".gguf")
        problem = name_problem(stem)
        if problem:
            raise click.ClickException(f"--name: {problem}")
        return stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", peft_dir.resolve().name)
    stem = re.sub(r"\.{2,}", ".", stem).lstrip("._-")[:128]
    if name_problem(stem):
        raise click.ClickException(f"{peft_dir}: cannot derive an adapter name from the "
                                   f"directory name; give --name")
    return stem


def _size(n_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes} B" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


@click.group()
def adapters() -> None:
    """Import and check LoRA adapters for the base model."""


@adapters.command("import")
@click.argument("peft_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--base", "base_path", required=True, type=click.Path(dir_okay=False,
              path_type=Path), help="The base model GGUF the adapter will be served on.")
@click.option("--into", "adapter_dir", required=True, type=click.Path(file_okay=False,
              path_type=Path), help="Adapter directory to write <name>.gguf into (created).")
@click.option("--name", default=None,
              help="Adapter name (file stem); default: the PEFT directory's name.")
@click.option("--force", is_flag=True, help="Replace an existing adapter of that name.")
@friendly_errors
def import_adapter(peft_dir: Path, base_path: Path, adapter_dir: Path, name: str | None,
                   force: bool) -> None:
    """Convert a Hugging Face PEFT LoRA directory (adapter_config.json +
    adapter_model.safetensors) into ADAPTER_DIR/<name>.gguf for the --base model.

    The file appears whole or not at all (written beside it under a temporary name, checked
    against the base, then renamed)."""
    from edge.backends.peft import plan_peft, publish_conversion, summary_lines

    stem = adapter_name(peft_dir, name)
    out = adapter_dir / f"{stem}.gguf"
    if out.exists() and not force:
        raise click.ClickException(f"{out}: already exists (use --force to replace it)")
    conversion = plan_peft(peft_dir, base_path)
    publish_conversion(conversion, out, overwrite=force, name=stem)
    click.echo(f"wrote {out} ({_size(out.stat().st_size)})")
    for line in summary_lines(conversion):
        click.echo(f"  {line}")


@adapters.command("check")
@click.argument("adapter_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--base", "base_path", required=True, type=click.Path(dir_okay=False,
              path_type=Path), help="The base model GGUF the adapters are served on.")
@click.option("--pattern", default="*.gguf", show_default=True,
              help="Which files of ADAPTER_DIR are adapters.")
@friendly_errors
def check_adapters(adapter_dir: Path, base_path: Path, pattern: str) -> None:
    """List the adapters in ADAPTER_DIR that the server would serve on the --base model, with
    their sizes, and every file it would skip, with the reason. Exits 1 if any is skipped."""
    from edge.backends.catalog import AdapterCatalog

    catalog = AdapterCatalog(adapter_dir, base_path, pattern=pattern)
    # The scan logs each rejection as a warning for the server's log; here they are the output.
    catalog_log = logging.getLogger("edge.adapters")
    level = catalog_log.level
    catalog_log.setLevel(logging.ERROR)
    try:
        report = catalog.scan()
    finally:
        catalog_log.setLevel(level)
    click.echo(f"{adapter_dir}: {len(catalog.adapters)} valid, {len(report.rejected)} rejected "
               f"(base {base_path.name}, architecture {catalog.base.architecture})")
    for name, record in sorted(catalog.adapters.items()):
        info = record.info
        alpha = "none" if info.alpha is None else f"{info.alpha:g}"
        click.echo(f"  ok        {name}  rank {info.rank}  alpha {alpha}  "
                   f"{_size(info.nbytes)} in memory  ({record.path.name}, "
                   f"{_size(info.file_size)})")
    for path, reason in report.rejected.items():
        click.echo(f"  rejected  {path.name}: {reason}")
    if report.rejected:
        click.get_current_context().exit(1)
