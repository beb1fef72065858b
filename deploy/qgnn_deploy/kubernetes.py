"""Structural checks of rendered Kubernetes objects against the serving contract: ports, gRPC
probes, security settings, shutdown timing, and label selectors across objects."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from qgnn_deploy.contract import (
    DEFAULT_GRACE_PERIOD_S,
    GRPC_PORT,
    METRICS_PORT,
    MODELS_DIR,
    RUN_AS_UID,
    SERVE_COMMAND,
    SERVE_ENV,
)
from qgnn_deploy.kustomize import containers, split_image
from qgnn_deploy.loading import dig
from qgnn_deploy.promql import check_rule_groups

API_VERSIONS = {"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1", "Namespace": "v1",
                "HorizontalPodAutoscaler": "autoscaling/v2", "PodDisruptionBudget": "policy/v1",
                "ServiceMonitor": "monitoring.coreos.com/v1",
                "PodMonitor": "monitoring.coreos.com/v1",
                "PrometheusRule": "monitoring.coreos.com/v1"}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_CPU = re.compile(r"(\d+(?:\.\d+)?)(m?)")
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?")
_MEMORY_UNITS = {None: 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_cpu(value: Any) -> float:
    """Cores in a CPU quantity ("2", "500m", 1.5); ``ValueError`` naming the value otherwise."""
    m = _CPU.fullmatch(str(value))
    if not m:
        raise ValueError(f"not a CPU quantity: {value!r}")
    return float(m[1]) / (1000 if m[2] else 1)


def parse_memory(value: Any) -> float:
    """Bytes in a memory quantity ("1Gi", "512M", 1048576)."""
    m = _MEMORY.fullmatch(str(value))
    if not m:
        raise ValueError(f"not a memory quantity: {value!r}")
    return float(m[1]) * _MEMORY_UNITS[m[2]]


def _selects(selector: Mapping | None, labels: Mapping | None) -> bool:
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


@dataclass
class _Pods:
    deployment: dict
    labels: dict
    spec: dict

    def port(self, ref: Any) -> int | None:
        """The container port a Service's targetPort (number or name) resolves to."""
        for container in self.spec.get("containers") or []:
            for port in container.get("ports") or []:
                if ref in (port.get("name"), port.get("containerPort")):
                    return port.get("containerPort")
        return None


def _where(resource: dict) -> str:
    return f"{resource.get('kind')}/{dig(resource, 'metadata', 'name', default='?')}"


def _check_object(resource: dict) -> list[str]:
    where = _where(resource)
    problems = []
    kind = resource.get("kind")
    if kind not in API_VERSIONS:
        return [f"{where}: kind {kind!r} is not one this validator knows ({sorted(API_VERSIONS)})"]
    if resource.get("apiVersion") != API_VERSIONS[kind]:
        problems.append(f"{where}: apiVersion {resource.get('apiVersion')!r}, expected "
                        f"{API_VERSIONS[kind]!r}")
    name = dig(resource, "metadata", "name")
    if not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        problems.append(f"{where}: metadata.name {name!r} is not a DNS-1123 label")
    for field in ("labels", "annotations"):
        values = dig(resource, "metadata", field, default={})
        bad = {k: v for k, v in values.items() if not isinstance(v, str)}
        if bad:
            problems.append(f"{where}: metadata.{field} values must be strings, got {bad}")
    if kind == "ConfigMap":
        bad = {k: v for k, v in (resource.get("data") or {}).items() if not isinstance(v, str)}
        if bad:
            problems.append(f"{where}: data values must be strings, got {bad}")
    return problems


def _check_security(where: str, pod: dict, container: dict) -> list[str]:
    """The Pod Security Standards' restricted profile, plus a read-only root file system."""
    problems = []
    pod_sc = pod.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    def effective(key: str) -> Any:
        return sc.get(key, pod_sc.get(key))
    if effective("runAsNonRoot") is not True:
        problems.append(f"{where}: securityContext.runAsNonRoot must be true")
    uid = effective("runAsUser")
    if uid is not None and uid != RUN_AS_UID:
        problems.append(f"{where}: runAsUser {uid}, expected {RUN_AS_UID} (the image's user)")
    seccomp = dig(sc, "seccompProfile", "type") or dig(pod_sc, "seccompProfile", "type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{where}: seccompProfile.type {seccomp!r}, expected RuntimeDefault")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: securityContext.readOnlyRootFilesystem must be true")
    if sc.get("privileged"):
        problems.append(f"{where}: securityContext.privileged must not be set")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        problems.append(f"{where}: securityContext.capabilities.drop must contain ALL")
    if caps.get("add"):
        problems.append(f"{where}: securityContext.capabilities.add {caps['add']} must be empty")
    return problems


def _check_probe(where: str, name: str, probe: Any) -> list[str]:
    if not isinstance(probe, dict):
        return [f"{where}: no {name}"]
    other = sorted(set(probe) & {"httpGet", "tcpSocket", "exec"})
    grpc = probe.get("grpc")
    if other or not isinstance(grpc, dict):
        return [f"{where}: {name} must be a grpc probe (grpc.health.v1), not {other or probe}"]
    problems = []
    if grpc.get("port") != GRPC_PORT:
        problems.append(f"{where}: {name}.grpc.port {grpc.get('port')!r}, expected {GRPC_PORT}")
    if grpc.get("service", "") != "":
        problems.append(f"{where}: {name}.grpc.service {grpc['service']!r}; use \"\" (the "
                        "server's overall health)")
    return problems


def _prestop_sleep(container: dict) -> float | None:
    pre = dig(container, "lifecycle", "preStop") or {}
    if "sleep" in pre:
        return float(dig(pre, "sleep", "seconds", default=0))
    command = dig(pre, "exec", "command") or []
    if len(command) == 2 and command[0] in ("sleep", "/bin/sleep"):
        return float(command[1])
    return None


def _container_env(container: dict, configmaps: dict[str, dict], where: str,
                   problems: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = dig(source, "configMapRef", "name")
        if ref is None:
            continue
        if ref not in configmaps:
            problems.append(f"{where}: envFrom names ConfigMap {ref!r}, which is not defined")
            continue
        env.update(configmaps[ref].get("data") or {})
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
    return env


def check_serve_env(env: Mapping[str, str], where: str) -> list[str]:
    """``QGNN_*`` variables ``qgnn serve`` does not know, or that break the contract's ports."""
    problems = []
    for key in sorted(k for k in env if k.startswith("QGNN_") and k not in SERVE_ENV):
        problems.append(f"{where}: {key} is not a qgnn serve setting (known: "
                        f"{', '.join(sorted(SERVE_ENV))})")
    for key, port in (("QGNN_GRPC_PORT", GRPC_PORT), ("QGNN_METRICS_PORT", METRICS_PORT)):
        if key in env and str(env[key]) != str(port):
            problems.append(f"{where}: {key}={env[key]} but the contract port is {port}")
    if "QGNN_HOST" in env and env["QGNN_HOST"] not in ("0.0.0.0", "::", "[::]"):
        problems.append(f"{where}: QGNN_HOST={env['QGNN_HOST']} is unreachable for probes and "
                        "other pods; listen on 0.0.0.0")
    return problems


def _check_deployment(dep: dict, configmaps: dict[str, dict], hpa_targets: set[str]) -> list[str]:
    where = _where(dep)
    spec = dep.get("spec") or {}
    pod = dig(spec, "template", "spec") or {}
    labels = dig(spec, "template", "metadata", "labels") or {}
    problems = []
    selector = dig(spec, "selector", "matchLabels")
    if not _selects(selector, labels):
        problems.append(f"{where}: spec.selector.matchLabels {selector} does not select the pod "
                        f"template's labels {labels}")
    if dig(dep, "metadata", "name") in hpa_targets and "replicas" in spec:
        problems.append(f"{where}: spec.replicas is set although a HorizontalPodAutoscaler "
                        "scales it; every apply would reset the replica count")
    strategy = spec.get("strategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    if strategy.get("type") != "RollingUpdate" or rolling.get("maxUnavailable") not in (0, "0%"):
        problems.append(f"{where}: strategy must be RollingUpdate with maxUnavailable 0 (a pod "
                        f"leaves only once its replacement is ready), got {strategy}")
    if rolling.get("maxSurge") in (None, 0, "0%"):
        problems.append(f"{where}: strategy.rollingUpdate.maxSurge must be at least 1")
    volumes = {v.get("name") for v in pod.get("volumes") or []}
    for container in containers(pod):
        cwhere = f"{where} container {container.get('name')}"
        problems += _check_security(cwhere, pod, container)
        _, tag, digest = split_image(str(container.get("image", "")))
        if not digest and tag in (None, "latest"):
            problems.append(f"{cwhere}: image {container.get('image')!r} is not pinned to a tag")
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") not in volumes:
                problems.append(f"{cwhere}: volumeMount {mount.get('name')!r} names no volume")
        for kind in ("cpu", "memory"):
            for level in ("requests", "limits"):
                if dig(container, "resources", level, kind) is None:
                    problems.append(f"{cwhere}: resources.{level}.{kind} is not set")
    servers = [c for c in pod.get("containers") or [] if c.get("name") == "qgnn"]
    if len(servers) != 1:
        return [*problems, f"{where}: expected one container named 'qgnn', found {len(servers)}"]
    return problems + _check_server(where, pod, servers[0], configmaps)


def _check_server(where: str, pod: dict, server: dict, configmaps: dict[str, dict]
                  ) -> list[str]:
    """The qgnn container: contract ports, command, gRPC probes, mounts, settings, and the
    shutdown timing against the pod's termination grace period."""
    problems: list[str] = []
    swhere = f"{where} container qgnn"
    ports = {p.get("name"): p for p in server.get("ports") or []}
    for name, number in (("grpc", GRPC_PORT), ("metrics", METRICS_PORT)):
        port = ports.get(name) or {}
        if port.get("containerPort") != number or port.get("protocol", "TCP") != "TCP":
            problems.append(f"{swhere}: needs TCP port {name!r} = {number}, got {port or None}")
    command = [*(server.get("command") or ["qgnn", "serve"]), *(server.get("args") or [])]
    if len(command) == 2:
        command.append(MODELS_DIR)
    if tuple(command) != SERVE_COMMAND:
        problems.append(f"{swhere}: runs {command}, expected {list(SERVE_COMMAND)}")
    for probe in ("readinessProbe", "livenessProbe"):
        problems += _check_probe(swhere, probe, server.get(probe))
    if "startupProbe" in server:
        problems += _check_probe(swhere, "startupProbe", server["startupProbe"])
    mounts = {m.get("mountPath"): m for m in server.get("volumeMounts") or []}
    if MODELS_DIR not in mounts:
        problems.append(f"{swhere}: nothing is mounted at {MODELS_DIR} (the model bundle)")
    elif mounts[MODELS_DIR].get("readOnly") is not True:
        problems.append(f"{swhere}: {MODELS_DIR} should be mounted readOnly")
    if "/tmp" not in mounts:
        problems.append(f"{swhere}: no writable /tmp mount, needed with a read-only root")
    env = _container_env(server, configmaps, swhere, problems)
    problems += check_serve_env(env, swhere)
    sleep = _prestop_sleep(server)
    if sleep is None:
        problems.append(f"{swhere}: no preStop sleep; endpoints need time to drop the pod "
                        "before SIGTERM")
        sleep = 0.0
    try:
        grace = float(env.get("QGNN_GRACE_PERIOD_S", DEFAULT_GRACE_PERIOD_S))
    except ValueError:
        problems.append(f"{swhere}: QGNN_GRACE_PERIOD_S={env['QGNN_GRACE_PERIOD_S']!r} is not "
                        "a number of seconds")
        grace = DEFAULT_GRACE_PERIOD_S
    termination = float(pod.get("terminationGracePeriodSeconds", 30))
    if termination <= sleep + grace:
        problems.append(f"{where}: terminationGracePeriodSeconds {termination:g} must exceed the "
                        f"preStop sleep {sleep:g} s + the server's grace period {grace:g} s, or "
                        "in-flight calls are killed")
    threads = env.get("QGNN_THREADS")
    cpu_limit = dig(server, "resources", "limits", "cpu")
    if threads is not None and cpu_limit is not None:
        try:
            if int(threads) > math.ceil(parse_cpu(cpu_limit)):
                problems.append(f"{swhere}: QGNN_THREADS={threads} exceeds the CPU limit "
                                f"{cpu_limit}; the threads would be throttled")
        except ValueError as exc:
            problems.append(f"{swhere}: {exc}")
    for kind, parse in (("cpu", parse_cpu), ("memory", parse_memory)):
        low = dig(server, "resources", "requests", kind)
        high = dig(server, "resources", "limits", kind)
        try:
            if low is not None and high is not None and parse(low) > parse(high):
                problems.append(f"{swhere}: resources.requests.{kind} {low} exceeds the limit "
                                f"{high}")
        except ValueError as exc:
            problems.append(f"{swhere}: {exc}")
    return problems


def _matching_pods(selector: Mapping | None, pods: list[_Pods], namespace: str | None
                   ) -> list[_Pods]:
    return [p for p in pods if _selects(selector, p.labels)
            and dig(p.deployment, "metadata", "namespace") == namespace]


def check_manifests(resources: list[dict]) -> list[str]:
    """Problems in a rendered set of Kubernetes objects (``render_kustomization``'s output)."""
    problems: list[str] = []
    seen: set[tuple] = set()
    for resource in resources:
        problems += _check_object(resource)
        ident = (resource.get("kind"), dig(resource, "metadata", "namespace"),
                 dig(resource, "metadata", "name"))
        if ident in seen:
            problems.append(f"{_where(resource)}: defined twice")
        seen.add(ident)
    by_kind: dict[str, list[dict]] = {}
    for resource in resources:
        by_kind.setdefault(resource.get("kind", ""), []).append(resource)
    configmaps = {dig(c, "metadata", "name"): c for c in by_kind.get("ConfigMap", [])}
    hpa_targets = {dig(h, "spec", "scaleTargetRef", "name")
                   for h in by_kind.get("HorizontalPodAutoscaler", [])}
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        problems.append("no Deployment")
    pods = [_Pods(d, dig(d, "spec", "template", "metadata", "labels") or {},
                  dig(d, "spec", "template", "spec") or {}) for d in deployments]
    for dep in deployments:
        problems += _check_deployment(dep, configmaps, hpa_targets)
    headless = metrics_service = False
    for svc in by_kind.get("Service", []):
        where = _where(svc)
        selector = dig(svc, "spec", "selector")
        matched = _matching_pods(selector, pods, dig(svc, "metadata", "namespace"))
        if not matched:
            problems.append(f"{where}: selector {selector} matches no Deployment's pods")
            continue
        for port in dig(svc, "spec", "ports", default=[]):
            target = port.get("targetPort", port.get("port"))
            if matched[0].port(target) is None:
                problems.append(f"{where}: port {port.get('name')!r} targets {target!r}, which is "
                                "no container port")
            if matched[0].port(target) == GRPC_PORT and dig(svc, "spec", "clusterIP") == "None":
                headless = True
            if matched[0].port(target) == METRICS_PORT and port.get("name") == "metrics":
                metrics_service = True
    if deployments and not headless:
        problems.append("no headless Service (clusterIP: None) for the gRPC port: clients "
                        "cannot balance calls across pods")
    if deployments and not metrics_service:
        problems.append(f"no Service with a port named 'metrics' targeting {METRICS_PORT}")
    hpa_min = {}
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        where = _where(hpa)
        ref = dig(hpa, "spec", "scaleTargetRef") or {}
        target = [d for d in deployments if ref.get("kind") == "Deployment"
                  and ref.get("apiVersion") == "apps/v1"
                  and dig(d, "metadata", "name") == ref.get("name")
                  and dig(d, "metadata", "namespace") == dig(hpa, "metadata", "namespace")]
        if not target:
            problems.append(f"{where}: scaleTargetRef {ref} names no Deployment")
        low = dig(hpa, "spec", "minReplicas", default=1)
        high = dig(hpa, "spec", "maxReplicas")
        if not isinstance(high, int) or not isinstance(low, int) or not 1 <= low <= high:
            problems.append(f"{where}: needs 1 <= minReplicas ({low}) <= maxReplicas ({high})")
        if low < 2:
            problems.append(f"{where}: minReplicas {low}: one pod cannot survive a node drain "
                            "without an outage")
        if not dig(hpa, "spec", "metrics"):
            problems.append(f"{where}: spec.metrics is empty")
        for t in target:
            hpa_min[id(t)] = low
    for pdb in by_kind.get("PodDisruptionBudget", []):
        where = _where(pdb)
        spec = pdb.get("spec") or {}
        selector = dig(spec, "selector", "matchLabels")
        matched = _matching_pods(selector, pods, dig(pdb, "metadata", "namespace"))
        if not matched:
            problems.append(f"{where}: selector {selector} matches no Deployment's pods")
        if ("minAvailable" in spec) == ("maxUnavailable" in spec):
            problems.append(f"{where}: set exactly one of minAvailable and maxUnavailable")
        min_available = spec.get("minAvailable")
        for p in matched:
            low = hpa_min.get(id(p.deployment))
            if isinstance(min_available, int) and low is not None and min_available >= low:
                problems.append(f"{where}: minAvailable {min_available} >= the HPA's "
                                f"minReplicas {low}; no node could ever be drained")
    services = by_kind.get("Service", [])
    for monitor in by_kind.get("ServiceMonitor", []):
        problems += _check_service_monitor(monitor, services, pods)
    for monitor in by_kind.get("PodMonitor", []):
        where = _where(monitor)
        selector = dig(monitor, "spec", "selector", "matchLabels")
        matched = _matching_pods(selector, pods, dig(monitor, "metadata", "namespace"))
        endpoints = dig(monitor, "spec", "podMetricsEndpoints", default=[])
        if not matched or not endpoints or any(matched[0].port(e.get("port")) != METRICS_PORT
                                               for e in endpoints):
            problems.append(f"{where}: must select the qgnn pods and scrape the 'metrics' port")
    for rule in by_kind.get("PrometheusRule", []):
        problems += [f"{_where(rule)}: {p}"
                     for p in check_rule_groups(dig(rule, "spec", "groups", default=[]))]
    return problems


def _check_service_monitor(monitor: dict, services: list[dict], pods: list[_Pods]) -> list[str]:
    where = _where(monitor)
    namespace = dig(monitor, "metadata", "namespace")
    selector = dig(monitor, "spec", "selector", "matchLabels")
    matched = [s for s in services if _selects(selector, dig(s, "metadata", "labels"))
               and dig(s, "metadata", "namespace") == namespace]
    if len(matched) != 1:
        return [f"{where}: selector {selector} matches {len(matched)} Services; it must match "
                "exactly the metrics Service (or pods are scraped twice)"]
    svc = matched[0]
    endpoints = dig(monitor, "spec", "endpoints", default=[])
    if not endpoints:
        return [f"{where}: spec.endpoints is empty"]
    problems = []
    svc_pods = _matching_pods(dig(svc, "spec", "selector"), pods, namespace)
    for endpoint in endpoints:
        port = next((p for p in dig(svc, "spec", "ports", default=[])
                     if p.get("name") == endpoint.get("port")), None)
        target = port and port.get("targetPort", port.get("port"))
        if port is None or not svc_pods or svc_pods[0].port(target) != METRICS_PORT:
            problems.append(f"{where}: endpoint port {endpoint.get('port')!r} is not a port of "
                            f"{_where(svc)} reaching container port {METRICS_PORT}")
        if endpoint.get("path", "/metrics") != "/metrics":
            problems.append(f"{where}: endpoint path {endpoint.get('path')!r}, expected /metrics")
    job_label = dig(monitor, "spec", "jobLabel")
    if job_label and dig(svc, "metadata", "labels", job_label) != "qgnn":
        problems.append(f"{where}: jobLabel {job_label!r} does not give the job name 'qgnn' the "
                        "alert rules use")
    return problems


def schema_problems(resources: Iterable[dict], version: str) -> list[str]:
    """Built-in kinds checked (strictly: unknown fields are errors) against the Kubernetes
    ``version`` JSON schemas bundled by the kubernetes-validate package; CRDs are skipped."""
    import kubernetes_validate

    problems = []
    for resource in resources:
        if resource.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            continue
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{_where(resource)}: Kubernetes {version} schema: {path}: "
                            f"{exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{_where(resource)}: {exc.message}")
    return problems
