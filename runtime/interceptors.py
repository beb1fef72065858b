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

Admission (runtime/admission.py) happens here too, before the servicer runs: a call in the
shutdown window is UNAVAILABLE, one whose deadline already passed DEADLINE_EXCEEDED, one larger
than ``--max-message-bytes`` or beyond the byte / request budget RESOURCE_EXHAUSTED; each is
counted in ``qgnn_requests_shed_total`` by reason.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import operator
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
from qgnn.runtime import grpc_intake
from qgnn.runtime.admission import Admission, Ticket, bind, shed
from qgnn.runtime.errors import (
    BundleError,
    DeadlineExceededError,
    InvalidRequestError,
    LimitExceededError,
    ModelUnavailableError,
    OverloadedError,
    ServingError,
    UnauthenticatedError,
)
from qgnn.runtime.metrics import RequestSeries, ServingMetrics
from qgnn.runtime.rejections import client_gone, reason_for
from qgnn.runtime.stepwise import Steps, drive, steps_of

log = logging.getLogger("qgnn.runtime.server")

# Services reachable without a token and during shutdown (probes must see NOT_SERVING).
EXEMPT_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                   "grpc.reflection.v1.ServerReflection")


class _Queued(threading.local):
    """Per RPC thread: ``at``, when gRPC handed the running call to the executor (None outside
    one); ``reached``, whether that call reached qgnn's handler (see TimedExecutor). Class
    defaults, so reading them never raises and catches AttributeError (every call reads)."""

    at: float | None = None
    reached: bool = False


_QUEUED = _Queued()


class _Admitted:
    """A parsed request with the admission ticket taken for it while parsing (gRPC may parse
    on another thread than the handler's, so the ticket travels with the request). A ticket
    never claimed by a handler (gRPC dropped the call in between) is returned when this
    wrapper is freed."""

    __slots__ = ("message", "ticket")

    def __init__(self, message: Any, ticket: Ticket) -> None:
        self.message = message
        self.ticket: Ticket | None = ticket

    def claim(self) -> tuple[Any, Ticket | None]:
        ticket, self.ticket = self.ticket, None
        return self.message, ticket

    def __del__(self) -> None:
        if self.ticket is not None:
            self.ticket.owner.leave(self.ticket)


class TimedExecutor(ThreadPoolExecutor):
    """The RPC thread pool, recording when each call was handed over, so the interceptor can
    shed a call that waited too long for a thread (its wait is invisible otherwise).

    It also sees the calls gRPC hands over but then drops before qgnn's handler runs: gRPC
    reads the request on the pool's thread, and a call whose client cancelled or whose
    deadline passed while it waited (in gRPC's queue of calls not yet taken, or in this pool's)
    ends there without a status from qgnn. ``on_dropped(rpc, reason)`` counts each such call
    of a qgnn method (``reason``: ``deadline_exceeded`` or ``cancelled``), so every call that
    reaches the process is in the metrics, answered or not."""

    def __init__(self, *args: Any, on_dropped: Callable[[str, str], None] | None = None,
                 intake: Callable[[str, float | None, int], Refusal | None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_dropped = on_dropped
        # intake(rpc, deadline, calls handed over): the status to refuse a qgnn call with on
        # gRPC's polling thread, before it gets a thread (runtime/grpc_intake.py), or None
        self.intake = intake if intake is not None and grpc_intake.install() else None
        self.refused_at_intake = 0
        # calls handed over and not finished: what gRPC compares with maximum_concurrent_rpcs
        self.active = 0
        self._active_lock = threading.Lock()

    def _finished(self, future: Future) -> None:
        with self._active_lock:
            self.active -= 1

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        queued = time.monotonic()
        rpc, deadline = _call_of(args) if self.on_dropped is not None else (None, None)
        with self._active_lock:
            self.active += 1

        def run() -> Any:
            _QUEUED.at = queued
            _QUEUED.reached = False
            try:
                return fn(*args, **kwargs)
            finally:
                _QUEUED.at = None
                if rpc is not None and not _QUEUED.reached:
                    late = deadline is not None and time.time() >= deadline
                    self.on_dropped(rpc, "deadline_exceeded" if late else "cancelled")

        future = super().submit(run)
        future.add_done_callback(self._finished)  # before gRPC's own, which it registers next
        return future


Refusal = tuple[grpc.StatusCode, str]


def _call_of(args: tuple[Any, ...]) -> tuple[str | None, float | None]:
    """(qgnn RPC name, absolute deadline) of a call gRPC submits to the pool: its handler is
    one of the arguments (marked ``qgnn_rpc`` by the interceptor) and so is the call event
    (``call_details.deadline``, seconds since the epoch); (None, None) for other work."""
    rpc = deadline = None
    for arg in args:
        if rpc is None:
            rpc = getattr(arg, "qgnn_rpc", None)
        details = getattr(arg, "call_details", None)
        if details is not None:
            deadline = getattr(details, "deadline", None)
    return rpc, deadline


def thread_wait_s() -> float:
    """How long the current call waited for its thread (0 outside a TimedExecutor)."""
    at = _QUEUED.at
    return 0.0 if at is None else time.monotonic() - at


class CallStatus(Exception):
    """The non-OK status a call is answered with (raised by :meth:`ServingInterceptor.run`):
    the front end sends it, ``context.abort`` on the thread-pool server, ``await
    context.abort`` on the asyncio one (runtime/aio_front.py)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class _Malformed:
    """Stands in for a request whose bytes did not parse, so the error is INVALID_ARGUMENT
    (grpc would answer a bare INTERNAL 'Exception deserializing request!')."""

    def __init__(self, message_type: str, error: Exception) -> None:
        self.message_type = message_type
        self.error = error


class _Refused:
    """Stands in for a request refused from its size alone, before it was parsed."""

    def __init__(self, error: ServingError) -> None:
        self.error = error


def unwrap(request: Any) -> Any:
    """The parsed message of a request as a handler receives it (None when it was refused
    from its size or did not parse)."""
    if type(request) is _Admitted:
        request = request.message
    kind = type(request)
    return None if kind is _Refused or kind is _Malformed else request


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


def _model_of(request: Any) -> str:
    for attr in ("model_name", "name"):
        value = getattr(request, attr, None)
        if isinstance(value, str):
            return value
    model = getattr(request, "model", None)
    name = getattr(model, "name", None)
    return name if isinstance(name, str) else ""


def _reader_for(message_type: type) -> Callable[[Any], str]:
    """How to read the model name from messages of one protobuf type: which field holds it is
    fixed by the type, so it is looked up once (every call reads it)."""
    fields = message_type.DESCRIPTOR.fields_by_name
    for attr in ("model_name", "name"):
        field = fields.get(attr)
        if field is not None and field.type == field.TYPE_STRING and not _repeated(field):
            return operator.attrgetter(attr)
    model = fields.get("model")
    if model is not None and model.message_type is not None and not _repeated(model):
        name = model.message_type.fields_by_name.get("name")
        if name is not None and name.type == name.TYPE_STRING and not _repeated(name):
            return operator.attrgetter("model.name")
    return lambda request: ""


def _repeated(field: Any) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5; older ones only have label
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


_READERS: dict[type, Callable[[Any], str]] = {}


def _serialized(data: bytes) -> bytes:
    """The response serializer of a wrapped method: the handler already serialised."""
    return data


def request_model(request: Any) -> str:
    """The model name a request addresses ('' when none): qgnn.v1 ``model.name``, KServe
    ``model_name`` or ``name``."""
    kind = type(request)
    reader = _READERS.get(kind)
    if reader is None:
        if not hasattr(kind, "DESCRIPTOR"):  # not a protobuf message: read it field by field
            return _model_of(request)
        reader = _READERS[kind] = _reader_for(kind)
    return reader(request)


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
                 known_model: Callable[[str], bool] = lambda name: False,
                 admission: Admission | None = None, max_message_bytes: int | None = None
                 ) -> None:
        self._metrics = metrics
        self.admission = admission
        self._max_message_bytes = max_message_bytes
        self._active = 0  # calls past the shutdown gate, not yet answered
        # calls being handled, by model label (qgnn_inflight_requests reads it at scrape time)
        self._inflight_counts: dict[str, int] = {}
        self._active_lock = threading.Lock()  # both counts; drain() waits on its condition
        self._active_cond = threading.Condition(self._active_lock)
        # Set once gRPC has stopped taking new streams: calls that arrived in the shutdown
        # window wait for it before their UNAVAILABLE (see QgnnServer.stop).
        self.released = threading.Event()
        # metric children by label values; bounded: model is a loaded model's name or ''
        self._children: dict[Any, Any] = {}
        # (the RPC thread pool, gRPC's maximum_concurrent_rpcs), set by the server: calls gRPC
        # itself refuses for concurrency are counted too
        self.backstop: tuple[TimedExecutor, int] | None = None
        # method -> (gRPC's handler, qgnn's wrapper of it, RPC name) for calls that passed
        # authentication
        self._wrapped: dict[str, tuple[Any, grpc.RpcMethodHandler, str]] = {}
        self.hold_limit_s = 5.0
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
        return self.route(continuation(details), details, self._wrap)

    def route(self, handler: grpc.RpcMethodHandler | None, details: grpc.HandlerCallDetails,
              wrap: Callable[[grpc.RpcMethodHandler, str, ServingError | None],
                             grpc.RpcMethodHandler]) -> grpc.RpcMethodHandler | None:
        """The handler a call runs: gRPC's own for health, reflection and unknown methods,
        else ``wrap(handler, rpc, denied)`` (``denied``: the authentication error, if any),
        built once per method when no token is checked. Shared by both front ends; ``wrap``
        is the front end's (this class's :meth:`_wrap`, or the asyncio one's)."""
        method = details.method or ""
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler and self._token is None:
            # the usual call: a known method, no token to check (this runs for every call, on
            # gRPC's polling thread)
            if self._grpc_refuses_next():
                self._refused_by_grpc(cached[2])
            return cached[1]
        service, _, rpc = method.lstrip("/").partition("/")
        if handler is None and self._metrics is not None:
            self._metrics.reject("unimplemented")  # gRPC answers it; the name is the client's
        elif self._grpc_refuses_next():
            # gRPC refuses this call next (RESOURCE_EXHAUSTED "Concurrent RPC limit
            # exceeded!", its maximum_concurrent_rpcs) without running a handler: count it
            self._refused_by_grpc(rpc)
        if handler is None or service in EXEMPT_SERVICES or handler.unary_unary is None:
            return handler
        denied = self._authenticate(details.invocation_metadata)
        if denied is not None:
            return wrap(handler, rpc, denied)
        # the wrapped handler of an authenticated call depends on the method only: built once
        # (every call passes here, on gRPC's polling thread)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, wrap(handler, rpc, None), rpc)
        return cached[1]

    def _wrap(self, handler: grpc.RpcMethodHandler, rpc: str, denied: ServingError | None
              ) -> grpc.RpcMethodHandler:
        behaviour = handler.unary_unary
        serialize = handler.response_serializer

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            _QUEUED.reached = True
            try:
                return self.run(behaviour, request, context, rpc, denied, serialize)
            except CallStatus as status:
                context.abort(grpc.StatusCode[status.code], status.message)

        call.qgnn_rpc = rpc  # type: ignore[attr-defined]  # for TimedExecutor's count
        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=self.deserializer(handler, rpc),
            response_serializer=None if serialize is None else _serialized)

    def deserializer(self, handler: grpc.RpcMethodHandler, rpc: str
                     ) -> Callable[[bytes], Any] | None:
        """The request parser of a wrapped method: admission from the wire size first, then a
        parse whose failure is INVALID_ARGUMENT. (The answer is serialised inside the call,
        where its size is checked on the bytes, so gRPC's serializer passes them through.)"""
        return self._admitting(_safe_deserializer(handler.request_deserializer, rpc))

    def _watch_inflight(self, model: str) -> None:
        """Exposes the count of calls in flight for ``model`` as qgnn_inflight_requests, read at
        scrape time (the count is kept under the lock every call takes anyway)."""
        self._metrics.inflight.labels(model).set_function(
            lambda: self._inflight_counts.get(model, 0))
        self._children[model] = True

    def _series(self, model: str, rpc: str, code: str) -> RequestSeries:
        """The request-metrics series of these labels, looked up once per label set."""
        key = (model, rpc, code)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = self._metrics.requests.series(*key)
        return found

    def _grpc_refuses_next(self) -> bool:
        """Whether gRPC's own concurrency limit (``backstop``) refuses the call now arriving."""
        return self.backstop is not None and self.backstop[0].active >= self.backstop[1]

    def _refused_by_grpc(self, rpc: str) -> None:
        if self._metrics is not None:
            self._metrics.requests.record(self._series("", rpc, "RESOURCE_EXHAUSTED"))
            self._metrics.reject("resource_exhausted", rpc)

    def refuse_at_intake(self, rpc: str, deadline: float | None, handed: int
                         ) -> Refusal | None:
        """The status to refuse a call of ``rpc`` with as it arrives (TimedExecutor, on gRPC's
        polling thread), counted here, or None to take it: its deadline (seconds since the
        epoch) has passed, or admission would shed it anyway with ``handed`` calls on the
        RPC threads. Requests are not read yet, so the byte budget is checked later, as
        before; during shutdown the ordinary path answers (it holds the call first)."""
        if self.admission is None or self.closing.is_set():
            return None
        left = None if deadline is None else deadline - time.time()
        if left is not None and left <= 0:
            reason, code = "deadline", grpc.StatusCode.DEADLINE_EXCEEDED
            message = "the deadline had passed when the request arrived"
        else:
            refusal = self.admission.refusal_at_intake(
                handed, None if left is None or left > 1e6 else left)
            if refusal is None:
                return None
            (reason, message), code = refusal, grpc.StatusCode.RESOURCE_EXHAUSTED
        if self._metrics is not None:
            shed(self._metrics, reason)
            self._metrics.reject(code.name.lower(), rpc)
            self._metrics.requests.record(self._series("", rpc, code.name))
        return code, message

    def record_dropped(self, rpc: str, reason: str) -> None:
        """Counts a call that gRPC dropped before its handler ran (TimedExecutor): the client
        cancelled, or the deadline passed while the call waited to be taken. The client got
        ``CANCELLED`` / ``DEADLINE_EXCEEDED`` from gRPC; qgnn records that status (model '': the
        request was never read) so that every call reaching the process is in the counts."""
        if self._metrics is None:
            return
        self._metrics.requests.record(self._series("", rpc, reason.upper()))
        self._metrics.reject(reason, rpc)

    def _admitting(self, parse: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        """Wraps a deserializer so the request is admitted from its wire size before it is
        parsed: a refused request never costs the parsed copy, and the budget counts the bytes
        from the moment they are in Python."""
        if parse is None:
            return None

        def admit_then_parse(data: bytes) -> Any:
            size = len(data)
            if self._max_message_bytes is not None and size > self._max_message_bytes:
                shed(self._metrics, "message_bytes")
                return _Refused(LimitExceededError("request bytes", size,
                                                   self._max_message_bytes,
                                                   flag="--max-message-bytes"))
            if self.admission is None or self.closing.is_set():
                return parse(data)
            try:
                # the wire bytes and the parsed copy; the call arrived when gRPC queued it for
                # a thread
                ticket = self.admission.enter(2 * size, arrived=_QUEUED.at)
            except OverloadedError as exc:  # counted by the admission
                return _Refused(exc)
            return _Admitted(parse(data), ticket)

        return admit_then_parse

    def _admit(self, request: Any, context: grpc.ServicerContext, ticket: Ticket | None
               ) -> Ticket | None:
        """The call's admission ticket (None without admission), or the shedding error."""
        left = context.time_remaining() if hasattr(context, "time_remaining") else None
        if left is not None and left <= 0:
            shed(self._metrics, "deadline")
            raise DeadlineExceededError("the deadline had passed when the request arrived")
        waited = thread_wait_s()
        limit = None if self.admission is None else self.admission.max_queue_s
        if limit is not None and waited > limit:
            shed(self._metrics, "queue_time")
            raise OverloadedError(f"server overloaded: the request waited {waited * 1e3:.0f} ms "
                                  f"for a thread (--max-queue-ms {limit * 1e3:g}); retry with "
                                  f"backoff")
        if self.admission is None:
            return ticket
        left = None if left is None or left > 1e6 else left  # 1e6+: no deadline
        if ticket is None:  # not admitted while parsing (a caller without the wrapper)
            size = request.ByteSize() if hasattr(request, "ByteSize") else 0
            return self.admission.enter(2 * size, left, arrived=_QUEUED.at)
        wait = self.admission.estimated_wait_s()
        if left is not None and wait > left:
            shed(self._metrics, "queue_time")
            raise OverloadedError(f"server overloaded: about {wait * 1e3:.0f} ms of requests "
                                  f"ahead, more than the deadline left ({left * 1e3:.0f} ms); "
                                  f"retry with backoff")
        return ticket

    def _check_response(self, response: Any, size: int | None = None) -> None:
        """An answer over ``--max-message-bytes`` is refused here, named and counted (gRPC
        would refuse to send it with a bare RESOURCE_EXHAUSTED that qgnn never sees).
        ``size``: the answer's serialised size when known."""
        if self._max_message_bytes is None:
            return
        if size is None:
            if not hasattr(response, "ByteSize"):
                return
            size = response.ByteSize()
        if size > self._max_message_bytes:
            shed(self._metrics, "message_bytes")
            raise LimitExceededError("response bytes", size, self._max_message_bytes,
                                     flag="--max-message-bytes")

    def drain(self, timeout: float) -> bool:
        """After :attr:`closing` is set: waits up to ``timeout`` seconds for every accepted
        call to be answered; True when none is left."""
        with self._active_cond:
            return self._active_cond.wait_for(lambda: self._active == 0, timeout)

    def run(self, behaviour: Callable, request: Any, context: grpc.ServicerContext, rpc: str,
            denied: ServingError | None, serialize: Callable[[Any], bytes] | None = None,
            *, hold: bool = True) -> Any:
        """Runs one call on this thread (blocking while its model computes) and returns its
        answer (serialised, with ``serialize``), or raises :class:`CallStatus` with the status
        to send. See :meth:`run_steps`."""
        return drive(self.run_steps(behaviour, request, context, rpc, denied, serialize,
                                    hold=hold))

    def run_steps(self, behaviour: Callable, request: Any, context: grpc.ServicerContext,
                  rpc: str, denied: ServingError | None,
                  serialize: Callable[[Any], bytes] | None = None, *, hold: bool = True
                  ) -> Steps:
        """One call as steps (runtime/stepwise.py): the servicer's own steps when it has them
        (it then yields its waits for a batcher), else its blocking method. The call's
        duration counts from when it was handed to the RPC thread pool (its wait for a thread
        included). A call arriving in the shutdown window is held until gRPC stops taking
        streams (see QgnnServer.stop); ``hold=False`` answers it at once (an event loop must
        never wait)."""
        started = time.perf_counter() - thread_wait_s()
        ticket = None
        if type(request) is _Admitted:  # admitted while parsing; released in finally
            request, ticket = request.claim()
            bind(ticket)
        name = "" if isinstance(request, (_Malformed, _Refused)) else request_model(request)
        model = name if name and self._known_model(name) else ""
        if self._metrics is not None and model not in self._children:
            self._watch_inflight(model)
        counts = self._inflight_counts
        code, error = "OK", None
        with self._active_lock:
            counts[model] = counts.get(model, 0) + 1
            accepted = not self.closing.is_set()
            if accepted:
                self._active += 1
        try:
            try:
                if not accepted:
                    shed(self._metrics, "shutdown")
                    if hold:
                        self.released.wait(self.hold_limit_s)
                    raise ModelUnavailableError("the server is shutting down; retry (another "
                                                "replica)")
                if denied is not None:
                    raise denied
                if isinstance(request, _Refused):
                    raise request.error
                if isinstance(request, _Malformed):
                    raise InvalidRequestError("request", type(request.error).__name__,
                                              f"not a valid {request.message_type} request "
                                              f"message: {request.error}")
                ticket = self._admit(request, context, ticket)
                steps = steps_of(behaviour)
                if steps is None:
                    response = behaviour(request, context)
                else:
                    response = yield from steps(request, context)
                if serialize is None:
                    self._check_response(response)
                else:
                    response = serialize(response)
                    self._check_response(response, len(response))
            except asyncio.CancelledError:  # on the event loop: the caller went away
                code = client_gone(context) or "CANCELLED"
                raise
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
            raise CallStatus(code, message)
        finally:
            if ticket is not None and self.admission is not None:
                self.admission.leave(ticket, served=code == "OK")
            with self._active_lock:
                counts[model] -= 1
                if accepted:
                    self._active -= 1
                    if self.closing.is_set():
                        self._active_cond.notify_all()
            if self._metrics is not None:
                if code != "OK":
                    reason = reason_for(code, error)
                    if reason is not None:
                        self._metrics.reject(reason, rpc)
                self._metrics.requests.record(self._series(model, rpc, code),
                                              time.perf_counter() - started)
