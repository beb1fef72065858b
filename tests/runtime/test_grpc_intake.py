"""Refusing at intake: on the thread-pool server a call over qgnn's budget is refused as it
arrives, on gRPC's polling thread, with qgnn's status and message, counted; health is never
refused; a grpcio without the internals refuses the same call the ordinary way."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
import serving_testkit as tk
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qgnn.runtime import grpc_intake
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc
from qgnn.runtime.server import QgnnServer


def _slow_repo(root: Path, delay_s: float) -> Path:
    tk.write_test_bundle(root / "slow" / "1", tk.random_params(num_nodes=30, seed=4),
                         name="slow", delay_s=delay_s)
    return root


def _sample(server: QgnnServer, name: str, labels: dict[str, str]) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


def _one_over_the_budget(server: QgnnServer) -> grpc.RpcError:
    """Holds the only in-flight slot with a slow call, then sends one more (and checks health
    meanwhile); returns the second call's error."""
    request = pb.PredictNodesRequest(model=pb.ModelRef(name="slow"), node_ids=[1])
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GraphInferenceStub(channel)
        first = stub.PredictNodes.future(request, timeout=10)
        end = time.monotonic() + 5
        while server.admission.inflight < 1 and time.monotonic() < end:
            time.sleep(0.005)
        with pytest.raises(grpc.RpcError) as refused:
            stub.PredictNodes(request, timeout=5)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # exempt
        assert len(first.result().predicted_class) == 1  # the admitted call is answered
    return refused.value


def test_a_call_over_the_request_budget_is_refused_as_it_arrives_and_counted(
        start_server, tmp_path: Path):
    server = start_server(_slow_repo(tmp_path, 0.5), max_inflight_requests=1)
    error = _one_over_the_budget(server)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server busy: 1 requests in flight (limit 1)" in error.details()
    assert _sample(server, "qgnn_requests_shed_total", {"reason": "inflight_requests"}) == 1
    # refused before its request was read: no model label, like a call gRPC dropped
    assert _sample(server, "qgnn_requests_total", {"model": "", "method": "PredictNodes",
                                                   "status": "RESOURCE_EXHAUSTED"}) == 1
    if server.config.grpc_server == "sync":
        assert grpc_intake.installed()
        assert server.executor is not None and server.executor.refused_at_intake == 1


def test_without_grpcio_internals_the_same_call_is_refused_on_a_thread(
        start_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(grpc_intake, "install", lambda: False)
    server = start_server(_slow_repo(tmp_path, 0.5), max_inflight_requests=1)
    error = _one_over_the_budget(server)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server busy: 1 requests in flight (limit 1)" in error.details()
    assert _sample(server, "qgnn_requests_shed_total", {"reason": "inflight_requests"}) == 1
    if server.config.grpc_server == "sync":
        assert server.executor is not None and server.executor.refused_at_intake == 0


@pytest.mark.parametrize("receive_first", [True, False])
def test_calls_answer_the_same_whether_the_request_is_received_before_the_hand_over(
        start_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receive_first: bool):
    monkeypatch.setattr(grpc_intake, "RECEIVE_FIRST", receive_first)
    server = start_server(_slow_repo(tmp_path, 0.0))
    target = f"127.0.0.1:{server.grpc_port}"
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GraphInferenceStub(channel)
        ok = stub.PredictNodes(pb.PredictNodesRequest(model=pb.ModelRef(name="slow"),
                                                      node_ids=[1, 2, 3]), timeout=5)
        assert len(ok.predicted_class) == 3
        with pytest.raises(grpc.RpcError) as unknown:
            stub.PredictNodes(pb.PredictNodesRequest(model=pb.ModelRef(name="nope"),
                                                     node_ids=[1]), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        raw = channel.unary_unary("/qgnn.v1.GraphInference/PredictNodes")  # bytes in and out
        with pytest.raises(grpc.RpcError) as malformed:
            raw(b"\xff\xff\xff", timeout=5)
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # a client that gives up while its call waits: counted, and the server goes on
        slow = start_server(_slow_repo(tmp_path / "s", 0.3))
        with grpc.insecure_channel(f"127.0.0.1:{slow.grpc_port}") as slow_channel:
            call = pb_grpc.GraphInferenceStub(slow_channel).PredictNodes.future(
                pb.PredictNodesRequest(model=pb.ModelRef(name="slow"), node_ids=[1]),
                timeout=5)
            time.sleep(0.1)
            call.cancel()
        again = stub.PredictNodes(pb.PredictNodesRequest(model=pb.ModelRef(name="slow"),
                                                         node_ids=[4]), timeout=5)
        assert len(again.predicted_class) == 1
    end = time.monotonic() + 5
    while _sample(slow, "qgnn_requests_total", {"model": "slow", "method": "PredictNodes",
                                               "status": "CANCELLED"}) < 1:
        assert time.monotonic() < end, "the cancelled call was not counted"
        time.sleep(0.05)
