"""Serving configuration: flags > QGNN_* environment > config file > defaults, conversions and
refusals with the setting's name and value."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from qgnn.runtime.config import (
    OPTIONS,
    ServeConfig,
    add_serve_arguments,
    flags_from_args,
    parse_size,
    read_config_file,
    resolve_config,
)


def _flags(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return flags_from_args(parser.parse_args(list(argv)))


def test_defaults_are_the_contracts():
    cfg = resolve_config(_flags(), env={})
    assert (cfg.host, cfg.grpc_port, cfg.metrics_port) == ("0.0.0.0", 8500, 9464)
    assert (cfg.max_batch_size, cfg.max_queue_delay_ms, cfg.max_queue_size) == (256, 2.0, 1024)
    assert (cfg.max_ids_per_request, cfg.max_message_bytes) == (4096, 4 * 2**20)
    assert (cfg.grace_period_s, cfg.poll_interval_s, cfg.threads) == (20.0, 0.0, 2)
    assert cfg.path is None and not cfg.portable and not cfg.allow_insecure_token
    assert cfg.grpc_server == "sync"  # the measured default (docs/serving.md)
    assert resolve_config(_flags(), env={"QGNN_GRPC_SERVER": "aio"}).grpc_server == "aio"


def test_flags_win_over_env_which_wins_over_the_file(tmp_path: Path):
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"grpc-port": 1, "metrics_port": 2, "max_batch_size": 3,
                                  "path": "/models/from-file"}))
    env = {"QGNN_METRICS_PORT": "20", "QGNN_MAX_BATCH_SIZE": "30"}
    cfg = resolve_config(_flags("--max-batch-size", "300"), env=env, config_file=config)
    assert (cfg.grpc_port, cfg.metrics_port, cfg.max_batch_size) == (1, 20, 300)
    assert cfg.path == Path("/models/from-file")
    cfg = resolve_config(_flags("/models/flag"), env={"QGNN_CONFIG": str(config),
                                                       "QGNN_PATH": "/models/env"})
    assert cfg.path == Path("/models/flag") and cfg.grpc_port == 1


def test_every_option_has_a_flag_and_an_env_variable():
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    flags = {a.option_strings[0] for a in parser._actions if a.option_strings}
    for option in OPTIONS:
        assert option.flag in flags
        assert option.env == "QGNN_" + option.name.upper()
    assert "--tls-client-ca" in flags and "--poll-interval-s" in flags


@pytest.mark.parametrize(("suffix", "text"), [
    (".yaml", "grpc_port: 7000\nportable: true\nmax_message_bytes: 8MiB\n"),
    (".toml", "grpc_port = 7000\nportable = true\nmax_message_bytes = '8MiB'\n"),
    (".json", '{"grpc_port": 7000, "portable": true, "max_message_bytes": 8388608}'),
])
def test_config_files_in_yaml_toml_and_json(tmp_path: Path, suffix: str, text: str):
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    path = tmp_path / f"serve{suffix}"
    path.write_text(text)
    assert read_config_file(path) == {"grpc_port": 7000, "portable": True,
                                      "max_message_bytes": 8 * 2**20}


@pytest.mark.parametrize(("env", "needle"), [
    ({"QGNN_GRPC_PORT": "http"}, "QGNN_GRPC_PORT must be an integer, got 'http'"),
    ({"QGNN_GRPC_PORT": "70000"}, "--grpc-port must be <= 65535, got 70000"),
    ({"QGNN_MAX_BATCH_SIZE": "0"}, "--max-batch-size must be >= 1"),
    ({"QGNN_PORTABLE": "maybe"}, "QGNN_PORTABLE must be a boolean"),
    ({"QGNN_MAX_MESSAGE_BYTES": "4 parsecs"}, "QGNN_MAX_MESSAGE_BYTES"),
    ({"QGNN_TLS_CERT": "/c.pem"}, "--tls-cert and --tls-key go together"),
    ({"QGNN_TLS_CLIENT_CA": "/ca.pem"}, "needs --tls-cert"),
    ({"QGNN_AUTH_TOKEN_FILE": "/t"}, "clear text"),
    ({"QGNN_GRPC_SERVER": "asyncio"}, "--grpc-server must be one of aio, sync, got 'asyncio'"),
])
def test_bad_settings_are_refused_naming_the_setting(env: dict, needle: str):
    with pytest.raises(ValueError) as info:
        resolve_config(_flags(), env=env)
    assert needle in str(info.value)


def test_bad_config_files_are_refused_naming_the_key(tmp_path: Path):
    path = tmp_path / "c.json"
    path.write_text('{"grpc_prot": 1}')
    with pytest.raises(ValueError, match="unknown setting 'grpc_prot'"):
        read_config_file(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="one mapping"):
        read_config_file(path)
    bad = tmp_path / "c.ini"
    bad.write_text("x=1")
    with pytest.raises(ValueError, match=r"unknown format '\.ini'"):
        read_config_file(bad)


def test_boolean_env_values_and_sizes():
    assert resolve_config(_flags(), env={"QGNN_PORTABLE": "yes"}).portable
    assert not resolve_config(_flags(), env={"QGNN_PORTABLE": "0"}).portable
    assert resolve_config(_flags("--portable"), env={"QGNN_PORTABLE": "false"}).portable
    assert parse_size("4MiB", "x") == 4 * 2**20 and parse_size("512 kib", "x") == 512 * 1024
    assert parse_size("1000", "x") == 1000


def test_isa_flag_and_environment():
    assert resolve_config(_flags(), env={}).isa is None
    assert resolve_config(_flags(), env={"QGNN_ISA": "baseline"}).isa == "baseline"
    assert resolve_config(_flags("--isa", "baseline"), env={"QGNN_ISA": "x"}).isa == "baseline"
    with pytest.raises(ValueError, match=r"--isa: unknown ISA level 'avx3'; valid here: baseline"):
        resolve_config(_flags(), env={"QGNN_ISA": "avx3"})


def test_describe_is_plain_json():
    cfg = ServeConfig(path=Path("/m"), tls_cert=Path("/c"), tls_key=Path("/k"),
                      auth_token_file=Path("/run/secrets/token"))
    described = cfg.describe()
    assert json.loads(json.dumps(described))["auth_token_file"] == "/run/secrets/token"
    assert described["path"] == "/m" and described["grpc_port"] == 8500
