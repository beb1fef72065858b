"""The serving contract the deployment files must follow: ports, user, entry point, serve
settings and the metric catalogue (shared with the gRPC server; see docs/deploy.md)."""

from __future__ import annotations

GRPC_PORT = 8500
METRICS_PORT = 9464
RUN_AS_UID = 10001
DEFAULT_GRACE_PERIOD_S = 20.0
MODELS_DIR = "/models"
SERVE_COMMAND = ("qgnn", "serve", MODELS_DIR)
HEALTH_COMMAND = ("qgnn", "health", "--port", str(GRPC_PORT))
SERVE_FLAGS = ("host", "grpc-port", "metrics-port", "max-batch-size", "max-queue-delay-ms",
               "max-queue-size", "max-ids-per-request", "max-message-bytes", "grace-period-s",
               "poll-interval-s", "threads", "tls-cert", "tls-key", "tls-client-ca",
               "auth-token-file", "allow-insecure-token", "portable", "isa",
               "max-inflight-bytes", "max-inflight-requests", "max-queue-ms", "precompute",
               "workers", "grpc-server")

# Each flag's QGNN_* variable, plus the serve PATH argument and the --config file.
SERVE_ENV = frozenset({"QGNN_PATH", "QGNN_CONFIG"} | {
    "QGNN_" + flag.upper().replace("-", "_") for flag in SERVE_FLAGS})

# Exposed series name -> (type, label names), as declared in runtime/metrics.py.
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    name: (kind, frozenset(labels)) for name, kind, labels in (
        ("qgnn_request_duration_seconds", "histogram", ("model", "method", "status")),
        ("qgnn_requests_total", "counter", ("model", "method", "status")),
        ("qgnn_request_errors_total", "counter", ("model", "method", "code")),
        ("qgnn_inflight_requests", "gauge", ("model",)),
        ("qgnn_queue_duration_seconds", "histogram", ("model",)),
        ("qgnn_compute_duration_seconds", "histogram", ("model", "stage")),
        ("qgnn_batch_size", "histogram", ("model",)),
        ("qgnn_subgraph_nodes", "histogram", ("model",)),
        ("qgnn_subgraph_edges", "histogram", ("model",)),
        ("qgnn_model_load_duration_seconds", "histogram", ("model",)),
        # Beyond the contract's list, declared by the server: a failed (re)load.
        ("qgnn_model_load_failures_total", "counter", ("model",)),
        ("qgnn_model_info", "gauge", ("model", "version", "task", "quant", "isa")),
        ("qgnn_model_ready", "gauge", ("model", "version")),
        ("qgnn_queue_depth", "gauge", ("model",)),
        ("qgnn_shed_requests_total", "counter", ("model",)),
        # Beyond the contract's list: every refused request by reason (issue 17).
        ("qgnn_requests_rejected_total", "counter", ("method", "reason")),
        # Admission control (runtime/admission.py): sheds by reason, bytes held.
        ("qgnn_requests_shed_total", "counter", ("reason",)),
        ("qgnn_inflight_bytes", "gauge", ()),
    )
}

# Labels Prometheus (static or Kubernetes service discovery) attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container",
                           "endpoint"})

# Series the dashboard must show: an operator's first questions about a running server.
DASHBOARD_REQUIRED = ("qgnn_request_duration_seconds_bucket", "qgnn_requests_total",
                      "qgnn_request_errors_total", "qgnn_batch_size_bucket",
                      "qgnn_inflight_requests", "qgnn_queue_depth", "qgnn_model_info")
SEVERITIES = ("critical", "warning", "info")
