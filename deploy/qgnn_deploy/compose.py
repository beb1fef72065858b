"""The docker compose stack: build targets, mounts, published ports, shutdown timing, and the
wiring of Prometheus and Grafana to the qgnn service."""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qgnn_deploy.contract import DEFAULT_GRACE_PERIOD_S, GRPC_PORT, METRICS_PORT, MODELS_DIR
from qgnn_deploy.dockerfile import dockerfile_stages, parse_dockerfile
from qgnn_deploy.grafana import check_grafana
from qgnn_deploy.kubernetes import check_serve_env
from qgnn_deploy.loading import ROOT, host_path, load_documents, rel
from qgnn_deploy.promql import check_rule_groups

# Repository folders holding generated output (gitignored): a compose bind mount may name a path
# under them before it exists.
GENERATED_DIRS = ("runs",)


def bind_mounts(service: dict, compose_dir: Path) -> dict[str, Path]:
    """Container path -> host path of a compose service's bind mounts (short syntax)."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts[volume["target"]] = (compose_dir / volume["source"]).resolve()
            continue
        parts = str(volume).split(":")
        if len(parts) >= 2 and parts[0].startswith((".", "/")):
            mounts[parts[1]] = (compose_dir / parts[0]).resolve()
    return mounts



def _duration_s(text: Any) -> float:
    """Seconds in a compose duration such as "30s", "1m30s" or "500ms"."""
    total, matched = 0.0, ""
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(text)):
        total += float(m[1]) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}[m[2]]
        matched += m[0]
    if matched != str(text):
        raise ValueError(f"not a duration: {text!r}")
    return total


def check_prometheus_config(config: dict, config_dir: Path, services: Mapping[str, dict]
                            ) -> list[str]:
    """The compose Prometheus: rule files exist and check out, and job 'qgnn' scrapes the qgnn
    service's metrics port."""
    problems = []
    where = "prometheus.yml"
    files = []
    for pattern in config.get("rule_files") or []:
        found = sorted(glob.glob(str(config_dir / pattern)))
        if not found:
            problems.append(f"{where}: rule_files entry {pattern!r} matches no file")
        files += found
    groups = [g for f in files for g in load_documents(Path(f))[0].get("groups") or []]
    problems += check_rule_groups(groups, where)
    jobs = [j for j in config.get("scrape_configs") or [] if j.get("job_name") == "qgnn"]
    if len(jobs) != 1:
        return [*problems, f"{where}: expected one scrape job named 'qgnn', found {len(jobs)}"]
    job = jobs[0]
    if job.get("metrics_path", "/metrics") != "/metrics":
        problems.append(f"{where}: job qgnn metrics_path {job['metrics_path']!r}")
    targets = [t for sc in job.get("static_configs") or [] for t in sc.get("targets") or []]
    if not targets:
        problems.append(f"{where}: job qgnn has no static targets")
    for target in targets:
        host, _, port = str(target).rpartition(":")
        if host not in services or port != str(METRICS_PORT):
            problems.append(f"{where}: job qgnn target {target!r} is not a compose service at "
                            f"port {METRICS_PORT}")
    return problems


def _published(service: dict) -> set[int]:
    ports = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ports.add(int(port["target"]))
        else:
            ports.add(int(str(port).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(str(item).partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def check_compose(compose: dict, compose_dir: Path) -> list[str]:
    """The compose stack: images or build targets exist, mounts exist, qgnn publishes the
    contract ports with its bundle at /models, Prometheus and Grafana are wired to it."""
    problems: list[str] = []
    where = "compose.yaml"
    services = compose.get("services") or {}
    declared = set(compose.get("volumes") or {})
    for name in ("qgnn", "prometheus", "grafana"):
        if name not in services:
            problems.append(f"{where}: no service {name!r}")
    for name, service in services.items():
        swhere = f"{where}: service {name}"
        build = service.get("build")
        if not service.get("image") and not build:
            problems.append(f"{swhere}: neither image nor build")
        if isinstance(build, dict):
            context = (compose_dir / build.get("context", ".")).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{swhere}: build file {rel(dockerfile)} does not exist")
            elif build.get("target") and build["target"] not in dockerfile_stages(
                    parse_dockerfile(dockerfile.read_text())):
                problems.append(f"{swhere}: build target {build['target']!r} is not a stage of "
                                f"{rel(dockerfile)}")
        for volume in service.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":")[0]
            if isinstance(volume, dict) and volume.get("type") != "bind":
                if volume.get("type") == "volume" and source not in declared:
                    problems.append(f"{swhere}: volume {source!r} is not declared")
            elif source.startswith((".", "/")):
                host = (compose_dir / source).resolve()
                generated = any(host.is_relative_to(ROOT / d) for d in GENERATED_DIRS)
                if not host.exists() and not generated:
                    problems.append(f"{swhere}: bind mount source {source} does not exist")
            elif source not in declared:
                problems.append(f"{swhere}: volume {source!r} is not declared")
        for dep in service.get("depends_on") or []:
            if dep not in services:
                problems.append(f"{swhere}: depends_on {dep!r}, which is no service")
        problems += check_serve_env(_environment(service), swhere)
    qgnn = services.get("qgnn") or {}
    missing = {GRPC_PORT, METRICS_PORT} - _published(qgnn)
    if qgnn and missing:
        problems.append(f"{where}: service qgnn does not publish port(s) {sorted(missing)}")
    if qgnn and MODELS_DIR not in bind_mounts(qgnn, compose_dir) and not any(
            str(v).split(":")[1:2] == [MODELS_DIR] for v in qgnn.get("volumes") or []):
        problems.append(f"{where}: service qgnn mounts nothing at {MODELS_DIR}")
    if qgnn:
        try:
            grace = float(_environment(qgnn).get("QGNN_GRACE_PERIOD_S", DEFAULT_GRACE_PERIOD_S))
            stop = _duration_s(qgnn.get("stop_grace_period", "10s"))
            if stop <= grace:
                problems.append(f"{where}: qgnn stop_grace_period {stop:g} s must exceed "
                                f"QGNN_GRACE_PERIOD_S {grace:g} s")
        except ValueError as exc:
            problems.append(f"{where}: qgnn shutdown timing: {exc}")
    prometheus = services.get("prometheus") or {}
    if prometheus:
        mounts = bind_mounts(prometheus, compose_dir)
        flags = [str(a) for a in prometheus.get("command") or []]
        config_path = next((a.split("=", 1)[1] for a in flags
                            if a.startswith("--config.file=")), "/etc/prometheus/prometheus.yml")
        host = host_path(config_path, mounts)
        if host is None or not host.is_file():
            problems.append(f"{where}: prometheus config {config_path} is not a mounted file")
        else:
            problems += check_prometheus_config(load_documents(host)[0], host.parent, services)
    grafana = services.get("grafana") or {}
    if grafana:
        mounts = bind_mounts(grafana, compose_dir)
        provisioning = host_path("/etc/grafana/provisioning", mounts)
        if provisioning is None or not provisioning.is_dir():
            problems.append(f"{where}: grafana has no provisioning directory mounted")
        else:
            problems += check_grafana(provisioning.parent, mounts)
    return problems
