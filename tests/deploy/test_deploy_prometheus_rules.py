"""Prometheus' own tool on the deployment files: config and rule syntax, rule unit tests, and
the PromQL of the Grafana dashboard. Skips when promtool is not on PATH
(deploy/ci/install-prometheus.sh installs it on Debian/Ubuntu)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not on PATH; install Debian's prometheus package "
                             "(deploy/ci/install-prometheus.sh) to run the rule checks")


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


@pytest.fixture
def prometheus_dir(root) -> Path:
    return root / "deploy" / "prometheus"


def test_the_prometheus_config_is_valid(prometheus_dir):
    out = promtool("check", "config", prometheus_dir / "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 rule files found" in out.stdout


def test_the_rule_files_are_valid(prometheus_dir):
    out = promtool("check", "rules", *sorted((prometheus_dir / "rules").glob("*.yml")))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_rule_unit_tests_pass(prometheus_dir):
    tests = sorted((prometheus_dir / "tests").glob("*.yml"))
    assert tests
    out = promtool("test", "rules", *tests)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(("old", "new"), [
    ("expr: model_method:qgnn_request_duration_seconds:p99_rate5m > 0.25",
     "expr: model_method:qgnn_request_duration_seconds:p99_rate5m > 0.5"),
    ("expr: model:qgnn_requests_failed:ratio_rate5m > 0.05",
     "expr: model:qgnn_requests_failed:ratio_rate5m > 0.2"),
    ("expr: qgnn_model_ready == 0\n        for: 5m",
     "expr: qgnn_model_ready == 0\n        for: 15m"),
    ("expr: model:qgnn_requests_server_error:ratio_rate5m > 0.01",
     "expr: model:qgnn_requests_failed:ratio_rate5m > 0.01"),
])
def test_the_unit_tests_catch_a_changed_threshold_or_duration(prometheus_dir, tmp_path, old,
                                                              new):
    shutil.copytree(prometheus_dir, tmp_path / "prometheus")
    alerts = tmp_path / "prometheus" / "rules" / "qgnn-alerts.yml"
    assert old in alerts.read_text()
    alerts.write_text(alerts.read_text().replace(old, new))
    out = promtool("test", "rules", *sorted((tmp_path / "prometheus" / "tests").glob("*.yml")))
    assert out.returncode != 0, out.stdout


def test_the_prometheusrule_groups_are_valid_rules(validate, root, tmp_path):
    rule = validate.load_documents(root / validate.PROMETHEUSRULE)[0]
    path = tmp_path / "operator-rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    out = promtool("check", "rules", path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dashboard_queries_are_valid_promql(root, tmp_path):
    """Each panel query, with Grafana's variables given concrete values, as a recording rule."""
    dashboard = json.loads((root / "deploy" / "grafana" / "dashboards" / "qgnn.json").read_text())
    rules = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r"\$__\w+", "5m", target["expr"])
            expr = re.sub(r"\$\w+", ".*", expr)
            rules.append({"record": f"dashboard:query:{len(rules)}", "expr": expr})
    assert len(rules) >= 15
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = promtool("check", "rules", path)
    assert out.returncode == 0, out.stdout + out.stderr
    broken = path.read_text().replace("sum by (le)", "sum by (le", 1)
    path.write_text(broken)
    assert promtool("check", "rules", path).returncode != 0
