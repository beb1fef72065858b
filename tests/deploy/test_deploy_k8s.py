"""The Kubernetes manifests (deploy/k8s) rendered offline and checked against the contract."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest
import yaml

K8S_DIRS = ("deploy/k8s/base", "deploy/k8s/overlays/production")


def find(resources: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [r for r in resources if r["kind"] == kind
            and (name is None or r["metadata"]["name"] == name)]
    assert len(hits) == 1, (kind, name, len(hits))
    return hits[0]


def pod(resources: list[dict]) -> dict:
    return find(resources, "Deployment", "qgnn")["spec"]["template"]["spec"]


def server(resources: list[dict]) -> dict:
    return next(c for c in pod(resources)["containers"] if c["name"] == "qgnn")


def configmap(resources: list[dict]) -> dict:
    return find(resources, "ConfigMap")["data"]


@pytest.fixture
def base(validate, root) -> list[dict]:
    return validate.render_kustomization(root / K8S_DIRS[0])


@pytest.fixture
def production(validate, root) -> list[dict]:
    return validate.render_kustomization(root / K8S_DIRS[1])


@pytest.mark.parametrize("rel", K8S_DIRS)
def test_every_file_a_kustomization_names_exists_and_every_manifest_is_listed(validate, root,
                                                                              rel):
    assert validate.check_kustomization_files(root / rel) == []


def test_missing_and_unlisted_manifests_are_reported(validate, root, tmp_path):
    tree = tmp_path / "k8s"
    shutil.copytree(root / "deploy" / "k8s", tree)
    (tree / "base" / "pdb.yaml").unlink()
    (tree / "base" / "forgotten.yaml").write_text("apiVersion: v1\nkind: ConfigMap\n")
    problems = validate.check_kustomization_files(tree / "overlays" / "production")
    assert any("pdb.yaml does not exist" in p for p in problems), problems
    assert any("forgotten.yaml: not listed" in p for p in problems), problems


@pytest.mark.parametrize("rel", K8S_DIRS)
def test_rendered_manifests_meet_the_contract(validate, root, rel):
    assert validate.check_manifests(validate.render_kustomization(root / rel)) == []


def test_the_deployment_follows_the_serving_contract(base):
    """Spelled out independently of the validator: what the orchestrator relies on."""
    spec = find(base, "Deployment", "qgnn")["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    qgnn = server(base)
    assert {p["name"]: p["containerPort"] for p in qgnn["ports"]} == {"grpc": 8500,
                                                                      "metrics": 9464}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert qgnn[probe]["grpc"] == {"port": 8500}
    assert qgnn["args"] == ["/models"] and "command" not in qgnn
    sleep = int(qgnn["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = float(configmap(base)["QGNN_GRACE_PERIOD_S"])
    assert pod(base)["terminationGracePeriodSeconds"] > sleep + grace
    assert pod(base)["securityContext"]["runAsUser"] == 10001


def test_the_production_overlay_changes_what_it_says(base, production):
    namespaced = [r for r in production if r["kind"] != "Namespace"]
    assert {r["metadata"].get("namespace") for r in namespaced} == {"qgnn"}
    assert {r["kind"] for r in production} - {r["kind"] for r in base} == {
        "Namespace", "ServiceMonitor", "PrometheusRule"}
    images = {c["name"]: c["image"] for c in [*pod(production)["initContainers"],
                                              *pod(production)["containers"]]}
    assert images == {"model": "registry.example.com/qgnn-model-cora-gcn:1",
                      "qgnn": "registry.example.com/qgnn:0.1.0"}
    assert server(production)["resources"]["limits"] == {"cpu": "4", "memory": "4Gi"}
    # The patch replaced resources only: probes and ports come from the base unchanged.
    assert server(production)["readinessProbe"] == server(base)["readinessProbe"]
    assert server(production)["ports"] == server(base)["ports"]
    hpa = find(production, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 20)
    assert hpa["metrics"] == find(base, "HorizontalPodAutoscaler")["spec"]["metrics"]
    # configMapGenerator merge: the overlay's QGNN_THREADS over the base's other settings.
    assert configmap(production) == {**configmap(base), "QGNN_THREADS": "4"}


def test_a_config_change_renames_the_configmap_so_the_deployment_rolls(base, production):
    names = []
    for resources in (base, production):
        name = find(resources, "ConfigMap")["metadata"]["name"]
        assert re.fullmatch(r"qgnn-config-[0-9a-f]{10}", name)
        assert server(resources)["envFrom"] == [{"configMapRef": {"name": name}}]
        names.append(name)
    assert names[0] != names[1]


def _without_hash(resources: list[dict]) -> dict:
    text = re.sub(r"qgnn-config-[a-z0-9]{10}", "qgnn-config-HASH", json.dumps(resources))
    return {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]): r
            for r in json.loads(text)}


@pytest.mark.parametrize("rel", K8S_DIRS)
def test_the_renderer_agrees_with_kubectl_kustomize(validate, root, rel):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH; the offline renderer is then the only check")
    out = subprocess.run([kubectl, "kustomize", str(root / rel)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    theirs = _without_hash([d for d in yaml.safe_load_all(out) if d])
    assert _without_hash(validate.render_kustomization(root / rel)) == theirs


@pytest.mark.parametrize("rel", K8S_DIRS)
def test_manifests_match_the_official_kubernetes_schemas(validate, root, rel):
    kv = pytest.importorskip("kubernetes_validate.utils", reason="kubernetes-validate (dev "
                             "extra) bundles the Kubernetes JSON schemas for an offline check")
    resources = validate.render_kustomization(root / rel)
    for version in ("1.27", kv.latest_version()):
        assert validate.schema_problems(resources, version) == []


def test_the_schema_check_rejects_a_misspelt_field(validate, base):
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    server(base)["readinessProbe"]["grpc"]["prot"] = 8500
    find(base, "Service", "qgnn-grpc")["spec"]["clusterIp"] = "None"
    problems = validate.schema_problems(base, "1.27")
    assert len(problems) == 2, problems
    assert "'prot' was unexpected" in problems[0] or "'prot' was unexpected" in problems[1]


def _set(path: str, value) -> Callable[[list[dict]], None]:
    """A mutation setting ``value`` at a dotted path of the qgnn Deployment (None deletes)."""
    def mutate(resources: list[dict]) -> None:
        obj = find(resources, "Deployment", "qgnn")
        *parents, last = path.split(".")
        for key in parents:
            obj = obj[int(key)] if key.isdigit() else obj[key]
        if value is None:
            del obj[last]
        else:
            obj[last] = value
    return mutate


C = "spec.template.spec.containers.0"
MUTATIONS = {
    "http readiness probe": (_set(f"{C}.readinessProbe", {"httpGet": {"port": 9464}}),
                             "readinessProbe must be a grpc probe"),
    "liveness probe on the wrong port": (_set(f"{C}.livenessProbe.grpc.port", 8501),
                                         "livenessProbe.grpc.port 8501"),
    "no liveness probe": (_set(f"{C}.livenessProbe", None), "no livenessProbe"),
    "probe of a named service": (_set(f"{C}.readinessProbe.grpc.service", "cora-gcn"),
                                 "readinessProbe.grpc.service 'cora-gcn'"),
    "metrics on another port": (_set(f"{C}.ports.1.containerPort", 9465),
                                "needs TCP port 'metrics' = 9464"),
    "another command": (_set(f"{C}.args", ["/data"]), "expected ['qgnn', 'serve', '/models']"),
    "root allowed": (_set(f"{C}.securityContext.runAsNonRoot", False),
                     "container qgnn: securityContext.runAsNonRoot must be true"),
    "uid 0": (_set("spec.template.spec.initContainers.0.securityContext.runAsUser", 0),
              "container model: runAsUser 0, expected 10001"),
    "no seccomp": (_set("spec.template.spec.securityContext.seccompProfile", None),
                   "seccompProfile.type None"),
    "writable root": (_set(f"{C}.securityContext.readOnlyRootFilesystem", False),
                      "readOnlyRootFilesystem must be true"),
    "capabilities kept": (_set(f"{C}.securityContext.capabilities", {"drop": ["NET_RAW"]}),
                          "capabilities.drop must contain ALL"),
    "init container escalates": (
        _set("spec.template.spec.initContainers.0.securityContext.allowPrivilegeEscalation",
             True), "container model: securityContext.allowPrivilegeEscalation must be false"),
    "grace period too short": (_set("spec.template.spec.terminationGracePeriodSeconds", 25),
                               "terminationGracePeriodSeconds 25 must exceed the preStop sleep"),
    "no preStop": (_set(f"{C}.lifecycle", None), "no preStop sleep"),
    "pods removed before replacements are ready": (
        _set("spec.strategy.rollingUpdate.maxUnavailable", 1), "maxUnavailable 0"),
    "replicas fight the HPA": (_set("spec.replicas", 3), "spec.replicas is set"),
    "unpinned image": (_set(f"{C}.image", "qgnn:latest"), "is not pinned to a tag"),
    "no memory limit": (_set(f"{C}.resources.limits", {"cpu": "2"}),
                        "resources.limits.memory is not set"),
    "request above limit": (_set(f"{C}.resources.requests.memory", "3Gi"),
                            "resources.requests.memory 3Gi exceeds the limit 2Gi"),
    "more threads than cores": (_set(f"{C}.resources", {"requests": {"cpu": "1", "memory": "1Gi"},
                                                        "limits": {"cpu": "1", "memory": "1Gi"}}),
                                "QGNN_THREADS=2 exceeds the CPU limit 1"),
    "writable models": (_set(f"{C}.volumeMounts.0.readOnly", None),
                        "/models should be mounted readOnly"),
    "no /tmp": (_set(f"{C}.volumeMounts", [{"name": "models", "mountPath": "/models",
                                            "readOnly": True}]), "no writable /tmp mount"),
    "selector misses the pods": (_set("spec.selector.matchLabels",
                                      {"app.kubernetes.io/name": "other"}),
                                 "does not select the pod template's labels"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_each_broken_deployment_is_reported(validate, base, case):
    mutate, expected = MUTATIONS[case]
    mutate(base)
    problems = validate.check_manifests(base)
    assert any(expected in p for p in problems), problems


def test_config_problems_are_reported(validate, base):
    data = configmap(base)
    data["QGNN_GRACE_PERIOD_S"] = "40"
    data["QGNN_MAX_BATCH"] = "64"
    data["QGNN_GRPC_PORT"] = "9000"
    data["QGNN_HOST"] = "127.0.0.1"
    problems = validate.check_manifests(base)
    for expected in ("grace period 40 s", "QGNN_MAX_BATCH is not a qgnn serve setting",
                     "QGNN_GRPC_PORT=9000 but the contract port is 8500",
                     "QGNN_HOST=127.0.0.1 is unreachable"):
        assert any(expected in p for p in problems), (expected, problems)


def test_selectors_and_references_across_objects_are_checked(validate, base):
    find(base, "Service", "qgnn-grpc")["spec"]["selector"] = {"app": "qgnn"}
    find(base, "Service", "qgnn-metrics")["spec"]["ports"][0]["targetPort"] = "metric"
    find(base, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] = {"app": "qgnn"}
    find(base, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = "qgnn-server"
    problems = validate.check_manifests(base)
    for expected in ("Service/qgnn-grpc: selector {'app': 'qgnn'} matches no Deployment's pods",
                     "no headless Service", "targets 'metric', which is no container port",
                     "PodDisruptionBudget/qgnn: selector {'app': 'qgnn'} matches no",
                     "HorizontalPodAutoscaler/qgnn: scaleTargetRef"):
        assert any(expected in p for p in problems), (expected, problems)


def test_availability_budgets_are_checked(validate, base):
    find(base, "HorizontalPodAutoscaler")["spec"]["minReplicas"] = 1
    problems = validate.check_manifests(base)
    assert any("minReplicas 1: one pod cannot survive a node drain" in p for p in problems)
    find(base, "HorizontalPodAutoscaler")["spec"]["minReplicas"] = 2
    find(base, "PodDisruptionBudget")["spec"] = {
        "minAvailable": 2, "selector": find(base, "PodDisruptionBudget")["spec"]["selector"]}
    problems = validate.check_manifests(base)
    assert problems == ["PodDisruptionBudget/qgnn: minAvailable 2 >= the HPA's minReplicas 2; "
                        "no node could ever be drained"]


def test_service_monitor_must_select_only_the_metrics_service(validate, production):
    monitor = find(production, "ServiceMonitor")
    monitor["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "qgnn"}
    problems = validate.check_manifests(production)
    assert any("matches 2 Services" in p for p in problems), problems
    monitor["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/component": "metrics",
                                                  "app.kubernetes.io/name": "qgnn"}
    monitor["spec"]["endpoints"][0]["port"] = "grpc"
    problems = validate.check_manifests(production)
    assert any("endpoint port 'grpc'" in p for p in problems), problems


def test_unknown_kinds_and_wrong_api_versions_are_reported(validate, base):
    find(base, "HorizontalPodAutoscaler")["apiVersion"] = "autoscaling/v1"
    base.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"}})
    problems = validate.check_manifests(base)
    assert any("apiVersion 'autoscaling/v1', expected 'autoscaling/v2'" in p for p in problems)
    assert any("kind 'Secret' is not one this validator knows" in p for p in problems)


def test_the_prometheusrule_holds_exactly_the_rule_files(validate, root, tmp_path):
    assert validate.check_prometheusrule_in_sync(root) == []
    for rel in (validate.PROMETHEUSRULE, validate.RULES_DIR):
        src, dst = root / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    alerts = tmp_path / validate.RULES_DIR / "qgnn-alerts.yml"
    alerts.write_text(alerts.read_text().replace("> 0.25", "> 0.5"))
    assert len(validate.check_prometheusrule_in_sync(tmp_path)) == 1
    validate.sync_prometheusrule(tmp_path)
    assert validate.check_prometheusrule_in_sync(tmp_path) == []
    synced = (tmp_path / validate.PROMETHEUSRULE).read_text()
    assert synced.startswith("# The rules of deploy/prometheus/rules/*.yml")
    assert "model_method:qgnn_request_duration_seconds:p99_rate5m > 0.5" in synced


def test_the_model_image_layout_matches_the_init_container_and_the_bake_in(validate, root,
                                                                           base):
    model = validate.parse_dockerfile((root / "deploy" / "model.Dockerfile").read_text())
    copy = next(i for i in model if i.keyword == "COPY")
    assert copy.words() == [".", "/repository/${MODEL_NAME}/${MODEL_VERSION}/"]
    init = next(c for c in pod(base)["initContainers"] if c["name"] == "model")
    assert init["command"] == ["sh", "-c", "cp -R /repository/. /models/"]
    assert {"name": "models", "mountPath": "/models"} in init["volumeMounts"]
    stages = validate.dockerfile_stages(
        validate.parse_dockerfile((root / "Dockerfile").read_text()))
    bake = [i for i in stages["serve-with-model"] if i.keyword == "COPY"]
    assert [(i.flags, i.words()) for i in bake] == [({"from": "model"},
                                                     ["/repository/", "/models/"])]


def test_strategic_merge_follows_the_merge_keys(validate):
    base = {"containers": [{"name": "a", "image": "x:1", "env": [{"name": "K", "value": "1"}]},
                           {"name": "b", "image": "y:1"}],
            "tolerations": [{"key": "t1"}], "keep": 1, "drop": 2}
    patch = {"containers": [{"name": "a", "env": [{"name": "J", "value": "2"}]},
                            {"name": "c", "image": "z:1"}],
             "tolerations": [{"key": "t2"}], "drop": None}
    assert validate.strategic_merge(base, patch) == {
        "containers": [{"name": "a", "image": "x:1", "env": [{"name": "K", "value": "1"},
                                                              {"name": "J", "value": "2"}]},
                       {"name": "b", "image": "y:1"}, {"name": "c", "image": "z:1"}],
        "tolerations": [{"key": "t2"}], "keep": 1}
    assert base["drop"] == 2 and len(base["containers"]) == 2
    with pytest.raises(ValueError, match=r"\$patch"):
        validate.strategic_merge(base, {"$patch": "delete"})


def test_unsupported_kustomize_fields_are_refused_by_name(validate, root, tmp_path):
    shutil.copytree(root / "deploy" / "k8s", tmp_path / "k8s")
    k = tmp_path / "k8s" / "base" / "kustomization.yaml"
    k.write_text(k.read_text() + "commonLabels:\n  team: ml\n")
    with pytest.raises(ValueError, match="commonLabels"):
        validate.render_kustomization(tmp_path / "k8s" / "base")


@pytest.mark.parametrize(("text", "cores"), [("2", 2.0), ("500m", 0.5), ("1.5", 1.5), (3, 3.0)])
def test_parse_cpu(validate, text, cores):
    assert validate.parse_cpu(text) == cores


@pytest.mark.parametrize(("text", "size"), [("1Gi", 2**30), ("64Mi", 64 * 2**20),
                                            ("512M", 512e6), ("1000", 1000.0)])
def test_parse_memory(validate, text, size):
    assert validate.parse_memory(text) == size


@pytest.mark.parametrize("text", ["2 cores", "-1", "1Gi"])
def test_a_bad_cpu_quantity_is_named(validate, text):
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        validate.parse_cpu(text)


@pytest.mark.parametrize("text", ["1GB", "lots", "-5Mi"])
def test_a_bad_memory_quantity_is_named(validate, text):
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        validate.parse_memory(text)


def test_the_validator_script_finds_no_problem_in_the_repository(root):
    out = subprocess.run([sys.executable, str(root / "deploy" / "validate.py")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.strip().endswith("0 problem(s)")


def test_every_yaml_file_under_deploy_parses(root):
    paths = sorted([*(root / "deploy").rglob("*.yaml"), *(root / "deploy").rglob("*.yml")])
    assert len(paths) >= 20
    for path in paths:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path
