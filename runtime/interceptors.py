"""The one server interceptor: bearer-token check, shutdown gate, metrics and error mapping.

Every RPC except health and reflection (which orchestrators probe without credentials) passes
through :class:`ServingInterceptor`, so servicers only translate protobuf and raise the domain
exceptions of :mod:`qgnn.runtime.errors`; the status codes are decided here, in one place:

====================================  ======================
domain error                          gRPC status
====================================  ======================
ServingError subclasses               their ``code``
BundleError (LoadModel of a bad path) INVALID_ARGUMENT
a request that does not parse         INVALID_ARGUMENT
anything else (a bug)                 INTERNAL, traceback logged
====================================  ======================

A user's mistake never surfaces as a bare INTERNAL, and no exception escapes to kill a worker.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from qgnn.runtime.errors import (
    BundleError,
    InvalidRequestError,
    ModelUnavailableError,
    ServingError,
    UnauthenticatedError,
)
from qgnn.runtime.metrics import ServingMetrics
from qgnn.runtime.rejections import client_gone, reason_for

log = logging.getLogger("qgnn.runtime.server")

# Services reachable without a token and during shutdown (probes must see NOT_SERVING).
EXEMPT_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                   "grpc.reflection.v1.ServerReflection")


class _Malformed:
    """Stands in for a request whose bytes did not parse, so the error is INVALID_ARGUMENT
    (grpc would answer a bare INTERNAL 'Exception deserializing request!')."""

    def __init__(self, message_type: str, error: Exception) -> None:
        self.message_type = message_type
        self.error = error


def _safe_deserializer(deserialize: Callable[[bytes], Any] | None, method: str
                       ) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:
            return _Malformed(method, exc)

    return parse


def request_model(request: Any) -> str:
    """The model name a request addresses ('' when none): qgnn.v1 ``model.name``, KServe
    ``model_name`` or ``name``."""
    for attr in ("model_name", "name"):
        value = getattr(request, attr, None)
        if isinstance(value, str):
            return value
    model = getattr(request, "model", None)
    name = getattr(model, "name", None)
    return name if isinstance(name, str) else ""


def read_token(path: Any) -> str:
    """The bearer token from its file (surrounding whitespace stripped); refuses an empty one."""
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"--auth-token-file {path} is empty")
    if any(c.isspace() for c in token):
        raise ValueError(f"--auth-token-file {path}: the token must not contain whitespace")
    return token


class ServingInterceptor(grpc.ServerInterceptor):
    """Authenticates, gates on shutdown, measures and maps errors of every unary RPC."""

    def __init__(self, metrics: ServingMetrics | None, *, token: str | None = None,
                 known_model: Callable[[str], bool] = lambda name: False) -> None:
        self._metrics = metrics
        self._token = None if token is None else token.encode()
        self._known_model = known_model
        self.closing = threading.Event()

    def _authenticate(self, metadata: tuple[Any, ...] | None) -> ServingError | None:
        if self._token is None:
            return None
        values = [v for k, v in (metadata or ()) if k == "authorization"]
        if not values:
            return UnauthenticatedError("missing bearer token: send the metadata "
                                   "'authorization: Bearer <token>'")
        value = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                  self._token):
            return UnauthenticatedError("invalid bearer token")
        return None

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails
                          ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        method = details.method or ""
        service, _, rpc = method.lstrip("/").partition("/")
        if handler is None and self._metrics is not None:
            self._metrics.reject("unimplemented")  # gRPC answers it; the name is the client's
        if handler is None or service in EXEMPT_SERVICES or handler.unary_unary is None:
            return handler
        denied = self._authenticate(details.invocation_metadata)
        behaviour = handler.unary_unary

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            return self._call(behaviour, request, context, rpc, denied)

        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=_safe_deserializer(handler.request_deserializer, rpc),
            response_serializer=handler.response_serializer)

    def _call(self, behaviour: Callable, request: Any, context: grpc.ServicerContext, rpc: str,
              denied: ServingError | None) -> Any:
        started = time.perf_counter()
        name = "" if isinstance(request, _Malformed) else request_model(request)
        model = name if name and self._known_model(name) else ""
        if self._metrics is not None:
            self._metrics.inflight.labels(model).inc()
        code, error = "OK", None
        try:
            try:
                if self.closing.is_set():
                    raise ModelUnavailableError("the server is shutting down; retry (another "
                                                "replica)")
                if denied is not None:
                    raise denied
                if isinstance(request, _Malformed):
                    raise InvalidRequestError("request", type(request.error).__name__,
                                              f"not a valid {request.message_type} request "
                                              f"message: {request.error}")
                response = behaviour(request, context)
            except ServingError as exc:
                code, message, error = exc.code, str(exc), exc
            except BundleError as exc:
                code, message = "INVALID_ARGUMENT", str(exc)
            except Exception as exc:
                status = context.code() if hasattr(context, "code") else None
                if status is not None and status != grpc.StatusCode.OK:
                    code = status.name  # the servicer aborted with a status itself
                    raise
                code = "INTERNAL"
                log.exception("internal error in %s", rpc, extra={"model": name})
                message = (f"internal error ({type(exc).__name__}: {exc}); this is a bug in the "
                           f"server, which logged the traceback")
            else:
                code = client_gone(context) or code  # the client left: it never sees OK
                return response
            context.abort(grpc.StatusCode[code], message)
        finally:
            if self._metrics is not None:
                m = self._metrics
                reason = reason_for(code, error)
                if reason is not None:
                    m.reject(reason, rpc)
                m.inflight.labels(model).dec()
                m.request_duration.labels(model, rpc, code).observe(time.perf_counter() - started)
                m.requests.labels(model, rpc, code).inc()
                if code != "OK":
                    m.request_errors.labels(model, rpc, code).inc()
