"""``edge run``: one prompt through the runtime in this process, no daemon and no HTTP.

The runtime is built the way ``edge serve`` builds it (the policy file with the command line's
overrides, ``edge.daemon.commands.runtime_config``; the base model from ``--model`` or the
file's ``daemon.model``; a ``LlamaBackend`` on it; ``Runtime.from_config``), so a prompt run here
is routed, paged in and generated exactly as the daemon would serve it. The generated text alone
goes to stdout (piece by piece while streaming); ``--explain`` writes the routing decision, the
cache outcome and the timings to stderr. Errors are one line and a non-zero exit. llama.cpp and
the runtime are imported inside the command so that ``edge --help`` stays light.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import click

from edge.cli_errors import os_error_message
from edge.errors import EdgeError

AUTO = "auto"  # edge.runtime.AUTO, repeated so that importing this module stays light
SET_SEPARATOR = "+"
TOP_SCORES = 5  # --explain: the best this many adapters, as the daemon's "routing" shows
KNOWN_NAMES_SHOWN = 10
DEFAULT_N_CTX = 2048  # edge serve's default when the policy file has no daemon section


def model_settings(config: Any, model_path: Optional[Path], n_ctx: Optional[int]
                   ) -> tuple[Path, int, str]:
    """The base model file, its context size and its id: the options, else the policy file's
    daemon section (what ``edge serve`` would use), else the defaults."""
    # getattr: a policy file read by an edge without the daemon section has none.
    section = getattr(config, "daemon", None)
    if model_path is None:
        configured = getattr(section, "model", None)
        if configured is None:
            raise click.UsageError("no base model: give --model FILE or set daemon.model in the "
                                   "policy file")
        model_path = Path(configured)
        if not model_path.is_file():
            raise click.ClickException(f"daemon.model: {model_path} is not a file")
    if n_ctx is None:
        n_ctx = getattr(section, "n_ctx", None) or DEFAULT_N_CTX
    model_id = getattr(section, "model_id", None) or model_path.stem
    return model_path, n_ctx, model_id


def parse_adapter(value: str, base_model_id: str) -> str | tuple[str, ...]:
    """``--adapter`` as an ``InferenceRequest.adapter``: ``auto`` (the router chooses), the
    base model's id (no adapter: ``()``), one name, or names joined by ``+`` (applied
    together)."""
    value = value.strip()
    if value == AUTO:
        return AUTO
    if value == base_model_id:
        return ()
    names = tuple(part.strip() for part in value.split(SET_SEPARATOR))
    if not all(names):
        raise click.ClickException(f"--adapter {value!r}: an empty name; give NAME, NAME+NAME, "
                                   f"{AUTO!r} or the base model {base_model_id!r}")
    if len(set(names)) != len(names):
        raise click.ClickException(f"--adapter {value!r}: names an adapter twice")
    return names[0] if len(names) == 1 else names


def check_known(adapter: str | tuple[str, ...], catalogue: Any, base_model_id: str) -> None:
    """A one-line error naming the known adapters when ``adapter`` names one the catalogue
    lacks (before anything is routed or paged in)."""
    if adapter == AUTO:
        names: tuple[str, ...] = ()
    elif isinstance(adapter, str):
        names = (adapter,)
    else:
        names = adapter
    unknown = [name for name in names if name not in catalogue]
    if not unknown:
        return
    known = list(catalogue)
    shown = ", ".join(known[:KNOWN_NAMES_SHOWN])
    more = f", ... ({len(known)} in all)" if len(known) > KNOWN_NAMES_SHOWN else ""
    raise click.ClickException(
        f"--adapter: no adapter named {unknown[0]!r} (known: {shown or 'none'}{more}; or "
        f"{AUTO!r}, or the base model {base_model_id!r} for no adapter)")


def read_prompt(prompt: str) -> str:
    """PROMPT, or stdin for ``-`` (one trailing newline dropped: what ``echo`` adds)."""
    if prompt == "-":
        prompt = sys.stdin.read()
        prompt = prompt[:-1] if prompt.endswith("\n") else prompt
    if not prompt.strip():
        raise click.ClickException("PROMPT is empty (give the text, or - to read it from stdin)")
    return prompt


def explain_lines(outcome: Any, top: int = TOP_SCORES) -> list[str]:
    """What ``--explain`` prints: which adapters served the request and why, the router's best
    scores, whether they were resident, the timings and the token counts."""
    served = SET_SEPARATOR.join(outcome.adapters) if outcome.adapters else "none (base model)"
    if outcome.decision is not None:
        how = f"routed ({outcome.decision.reason})"
    else:
        how = "named on the command line"
    lines = [f"adapter: {served}, {how}"]
    if outcome.adapters:
        cache = "hit (resident)" if outcome.hit else "page-in (loaded for this request)"
    else:
        cache = "none (no adapter)"
    lines.append(f"cache: {cache}")
    scores = outcome.explain(top)
    if scores:
        lines.append(f"scores (best {len(scores)}: mean + bonus - penalty = score):")
        width = max(len(row["arm"]) for row in scores)
        for row in scores:
            mark = "*" if row["chosen"] else " "
            lines.append(f"  {mark} {row['arm']:<{width}}  {_num(row['mean'])} + "
                         f"{_num(row['bonus'])} - {_num(row['penalty'])} = {_num(row['score'])}")
    lines.append("timings: " + ", ".join(f"{step} {seconds * 1000:.2f} ms"
                                         for step, seconds in outcome.timings.items()))
    output = outcome.output
    if hasattr(output, "completion_tokens"):
        lines.append(f"tokens: prompt {output.prompt_tokens}, completion "
                     f"{output.completion_tokens} ({output.finish_reason}), reused "
                     f"{output.reused_tokens}")
    return lines


def error_message(exc: Exception) -> str:
    # A KeyError (the catalogue's UnknownObjectError is one) quotes its message in str().
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def _num(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def _echo_all(pieces: Iterable[str]) -> None:
    for piece in pieces:
        click.echo(piece, nl=False)  # click.echo flushes: each piece shows as it comes


@click.command("run")
@click.argument("prompt")
@click.option("--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The policy file (cache, router, catalogue; daemon.model and daemon.n_ctx "
                   "when the options below are not given), e.g. policies/polar.yaml.")
@click.option("--model", "model_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The base model GGUF. [default: the policy file's daemon.model]")
@click.option("--adapters", "adapter_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The LoRA adapter directory (overrides catalogue.directory).")
@click.option("--budget", default=None, metavar="SIZE",
              help="Cache budget, e.g. 2GiB or a byte count (overrides cache.budget).")
@click.option("--adapter", "adapter_choice", default=AUTO, show_default=True,
              metavar="NAME|auto|A+B",
              help="The adapter to serve with: a name, several joined by '+' (applied together), "
                   "'auto' (the router chooses), or the base model's id (daemon.model_id, else "
                   "the model file's stem) for no adapter.")
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(1),
              help="The most tokens to generate.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Sampling temperature; 0 is greedy (the same text every time).")
@click.option("--seed", default=None, type=int,
              help="Seed of the sampler (matters only above temperature 0).")
@click.option("--stream/--no-stream", default=True, show_default=True,
              help="Print the text as it is generated, or all at once at the end.")
@click.option("--explain", is_flag=True,
              help="Write the routing decision (adapter, reason, top scores), the cache "
                   "outcome (hit or page-in) and the timings to stderr; stdout stays the text.")
@click.option("--chat", is_flag=True,
              help="Send PROMPT as one user message of a chat (the model's chat template, else "
                   "'user: ...' then 'assistant:'), as Runtime.chat does.")
@click.option("--n-ctx", default=None, type=click.IntRange(16),
              help="The model context in tokens (prompt + max_tokens). [default: the policy "
                   f"file's daemon.n_ctx, else {DEFAULT_N_CTX}]")
def run(prompt: str, config_path: Path, model_path: Optional[Path], adapter_dir: Optional[Path],
        budget: Optional[str], adapter_choice: str, max_tokens: int, temperature: float,
        seed: Optional[int], stream: bool, explain: bool, chat: bool,
        n_ctx: Optional[int]) -> None:
    """Generate a completion of PROMPT (- reads it from stdin) in this process, with the
    runtime `edge serve` would build from the same options, and print its text.

    The text alone goes to stdout, followed by one newline; --explain writes how the request
    was served to stderr. The router's state is saved on exit when the policy file sets
    router.state.path, as the daemon does."""
    from edge.daemon.commands import runtime_config

    text = read_prompt(prompt)
    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    if seed is not None:
        params["seed"] = seed
    try:
        config = runtime_config(config_path, adapter_dir, budget)
        model_path, n_ctx, base_model_id = model_settings(config, model_path, n_ctx)
        adapter = parse_adapter(adapter_choice, base_model_id)
        from edge.backends.llama import LlamaBackend
        from edge.runtime import InferenceRequest, Runtime

        backend = LlamaBackend(model_path, n_ctx=n_ctx)
        try:
            runtime = Runtime.from_config(config, backend=backend)
        except BaseException:
            backend.close()
            raise
        with runtime:
            check_known(adapter, runtime.catalogue, base_model_id)
            if chat:  # what Runtime.chat sends: the conversation rendered to one prompt
                text = runtime.render_chat([{"role": "user", "content": text}])
            request = InferenceRequest(prompt=text, adapter=adapter, params=params)
            if stream:
                with runtime.stream(request) as pieces:
                    _echo_all(pieces)
                outcome = pieces.outcome
            else:
                outcome = runtime.handle(request)
                click.echo(str(getattr(outcome.output, "text", outcome.output)), nl=False)
            click.echo()
    except (EdgeError, ValueError) as exc:
        raise click.ClickException(error_message(exc)) from None
    except OSError as exc:
        raise click.ClickException(os_error_message(exc)) from None
    if explain and outcome is not None:
        for line in explain_lines(outcome):
            click.echo(line, err=True)
