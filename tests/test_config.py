"""Configuration: sizes, YAML policy files, and errors that name the key path."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.config import (
    CacheConfig,
    EdgeConfig,
    dump_config,
    format_bytes,
    from_mapping,
    load_config,
    parse_bytes,
    save_config,
)
from edge.errors import ConfigError

POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"


@pytest.mark.parametrize("text, expected", [
    ("512MiB", 512 * 2**20), ("2GB", 2 * 10**9), ("1.5 GiB", 3 * 2**29), ("64k", 65536),
    ("100", 100), (4096, 4096), ("10 B", 10), ("3kb", 3000),
])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad, message", [
    (0, "must be positive"), (-1, "must be positive"), ("-5MiB", "is not a size"),
    ("12 furlongs", "is not a size"), ("", "is not a size"), (None, "byte count"),
    (True, "byte count"), ([1], "byte count"),
])
def test_parse_bytes_rejects(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_bytes(bad, "budget")


@pytest.mark.parametrize("bad, message", [
    # A byte count must be whole: 1.5 was refused as a float but read as 1 byte as text.
    (1.5, "budget 1.5 is not a whole number of bytes"),
    ("1.5", "budget '1.5' is not a whole number of bytes"),
    ("0.5B", "budget '0.5B' is not a whole number of bytes"),
    ("0.0001KiB", "budget '0.0001KiB' is less than one byte"),
    (float("nan"), "budget nan is not a finite number of bytes"),
    # The C core's sizes and budgets are uint64.
    (2**64, r"budget 18446744073709551616 is too large: at most 2\*\*64-1"),
    ("18446744073709551616", r"budget '18446744073709551616' is too large"),
    ("16777216TiB", r"budget '16777216TiB' is too large"),
    (1e30, r"budget 1e\+30 is too large"),
    ("1" * 5000, "has too many digits"),
])
def test_parse_bytes_refuses_fractions_of_a_byte_and_sizes_past_uint64(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_bytes(bad, "budget")


@pytest.mark.parametrize("text, expected", [
    # Read exactly, never through a float (4.1 * 10**6 is 4099999.9999999995 in floats).
    ("4.1MB", 4_100_000), ("18446744073709551615", 2**64 - 1), ("9007199254740993", 2**53 + 1),
])
def test_parse_bytes_is_exact(text, expected):
    assert parse_bytes(text) == expected


def test_format_bytes():
    assert [format_bytes(n) for n in (2**28, 3 * 2**10, 1000)] == ["256MiB", "3KiB", "1000"]


@pytest.mark.parametrize("path", sorted(POLICY_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_policy_files_load(path):
    config = load_config(path)
    assert config.cache.budget_bytes > 0
    # And survive a round trip unchanged.
    assert from_mapping(EdgeConfig, __import__("yaml").safe_load(dump_config(config))) == config


def test_unknown_key_names_the_key_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ncache:\n  budget: 1GiB\n  polcy: lru\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: cache.polcy: unknown key \(known keys: "
                                          r"budget, load_workers, policy, policy_params, "
                                          r"wait_timeout\)"):
        load_config(bad)


@pytest.mark.parametrize("yaml_text, message", [
    ("cache:\n  budget: lots\n", r"cache: budget 'lots' is not a size"),
    ("cache:\n  budget: 0\n", r"cache: budget must be positive"),
    ("cache:\n  budget: '1.5'\n", r"cache: budget '1.5' is not a whole number of bytes"),
    ("cache:\n  budget: 1.5\n", r"cache.budget: 1.5 matches no allowed type \(int or str\)"),
    ("cache:\n  budget: 18446744073709551616\n", r"cache: budget 18446744073709551616 is too "
                                                   r"large"),
    ("cache:\n  policy: mru\n", r"unknown eviction policy 'mru'"),
    ("cache:\n  load_workers: many\n", r"cache.load_workers: expected an integer, got 'many'"),
    ("cache:\n  load_workers: -1\n", r"load_workers must be >= 0"),
    ("cache:\n  policy: lru\n  policy_params: {depth: 3}\n",
     r"policy_params.depth: unknown key"),
    ("version: 2\n", r"version 2 is not supported"),
    ("cache: [1, 2]\n", r"cache: expected a mapping, got list"),
    ("- just\n- a list\n", r"<top>: expected a mapping, got list"),
    ("cache: {budget: [\n", r"not valid YAML"),
])
def test_bad_values_are_rejected_with_path_and_reason(tmp_path, yaml_text, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_save_is_atomic_and_round_trips(tmp_path):
    config = EdgeConfig(description="t", cache=CacheConfig(budget="256MiB", policy="fifo"))
    target = tmp_path / "sub" / "out.yaml"
    save_config(config, target)
    assert load_config(target) == config
    assert [p.name for p in target.parent.iterdir()] == ["out.yaml"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    target.chmod(0o640)
    save_config(config, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # an existing file keeps its mode


@dataclass(frozen=True)
class Inner:
    ratio: float = 0.5
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outer:
    inner: Inner = Inner()
    flag: bool = False


def test_from_mapping_types():
    got = from_mapping(Outer, {"inner": {"ratio": 1, "names": ["a", "b"]}, "flag": True})
    assert got == Outer(Inner(1.0, ("a", "b")), True)
    with pytest.raises(ConfigError, match=r"inner.names\[1\]: expected a string, got 3"):
        from_mapping(Outer, {"inner": {"names": ["a", 3]}})
    with pytest.raises(ConfigError, match=r"flag: expected true or false, got 'yes'"):
        from_mapping(Outer, {"flag": "yes"})


def test_router_section_is_validated_with_its_path(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("router:\n  linucb:\n    alfa: 0.3\n")
    with pytest.raises(ConfigError, match=r"router.linucb.alfa: unknown key"):
        load_config(path)
    path.write_text("router:\n  polar:\n    mode: always\n")
    with pytest.raises(ConfigError, match=r"router.polar.mode: 'always' is not one of"):
        load_config(path)


def test_polar_policy_file_sets_router_and_cache():
    config = load_config(POLICY_DIR / "polar.yaml")
    assert config.cache.policy == "s3fifo" and config.router.polar.mode == "polar+"
    assert config.router.features.dim == 64 and config.router.state.path is None


@pytest.mark.parametrize("yaml_text, message", [
    ("daemon:\n  prot: 80\n", r"daemon.prot: unknown key \(known keys: access_log, api_key_env, "),
    ("daemon:\n  port: 70000\n", r"daemon: port must be 0..65535, got 70000"),
    ("daemon:\n  port: '80'\n", r"daemon.port: expected an integer, got '80'"),
    ("daemon:\n  host: ''\n", r"daemon: host must be an address to bind"),
    ("daemon:\n  n_ctx: 8\n", r"daemon: n_ctx must be an integer >= 16 \(tokens\), got 8"),
    ("daemon:\n  contexts: 0\n", r"daemon: contexts must be a positive integer, got 0"),
    ("daemon:\n  graceful_timeout: 0\n", r"daemon: graceful_timeout must be a positive number"),
    ("daemon:\n  log_level: loud\n", r"daemon.log_level: 'loud' is not one of 'critical', "),
    ("daemon:\n  save_interval_seconds: 0\n",
     r"daemon: save_interval_seconds must be a positive number of seconds, got 0"),
    ("daemon:\n  stats_path: ''\n", r"daemon: stats_path must be non-empty or null"),
    ("daemon:\n  limits: {max_tokens: 0}\n",
     r"daemon.limits: max_tokens must be a positive integer, got 0"),
    ("daemon:\n  limits: {max_body_bytes: 1.5}\n",
     r"daemon.limits.max_body_bytes: expected an integer, got 1.5"),
    ("daemon:\n  access_log: {path: access.log}\n",
     r"daemon.access_log: path must name a .jsonl file or be null, got 'access.log'"),
    ("daemon:\n  access_log: {max_bytes: lots}\n",
     r"daemon.access_log: max_bytes 'lots' is not a size"),
    ("daemon:\n  access_log: {backups: -1}\n",
     r"daemon.access_log: backups must be an integer >= 0, got -1"),
])
def test_bad_daemon_settings_are_rejected_with_path_and_reason(tmp_path, yaml_text, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_key_pasted_as_api_key_env_is_refused_without_repeating_it(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("daemon:\n  api_key_env: sk-live-0123456789abcdef\n")
    with pytest.raises(ConfigError, match=r"daemon: api_key_env must be the name of an "
                                          r"environment variable") as caught:
        load_config(path)
    assert "sk-live" not in str(caught.value)


def test_daemon_policy_file_names_everything_edge_serve_needs():
    config = load_config(POLICY_DIR / "daemon.yaml")
    daemon = config.daemon
    assert config.router.polar.mode == "polar+" and config.cache.policy == "s3fifo"
    assert config.catalogue.directory == "adapters"
    assert daemon.model == "models/base.gguf" and daemon.api_key_env == "EDGE_API_KEY"
    assert config.router.state.path == "state/router.state"
    assert daemon.stats_path == "state/stats.json" and daemon.save_interval_seconds == 60
    assert daemon.access_log.path == "state/access.jsonl"
    assert (daemon.host, daemon.port, daemon.n_ctx, daemon.contexts) == ("127.0.0.1", 8000,
                                                                        2048, 1)
    assert (daemon.limits.max_body_bytes, daemon.limits.max_prompt_chars,
            daemon.limits.max_tokens) == (1 << 20, 32768, 1024)


def test_a_policy_file_without_a_daemon_section_gets_the_defaults(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("cache: {budget: 1GiB}\n")
    daemon = load_config(path).daemon
    assert (daemon.host, daemon.port, daemon.model, daemon.api_key_env, daemon.stats_path,
            daemon.access_log.path) == ("127.0.0.1", 8000, None, None, None, None)


def test_daemon_policy_file_shows_every_daemon_setting():
    from dataclasses import fields

    import yaml

    from edge.daemon.config import AccessLogConfig, DaemonSection, Limits

    shown = yaml.safe_load((POLICY_DIR / "daemon.yaml").read_text())["daemon"]
    assert set(shown) == {f.name for f in fields(DaemonSection)}
    assert set(shown["limits"]) == {f.name for f in fields(Limits)}
    assert set(shown["access_log"]) == {f.name for f in fields(AccessLogConfig)}
