"""The docker compose stack (deploy/compose.yaml), checked without a Docker daemon."""

from __future__ import annotations

import copy
import shutil
import subprocess

import pytest


@pytest.fixture
def compose_dir(root):
    return root / "deploy"


@pytest.fixture
def compose(validate, compose_dir) -> dict:
    return validate.load_documents(compose_dir / "compose.yaml")[0]


def test_the_compose_stack_is_wired_to_the_contract(validate, compose, compose_dir):
    assert validate.check_compose(compose, compose_dir) == []


def test_qgnn_serves_the_demo_bundle_on_the_contract_ports(compose):
    """What docs/deploy.md tells the reader, read straight from the file."""
    qgnn = compose["services"]["qgnn"]
    assert qgnn["build"] == {"context": "..", "dockerfile": "Dockerfile", "target": "serve"}
    assert "../runs/demo/bundle:/models:ro" in qgnn["volumes"]
    assert sorted(qgnn["ports"]) == ["127.0.0.1:8500:8500", "127.0.0.1:9464:9464"]
    assert qgnn["read_only"] is True and qgnn["cap_drop"] == ["ALL"]
    assert compose["services"]["demo"]["profiles"] == ["train"]
    assert compose["services"]["demo"]["build"]["target"] == "train"


def test_docker_compose_accepts_the_file(compose_dir):
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not on PATH")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                           timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker CLI has no compose plugin (docker compose config needs no "
                    "daemon, only the plugin)")
    out = subprocess.run([docker, "compose", "-f", str(compose_dir / "compose.yaml"),
                          "--profile", "train", "config", "-q"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def _mutated(compose: dict, mutate) -> dict:
    broken = copy.deepcopy(compose)
    mutate(broken["services"])
    return broken


BROKEN = {
    "metrics not published": (lambda s: s["qgnn"].update(ports=["127.0.0.1:8500:8500"]),
                              "service qgnn does not publish port(s) [9464]"),
    "no bundle": (lambda s: s["qgnn"].update(volumes=[]), "service qgnn mounts nothing at /models"),
    "missing bind source": (lambda s: s["prometheus"]["volumes"].__setitem__(
        0, "./prometheus-conf:/etc/prometheus:ro"),
        "bind mount source ./prometheus-conf does not exist"),
    "undeclared volume": (lambda s: s["grafana"]["volumes"].__setitem__(
        2, "grafana-state:/var/lib/grafana"), "volume 'grafana-state' is not declared"),
    "unknown build target": (lambda s: s["qgnn"]["build"].update(target="server"),
                             "build target 'server' is not a stage of Dockerfile"),
    "config not mounted": (lambda s: s["prometheus"].update(
        command=["--config.file=/etc/prom/prometheus.yml"]),
        "prometheus config /etc/prom/prometheus.yml is not a mounted file"),
    "kill before the drain": (lambda s: s["qgnn"].update(stop_grace_period="15s"),
                              "stop_grace_period 15 s must exceed QGNN_GRACE_PERIOD_S 20 s"),
    "unknown setting": (lambda s: s["qgnn"]["environment"].update(QGNN_BATCH="64"),
                        "QGNN_BATCH is not a qgnn serve setting"),
    "dangling depends_on": (lambda s: s["grafana"].update(depends_on=["prom"]),
                            "depends_on 'prom', which is no service"),
    "no provisioning": (lambda s: s["grafana"].update(volumes=["grafana-data:/var/lib/grafana"]),
                        "grafana has no provisioning directory mounted"),
    "dashboards elsewhere": (lambda s: s["grafana"]["volumes"].__setitem__(
        1, "./grafana/dashboards:/var/lib/grafana/dashboards:ro"),
        "path '/etc/grafana/dashboards/qgnn' holds no mounted dashboard"),
    "no prometheus": (lambda s: s.pop("prometheus"), "no service 'prometheus'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_broken_stack_is_reported(validate, compose, compose_dir, case):
    mutate, expected = BROKEN[case]
    problems = validate.check_compose(_mutated(compose, mutate), compose_dir)
    assert any(expected in p for p in problems), problems


def test_a_missing_bundle_under_runs_is_expected_not_an_error(validate, compose, compose_dir,
                                                              root):
    assert not (root / "runs" / "no-such-bundle").exists()
    broken = _mutated(compose, lambda s: s["qgnn"].update(
        volumes=["../runs/no-such-bundle:/models:ro"]))
    assert validate.check_compose(broken, compose_dir) == []


def test_the_prometheus_config_scrapes_the_qgnn_service(validate, compose, compose_dir):
    config = validate.load_documents(compose_dir / "prometheus" / "prometheus.yml")[0]
    services = compose["services"]
    assert validate.check_prometheus_config(config, compose_dir / "prometheus", services) == []
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "qgnn"]
    assert job["static_configs"] == [{"targets": ["qgnn:9464"]}]
    job["static_configs"] = [{"targets": ["qgnn:9000", "qgnn-server:9464"]}]
    config["rule_files"] = ["alerts/*.yml"]
    problems = validate.check_prometheus_config(config, compose_dir / "prometheus", services)
    for expected in ("target 'qgnn:9000' is not a compose service at port 9464",
                     "target 'qgnn-server:9464'", "'alerts/*.yml' matches no file"):
        assert any(expected in p for p in problems), (expected, problems)
