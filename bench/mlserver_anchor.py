"""MLServer anchor for bench_serving.py: an MLServer custom runtime doing the anchors' work.

Runs inside a separate virtual environment that has ``mlserver`` (never the project's: see
docs/benchmarks.md), so it imports nothing from qgnn. MLServer 1.7.1 crashes at start with
uvloop 0.23 (its issue #2286): that environment pins uvloop 0.21. The runtime answers in the
server process (``parallel_workers`` 0), on 127.0.0.1 only.

``python mlserver_anchor.py subgraph|lookup --port P --http-port H --metrics-port M --bundle B
--threads T`` writes the settings into a temporary folder and runs ``mlserver start`` on it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from mlserver import MLModel  # noqa: E402
from mlserver.codecs import NumpyCodec  # noqa: E402
from mlserver.types import InferenceRequest, InferenceResponse  # noqa: E402
from serving_work import LookupModel, SubgraphModel  # noqa: E402


class NodeRuntime(MLModel):
    """node_ids INT64 [n] -> probabilities FP32 [n, C], predicted_class INT64 [n]."""

    async def load(self) -> bool:
        extra = self.settings.parameters.extra
        kind = SubgraphModel if extra["role"] == "subgraph" else LookupModel
        self.work = kind(Path(extra["bundle"]), int(extra["threads"]))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        ids = np.asarray(NumpyCodec.decode_input(payload.inputs[0]), np.int64).reshape(-1)
        probs, classes = self.work.predict(ids)
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[
            NumpyCodec.encode_output("probabilities", probs),
            NumpyCodec.encode_output("predicted_class", classes)])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("subgraph", "lookup"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    name = json.loads((args.bundle / "manifest.json").read_text())["model"]["name"]
    folder = Path(tempfile.mkdtemp(prefix="qgnn-bench-mlserver-"))
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "grpc_port": args.port, "http_port": args.http_port,
        "metrics_port": args.metrics_port, "parallel_workers": 0, "debug": False}))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": name, "implementation": "mlserver_anchor.NodeRuntime",
        "parameters": {"extra": {"role": args.role, "bundle": str(args.bundle.resolve()),
                                 "threads": args.threads}}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE),
                                                                     os.environ.get("PYTHONPATH")]))}
    mlserver = Path(sys.executable).with_name("mlserver")
    os.execve(str(mlserver), [str(mlserver), "start", str(folder)], env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
