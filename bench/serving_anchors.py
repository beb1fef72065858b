"""Hand-written anchor servers for bench_serving.py: KServe v2 ModelInfer on plain grpcio.

* ``noop``: answers zeros of the right shapes at once, the ceiling any Python gRPC server can
  reach on this machine with this load generator.
* ``subgraph``: per request, the seeds' full L-hop neighbourhood with numpy and the exported
  model on onnxruntime (bench/serving_work.py), what a user writes by hand; the same work a
  per-request qgnn does.
* ``lookup``: the model once over the whole graph at start, rows gathered per request.

Each is a grpcio thread-pool server on 127.0.0.1, stopped by SIGTERM. Run as
``python -m qgnn.bench.serving_anchors ROLE --port P --bundle B --threads T``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from qgnn.bench.serving_work import LookupModel, SubgraphModel
from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve
from qgnn.runtime.proto_gen.inference import grpc_service_pb2_grpc as kserve_grpc


class Anchor(kserve_grpc.GRPCInferenceServiceServicer):
    """ModelInfer of ``node_ids`` INT64 [n] -> probabilities FP32 [n, C], predicted_class."""

    def __init__(self, predict: Any, name: str) -> None:
        self._predict = predict
        self._name = name

    def ServerReady(self, request: Any, context: Any) -> Any:
        return kserve.ServerReadyResponse(ready=True)

    def ModelInfer(self, request: Any, context: Any) -> Any:
        ids = np.frombuffer(request.raw_input_contents[0], "<i8")
        probs, classes = self._predict(ids)
        response = kserve.ModelInferResponse(model_name=self._name, model_version="1",
                                             id=request.id)
        response.outputs.add(name="probabilities", datatype="FP32", shape=probs.shape)
        response.raw_output_contents.append(np.ascontiguousarray(probs, "<f4").tobytes())
        response.outputs.add(name="predicted_class", datatype="INT64", shape=classes.shape)
        response.raw_output_contents.append(np.ascontiguousarray(classes, "<i8").tobytes())
        return response


def predictor(role: str, bundle: Path, threads: int) -> tuple[Any, str]:
    """The role's predict function and the model name it serves."""
    if role == "noop":
        model = SubgraphModel(bundle, threads)  # for the name and the output width only
        width = int(model.session.get_outputs()[0].shape[1])

        def noop(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return np.zeros((ids.size, width), np.float32), np.zeros(ids.size, np.int64)
        return noop, model.name
    model = SubgraphModel(bundle, threads) if role == "subgraph" else LookupModel(bundle, threads)
    return model.predict, model.name


def serve(role: str, port: int, bundle: Path, threads: int) -> None:
    predict, name = predictor(role, bundle, threads)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    kserve_grpc.add_GRPCInferenceServiceServicer_to_server(Anchor(predict, name), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("noop", "subgraph", "lookup"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    serve(args.role, args.port, args.bundle, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
