"""grpc.health.v1 (overall and per model, NOT_SERVING while loading and after shutdown starts)
and server reflection across all services."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
import serving_testkit as tk
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from qgnn.runtime.backend import BackendOptions
from qgnn.runtime.backend_loaders import register_backend_loader, unregister_backend_loader
from qgnn.runtime.bundle.reader import Bundle
from qgnn.runtime.config import ServeConfig
from qgnn.runtime.server import QgnnServer, reflection_service_names

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _status(port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_health_is_serving_overall_and_per_model(served):
    server, client = served
    assert _status(server.grpc_port) == SERVING
    assert _status(server.grpc_port, "toy") == SERVING
    assert client.health("links") == "SERVING"
    with pytest.raises(grpc.RpcError) as info:
        _status(server.grpc_port, "nope")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    client.unload_model("toy")
    assert _status(server.grpc_port, "toy") == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    assert _status(server.grpc_port) == SERVING  # links still serves


def test_health_is_not_serving_while_models_load(tmp_path: Path, grpc_server: str):
    gate, loading = threading.Event(), threading.Event()

    def slow_loader(bundle: Bundle, options: BackendOptions):
        loading.set()
        gate.wait(10)
        return tk.load_mean_mlp(bundle, options)

    register_backend_loader(slow_loader, format="slow")
    tk.write_test_bundle(tmp_path / "slow" / "1", tk.random_params(num_nodes=20), name="slow",
                         fmt="slow")
    server = QgnnServer(ServeConfig(path=tmp_path, host="127.0.0.1", grpc_port=0,
                                    metrics_port=0, grpc_server=grpc_server),
                        registry=CollectorRegistry())
    starter = threading.Thread(target=server.start)
    try:
        starter.start()
        assert loading.wait(10)
        assert _status(server.grpc_port) == NOT_SERVING
        assert _status(server.grpc_port, "slow") == NOT_SERVING
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
            from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc

            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.GraphInferenceStub(channel).PredictNodes(pb.PredictNodesRequest(
                    model=pb.ModelRef(name="slow"), node_ids=[1]), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "loading" in info.value.details()
        gate.set()
        starter.join(10)
        assert _status(server.grpc_port) == SERVING
        assert _status(server.grpc_port, "slow") == SERVING
    finally:
        gate.set()
        starter.join(10)
        server.stop(grace=1)
        unregister_backend_loader(format="slow")


def test_health_turns_not_serving_as_soon_as_shutdown_starts(start_server, repo_dir):
    server = start_server(repo_dir, grace_period_s=2.0)
    port = server.grpc_port
    server.health.shutdown()  # the first step of stop()
    assert _status(port) == NOT_SERVING and _status(port, "toy") == NOT_SERVING


def test_reflection_lists_and_describes_every_service(served):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    server, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert services == set(reflection_service_names())
        for name in ("qgnn.v1.GraphInference", "inference.GRPCInferenceService"):
            assert db.FindFileContainingSymbol(name).service[0].name == name.split(".")[-1]
        infer = db.FindFileContainingSymbol("inference.ModelInferRequest")
        assert infer.name == "inference/grpc_service.proto"


def test_a_server_with_a_broken_single_bundle_refuses_to_start(tmp_path: Path,
                                                              grpc_server: str):
    tk.write_test_bundle(tmp_path / "b", tk.random_params(num_nodes=20), name="b", fmt="nope")
    server = QgnnServer(ServeConfig(path=tmp_path / "b", host="127.0.0.1", grpc_port=0,
                                    metrics_port=0, grpc_server=grpc_server),
                        registry=CollectorRegistry())
    started = time.monotonic()
    with pytest.raises(Exception, match=r"model\.format='nope'"):
        server.start()
    assert time.monotonic() - started < 10
