"""``qgnn serve``: the gRPC server process.

One port serves qgnn.v1 (GraphInference + ModelAdmin), KServe v2, grpc.health.v1 and server
reflection; Prometheus metrics have their own HTTP port. Two front ends (``--grpc-server``):
``sync``, where requests run on a thread pool (one thread per RPC in flight, which mostly waits
on its model's batcher), and ``aio`` (runtime/aio_front.py), where an event loop runs them and
they suspend while their model computes. Each model version's batcher computes on its own
worker thread, and numpy/onnxruntime release the GIL there.

Life cycle: :meth:`QgnnServer.start` binds both ports, answers health with NOT_SERVING while it
loads the models, then turns SERVING. :meth:`QgnnServer.stop` (SIGTERM) turns health
NOT_SERVING, answers new calls UNAVAILABLE, lets accepted calls finish within the grace period,
then closes the models.

gRPC's own limits sit above qgnn's admission (runtime/admission.py), so qgnn refuses first and
counts why: the thread pool has :data:`_RESERVE` more threads than qgnn's request budget (the
reserve serves health and reflection, which skip admission); calls waiting for a thread are
timed (:class:`TimedExecutor`) and shed by qgnn when their wait passes ``--max-queue-ms`` or
their deadline; ``maximum_concurrent_rpcs`` is a backstop far above that;
gRPC's receive limit is twice ``--max-message-bytes``, so a request over the limit but under
twice it reaches qgnn's count (beyond that gRPC refuses it unread, the memory guard); HTTP/2's
``max_concurrent_streams`` stays unlimited, since a stream refused there (REFUSED_STREAM) reaches
the client as UNAVAILABLE and never reaches qgnn.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from prometheus_client import CollectorRegistry
from qgnn.runtime import kernels
from qgnn.runtime.admission import Admission
from qgnn.runtime.aio_front import AioInterceptor, AioServer
from qgnn.runtime.backend_loaders import import_backends
from qgnn.runtime.config import ServeConfig
from qgnn.runtime.dataplane import DataPlane
from qgnn.runtime.interceptors import ServingInterceptor, TimedExecutor, read_token
from qgnn.runtime.messages import Limits
from qgnn.runtime.metrics import MetricsHttpServer, ServingMetrics
from qgnn.runtime.model_entry import RepositoryOptions
from qgnn.runtime.proto_gen.inference import POOL
from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve
from qgnn.runtime.proto_gen.inference import grpc_service_pb2_grpc as kserve_grpc
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc
from qgnn.runtime.repository import ModelRepository
from qgnn.runtime.service.admin import ModelAdminService
from qgnn.runtime.service.health import HealthState
from qgnn.runtime.service.kserve_v2 import KServeService
from qgnn.runtime.service.qgnn_v1 import GraphInferenceService

log = logging.getLogger("qgnn.runtime.server")

# RPC threads beyond --max-inflight-requests, which qgnn's admission never hands out: health
# and reflection (which skip admission) still get a thread when qgnn sheds, and gRPC's own
# limit is never the one hit.
_RESERVE = 16
# After SIGTERM and once the accepted calls are done, how long qgnn keeps taking new calls
# (health NOT_SERVING) before gRPC stops accepting streams; see QgnnServer.stop.
_LINGER_S = 0.5
# gRPC's own limit on calls taken (running or queued for a thread): a backstop far above what
# qgnn's time-based shedding lets queue.
_BACKSTOP_FACTOR = 16
# Calls gRPC core holds for the server before Python takes them (the sync server takes one at
# a time, on its polling thread). Past grpc's default of 1,000 such calls it drops new ones at
# random, and past 3,000 all of them, by cancelling them unseen: the client gets CANCELLED
# within a millisecond and qgnn never hears of the call (issue 17's overload CANCELLED; see
# docs/serving.md). With this limit instead, a waiting call stays until qgnn takes it (and
# sheds it, counted) or its deadline passes (DEADLINE_EXCEEDED, counted when qgnn takes it).
# Each waiting call holds its call state and received bytes in gRPC core: this bounds their
# number (beyond it core cancels again).
_MAX_PENDING_CALLS = 16384
_POOL_LOCK = threading.Lock()


def reflection_service_names() -> list[str]:
    """Fully qualified names of every service on the port, for server reflection."""
    return [pb.DESCRIPTOR.services_by_name["GraphInference"].full_name,
            pb.DESCRIPTOR.services_by_name["ModelAdmin"].full_name,
            kserve.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME]


def _reflection_pool() -> object:
    """The KServe stubs' private descriptor pool with qgnn.v1, health and reflection added, so
    reflection can describe all services (docs/api.md: the pool keeps KServe's ``inference.*``
    names from clashing with tritonclient's in the default pool)."""
    with _POOL_LOCK:
        for module in (pb, health_pb2, reflection_pb2):
            try:
                POOL.FindFileByName(module.DESCRIPTOR.name)
            except KeyError:
                POOL.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return POOL


def _read(path: Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def server_credentials(cfg: ServeConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from the config (None: plaintext); mutual TLS with a client CA."""
    if cfg.tls_cert is None:
        return None
    client_ca = _read(cfg.tls_client_ca)
    return grpc.ssl_server_credentials([(_read(cfg.tls_key), _read(cfg.tls_cert))],
                                       root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def serving_isa(config: ServeConfig) -> str:
    """The ISA level the compiled kernels will run at ('portable': stock onnxruntime). An --isa
    or $QGNN_ISA this host cannot run fails here, at start-up, not on each model load."""
    if config.portable:
        return "portable"
    if config.isa:
        return kernels.resolve_level(config.isa, "--isa")
    return kernels.default_level() if kernels.available() else "portable"


class QgnnServer:
    """The whole server for one config; :meth:`start` and :meth:`stop` (or a ``with`` block)."""

    def __init__(self, config: ServeConfig, *, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.isa = serving_isa(config)
        import_backends()
        self.metrics = ServingMetrics.create(registry)
        self.repository = ModelRepository(config.path, metrics=self.metrics, options=(
            RepositoryOptions(max_batch_size=config.max_batch_size,
                              max_queue_delay_s=config.max_queue_delay_ms / 1e3,
                              max_queue_size=config.max_queue_size, threads=config.threads,
                              portable=config.portable, drain_timeout_s=config.grace_period_s,
                              isa=config.isa or None, precompute=config.precompute,
                              max_queue_s=config.max_queue_ms / 1e3)))
        self.plane = DataPlane(self.repository, Limits(config.max_ids_per_request))
        if config.workers > 1:
            self.plane.update_refusal = (
                f"this server runs {config.workers} worker processes (--workers), each with "
                f"its own copy of the graph: an update would reach one of them only; serve "
                f"graphs that take updates with --workers 1")
        self.health = HealthState(self.repository)
        token = read_token(config.auth_token_file) if config.auth_token_file else None
        self.pool_size = config.max_inflight_requests + _RESERVE
        self.admission = Admission(config.max_inflight_bytes, config.max_inflight_requests,
                                   self.metrics, max_queue_s=config.max_queue_ms / 1e3)
        self.interceptor = ServingInterceptor(self.metrics, token=token,
                                              known_model=self.repository.knows,
                                              admission=self.admission,
                                              max_message_bytes=config.max_message_bytes)
        self._credentials = server_credentials(config)
        self._grpc: grpc.Server | None = None
        self.executor: TimedExecutor | None = None  # the RPC thread pool, once built
        self._aio: AioServer | None = None
        self._metrics_http: MetricsHttpServer | None = None
        self.grpc_port = 0
        self.metrics_port = 0
        self._stopped = threading.Event()

    def _options(self) -> list[tuple[str, int]]:
        size = self.config.max_message_bytes
        return [("grpc.max_receive_message_length", min(2 * size, 2**31 - 1)),
                ("grpc.max_send_message_length", size),
                ("grpc.server.max_pending_requests", _MAX_PENDING_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", _MAX_PENDING_CALLS),
                ("grpc.so_reuseport", 1 if self.config.workers > 1 else 0)]

    def _build(self) -> grpc.Server:
        """The thread-pool server (``--grpc-server sync``)."""
        workers = self.pool_size
        executor = TimedExecutor(max_workers=workers, thread_name_prefix="qgnn-rpc",
                                 on_dropped=self.interceptor.record_dropped,
                                 intake=self.interceptor.refuse_at_intake)
        self.executor = executor
        self.interceptor.backstop = (executor, workers * _BACKSTOP_FACTOR)
        server = grpc.server(
            executor,
            interceptors=[self.interceptor],
            maximum_concurrent_rpcs=workers * _BACKSTOP_FACTOR,
            options=self._options())
        self._add_services(server)
        return server

    def _build_aio(self) -> grpc.aio.Server:
        """The asyncio server (``--grpc-server aio``, runtime/aio_front.py), built on its
        loop. No gRPC concurrency limit: every call reaches qgnn's admission at arrival, whose
        request budget (the pool less the reserve) is the limit."""
        executor = TimedExecutor(max_workers=self.pool_size, thread_name_prefix="qgnn-rpc")
        front = AioInterceptor(self.interceptor, executor)
        server = grpc.aio.server(executor, interceptors=[front], options=self._options())
        self._add_services(server)
        return server

    def _add_services(self, server: grpc.Server | grpc.aio.Server) -> None:
        """Registers every service on ``server`` and binds the gRPC port."""
        pb_grpc.add_GraphInferenceServicer_to_server(GraphInferenceService(self.plane), server)
        pb_grpc.add_ModelAdminServicer_to_server(ModelAdminService(self.plane), server)
        kserve_grpc.add_GRPCInferenceServiceServicer_to_server(
            KServeService(self.plane, serving=lambda: not self.interceptor.closing.is_set()),
            server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        reflection.enable_server_reflection(reflection_service_names(), server,
                                            pool=_reflection_pool())
        address = f"{self.config.host}:{self.config.grpc_port}"
        try:
            if self._credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, self._credentials)
        except RuntimeError:
            port = 0
        if port == 0:
            raise ValueError(f"--grpc-port: cannot listen on {address} (in use, or not an "
                             f"address of this host)")
        self.grpc_port = port

    def _start_grpc(self) -> None:
        if self.config.grpc_server == "aio":
            self._aio = AioServer()
            try:
                self._aio.build(self._build_aio)
                self._aio.start()
            except BaseException:
                self._aio.close()
                self._aio = None
                raise
        else:
            self._grpc = self._build()
            self._grpc.start()

    def start(self) -> QgnnServer:
        """Binds, starts, loads the models (health NOT_SERVING meanwhile), then serves. A
        single-bundle PATH that fails to load raises (the server stops again).

        A worker of ``--workers N`` loads first and binds after: the kernel hands each new
        connection on the shared port (SO_REUSEPORT) to any listening worker, so a worker that
        listened while loading would answer UNAVAILABLE to callers its loaded peers could serve
        (seen by bench_serving's probe at start-up). Until it binds, its peers take every
        connection."""
        try:
            self._metrics_http = MetricsHttpServer(self.metrics.registry, self.config.host,
                                                   self.config.metrics_port)
        except OSError as exc:
            raise ValueError(f"--metrics-port: cannot listen on {self.config.host}:"
                             f"{self.config.metrics_port} ({exc.strerror or exc})") from None
        self.metrics_port = self._metrics_http.port
        try:
            if self.config.workers > 1:
                self.repository.scan()
            self._start_grpc()
            if self.config.workers <= 1:
                self.repository.scan()
            self.repository.start_polling(self.config.poll_interval_s)
            self.health.started()
        except BaseException:
            self.stop(grace=0)
            raise
        if not self.repository.is_serving():
            log.warning("no model is serving; health stays NOT_SERVING until one loads",
                        extra={"path": str(self.config.path)})
        return self

    def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: health NOT_SERVING, new calls UNAVAILABLE, accepted calls finish
        (up to ``grace`` seconds, default the config's grace period), models closed."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_period_s if grace is None else grace
        end = time.monotonic() + grace
        self.health.shutdown()
        self.interceptor.closing.set()  # from here new calls are UNAVAILABLE
        self.repository.stop_polling()
        if self._grpc is not None or self._aio is not None:
            # Why this order: gRPC's own stop() cancels (CANCELLED) every call that reached the
            # transport but no handler yet, and every call still running after the grace.
            # So accepted calls finish first, with gRPC running. Calls arriving meanwhile
            # are held in their handler (a closed-loop client then has nothing else in
            # flight), gRPC stops taking streams (GOAWAY; the port closes), and only then are
            # the held calls answered UNAVAILABLE: none is pending in the transport when it
            # stops, and a client's next call finds the port closed, also UNAVAILABLE.
            self.interceptor.hold_limit_s = max(grace, 0.0)
            if not self.interceptor.drain(max(end - time.monotonic(), 0.0)):
                log.warning("grace period (%g s) over with calls still running: they are "
                            "cancelled", grace)
            time.sleep(min(_LINGER_S, max(end - time.monotonic(), 0.0)))
            left = max(end - time.monotonic(), 0.1)
            if self._aio is not None:
                stopping = self._aio.stop(left)
                self.interceptor.released.set()
                stopping.result()
                self._aio.close()
            else:
                stopped = self._grpc.stop(left)
                self.interceptor.released.set()
                stopped.wait()
        self.repository.close()
        if self._metrics_http is not None:
            self._metrics_http.close()

    def __enter__(self) -> QgnnServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)


def serve_main(config: ServeConfig, *, worker: bool = False) -> int:
    """Runs a server until SIGTERM or SIGINT, then shuts down gracefully; exit code 0. With
    ``--workers N`` > 1 it supervises N worker processes instead (runtime/workers.py)."""
    if config.path is None:
        raise ValueError("qgnn serve needs PATH: a bundle or a model repository directory "
                         "(argument, $QGNN_PATH or 'path' in the config file)")
    if config.workers > 1 and not worker:
        from qgnn.runtime.workers import run_workers

        print("qgnn serve: config " + json.dumps(config.describe(), sort_keys=True), flush=True)
        return run_workers(config)
    print("qgnn serve: config " + json.dumps(config.describe(), sort_keys=True), flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        log.warning("signal %s: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server = QgnnServer(config).start()
        models = ", ".join(f"{e.name} v{e.version} ({e.state.value.lower()})"
                           for e in server.repository.entries()) or "none"
        print(f"qgnn serve: serving grpc={config.host}:{server.grpc_port} "
              f"metrics=http://{config.host}:{server.metrics_port}/metrics isa={server.isa} "
              f"models={models}",
              flush=True)
        while not stop.wait(1.0):
            pass
        print(f"qgnn serve: shutting down (grace {config.grace_period_s:g} s)", flush=True)
        server.stop()
        print("qgnn serve: stopped", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stdout.flush()
    return 0
