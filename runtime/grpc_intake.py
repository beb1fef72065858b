"""Refusing a call on gRPC's polling thread, the way gRPC refuses calls over its own limit.

Why: under a flood most calls are refused. On the thread-pool server a refusal that runs on a
pool thread costs a hand-off to the thread, the request message back to it and a status batch;
a refusal sent on the polling thread after gRPC has set the call up for a thread still costs
two batches. gRPC's own concurrency limit refuses with one batch and nothing else, and only
that kept up with issue 17's 4x flood on two cores: every call taken, none expired in gRPC's
queue, OK answers in tens of milliseconds rather than most of their deadline (docs/serving.md,
"Refusing at intake", has the runs). gRPC's limit itself cannot be qgnn's admission: it
counts every call alike, so under load it would refuse the health checks that keep a pod
alive.

So :func:`install` wraps ``grpc._server._handle_with_method_handler``, the step where gRPC
hands a call it has found a handler for to the server's thread pool: for a qgnn method
(the interceptor marks its handlers ``qgnn_rpc``) on a pool that asks
(:class:`~qgnn.runtime.interceptors.TimedExecutor` with ``intake``), the pool's ``intake``
decides, and a refusal goes out as gRPC's own does (``_reject_rpc``: initial metadata, status
and the close in one batch), with qgnn's status and message. Other servers and methods
(health, reflection) pass through unchanged.

The same wrapper also takes a qgnn unary call that is not refused differently: it asks for
the request on the polling thread and hands the call to a thread once the request is parsed
(:func:`_receive_then_hand_over`), instead of handing it over at once to a thread that then
sleeps until the polling thread has the request. One wake-up less per call: 11% less server
CPU per one-id precomputed lookup in an interleaved A/B (docs/serving.md).

This is the one place qgnn uses grpcio internals. :func:`install` checks that they are there;
where they differ (another grpcio) nothing is wrapped and every call takes the ordinary path,
refused on a thread with the same status (slower under a flood, never wrong).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

try:
    from grpc import _server as _grpc_server
except ImportError:  # pragma: no cover - a grpcio without the module
    _grpc_server = None  # type: ignore[assignment]

_HAND_OVER = getattr(_grpc_server, "_handle_with_method_handler", None)
_REJECT = getattr(_grpc_server, "_reject_rpc", None)
# what receiving the request before the hand-over (:func:`_receive_then_hand_over`) uses
_RECEIVE_FIRST = ("_receive_close_on_server", "_serialized_request", "_abort",
                  "_possibly_finish_call", "_is_rpc_state_active", "_unary_response_in_pool",
                  "_select_thread_pool_for_behavior", "_RECEIVE_CLOSE_ON_SERVER_TOKEN",
                  "_RECEIVE_MESSAGE_TOKEN", "_OPEN", "_CLOSED", "_CANCELLED", "_common",
                  "cygrpc")
_LOCK = threading.Lock()
RECEIVE_FIRST = True  # receive a qgnn unary call's request before its hand-over (measured)


def supported() -> bool:
    """Whether this grpcio has the internals :func:`install` wraps."""
    return callable(_HAND_OVER) and callable(_REJECT) and \
        all(hasattr(_grpc_server, name) for name in _RECEIVE_FIRST)


def _hand_over(rpc_event: Any, state: Any, method_handler: Any, thread_pool: Any) -> Any:
    """gRPC's hand-over of a call to ``thread_pool``, or qgnn's refusal of it (None: no
    thread, as after gRPC's own refusal)."""
    intake = getattr(thread_pool, "intake", None)
    if intake is not None:
        rpc = getattr(method_handler.unary_unary, "qgnn_rpc", None)
        if rpc is not None:
            refusal = intake(rpc, rpc_event.call_details.deadline, thread_pool.active)
            if refusal is not None:
                code, details = refusal
                _REJECT(rpc_event, state, code.value[0], details.encode("utf-8", "replace"))
                thread_pool.refused_at_intake += 1
                return None
            if RECEIVE_FIRST and not method_handler.request_streaming and \
                    not method_handler.response_streaming:
                return _receive_then_hand_over(rpc_event, state, method_handler, thread_pool)
    return _HAND_OVER(rpc_event, state, method_handler, thread_pool)


def _receive_then_hand_over(rpc_event: Any, state: Any, method_handler: Any,
                            default_pool: Any) -> Future:
    """gRPC's unary hand-over with the request received first: grpcio hands the call to a
    thread at once, and the thread asks for the request message and sleeps until the polling
    thread has it (two wake-ups and GIL switches per call). Here the polling thread asks for
    it, and the call goes to a thread once it is parsed, which then runs to its answer
    without waiting. The returned future (what gRPC counts as an active call) completes when
    the thread is done, or at once when the request never comes."""
    g = _grpc_server
    behaviour = method_handler.unary_unary
    parse = method_handler.request_deserializer
    pool = g._select_thread_pool_for_behavior(behaviour, default_pool)
    done: Future = Future()
    done.set_running_or_notify_cancel()

    def finished(_: Future) -> None:
        done.set_result(None)

    def receive_message(event: Any) -> Any:
        data = g._serialized_request(event)
        request = None if data is None else g._common.deserialize(data, parse)
        with state.condition:
            if data is None:  # the client closed or cancelled without a request
                if state.client is g._OPEN:
                    state.client = g._CLOSED
                if state.client is g._CLOSED and g._is_rpc_state_active(state):
                    g._abort(state, rpc_event.call, g.cygrpc.StatusCode.unimplemented,
                             b"a unary method requires exactly one request message")
                done.set_result(None)
            elif request is None:
                g._abort(state, rpc_event.call, g.cygrpc.StatusCode.internal,
                         b"Exception deserializing request!")
                done.set_result(None)
            else:
                def argument() -> Any:
                    with state.condition:
                        return request if g._is_rpc_state_active(state) else None

                pool.submit(state.context.run, g._unary_response_in_pool, rpc_event, state,
                            behaviour, argument, parse, method_handler.response_serializer
                            ).add_done_callback(finished)
            state.condition.notify_all()
            return g._possibly_finish_call(state, g._RECEIVE_MESSAGE_TOKEN)

    with state.condition:
        rpc_event.call.start_server_batch(
            (g.cygrpc.ReceiveCloseOnServerOperation(0),), g._receive_close_on_server(state))
        state.due.add(g._RECEIVE_CLOSE_ON_SERVER_TOKEN)
        rpc_event.call.start_server_batch((g.cygrpc.ReceiveMessageOperation(0),),
                                          receive_message)
        state.due.add(g._RECEIVE_MESSAGE_TOKEN)
    return done


def install() -> bool:
    """Wraps gRPC's hand-over once per process (idempotent); False where unsupported."""
    if not supported():
        return False
    with _LOCK:
        if _grpc_server._handle_with_method_handler is not _hand_over:
            _grpc_server._handle_with_method_handler = _hand_over
    return True


def installed() -> bool:
    """Whether calls are refused at intake in this process."""
    return supported() and _grpc_server._handle_with_method_handler is _hand_over
