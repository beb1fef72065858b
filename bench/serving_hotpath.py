"""CPU time of qgnn's own part of one precomputed 1-id call, in-process, without gRPC's transport.

Why in-process: on a shared host requests per second move by tens of percent between rounds,
and even a server's CPU per call moves by +-25% with the other tenants' load; the thread CPU
time of a loop of calls through qgnn's interceptor (admission, authentication gate, metrics,
error mapping), the servicer (KServe ``ModelInfer`` or qgnn.v1 ``PredictNodes``: validation,
decoding), the data plane (lease, id checks, the precomputed lookup) and the response,
serialised, is stable to a few percent, so a change to that path can be measured here. What
it leaves out is gRPC's own per-call cost (the transport, the polling thread, the thread
pool), which the no-op server of bench_serving.py measures.

``python -m qgnn.bench.serving_hotpath --bundle runs/demo/bundle`` prints one JSON line per
protocol: the microseconds of CPU per call of each of ``--repeats`` loops and their median.
Run the file with another tree first on ``PYTHONPATH`` (see bench_serving.py ``--baseline``) to
compare; ``--profile N`` prints cProfile's N costliest functions instead (where the time goes).
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
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


PROTOCOLS = ("kserve", "qgnn")


def _handler_and_payloads(protocol: str, server: Any, model: str, num_nodes: int
                          ) -> tuple[Any, str, list[bytes]]:
    """gRPC's method handler of the protocol's 1-id call, its method path and 512 requests."""
    rng = np.random.default_rng(0)
    ids = [rng.integers(0, num_nodes, 1) for _ in range(512)]
    if protocol == "kserve":
        from qgnn.bench.serving_load import infer_request
        from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve
        from qgnn.runtime.service.kserve_v2 import KServeService

        handler = grpc.unary_unary_rpc_method_handler(
            KServeService(server.plane).ModelInfer,
            request_deserializer=kserve.ModelInferRequest.FromString,
            response_serializer=kserve.ModelInferResponse.SerializeToString)
        return (handler, "/inference.GRPCInferenceService/ModelInfer",
                [infer_request(model, i).SerializeToString() for i in ids])
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
    from qgnn.runtime.service.qgnn_v1 import GraphInferenceService

    handler = grpc.unary_unary_rpc_method_handler(
        GraphInferenceService(server.plane).PredictNodes,
        request_deserializer=pb.PredictNodesRequest.FromString,
        response_serializer=pb.PredictNodesResponse.SerializeToString)
    return (handler, "/qgnn.v1.GraphInference/PredictNodes",
            [pb.PredictNodesRequest(model=pb.ModelRef(name=model), node_ids=i.tolist())
             .SerializeToString() for i in ids])


def measure(bundle: Path, calls: int, repeats: int, protocols: tuple[str, ...] = PROTOCOLS,
            profile: int = 0) -> list[dict[str, Any]]:
    from qgnn.runtime.config import ServeConfig
    from qgnn.runtime.server import QgnnServer

    manifest = json.loads((bundle / "manifest.json").read_text())
    model, num_nodes = manifest["model"]["name"], int(manifest["graph"]["num_nodes"])
    server = QgnnServer(ServeConfig(path=bundle, host="127.0.0.1", grpc_port=0, metrics_port=0,
                                    precompute="on"), registry=CollectorRegistry()).start()
    results = []
    try:
        for protocol in protocols:
            handler, method, payloads = _handler_and_payloads(protocol, server, model, num_nodes)
            context, details = _Context(), _Details(method)

            def one(i: int, handler: Any = handler, details: Any = details,
                    payloads: list[bytes] = payloads, context: Any = context) -> bytes:
                # what gRPC does with a call, minus the transport
                wrapped = server.interceptor.intercept_service(lambda d: handler, details)
                request = wrapped.request_deserializer(payloads[i & 511])
                return wrapped.response_serializer(wrapped.unary_unary(request, context))

            for i in range(2000):
                one(i)
            if profile:
                _profile(one, calls, profile)
                continue
            per_call = []
            for _ in range(repeats):
                start = time.thread_time()
                for i in range(calls):
                    one(i)
                per_call.append((time.thread_time() - start) / calls * 1e6)
            results.append({"protocol": protocol, "bundle": str(bundle), "calls": calls,
                            "load_average_1m": os.getloadavg()[0],
                            "us_per_call": [round(x, 1) for x in per_call],
                            "median_us_per_call": round(statistics.median(per_call), 1)})
    finally:
        server.stop(grace=0)
    return results


def _profile(one: Any, calls: int, top: int) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(calls):
        one(i)
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("runs/demo/bundle"))
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--protocol", choices=(*PROTOCOLS, "both"), default="both")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print cProfile's N costliest functions (stderr) instead")
    args = parser.parse_args(argv)
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    for result in measure(args.bundle.resolve(), args.calls, args.repeats, protocols,
                          args.profile):
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
