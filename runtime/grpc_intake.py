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

This is the one place qgnn uses grpcio internals. :func:`install` checks that they are there;
where they differ (another grpcio) nothing is wrapped and every call takes the ordinary path,
refused on a thread with the same status (slower under a flood, never wrong).
"""

from __future__ import annotations

import threading
from typing import Any

try:
    from grpc import _server as _grpc_server
except ImportError:  # pragma: no cover - a grpcio without the module
    _grpc_server = None  # type: ignore[assignment]

_HAND_OVER = getattr(_grpc_server, "_handle_with_method_handler", None)
_REJECT = getattr(_grpc_server, "_reject_rpc", None)
_LOCK = threading.Lock()


def supported() -> bool:
    """Whether this grpcio has the internals :func:`install` wraps."""
    return callable(_HAND_OVER) and callable(_REJECT)


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
    return _HAND_OVER(rpc_event, state, method_handler, thread_pool)


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
