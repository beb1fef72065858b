"""The interceptor counts what gRPC refuses or drops before a qgnn handler runs: a call over
gRPC's own concurrency limit (maximum_concurrent_rpcs) is in qgnn's metrics like any other
refusal."""

from __future__ import annotations

import threading
import time
from collections import Counter

import grpc
from prometheus_client import CollectorRegistry
from qgnn.runtime.interceptors import ServingInterceptor, TimedExecutor
from qgnn.runtime.metrics import ServingMetrics


def test_calls_grpc_refuses_for_its_concurrency_limit_are_counted():
    metrics = ServingMetrics.create(CollectorRegistry())
    interceptor = ServingInterceptor(metrics)
    executor = TimedExecutor(max_workers=4, on_dropped=interceptor.record_dropped)
    limit = 2
    interceptor.backstop = (executor, limit)
    release = threading.Event()

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        release.wait(10)
        return request

    server = grpc.server(executor, interceptors=[interceptor], maximum_concurrent_rpcs=limit,
                         handlers=[grpc.method_handlers_generic_handler(
                             "t.S", {"Slow": grpc.unary_unary_rpc_method_handler(slow)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/t.S/Slow")

            def one() -> None:
                try:
                    call(b"x", timeout=10)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                with lock:
                    codes[code] += 1

            threads = [threading.Thread(target=one) for _ in range(limit)]
            for t in threads:
                t.start()
            end = time.monotonic() + 10
            while executor.active < limit and time.monotonic() < end:
                time.sleep(0.01)
            extra = [threading.Thread(target=one) for _ in range(3)]
            for t in extra:
                t.start()
            for t in extra:
                t.join(10)
            release.set()
            for t in threads:
                t.join(10)
    finally:
        server.stop(0)
        # a worker counts itself out after its answer is sent: wait for the pool to drain
        executor.shutdown(wait=True)
    assert codes == {"OK": limit, "RESOURCE_EXHAUSTED": 3}, codes
    sample = metrics.registry.get_sample_value
    assert sample("qgnn_requests_total", {"model": "", "method": "Slow",
                                          "status": "RESOURCE_EXHAUSTED"}) == 3
    assert sample("qgnn_requests_rejected_total", {"method": "Slow",
                                                   "reason": "resource_exhausted"}) == 3
    assert executor.active == 0
