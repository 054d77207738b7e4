"""``edge adapters``: bring Hugging Face PEFT LoRA adapters into an adapter directory, and list,
check and verify a directory against the base model.

``list`` and ``check`` read only the files' GGUF headers (the adapter catalog's validation:
what the daemon would serve and what it would skip, with the reason); ``verify`` also loads each
adapter that passes into the real base model through llama.cpp and runs it on a few tokens.
Each command parses options, calls the library (``edge.backends.peft``, the adapter catalog,
``llama_api``) and prints; errors are one line and a non-zero exit, never a traceback. The
library modules are imported inside the commands so that ``edge --help`` stays light.
"""

from __future__ import annotations

import json
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
    """Import, list, check and verify LoRA adapters for the base model."""


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
    """Convert the Hugging Face PEFT LoRA directory PEFT_DIR (adapter_config.json +
    adapter_model.safetensors) into <--into>/<name>.gguf for the --base model.

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


# A short text to run each adapter on in ``verify``: any text tokenizes with a real tokenizer.
VERIFY_PROBE = "The adapter is loaded."
VERIFY_N_CTX = 128


def _base_option(fn):
    # ``--model`` as `edge serve` and `edge run` name the base; ``--base`` as `import` names it.
    return click.option("--model", "--base", "base_path", required=True,
                        type=click.Path(dir_okay=False, path_type=Path),
                        help="The base model GGUF the adapters are served on.")(fn)


def _pattern_option(fn):
    return click.option("--pattern", default="*.gguf", show_default=True,
                        help="Which files of ADAPTER_DIR are adapters.")(fn)


def scan_quietly(adapter_dir: Path, base_path: Path, pattern: str):
    """The adapter catalog of ``adapter_dir`` for the base, scanned. The scan logs each
    rejection as a warning for the server's log; here they are the output, so it is silenced."""
    from edge.backends.catalog import AdapterCatalog

    catalog = AdapterCatalog(adapter_dir, base_path, pattern=pattern)
    catalog_log = logging.getLogger("edge.adapters")
    level = catalog_log.level
    catalog_log.setLevel(logging.ERROR)
    try:
        report = catalog.scan()
    finally:
        catalog_log.setLevel(level)
    return catalog, report


def _alpha(alpha: float | None) -> str:
    return "none" if alpha is None else f"{alpha:g}"


def adapter_rows(catalog, report) -> list[dict]:
    """One row per file: the adapters the catalog accepts (by name), then those it refuses
    (by path), each with the reason."""
    rows = []
    for name, record in sorted(catalog.adapters.items()):
        info = record.info
        rows.append({"name": name, "file": record.path.name, "valid": True, "reason": None,
                     "size_bytes": info.nbytes, "file_bytes": info.file_size,
                     "rank": info.rank, "alpha": info.alpha, "scale": record.sidecar.scale,
                     "architecture": info.architecture})
    for path, reason in report.rejected.items():
        rows.append({"name": None, "file": path.name, "valid": False, "reason": reason,
                     "size_bytes": None, "file_bytes": None, "rank": None, "alpha": None,
                     "scale": None, "architecture": None})
    return rows


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


@adapters.command("list")
@click.argument("adapter_dir", type=click.Path(file_okay=False, path_type=Path))
@_base_option
@_pattern_option
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (directory, base, architecture, adapters) instead.")
@friendly_errors
def list_adapters(adapter_dir: Path, base_path: Path, pattern: str, as_json: bool) -> None:
    """Show every adapter file in ADAPTER_DIR as the server would take it on the --model base:
    name, size in memory (what the cache reserves), rank, alpha, scale (the sidecar's, else 1),
    architecture, and whether it is valid, with the reason when it is not.

    Reads the files' headers only (no llama.cpp); `verify` also loads each one. Exits 0 even
    when some are refused (`check` and `verify` exit 1)."""
    catalog, report = scan_quietly(adapter_dir, base_path, pattern)
    rows = adapter_rows(catalog, report)
    if as_json:
        click.echo(json.dumps({"directory": str(adapter_dir), "base": str(base_path),
                               "architecture": catalog.base.architecture, "adapters": rows},
                              indent=2))
        return
    click.echo(f"{adapter_dir}: {len(catalog.adapters)} valid, {len(report.rejected)} refused "
               f"(base {base_path.name}, architecture {catalog.base.architecture})")
    if not rows:
        return
    table = [("name", "file", "size", "rank", "alpha", "scale", "arch", "valid")]
    for row in rows:
        if row["valid"]:
            table.append((row["name"], row["file"], _size(row["size_bytes"]), str(row["rank"]),
                          _alpha(row["alpha"]), f"{row['scale']:g}", row["architecture"],
                          "yes"))
        else:
            table.append(("-", row["file"], "-", "-", "-", "-", "-", f"no: {row['reason']}"))
    for line in _table(table):
        click.echo(line)


@adapters.command("check")
@click.argument("adapter_dir", type=click.Path(file_okay=False, path_type=Path))
@_base_option
@_pattern_option
@friendly_errors
def check_adapters(adapter_dir: Path, base_path: Path, pattern: str) -> None:
    """List the adapters in ADAPTER_DIR that the server would serve on the --model base, with
    their sizes, and every file it would skip, with the reason. Exits 1 if any is skipped.

    Header checks only, in milliseconds: `verify` does these and also loads each adapter into
    the base model through llama.cpp."""
    catalog, report = scan_quietly(adapter_dir, base_path, pattern)
    click.echo(f"{adapter_dir}: {len(catalog.adapters)} valid, {len(report.rejected)} rejected "
               f"(base {base_path.name}, architecture {catalog.base.architecture})")
    for name, record in sorted(catalog.adapters.items()):
        info = record.info
        click.echo(f"  ok        {name}  rank {info.rank}  alpha {_alpha(info.alpha)}  "
                   f"{_size(info.nbytes)} in memory  ({record.path.name}, "
                   f"{_size(info.file_size)})")
    for path, reason in report.rejected.items():
        click.echo(f"  rejected  {path.name}: {reason}")
    if report.rejected:
        click.get_current_context().exit(1)


def run_on_base(model, path: Path, scale: float, probe: list[int]) -> str | None:
    """Load the adapter at ``path`` into ``model`` through llama.cpp, attach it, decode
    ``probe`` and detach and free it again; None if all went well, else why not."""
    import numpy as np

    from edge.backends import llama_api

    try:
        adapter = llama_api.adapter_init(model, path)
    except llama_api.LlamaApiError as exc:
        return str(exc)
    try:
        llama_api.set_adapters(model, [(adapter, scale)])
        try:
            logits = llama_api.evaluate(model, probe)
        finally:
            llama_api.set_adapters(model, [])
    except llama_api.LlamaApiError as exc:
        return str(exc)
    finally:
        llama_api.adapter_free(adapter)
    bad = int((~np.isfinite(logits)).sum())
    if bad:
        return (f"loaded, but the base model's logits under it hold {bad} non-finite values "
                "(NaN or infinite weights?)")
    return None


@adapters.command("verify")
@click.argument("adapter_dir", type=click.Path(file_okay=False, path_type=Path))
@_base_option
@_pattern_option
@friendly_errors
def verify_adapters(adapter_dir: Path, base_path: Path, pattern: str) -> None:
    """Verify every adapter file in ADAPTER_DIR against the --model base, completely: the
    header checks of `check`, then each adapter that passes is loaded into the real base model
    through llama.cpp, attached at its scale, run on a few tokens (the logits must be finite),
    detached and freed.

    One line per file, OK or the reason; exits 1 if any fails. Files that fail the header
    checks never reach llama.cpp (some malformed ones abort it)."""
    from edge.backends import llama_api

    catalog, report = scan_quietly(adapter_dir, base_path, pattern)
    failures = dict(report.rejected)
    results: list[tuple[str, str | None]] = []
    if catalog.adapters:
        with llama_api.load_model(base_path, n_ctx=VERIFY_N_CTX) as model:
            probe = model.tokenize(VERIFY_PROBE)
            for name, record in sorted(catalog.adapters.items()):
                problem = run_on_base(model, catalog.resolve(name), record.sidecar.scale, probe)
                results.append((f"{name} ({record.path.name})", problem))
                if problem:
                    failures[record.path] = problem
    results += [(path.name, reason) for path, reason in report.rejected.items()]
    if not results:
        raise click.ClickException(f"{adapter_dir}: no files matching {pattern!r}: nothing to "
                                   "verify")
    for label, problem in results:
        click.echo(f"FAIL  {label}: {problem}" if problem else
                   f"OK    {label}: loaded into {base_path.name} by llama.cpp")
    passed = len(results) - len(failures)
    click.echo(f"{adapter_dir}: {passed} of {len(results)} adapter files verified")
    if failures:
        click.get_current_context().exit(1)
