"""``edge serve``: the on-device daemon over one base model and its adapter directory.

The policy file says everything: the runtime's sections and the ``daemon`` section (address,
model, limits, where the counters are kept, the access log); every option overrides one setting
of it, so ``edge serve --config policies/daemon.yaml`` is a whole command line when the file
names the model and the adapters. The command merges the two, builds the runtime
(``LlamaBackend`` + ``Runtime.from_config``) and runs ``edge.daemon.server.Daemon``. Errors are
one line and a non-zero exit, never a traceback. FastAPI, uvicorn and llama.cpp are imported
inside the command so that ``edge --help`` stays light.
"""

from __future__ import annotations

import dataclasses
import inspect
import ipaddress
import logging
import os
from pathlib import Path
from typing import Any, Optional

import click

from edge.cli_errors import os_error_message
from edge.daemon.config import LOG_LEVELS, DaemonConfig, DaemonSection
from edge.errors import EdgeError

log = logging.getLogger("edge.daemon")

_DEFAULTS = DaemonSection()


def _overrides(key: str, default: Any = None) -> str:
    """Help text's tail: the setting an option overrides and its default."""
    if default is None:
        default = _DEFAULTS
        for part in key.split("."):
            default = getattr(default, part)
    shown = "none" if default is None else default
    return f"[overrides daemon.{key}; default {shown}]"


def runtime_config(config_path: Path, adapters: Optional[Path], budget: Optional[str]):
    """The policy file with the command line's overrides (catalogue.directory, cache.budget)."""
    from edge.config import load_config

    config = load_config(config_path)
    if adapters is not None:
        config = dataclasses.replace(config, catalogue=dataclasses.replace(
            config.catalogue, directory=str(adapters), files={}))
    if budget is not None:
        try:
            config = dataclasses.replace(config, cache=dataclasses.replace(config.cache,
                                                                           budget=budget))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--budget") from None
    if config.catalogue.directory is None and not config.catalogue.files:
        raise click.UsageError("no adapter directory: give --adapters DIR or set "
                               "catalogue.directory in the policy file")
    return config


def daemon_settings(section: DaemonSection, options: dict[str, Any]) -> DaemonSection:
    """``section`` with every option that was given (not None) in place of its setting.
    ``options`` keys are the section's own (``limits`` and ``access_log`` are mappings)."""

    def replaced(settings: Any, values: dict[str, Any]) -> Any:
        given = {k: v for k, v in values.items() if v is not None}
        try:
            return dataclasses.replace(settings, **given) if given else settings
        except ValueError as exc:  # the message names the setting
            raise click.UsageError(f"the daemon settings with the command line's: {exc}") \
                from None

    nested = {"limits": replaced(section.limits, options.get("limits", {})),
              "access_log": replaced(section.access_log, options.get("access_log", {}))}
    top = {k: v for k, v in options.items() if k not in nested}
    return replaced(section, {**top, **nested})


def api_key_from(env_name: Optional[str], hint: str = "--api-key-env") -> Optional[str]:
    if env_name is None:
        return None
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise click.BadParameter(f"the environment variable {env_name} is not set or empty",
                                 param_hint=hint)
    return key


def _model_file(settings: DaemonSection, from_option: bool) -> Path:
    if settings.model is None:
        raise click.UsageError("no base model: give --model FILE or set daemon.model in the "
                               "policy file")
    path = Path(settings.model)
    if not path.is_file():
        where = "--model" if from_option else "daemon.model"
        raise click.BadParameter(f"{path} is not a file", param_hint=where)
    return path


def _backend_options(contexts: int) -> dict[str, Any]:
    """LlamaBackend's keyword for ``contexts`` (none for the default single context)."""
    if contexts == 1:
        return {}
    from edge.backends.llama import LlamaBackend

    if "n_contexts" not in inspect.signature(LlamaBackend).parameters:
        raise click.BadParameter(f"{contexts} contexts asked, but this edge's llama backend "
                                 "serves one", param_hint="--contexts / daemon.contexts")
    return {"n_contexts": contexts}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("serve")
@click.option("--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The policy file: cache, router, catalogue, serving and daemon sections "
                   "(e.g. policies/daemon.yaml). Every other option overrides one of its "
                   "settings.")
@click.option("--model", "model", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The base model GGUF. " + _overrides("model"))
@click.option("--model-id", default=None, metavar="NAME",
              help="The base model's id in the API. [overrides daemon.model_id; default the "
                   "model file's stem]")
@click.option("--adapters", "adapter_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The LoRA adapter directory. [overrides catalogue.directory]")
@click.option("--budget", default=None, metavar="SIZE",
              help="Cache budget, e.g. 2GiB or a byte count. [overrides cache.budget]")
@click.option("--host", default=None,
              help="Address to bind; anything but loopback exposes the daemon. "
                   + _overrides("host"))
@click.option("--port", default=None, type=click.IntRange(0, 65535),
              help="Port to bind (0: any free one). " + _overrides("port"))
@click.option("--api-key-env", default=None, metavar="NAME",
              help="Require 'Authorization: Bearer <key>', the key read from this environment "
                   "variable (never from the command line or a file, where others could read "
                   "it). " + _overrides("api_key_env"))
@click.option("--n-ctx", default=None, type=click.IntRange(16),
              help="Tokens per llama context (prompt + max_tokens). " + _overrides("n_ctx"))
@click.option("--contexts", default=None, type=click.IntRange(1),
              help="llama contexts over the one model: requests generated at once. "
                   + _overrides("contexts"))
@click.option("--threads", default=None, type=click.IntRange(1),
              help="llama.cpp threads generating tokens. "
                   + _overrides("threads", "half the cores"))
@click.option("--threads-batch", default=None, type=click.IntRange(1),
              help="llama.cpp threads evaluating prompts. "
                   + _overrides("threads_batch", "all the cores"))
@click.option("--max-tokens", default=None, type=click.IntRange(1),
              help="The largest max_tokens a request may ask for. "
                   + _overrides("limits.max_tokens"))
@click.option("--max-prompt-chars", default=None, type=click.IntRange(1),
              help="The longest prompt a request may send. "
                   + _overrides("limits.max_prompt_chars"))
@click.option("--max-body-bytes", default=None, type=click.IntRange(1),
              help="The largest request body. " + _overrides("limits.max_body_bytes"))
@click.option("--graceful-timeout", default=None, type=click.FloatRange(0, min_open=True),
              help="Seconds the first SIGTERM/SIGINT waits for requests in flight. "
                   + _overrides("graceful_timeout"))
@click.option("--log-level", default=None, type=click.Choice(LOG_LEVELS),
              help="How much the daemon logs. " + _overrides("log_level"))
@click.option("--stats-path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Keep the request counters in this file: loaded at start, saved every "
                   "save interval and at shutdown. " + _overrides("stats_path"))
@click.option("--save-interval", default=None, type=click.FloatRange(0, min_open=True),
              metavar="SECONDS",
              help="Seconds between saves of the counters and the router's state (a crash "
                   "loses at most this much learning). " + _overrides("save_interval_seconds"))
@click.option("--access-log", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Append a .jsonl trace of the adapters each request served used (one "
                   "line each; edge sim replays it). "
                   + _overrides("access_log.path"))
@click.option("--access-log-max-bytes", default=None, metavar="SIZE",
              help="Rotate the access log past this size. "
                   + _overrides("access_log.max_bytes"))
@click.option("--access-log-backups", default=None, type=click.IntRange(0),
              help="Rotated access logs kept. " + _overrides("access_log.backups"))
def serve(config_path: Path, model: Optional[Path], model_id: Optional[str],
          adapter_dir: Optional[Path], budget: Optional[str], host: Optional[str],
          port: Optional[int], api_key_env: Optional[str], n_ctx: Optional[int],
          contexts: Optional[int], threads: Optional[int], threads_batch: Optional[int],
          max_tokens: Optional[int], max_prompt_chars: Optional[int],
          max_body_bytes: Optional[int], graceful_timeout: Optional[float],
          log_level: Optional[str], stats_path: Optional[Path], save_interval: Optional[float],
          access_log: Optional[Path], access_log_max_bytes: Optional[str],
          access_log_backups: Optional[int]) -> None:
    """Serve the adapters over an OpenAI-compatible HTTP API (POST /v1/completions,
    /v1/chat/completions, /v1/feedback; GET /v1/models, /healthz, /metrics).

    Settings come from the policy file's daemon section; an option given here wins over it.
    A request's model is an adapter name, the base model's id (the model file's stem unless
    set) or "auto" (the router chooses).

    The request counters (--stats-path) and the router's state (router.state.path) are loaded
    at start and saved atomically every save interval: a crash or kill -9 loses at most one
    interval of learning. A damaged or mismatched file stops the start with its name (move it
    away to start afresh). SIGTERM or Ctrl-C finishes the requests in flight, saves both and
    exits; a second one exits at once (status 128 + the signal)."""
    options = {
        "model": None if model is None else str(model), "model_id": model_id, "host": host,
        "port": port, "api_key_env": api_key_env, "n_ctx": n_ctx, "contexts": contexts,
        "threads": threads, "threads_batch": threads_batch,
        "graceful_timeout": graceful_timeout, "log_level": log_level,
        "stats_path": None if stats_path is None else str(stats_path),
        "save_interval_seconds": save_interval,
        "limits": {"max_tokens": max_tokens, "max_prompt_chars": max_prompt_chars,
                   "max_body_bytes": max_body_bytes},
        "access_log": {"path": None if access_log is None else str(access_log),
                       "max_bytes": access_log_max_bytes, "backups": access_log_backups}}
    try:
        config = runtime_config(config_path, adapter_dir, budget)
        settings = daemon_settings(config.daemon, options)
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        model_path = _model_file(settings, from_option=model is not None)
        api_key = api_key_from(settings.api_key_env, "--api-key-env" if api_key_env
                               else "daemon.api_key_env")
        daemon_config = DaemonConfig(
            host=settings.host, port=settings.port, api_key=api_key,
            model_id=settings.model_id or model_path.stem, limits=settings.limits,
            graceful_timeout=settings.graceful_timeout, log_level=settings.log_level,
            stats_path=settings.stats_path, save_interval_seconds=settings.save_interval_seconds,
            access_log=settings.access_log)
        backend_options = _backend_options(settings.contexts)
        from edge.backends.llama import LlamaBackend
        from edge.daemon.server import Daemon
        from edge.runtime import Runtime

        backend = LlamaBackend(model_path, n_ctx=settings.n_ctx, n_threads=settings.threads,
                               n_threads_batch=settings.threads_batch, **backend_options)
        try:
            runtime = Runtime.from_config(config, backend=backend)
        except BaseException:
            backend.close()
            raise
        with runtime:
            daemon = Daemon(runtime, daemon_config)
            if not _is_loopback(settings.host) and api_key is None:
                log.warning("listening on %s without an API key: anyone who can reach it can "
                            "use it (give --api-key-env)", settings.host)
            log.info("serving %d adapters on base model %r, budget %s, at http://%s:%d",
                     len(runtime.catalogue), daemon_config.model_id, config.cache.budget,
                     settings.host, settings.port)
            daemon.run()
    except (EdgeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(os_error_message(exc)) from None

