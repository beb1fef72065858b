"""Prometheus metrics of ``qgnn serve``: every metric the server exports, declared in one place.

Names and label names are part of the serving contract (dashboards and alerts in deploy/ read
them), so they live here and nowhere else. Each :class:`ServingMetrics` registers on the
``CollectorRegistry`` it is given, which lets tests build a fresh registry per server and read the
values back (``registry.get_sample_value``).
"""

from __future__ import annotations

import bisect
import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

# Latency buckets from 100 µs (a single cached lookup) to 10 s (a huge request on a slow host).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064,
                   0.128, 0.256, 0.512, 1.0, 2.5, 5.0, 10.0)
# Model-load buckets: a tiny bundle loads in milliseconds, a large graph in tens of seconds.
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Powers of two: batch sizes (ids per model call) up to --max-batch-size's usual range.
BATCH_BUCKETS = tuple(float(2**i) for i in range(13))
# Powers of four: sampled subgraph sizes from a single node to millions of edges.
SUBGRAPH_BUCKETS = tuple(float(4**i) for i in range(12))

# ``reason`` values of qgnn_requests_rejected_total: the lower-case gRPC status a refusal is
# answered with, or a finer cause where one is known. Dashboards match on these, so a new cause
# is added here, not invented at the call site.
REJECTION_REASONS = (
    "invalid_argument",     # a malformed request: ids, dtypes, shapes, versions, names
    "not_found",            # no such model or version
    "failed_precondition",  # a call the model's task or state does not allow
    "unauthenticated",      # missing or wrong bearer token
    "unimplemented",        # an unknown service or method
    "message_too_large",    # a request over the configured message size
    "cancelled",            # the client cancelled or went away before the answer
    "deadline_exceeded",    # the caller's deadline passed first
    "unavailable",          # shutting down, or the model is loading or failed
    "limit_exceeded",       # over a per-request limit (--max-ids-per-request)
    "resource_exhausted",   # shed under load (serve-fast may split this by cause)
    "already_exists",       # loading a version that is already loaded
)


_REQUEST_LABELS = ("model", "method", "status")
_DURATION_HELP = "Time from receiving an RPC to its answer."
_REQUESTS_HELP = "RPCs answered, by final gRPC status."
_ERRORS_HELP = "RPCs answered with a status other than OK."


class RequestSeries:
    """One (model, method, status) series of the per-call request metrics, as plain numbers."""

    __slots__ = ("buckets", "labels", "requests", "seconds")

    def __init__(self, labels: tuple[str, str, str], num_buckets: int) -> None:
        self.labels = labels
        self.requests = 0  # qgnn_requests_total (and qgnn_request_errors_total when not OK)
        self.seconds = 0.0
        self.buckets = [0] * num_buckets  # per bucket, not cumulative; the last is +Inf


class RequestMetrics:
    """``qgnn_request_duration_seconds`` (histogram), ``qgnn_requests_total`` and
    ``qgnn_request_errors_total`` (counters), the three metrics every RPC updates, kept as plain
    numbers under one lock and turned into Prometheus samples when scraped.

    Why not prometheus_client's own Histogram and Counter: their children cost about eight
    Python calls and three locks per RPC, a measurable share of a precomputed one-id call
    (bench/serving_hotpath.py); :meth:`record` is one call and one lock. The exposition (names,
    types, labels, buckets) is the same."""

    def __init__(self, registry: CollectorRegistry, buckets: tuple[float, ...]) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, str], RequestSeries] = {}
        registry.register(self)

    def series(self, model: str, method: str, status: str) -> RequestSeries:
        """The series of these labels (created at zero on first use); keep it, it never
        changes."""
        key = (model, method, status)
        found = self._series.get(key)
        if found is None:
            with self._lock:
                found = self._series.setdefault(key, RequestSeries(key, len(self.bounds) + 1))
        return found

    def record(self, series: RequestSeries, seconds: float | None = None) -> None:
        """One RPC answered with the series' status; ``seconds``: how long it took (None: not
        timed, e.g. a call gRPC refused before qgnn's handler ran)."""
        if seconds is None:
            with self._lock:
                series.requests += 1
            return
        at = bisect.bisect_left(self.bounds, seconds)  # the first bucket with seconds <= le
        with self._lock:
            series.requests += 1
            series.seconds += seconds
            series.buckets[at] += 1

    def value(self, model: str, method: str, status: str) -> int:
        """qgnn_requests_total of these labels (0 when never recorded)."""
        found = self._series.get((model, method, status))
        return 0 if found is None else found.requests

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily("qgnn_request_duration_seconds", _DURATION_HELP,
                                      labels=_REQUEST_LABELS),
                CounterMetricFamily("qgnn_requests", _REQUESTS_HELP, labels=_REQUEST_LABELS),
                CounterMetricFamily("qgnn_request_errors", _ERRORS_HELP,
                                    labels=("model", "method", "code"))]

    def collect(self) -> list[Metric]:
        duration, requests, errors = self.describe()
        with self._lock:
            rows = [(s.labels, s.requests, s.seconds, list(s.buckets))
                    for s in self._series.values()]
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for labels, count, seconds, buckets in rows:
            cumulative, running = [], 0
            for le, n in zip(les, buckets, strict=True):
                running += n
                cumulative.append((le, running))
            duration.add_metric(labels, cumulative, seconds)
            requests.add_metric(labels, count)
            if labels[2] != "OK":
                errors.add_metric(labels, count)
        return [duration, requests, errors]


@dataclass(frozen=True)
class ServingMetrics:
    """All serving metrics, registered on one registry (the server's, or a test's)."""

    registry: CollectorRegistry
    # qgnn_request_duration_seconds, qgnn_requests_total, qgnn_request_errors_total
    requests: RequestMetrics
    inflight: Gauge
    queue_duration: Histogram
    compute_duration: Histogram
    batch_size: Histogram
    subgraph_nodes: Histogram
    subgraph_edges: Histogram
    model_load_duration: Histogram
    model_load_failures: Counter
    model_info: Gauge
    model_ready: Gauge
    queue_depth: Gauge
    shed_requests: Counter
    # -- rejections (issue 17): see REJECTION_REASONS and reject() below ----------------------
    requests_rejected: Counter
    # Admission control (runtime/admission.py, runtime/batching.py): why requests were shed
    # before any work, and the bytes held by accepted ones.
    requests_shed: Counter
    inflight_bytes: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ServingMetrics:
        """Declares every metric on ``registry`` (a fresh one when None)."""
        r = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=r,
            requests=RequestMetrics(r, LATENCY_BUCKETS),
            inflight=Gauge(
                "qgnn_inflight_requests", "RPCs being handled right now.", ("model",),
                registry=r),
            queue_duration=Histogram(
                "qgnn_queue_duration_seconds", "Time a request waited in the batching queue.",
                ("model",), buckets=LATENCY_BUCKETS, registry=r),
            compute_duration=Histogram(
                "qgnn_compute_duration_seconds",
                "Time spent computing, by stage ('model' is one whole backend call; backends "
                "may report finer stages).",
                ("model", "stage"), buckets=LATENCY_BUCKETS, registry=r),
            batch_size=Histogram(
                "qgnn_batch_size", "Ids (rows) per model call after dynamic batching.",
                ("model",), buckets=BATCH_BUCKETS, registry=r),
            subgraph_nodes=Histogram(
                "qgnn_subgraph_nodes", "Nodes in the k-hop subgraph a model call computed on.",
                ("model",), buckets=SUBGRAPH_BUCKETS, registry=r),
            subgraph_edges=Histogram(
                "qgnn_subgraph_edges", "Edges in the k-hop subgraph a model call computed on.",
                ("model",), buckets=SUBGRAPH_BUCKETS, registry=r),
            model_load_duration=Histogram(
                "qgnn_model_load_duration_seconds",
                "Time to verify a bundle and bring its model up.", ("model",),
                buckets=LOAD_BUCKETS, registry=r),
            model_load_failures=Counter(
                "qgnn_model_load_failures_total",
                "Bundle loads or reloads that failed (the previous version keeps serving).",
                ("model",), registry=r),
            model_info=Gauge(
                "qgnn_model_info", "1 for each loaded model version; isa is the compiled "
                "kernels' ISA level it runs at ('portable': stock onnxruntime).",
                ("model", "version", "task", "quant", "isa"), registry=r),
            model_ready=Gauge(
                "qgnn_model_ready", "1 while a model version serves, 0 while it loads, unloads "
                "or failed.", ("model", "version"), registry=r),
            queue_depth=Gauge(
                "qgnn_queue_depth", "Requests waiting in the batching queue.", ("model",),
                registry=r),
            shed_requests=Counter(
                "qgnn_shed_requests_total",
                "Requests refused with RESOURCE_EXHAUSTED because the queue was full.",
                ("model",), registry=r),
            requests_rejected=Counter(
                "qgnn_requests_rejected_total",
                "Requests refused before or instead of an answer, by reason (REJECTION_REASONS "
                "in qgnn.runtime.metrics), including those gRPC refuses before qgnn sees them.",
                ("method", "reason"), registry=r),
            requests_shed=Counter(
                "qgnn_requests_shed_total",
                "Requests shed before any work by admission control, by reason: "
                "inflight_bytes, inflight_requests, queue_time (could not be answered within "
                "the deadline or --max-queue-ms), queue_full (--max-queue-size), deadline "
                "(already past), shutdown.",
                ("reason",), registry=r),
            inflight_bytes=Gauge(
                "qgnn_inflight_bytes",
                "Payload and estimated work bytes held by accepted requests "
                "(--max-inflight-bytes bounds it).", registry=r),
        )

    def reject(self, reason: str, method: str = "") -> None:
        """Counts one refused request. ``method`` is the RPC name where qgnn knows it ('' for
        refusals before routing, e.g. an unknown method, whose name a client chooses and so
        must never become a label value)."""
        self.requests_rejected.labels(method, reason).inc()


class MetricsObserver:
    """What a backend reports about its own work, bound to one model name.

    Given to backend loaders in :class:`qgnn.runtime.dataplane.BackendOptions`, so a backend
    records subgraph sizes and per-stage times without knowing about Prometheus.
    """

    def __init__(self, metrics: ServingMetrics | None, model: str) -> None:
        self._metrics = metrics
        self._model = model
        self._muted = False

    @contextlib.contextmanager
    def muted(self) -> Iterator[None]:
        """Reports nothing inside the block: the load check's trial request is no traffic."""
        self._muted = True
        try:
            yield
        finally:
            self._muted = False

    def subgraph(self, nodes: int, edges: int) -> None:
        """One model call computed on a subgraph of ``nodes`` nodes and ``edges`` edges."""
        if self._metrics is not None and not self._muted:
            self._metrics.subgraph_nodes.labels(self._model).observe(nodes)
            self._metrics.subgraph_edges.labels(self._model).observe(edges)

    def stage(self, stage: str, seconds: float) -> None:
        """A stage of a model call (e.g. 'subgraph', 'onnx', 'topk') took ``seconds``."""
        if self._metrics is not None and not self._muted:
            self._metrics.compute_duration.labels(self._model, stage).observe(seconds)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a line
        del format, args


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class MetricsHttpServer:
    """Prometheus text exposition on ``http://HOST:PORT/metrics`` in a daemon thread (a WSGI
    server polling for shutdown every 50 ms, so that stopping a server is quick)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        self._httpd = make_server(host, port, make_wsgi_app(registry), server_class,
                                  handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="qgnn-metrics", daemon=True)
        self._thread.start()
        self._closed = threading.Event()

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        return int(self._httpd.server_port)

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
