"""Metrics: the contract's names and labels, and values after real traffic (read back from the
server's registry and from its /metrics page)."""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import serving_testkit as tk
from prometheus_client import CollectorRegistry
from qgnn.runtime.metrics import LATENCY_BUCKETS, ServingMetrics

CONTRACT = {
    "qgnn_request_duration_seconds": ("histogram", {"model", "method", "status"}),
    "qgnn_requests": ("counter", {"model", "method", "status"}),
    "qgnn_request_errors": ("counter", {"model", "method", "code"}),
    "qgnn_inflight_requests": ("gauge", {"model"}),
    "qgnn_queue_duration_seconds": ("histogram", {"model"}),
    "qgnn_compute_duration_seconds": ("histogram", {"model", "stage"}),
    "qgnn_batch_size": ("histogram", {"model"}),
    "qgnn_subgraph_nodes": ("histogram", {"model"}),
    "qgnn_subgraph_edges": ("histogram", {"model"}),
    "qgnn_model_load_duration_seconds": ("histogram", {"model"}),
    "qgnn_model_info": ("gauge", {"model", "version", "task", "quant", "isa"}),
    "qgnn_model_ready": ("gauge", {"model", "version"}),
    "qgnn_queue_depth": ("gauge", {"model"}),
    "qgnn_shed_requests": ("counter", {"model"}),
    "qgnn_requests_rejected": ("counter", {"method", "reason"}),
}


def test_every_contract_metric_is_declared_with_its_labels():
    m = ServingMetrics.create(CollectorRegistry())
    # every series of every metric, so that each family shows its label names
    m.requests.record(m.requests.series("m", "PredictNodes", "INTERNAL"), 0.001)
    for metric in (m.inflight, m.queue_duration, m.batch_size, m.subgraph_nodes,
                   m.subgraph_edges, m.model_load_duration, m.queue_depth, m.shed_requests):
        metric.labels(*["x"] * len(metric._labelnames))
    m.compute_duration.labels("m", "model")
    m.model_info.labels("m", "1", "node", "int8", "")
    m.model_ready.labels("m", "1")
    m.requests_rejected.labels("PredictNodes", "internal")
    declared = {}
    for family in m.registry.collect():
        labels = {k for s in family.samples for k in s.labels if k not in ("le", "quantile")}
        declared[family.name] = (family.type, labels)
    assert {k: v for k, v in declared.items() if k in CONTRACT} == CONTRACT
    assert LATENCY_BUCKETS[0] == 0.0001
    m.requests.record(m.requests.series("m", "PredictNodes", "OK"), 0.00005)
    ok = {"model": "m", "method": "PredictNodes", "status": "OK"}
    assert m.registry.get_sample_value("qgnn_request_duration_seconds_bucket",
                                       {**ok, "le": "0.0001"}) == 1
    assert m.registry.get_sample_value("qgnn_request_duration_seconds_bucket",
                                       {**ok, "le": "0.00005"}) is None
    assert m.registry.get_sample_value("qgnn_requests_total", ok) == 1
    assert m.registry.get_sample_value("qgnn_request_errors_total", {
        "model": "m", "method": "PredictNodes", "code": "INTERNAL"}) == 1
    # a call refused before qgnn timed it is counted, not timed
    m.requests.record(m.requests.series("m", "PredictNodes", "OK"))
    assert m.registry.get_sample_value("qgnn_requests_total", ok) == 2
    assert m.registry.get_sample_value("qgnn_request_duration_seconds_count", ok) == 1


def _v(server, name: str, **labels) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


def test_request_counts_latency_and_errors_after_real_traffic(served):
    server, client = served
    started = time.perf_counter()
    for _ in range(7):
        client.predict_nodes("toy", [1, 2, 3])
    wall = time.perf_counter() - started
    for bad in ([-1], [99]):
        with pytest.raises(grpc.RpcError):
            client.predict_nodes("toy", bad)
    ok = {"model": "toy", "method": "PredictNodes", "status": "OK"}
    assert _v(server, "qgnn_requests_total", **ok) == 7
    assert _v(server, "qgnn_request_duration_seconds_count", **ok) == 7
    assert 0 < _v(server, "qgnn_request_duration_seconds_sum", **ok) <= wall
    assert _v(server, "qgnn_requests_total", model="toy", method="PredictNodes",
              status="INVALID_ARGUMENT") == 2
    assert _v(server, "qgnn_request_errors_total", model="toy", method="PredictNodes",
              code="INVALID_ARGUMENT") == 2
    assert _v(server, "qgnn_inflight_requests", model="toy") == 0
    assert _v(server, "qgnn_queue_duration_seconds_count", model="toy") == 7
    assert _v(server, "qgnn_batch_size_sum", model="toy") == 21  # ids computed, rejected none
    assert _v(server, "qgnn_compute_duration_seconds_count", model="toy", stage="model") == 7
    assert _v(server, "qgnn_compute_duration_seconds_count", model="toy", stage="onnx") == 7
    assert _v(server, "qgnn_subgraph_nodes_count", model="toy") == 7
    assert _v(server, "qgnn_subgraph_edges_sum", model="toy") > 0
    assert _v(server, "qgnn_model_ready", model="toy", version="1") == 1
    assert _v(server, "qgnn_model_info", model="links", version="1", task="link",
              quant="fp32", isa="") == 1
    assert _v(server, "qgnn_model_load_duration_seconds_count", model="toy") == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                timeout=5) as page:
        text = page.read().decode()
    assert 'qgnn_requests_total{method="PredictNodes",model="toy",status="OK"} 7.0' in text


def test_unknown_model_names_do_not_become_metric_labels(served):
    server, client = served
    for i in range(5):
        with pytest.raises(grpc.RpcError):
            client.predict_nodes(f"random-{i}", [1])
    assert _v(server, "qgnn_requests_total", model="", method="PredictNodes",
              status="NOT_FOUND") == 5
    text = "\n".join(str(s) for m in server.metrics.registry.collect() for s in m.samples)
    assert "random-" not in text


def test_concurrent_requests_are_batched_and_the_batch_sizes_observed(start_server, client_for,
                                                                     tmp_path: Path):
    tk.write_test_bundle(tmp_path / "slow" / "1", tk.random_params(num_nodes=20), name="slow",
                         delay_s=0.05)
    server = start_server(tmp_path)
    client = client_for(server)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: client.predict_nodes("slow", [i]), range(16)))
    assert [r.probabilities.shape for r in results] == [(1, 3)] * 16
    calls = _v(server, "qgnn_batch_size_count", model="slow")
    assert _v(server, "qgnn_batch_size_sum", model="slow") == 16
    assert calls < 16  # at least two requests shared a model call
    assert _v(server, "qgnn_queue_depth", model="slow") == 0
