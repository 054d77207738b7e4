"""``edge serve``: the on-device daemon over one base model and its adapter directory.

The command parses options, builds the runtime (``LlamaBackend`` + ``Runtime.from_config`` with
the options' overrides of the policy file) and hands it to ``edge.daemon.server.serve``. Errors
are one line and a non-zero exit, never a traceback. FastAPI, uvicorn and llama.cpp are imported
inside the command so that ``edge --help`` stays light.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
from pathlib import Path
from typing import Optional

import click

from edge.cli_errors import os_error_message
from edge.daemon.config import DEFAULT_HOST, DEFAULT_PORT, DaemonConfig, Limits
from edge.errors import EdgeError

log = logging.getLogger("edge.daemon")


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
    if config.catalogue.directory is None:
        raise click.UsageError("no adapter directory: give --adapters DIR or set "
                               "catalogue.directory in the policy file")
    return config


def api_key_from(env_name: Optional[str]) -> Optional[str]:
    if env_name is None:
        return None
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise click.BadParameter(f"the environment variable {env_name} is not set or empty",
                                 param_hint="--api-key-env")
    return key


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
              help="The policy file (cache, router, catalogue), e.g. policies/polar.yaml.")
@click.option("--model", "model_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The base model GGUF.")
@click.option("--adapters", "adapter_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The LoRA adapter directory (overrides catalogue.directory).")
@click.option("--budget", default=None,
              help="Cache budget, e.g. 2GiB or a byte count (overrides cache.budget).")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to bind; anything but loopback exposes the daemon.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-key-env", default=None, metavar="NAME",
              help="Require 'Authorization: Bearer <key>', the key read from this environment "
                   "variable (never from the command line, where ps would show it).")
@click.option("--n-ctx", default=2048, show_default=True, type=click.IntRange(16),
              help="The model context in tokens (prompt + max_tokens).")
@click.option("--max-tokens", default=Limits.max_tokens, show_default=True,
              type=click.IntRange(1), help="The largest max_tokens a request may ask for.")
@click.option("--max-prompt-chars", default=Limits.max_prompt_chars, show_default=True,
              type=click.IntRange(1), help="The longest prompt a request may send.")
@click.option("--max-body-bytes", default=Limits.max_body_bytes, show_default=True,
              type=click.IntRange(1), help="The largest request body.")
@click.option("--graceful-timeout", default=60.0, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="Seconds the first SIGTERM/SIGINT waits for requests in flight.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(config_path: Path, model_path: Path, adapter_dir: Optional[Path],
          budget: Optional[str], host: str, port: int, api_key_env: Optional[str], n_ctx: int,
          max_tokens: int, max_prompt_chars: int, max_body_bytes: int, graceful_timeout: float,
          log_level: str) -> None:
    """Serve the adapters over an OpenAI-compatible HTTP API (POST /v1/completions,
    /v1/chat/completions, /v1/feedback; GET /v1/models, /healthz, /metrics).

    A request's model is an adapter name, the base model (the --model file's stem) or "auto"
    (the router chooses). SIGTERM or Ctrl-C finishes the requests in flight, then saves the
    router's state and exits; a second one exits at once."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    api_key = api_key_from(api_key_env)
    try:
        daemon_config = DaemonConfig(
            host=host, port=port, api_key=api_key, model_id=model_path.stem,
            limits=Limits(max_body_bytes=max_body_bytes, max_prompt_chars=max_prompt_chars,
                          max_tokens=max_tokens),
            graceful_timeout=graceful_timeout, log_level=log_level)
        config = runtime_config(config_path, adapter_dir, budget)
        from edge.backends.llama import LlamaBackend
        from edge.daemon.server import Daemon
        from edge.runtime import Runtime

        backend = LlamaBackend(model_path, n_ctx=n_ctx)
        try:
            runtime = Runtime.from_config(config, backend=backend)
        except BaseException:
            backend.close()
            raise
        with runtime:
            daemon = Daemon(runtime, daemon_config)
            if not _is_loopback(host) and api_key is None:
                log.warning("listening on %s without an API key: anyone who can reach it can "
                            "use it (give --api-key-env)", host)
            log.info("serving %d adapters on base model %r, budget %s, at http://%s:%d",
                     len(runtime.catalogue), daemon_config.model_id, config.cache.budget, host,
                     port)
            daemon.run()
    except (EdgeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(os_error_message(exc)) from None
