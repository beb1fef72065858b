"""``--grpc-server aio`` (runtime/aio_front.py): predictions run on the event loop and suspend
while their model computes, what may block runs on the thread pool, and a slow model never
holds up another model's answers. The behaviour both front ends share is tested on both through the
``grpc_server`` fixture (conftest.py)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import serving_testkit as tk
from qgnn.runtime.aio_front import on_loop
from qgnn.runtime.errors import OverloadedError, UnauthenticatedError
from qgnn.runtime.interceptors import _Refused
from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve
from qgnn.runtime.service.admin import ModelAdminService
from qgnn.runtime.service.kserve_v2 import KServeService
from qgnn.runtime.service.qgnn_v1 import GraphInferenceService

sys.path.insert(0, str(Path(__file__).parent / "engine"))
import engine_testkit as ek


def _engine_bundle(root: Path, name: str) -> None:
    src, dst = ek.random_graph(40, 160, seed=3, hub=0)
    x = np.random.default_rng(3).standard_normal((40, 8)).astype(np.float32)
    ek.write_test_bundle(root / name / "1", ek.int8_model(8, [8, 4]), src, dst, x, name=name)


def _infer(model: str, *outputs: str) -> kserve.ModelInferRequest:
    request = kserve.ModelInferRequest(model_name=model)
    request.inputs.add(name="node_ids", datatype="INT64", shape=[1])
    request.raw_input_contents.append(np.zeros(1, "<i8").tobytes())
    for name in outputs:
        request.outputs.add(name=name)
    return request


def test_predictions_and_refusals_run_on_the_loop_and_what_may_block_on_the_pool() -> None:
    inference, kserve_service = GraphInferenceService(None), KServeService(None)
    request = _infer("m")
    # steps: suspended on the loop while a batcher computes, holding no thread
    assert on_loop(kserve_service.ModelInfer, request, None)
    for method in ("PredictNodes", "PredictLinks", "Embed"):
        assert on_loop(getattr(inference, method), request, None), method
    # may block (model loads, listing, recommendations, graph updates): the thread pool
    for method in ("Recommend", "UpdateGraph", "ListModels", "GetModel"):
        assert not on_loop(getattr(inference, method), request, None), method
    assert not on_loop(ModelAdminService(None).LoadModel, request, None)
    # refused before any work: at once, on the loop
    refused = _Refused(OverloadedError("full"))
    assert on_loop(ModelAdminService(None).LoadModel, refused, None)
    assert on_loop(inference.ListModels, request, UnauthenticatedError("no token"))


def test_a_slow_model_call_holds_up_no_other_answer(start_server, client_for,
                                                    tmp_path: Path) -> None:
    """While a one-second model call runs, a precomputed lookup and a refusal come back (with
    aio the slow call is suspended on the loop, holding nothing; with sync it holds one
    thread of the pool)."""
    _engine_bundle(tmp_path, "pre")
    tk.write_test_bundle(tmp_path / "slow" / "1", tk.random_params(num_nodes=30, seed=4),
                         name="slow", delay_s=1.0)
    server = start_server(tmp_path, precompute="on", max_queue_ms=60_000)
    client = client_for(server)
    worker = threading.Thread(target=lambda: client.predict_nodes("slow", [0]))
    worker.start()
    try:
        end = time.monotonic() + 10
        while server.metrics.registry.get_sample_value(
                "qgnn_inflight_requests", {"model": "slow"}) != 1:
            assert time.monotonic() < end, "the slow call never reached the server"
            time.sleep(0.01)
        got = client.predict_nodes("pre", [0, 1])
        assert got.probabilities.shape == (2, 4)
        with pytest.raises(grpc.RpcError) as refused:
            client.predict_nodes("nope", [0])
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert worker.is_alive()  # both answered while the slow call still ran
    finally:
        worker.join(30)
