"""The asyncio front end (``--grpc-server aio``): the same services on a ``grpc.aio`` server.

Why: the thread-pool server (``--grpc-server sync``) takes each new call off gRPC core's queue
on one polling thread, which on a CPU-saturated process gets the GIL too rarely; under
overload calls then wait in core, unseen by qgnn's admission control, for up to their whole
deadline (docs/serving.md, "Overload latency"). Here an event loop takes every call as it
arrives and admission control (bytes in flight, queue time, deadline) runs at once. Measured
(docs/serving.md, "gRPC front ends"): on a CPU-saturated 2-core host the loop falls behind the
same way and a no-op server shows the same wait, and the loop costs more CPU per lookup, so
``sync`` stays the default; ``aio`` saves a thread per waiting call.

What runs where:

* on the loop: authentication, parsing with the byte budget (admission at arrival), calls
  refused before any work, and every prediction and embedding call (:func:`on_loop`). Their
  servicer methods are steps (runtime/stepwise.py): validation and the answer run on the
  loop, and the call is suspended, holding no thread, while its model's batcher computes on
  the batcher's own thread. A precomputed lookup never suspends;
* on the RPC thread pool (:class:`~qgnn.runtime.interceptors.TimedExecutor`): what may block
  (admin loads, listing, recommendations, graph updates), and every call in the shutdown
  window, which is held there (never on the loop) until gRPC stops taking streams;
* health (a synchronous servicer) runs on the same pool, as gRPC's migration pool.

The interceptor's logic (status mapping, metrics, admission) is the thread-pool server's own
(:meth:`ServingInterceptor.run_steps`): both front ends answer the same calls the same way.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any

import grpc
from qgnn.runtime.errors import ServingError
from qgnn.runtime.interceptors import CallStatus, ServingInterceptor, TimedExecutor, unwrap
from qgnn.runtime.stepwise import drive_async, steps_of


def on_loop(behaviour: Callable[..., Any], request: Any, denied: ServingError | None
            ) -> bool:
    """Whether a call runs on the event loop: a call refused before any work (a bad token, a
    request refused from its size or that does not parse), or one whose servicer method has
    steps (runtime/stepwise.py), which suspend while a batcher computes instead of holding a
    thread. Anything else (admin loads, listing, recommendations, graph updates) may block and
    runs on the thread pool."""
    return denied is not None or unwrap(request) is None or steps_of(behaviour) is not None


class _LoopContext:
    """The parts of an aio ServicerContext that :meth:`ServingInterceptor.run` reads, callable
    from a pool thread: time left, whether the caller still waits, and no status of its own
    (qgnn's servicers never abort themselves; the front end sends the status)."""

    __slots__ = ("_context",)

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def is_active(self) -> bool:
        return not self._context.done()


class AioInterceptor(grpc.aio.ServerInterceptor):
    """Routes each call like the thread-pool server's interceptor, with handlers that run on
    the event loop or hand the call to the RPC pool (:func:`answers_inline`)."""

    def __init__(self, core: ServingInterceptor, executor: TimedExecutor) -> None:
        self.core = core
        self.executor = executor
        # per call taken whose handler has not run yet: its task -> its RPC name
        self._unread: dict[asyncio.Task, str] = {}

    async def intercept_service(self, continuation: Callable[..., Coroutine[Any, Any, Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = self.core.route(await continuation(details), details, self._wrap)
        rpc = getattr(getattr(handler, "unary_unary", None), "qgnn_rpc", None)
        if rpc is not None:
            # gRPC runs this call's handler in the current task once its request has arrived;
            # a call whose client left before then (its deadline passed while it waited to be
            # taken, or it cancelled) ends without it, and is counted here
            task = asyncio.current_task()
            if task is not None:
                self._unread[task] = rpc
                task.add_done_callback(self._ended)
        return handler

    def _ended(self, task: asyncio.Task) -> None:
        rpc = self._unread.pop(task, None)
        if rpc is not None:  # never reached its handler: the asyncio server does not say
            self.core.record_dropped(rpc, "cancelled")  # whether by deadline or by cancel

    def _wrap(self, handler: grpc.RpcMethodHandler, rpc: str, denied: ServingError | None
              ) -> grpc.RpcMethodHandler:
        core, executor = self.core, self.executor
        behaviour = handler.unary_unary
        serialize = handler.response_serializer

        unread = self._unread

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            unread.pop(asyncio.current_task(), None)
            ctx = _LoopContext(context)
            try:
                if not core.closing.is_set() and on_loop(behaviour, request, denied):
                    return await drive_async(core.run_steps(behaviour, request, ctx, rpc, denied,
                                                            serialize, hold=False))
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(executor, core.run, behaviour, request, ctx,
                                                  rpc, denied, serialize)
            except CallStatus as status:
                await context.abort(grpc.StatusCode[status.code], status.message)

        call.qgnn_rpc = rpc  # type: ignore[attr-defined]  # see intercept_service
        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=core.deserializer(handler, rpc),
            response_serializer=None if serialize is None else (lambda data: data))


class AioServer:
    """A grpc.aio server on an event loop of its own thread, driven from synchronous code
    (QgnnServer's start and stop)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="qgnn-aio",
                                        daemon=True)
        self._thread.start()
        self.server: grpc.aio.Server | None = None

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Future:
        """Runs ``coroutine`` on the loop; its concurrent Future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def build(self, make: Callable[[], grpc.aio.Server]) -> grpc.aio.Server:
        """Builds the server on the loop (grpc.aio binds it to the running loop)."""
        async def build() -> grpc.aio.Server:
            return make()
        self.server = self.call(build()).result()
        return self.server

    def start(self) -> None:
        assert self.server is not None
        self.call(self.server.start()).result()

    def stop(self, grace: float) -> Future:
        """Stops taking streams at once and cancels what is still running after ``grace``
        seconds; the Future is done when the server has stopped."""
        assert self.server is not None
        return self.call(self.server.stop(grace))

    def close(self) -> None:
        """Stops the loop and its thread (after :meth:`stop`)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()
