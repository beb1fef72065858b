"""The deployment files against the real server code: its settings, commands and metrics.

Each test skips while the piece of the server it reads does not exist yet.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest


def _server_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            pytest.skip(f"{name} does not exist yet (the gRPC server provides it)")
        raise


def _subcommands() -> dict:
    cli = importlib.import_module("qgnn.cli")
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return sub.choices


def test_the_validator_knows_exactly_the_servers_settings(validate):
    config = _server_module("qgnn.runtime.config")
    assert {o.env for o in config.OPTIONS} | {"QGNN_PATH", "QGNN_CONFIG"} == validate.SERVE_ENV
    assert {o.flag.removeprefix("--") for o in config.OPTIONS} == set(validate.SERVE_FLAGS)


def test_the_server_defaults_are_the_ports_and_grace_the_manifests_assume(validate):
    config = _server_module("qgnn.runtime.config")
    defaults = config.ServeConfig()
    assert (defaults.host, defaults.grpc_port, defaults.metrics_port) == (
        "0.0.0.0", validate.GRPC_PORT, validate.METRICS_PORT)
    assert defaults.grace_period_s == validate.DEFAULT_GRACE_PERIOD_S


def _env_sets(validate, root: Path) -> dict[str, dict[str, str]]:
    sets = {}
    for rel in validate.K8S_DIRS:
        (cm,) = [r for r in validate.render_kustomization(root / rel) if r["kind"] == "ConfigMap"]
        sets[rel] = cm["data"]
    compose = validate.load_documents(root / "deploy" / "compose.yaml")[0]
    sets["compose"] = compose["services"]["qgnn"]["environment"]
    return sets


def test_the_servers_own_config_code_accepts_every_deployed_setting(validate, root):
    config = _server_module("qgnn.runtime.config")
    for where, env in _env_sets(validate, root).items():
        cfg = config.resolve_config({"path": Path("/models")}, env)
        for key, value in env.items():
            name = key.removeprefix("QGNN_").lower()
            assert str(getattr(cfg, name)) in (value, str(float(value))), (where, key)


def test_an_out_of_range_deployed_setting_would_be_refused_by_the_server(root):
    config = _server_module("qgnn.runtime.config")
    with pytest.raises(ValueError, match="--threads"):
        config.resolve_config({"path": Path("/models")}, {"QGNN_THREADS": "0"})


def test_the_image_entry_point_parses_as_qgnn_serve_models(validate):
    commands = _subcommands()
    if "serve" not in commands:
        pytest.skip("qgnn serve is not registered yet")
    cli = importlib.import_module("qgnn.cli")
    args = cli.build_parser().parse_args(list(validate.SERVE_COMMAND[1:]))
    assert args.command == "serve" and args.path == Path(validate.MODELS_DIR)


def test_the_health_check_command_probes_the_grpc_port_on_loopback(validate):
    commands = _subcommands()
    if "health" not in commands:
        pytest.skip("qgnn health is not registered yet")
    cli = importlib.import_module("qgnn.cli")
    args = cli.build_parser().parse_args(list(validate.HEALTH_COMMAND[1:]))
    assert args.command == "health"
    assert (args.host, args.port, args.service) == ("127.0.0.1", validate.GRPC_PORT, "")
    assert args.timeout < 10


def test_the_server_declares_the_metrics_the_rules_and_dashboard_read(validate):
    metrics = _server_module("qgnn.runtime.metrics")
    from prometheus_client.metrics import MetricWrapperBase

    if not hasattr(metrics, "ServingMetrics"):
        pytest.skip("qgnn.runtime.metrics has no ServingMetrics factory to inspect")
    declared = {}
    for collector in vars(metrics.ServingMetrics.create()).values():
        if isinstance(collector, MetricWrapperBase):
            families = [(collector._name, collector._type, collector._labelnames)]
        elif hasattr(collector, "describe"):  # a custom collector (RequestMetrics)
            families = [(f.name, f.type, f._labelnames) for f in collector.describe()]
        else:
            continue
        for name, kind, labels in families:
            suffix = "_total" if kind == "counter" else ""
            declared[name + suffix] = (kind, frozenset(labels))
    assert declared == validate.METRICS
