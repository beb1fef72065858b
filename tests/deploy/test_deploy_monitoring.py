"""Prometheus rules and the Grafana dashboard against the metric catalogue of the contract."""

from __future__ import annotations

import copy
import json

import pytest

# The serving contract's metric list, written out here independently of qgnn_deploy.contract.
CONTRACT_METRICS = {
    "qgnn_request_duration_seconds": {"model", "method", "status"},
    "qgnn_requests_total": {"model", "method", "status"},
    "qgnn_request_errors_total": {"model", "method", "code"},
    "qgnn_inflight_requests": {"model"},
    "qgnn_queue_duration_seconds": {"model"},
    "qgnn_compute_duration_seconds": {"model", "stage"},
    "qgnn_batch_size": {"model"},
    "qgnn_subgraph_nodes": {"model"},
    "qgnn_subgraph_edges": {"model"},
    "qgnn_model_load_duration_seconds": {"model"},
    "qgnn_model_info": {"model", "version", "task", "quant", "isa"},
    "qgnn_model_ready": {"model", "version"},
    "qgnn_queue_depth": {"model"},
    "qgnn_shed_requests_total": {"model"},
}


@pytest.fixture
def dashboard(root) -> dict:
    return json.loads((root / "deploy" / "grafana" / "dashboards" / "qgnn.json").read_text())


@pytest.fixture
def groups(validate, root) -> list[dict]:
    return validate.rule_groups(root / "deploy" / "prometheus" / "rules")


def test_the_catalogue_is_the_contract_plus_load_failures_rejections_and_admission(validate):
    assert {name: set(labels) for name, (_, labels) in validate.METRICS.items()} == {
        **CONTRACT_METRICS, "qgnn_model_load_failures_total": {"model"},
        "qgnn_requests_rejected_total": {"method", "reason"},
        "qgnn_requests_shed_total": {"reason"}, "qgnn_inflight_bytes": set()}


def test_the_rules_use_only_contract_metrics_and_labels(validate, groups):
    assert validate.check_rule_groups(groups) == []
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    assert set(alerts) == {"QGNNTargetDown", "QGNNModelNotReady", "QGNNModelLoadFailed",
                           "QGNNHighLatencyP99", "QGNNHighErrorRatio", "QGNNServerErrors",
                           "QGNNLoadShedding", "QGNNAdmissionShedding"}
    assert alerts["QGNNModelNotReady"]["expr"] == "qgnn_model_ready == 0"
    records = {r["record"]: r["expr"] for g in groups for r in g["rules"] if "record" in r}
    p99 = records["model_method:qgnn_request_duration_seconds:p99_rate5m"]
    assert p99.startswith("histogram_quantile(0.99,")
    assert "rate(qgnn_request_duration_seconds_bucket[5m])" in p99
    assert 'qgnn_requests_total{status!="OK"}' in records["model:qgnn_requests_failed:ratio_rate5m"]


@pytest.mark.parametrize(("expr", "expected"), [
    ("rate(qgnn_request_latency_seconds_bucket[5m])",
     "qgnn_request_latency_seconds_bucket is not a qgnn metric series"),
    ('qgnn_requests_total{code="OK"}', "qgnn_requests_total has no label 'code'"),
    ("sum by (status) (rate(qgnn_request_errors_total[5m]))",
     "grouping label 'status' is on none of the series"),
    ('qgnn_model_ready{le="1"}', "qgnn_model_ready has no label 'le'"),
    ("qgnn_queue_depth_bucket", "qgnn_queue_depth_bucket is not a qgnn metric series"),
    ("model:qgnn_latency:p99 > 1", "model:qgnn_latency:p99 is not a recording rule"),
])
def test_promql_with_unknown_series_or_labels_is_reported(validate, expr, expected):
    problems = validate.check_promql(expr, "q")
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("expr", [
    'histogram_quantile(0.99, sum by (le, model) (rate(qgnn_batch_size_bucket{model=~"a|b"}[5m])))',
    'sum by (instance) (qgnn_inflight_requests) > on (instance) group_left up{job="qgnn"}',
    'qgnn_model_info{model="by (x)"}',
    "sum without (version) (qgnn_model_ready)",
    "qgnn_subgraph_edges_sum / qgnn_subgraph_edges_count",
])
def test_valid_promql_passes(validate, expr):
    assert validate.check_promql(expr, "q") == []


def _rule(groups: list[dict], name: str) -> dict:
    return next(r for g in groups for r in g["rules"] if r.get("alert") == name)


def test_broken_alert_rules_are_reported(validate, groups):
    broken = copy.deepcopy(groups)
    del _rule(broken, "QGNNHighLatencyP99")["for"]
    _rule(broken, "QGNNLoadShedding")["labels"]["severity"] = "page"
    _rule(broken, "QGNNModelNotReady")["annotations"] = {}
    _rule(broken, "QGNNHighErrorRatio")["expr"] = "model:qgnn_requests_failed:ratio_rate1m > 0"
    problems = validate.check_rule_groups(broken)
    for expected in ("QGNNHighLatencyP99: no 'for:' duration",
                     "QGNNLoadShedding: labels.severity must be one of",
                     "QGNNModelNotReady: annotations.summary is empty",
                     "model:qgnn_requests_failed:ratio_rate1m is not a recording rule"):
        assert any(expected in p for p in problems), (expected, problems)


def test_alerts_on_recorded_series_use_only_the_labels_they_keep(validate, groups):
    broken = copy.deepcopy(groups)
    _rule(broken, "QGNNHighErrorRatio")["expr"] = \
        'model:qgnn_requests_failed:ratio_rate5m{method="PredictNodes"} > 0.05'
    problems = validate.check_rule_groups(broken)
    assert any("has no label 'method'" in p for p in problems), problems


def test_the_dashboard_shows_what_an_operator_needs(validate, root, dashboard):
    assert validate.check_dashboard(dashboard, {"qgnn-prometheus"}, "qgnn.json") == []
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    latency = [e for e in exprs if "qgnn_request_duration_seconds_bucket" in e]
    for q in ("0.5", "0.9", "0.99"):
        assert any(e.startswith(f"histogram_quantile({q},") for e in latency), q
    batch = [e for e in exprs if "qgnn_batch_size_bucket" in e]
    assert len(batch) == 3
    assert any("sum by (model, method, code) (rate(qgnn_request_errors_total" in e for e in exprs)
    assert any("qgnn_model_info" in e for e in exprs)


def test_the_grafana_provisioning_matches_the_compose_mounts(validate, root):
    compose = validate.load_documents(root / "deploy" / "compose.yaml")[0]
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: (root / "deploy" / v.split(":")[0]).resolve()
              for v in grafana["volumes"] if v.startswith(".")}
    assert validate.check_grafana(root / "deploy" / "grafana", mounts) == []
    source = validate.load_documents(
        root / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml")[0]
    assert source["datasources"][0]["uid"] == "qgnn-prometheus"


BROKEN_DASHBOARD = {
    "unknown metric": (lambda d: d["panels"][1]["targets"][0].update(
        expr="sum(rate(qgnn_failures_total[5m]))"), "qgnn_failures_total is not a qgnn metric"),
    "undefined variable": (lambda d: d["panels"][0]["targets"][0].update(
        expr='sum(rate(qgnn_requests_total{model=~"$tenant"}[$__rate_interval]))'),
        "variable $tenant is not defined"),
    "overlap": (lambda d: d["panels"][1]["gridPos"].update(x=3), "overlaps panel"),
    "too wide": (lambda d: d["panels"][0]["gridPos"].update(w=30), "outside the 24-column grid"),
    "duplicate id": (lambda d: d["panels"][1].update(id=d["panels"][0]["id"]), "duplicate id"),
    "unknown data source": (lambda d: d["panels"][0]["targets"][0].update(
        datasource={"type": "prometheus", "uid": "other"}), "data source uid 'other'"),
    "no batch panel": (lambda d: d.update(panels=[p for p in d["panels"]
                                                  if "Batch" not in p["title"]]),
                       "no panel queries qgnn_batch_size_bucket"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_DASHBOARD))
def test_each_broken_dashboard_is_reported(validate, dashboard, case):
    mutate, expected = BROKEN_DASHBOARD[case]
    mutate(dashboard)
    problems = validate.check_dashboard(dashboard, {"qgnn-prometheus"}, "qgnn.json")
    assert any(expected in p for p in problems), problems
