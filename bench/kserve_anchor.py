"""KServe anchor for bench_serving.py: a KServe custom model doing the anchors' work.

Runs inside a separate virtual environment that has ``kserve`` (never the project's: see
docs/benchmarks.md), so it imports nothing from qgnn; bench/serving_work.py is put on the path.
KServe's gRPC server listens on every interface ("[::]:PORT") and its REST server on 0.0.0.0,
with no option to change either; a benchmark must stay on loopback, so both binds are rewritten
to 127.0.0.1 here before the server starts.

``python kserve_anchor.py subgraph|lookup --port P --http-port H --bundle B --threads T``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kserve
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse
from kserve.protocol.grpc import server as grpc_server
from kserve.protocol.rest import server as rest_server
from serving_work import LookupModel, SubgraphModel


def _loopback_only() -> None:
    """Rewrites KServe's binds to 127.0.0.1 (gRPC and REST)."""
    real_server = grpc_server.aio.server

    def server(*args: object, **kwargs: object) -> object:
        srv = real_server(*args, **kwargs)
        add = srv.add_insecure_port
        srv.add_insecure_port = lambda address: add(address.replace("[::]", "127.0.0.1"))
        return srv

    grpc_server.aio.server = server
    real_config = rest_server.uvicorn.Config

    def config(*args: object, **kwargs: object) -> object:
        kwargs["host"] = "127.0.0.1"
        return real_config(*args, **kwargs)

    rest_server.uvicorn.Config = config


class NodeModel(kserve.Model):
    """node_ids INT64 [n] -> probabilities FP32 [n, C], predicted_class INT64 [n]."""

    def __init__(self, work: SubgraphModel | LookupModel) -> None:
        super().__init__(work.name)
        self.work = work
        self.ready = True

    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        ids = np.asarray(payload.inputs[0].as_numpy(), np.int64).reshape(-1)
        probs, classes = self.work.predict(ids)
        return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=[
            InferOutput("probabilities", list(probs.shape), "FP32", probs),
            InferOutput("predicted_class", list(classes.shape), "INT64", classes)])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("subgraph", "lookup"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(sys.argv[1:])
    sys.argv = sys.argv[:1]  # KServe parses sys.argv itself
    _loopback_only()
    work = (SubgraphModel if args.role == "subgraph" else LookupModel)(args.bundle, args.threads)
    kserve.ModelServer(grpc_port=args.port, http_port=args.http_port).start([NodeModel(work)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
