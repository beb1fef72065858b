"""CPU time of qgnn's own part of one precomputed ModelInfer, in-process, without gRPC's transport.

Why in-process: on a shared host requests per second move by tens of percent between rounds,
and even a server's CPU per call moves by +-25% with the other tenants' load; the thread CPU
time of a loop of calls through qgnn's interceptor (admission, authentication gate, metrics,
error mapping), the KServe servicer (validation, decoding), the data plane (lease, id checks,
the precomputed lookup) and the response is stable to a few percent, so a change to that path
can be measured here. What it leaves out is gRPC's own per-call cost (the transport, the
polling thread, the thread pool), which the no-op server of bench_serving.py measures.

``python -m qgnn.bench.serving_hotpath --bundle runs/demo/bundle`` prints one JSON line: the
microseconds of CPU per call of each of ``--repeats`` loops and their median. Run it with
another tree first on ``PYTHONPATH`` (see bench_serving.py ``--baseline``) to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from prometheus_client import CollectorRegistry


class _Context:
    """The parts of a gRPC ServicerContext the serving path reads."""

    def time_remaining(self) -> float:
        return 30.0

    def is_active(self) -> bool:
        return True

    def abort(self, code: Any, message: str) -> None:
        raise RuntimeError(f"{code}: {message}")

    def code(self) -> None:
        return None


class _Details:
    method = "/inference.GRPCInferenceService/ModelInfer"
    invocation_metadata = ()


def measure(bundle: Path, calls: int, repeats: int) -> dict[str, Any]:
    from qgnn.bench.serving_load import infer_request
    from qgnn.runtime.config import ServeConfig
    from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve
    from qgnn.runtime.server import QgnnServer
    from qgnn.runtime.service.kserve_v2 import KServeService

    manifest = json.loads((bundle / "manifest.json").read_text())
    model, num_nodes = manifest["model"]["name"], int(manifest["graph"]["num_nodes"])
    server = QgnnServer(ServeConfig(path=bundle, host="127.0.0.1", grpc_port=0, metrics_port=0,
                                    precompute="on"), registry=CollectorRegistry()).start()
    try:
        handler = grpc.unary_unary_rpc_method_handler(
            KServeService(server.plane).ModelInfer,
            request_deserializer=kserve.ModelInferRequest.FromString,
            response_serializer=kserve.ModelInferResponse.SerializeToString)
        rng = np.random.default_rng(0)
        payloads = [infer_request(model, rng.integers(0, num_nodes, 1)).SerializeToString()
                    for _ in range(512)]
        context = _Context()

        def one(i: int) -> bytes:  # what gRPC does with a call, minus the transport
            wrapped = server.interceptor.intercept_service(lambda d: handler, _Details)
            request = wrapped.request_deserializer(payloads[i & 511])
            return wrapped.response_serializer(wrapped.unary_unary(request, context))

        for i in range(2000):
            one(i)
        per_call = []
        for _ in range(repeats):
            start = time.thread_time()
            for i in range(calls):
                one(i)
            per_call.append((time.thread_time() - start) / calls * 1e6)
    finally:
        server.stop(grace=0)
    return {"bundle": str(bundle), "calls": calls, "load_average_1m": os.getloadavg()[0],
            "us_per_call": [round(x, 1) for x in per_call],
            "median_us_per_call": round(statistics.median(per_call), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("runs/demo/bundle"))
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.bundle.resolve(), args.calls, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
