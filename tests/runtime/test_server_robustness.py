"""Robustness: malformed requests of every kind never crash the server and never get INTERNAL;
the server still answers correctly afterwards."""

from __future__ import annotations

import logging
import string
from collections import Counter

import grpc
import numpy as np
import pytest
import serving_testkit as tk
from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb

METHODS = {
    "/qgnn.v1.GraphInference/PredictNodes": pb.PredictNodesRequest,
    "/qgnn.v1.GraphInference/PredictLinks": pb.PredictLinksRequest,
    "/qgnn.v1.GraphInference/Recommend": pb.RecommendRequest,
    "/qgnn.v1.GraphInference/Embed": pb.EmbedRequest,
    "/qgnn.v1.GraphInference/UpdateGraph": pb.UpdateGraphRequest,
    "/qgnn.v1.GraphInference/ListModels": pb.ListModelsRequest,
    "/qgnn.v1.GraphInference/GetModel": pb.GetModelRequest,
    "/qgnn.v1.ModelAdmin/LoadModel": pb.LoadModelRequest,
    "/inference.GRPCInferenceService/ModelInfer": kserve.ModelInferRequest,
    "/inference.GRPCInferenceService/ModelMetadata": kserve.ModelMetadataRequest,
    "/inference.GRPCInferenceService/ModelConfig": kserve.ModelConfigRequest,
    "/inference.GRPCInferenceService/ModelReady": kserve.ModelReadyRequest,
    "/inference.GRPCInferenceService/ModelStatistics": kserve.ModelStatisticsRequest,
}
ALLOWED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED",
           "UNIMPLEMENTED"}
EDGE_IDS = [0, 1, 29, 30, 39, 40, -1, -(2**63), 2**63 - 1, 2**31, 10**12]


class Fuzzer:
    """Random requests: mostly well-typed messages with hostile values, some raw garbage."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def pick(self, values):
        return values[int(self.rng.integers(len(values)))]

    def ids(self) -> list[int]:
        n = self.pick([0, 1, 2, 5, 30, 5000])
        if self.rng.random() < 0.5:
            return [int(v) for v in self.rng.integers(-3, 45, n)]
        return [int(self.pick(EDGE_IDS)) for _ in range(min(n, 50))]

    def name(self) -> str:
        if self.rng.random() < 0.8:
            return self.pick(["toy", "links", ""])
        return "".join(self.pick(list(string.printable)) for _ in range(self.pick([1, 8, 300])))

    def ref(self) -> pb.ModelRef:
        ref = pb.ModelRef(name=self.name())
        if self.rng.random() < 0.3:
            ref.version = int(self.pick([0, 1, 2, -5, 2**62]))
        return ref

    def floats(self) -> list[float]:
        n = self.pick([0, 5, 6, 6, 100])
        vals = self.rng.normal(size=n)
        if n and self.rng.random() < 0.2:
            vals[0] = self.pick([np.nan, np.inf, -np.inf, 1e39])
        return [float(v) for v in vals]

    def inductive(self) -> list[pb.InductiveNode]:
        return [pb.InductiveNode(id=int(self.pick(EDGE_IDS)), features=self.floats(),
                                 neighbors=self.ids()[:10], in_neighbors=self.ids()[:10])
                for _ in range(self.pick([0, 0, 1, 3]))]

    def tensor(self) -> kserve.ModelInferRequest.InferInputTensor:
        datatype = self.pick(["INT64", "INT32", "FP32", "BOOL", "UINT64", "BYTES", "STRING",
                              "", "INT8"])
        shape = [int(self.pick([-1, 0, 1, 2, 3, 10**9])) for _ in range(self.pick([0, 1, 2,
                                                                                   3]))]
        contents = kserve.InferTensorContents(int64_contents=self.ids()[:20],
                                              int_contents=[int(v) for v in
                                                            self.rng.integers(-5, 50, 3)],
                                              fp32_contents=self.floats()[:6])
        return kserve.ModelInferRequest.InferInputTensor(
            name=self.pick(["node_ids", "pairs", "x", ""]), datatype=datatype, shape=shape,
            contents=contents)

    def message(self, method: str):
        kind = METHODS[method]
        if kind is pb.PredictNodesRequest:
            return kind(model=self.ref(), node_ids=self.ids(), inductive_nodes=self.inductive())
        if kind is pb.PredictLinksRequest:
            return kind(model=self.ref(), src_ids=self.ids(), dst_ids=self.ids(),
                        inductive_nodes=self.inductive())
        if kind is pb.RecommendRequest:
            return kind(model=self.ref(), user_id=int(self.pick(EDGE_IDS)),
                        k=int(self.pick([-1, 0, 1, 5, 2**62])), exclude_seen=bool(
                            self.rng.random() < 0.5), candidate_ids=self.ids()[:20],
                        inductive_nodes=self.inductive())
        if kind is pb.EmbedRequest:
            return kind(model=self.ref(), node_ids=self.ids(), inductive_nodes=self.inductive())
        if kind is pb.UpdateGraphRequest:
            ref = pb.ModelRef(name=self.pick(["toy", "nope", ""]))  # never the checked model
            return kind(model=ref, add_nodes=[pb.NewNode(features=self.floats())
                                              for _ in range(self.pick([0, 1, 2]))],
                        edge_src=self.ids()[:5], edge_dst=self.ids()[:5])
        if kind is pb.ListModelsRequest:
            return kind(name=self.name())
        if kind is pb.GetModelRequest:
            return kind(model=self.ref())
        if kind is pb.LoadModelRequest:
            return kind(path=self.pick(["", "/nonexistent", "/etc/passwd", "/tmp", "../..",
                                        "x" * 5000]))
        if kind is kserve.ModelInferRequest:
            inputs = [self.tensor() for _ in range(self.pick([0, 1, 2]))]
            raw = []
            if self.rng.random() < 0.5:
                raw = [self.rng.bytes(int(self.pick([0, 8, 16, 24, 7]))) for _ in
                       range(self.pick([len(inputs), len(inputs), 1, 3]))]
            outputs = [kserve.ModelInferRequest.InferRequestedOutputTensor(
                name=self.pick(["probabilities", "embeddings", "scores", "zzz"]))
                for _ in range(self.pick([0, 1, 2]))]
            return kind(model_name=self.name(), model_version=self.pick(["", "1", "2", "x",
                                                                         "-1", "9" * 30]),
                        inputs=inputs, raw_input_contents=raw, outputs=outputs)
        return kind(name=self.name(), version=self.pick(["", "1", "abc", "99999999999999999"]))

    def payload(self) -> tuple[str, bytes]:
        method = self.pick(list(METHODS))
        roll = self.rng.random()
        if roll < 0.1:
            return method, self.rng.bytes(int(self.pick([0, 1, 7, 64, 300])))
        if roll < 0.13:
            return "/qgnn.v1.GraphInference/" + self.pick(["Nope", "predictnodes"]), b""
        data = self.message(method).SerializeToString()
        if roll < 0.2 and data:  # truncated or bit-flipped messages
            cut = bytearray(data[: int(self.rng.integers(len(data)))] or b"\x08")
            cut[int(self.rng.integers(len(cut)))] ^= 0xFF
            return method, bytes(cut)
        return method, data


def _run_fuzz(server, count: int, seed: int) -> Counter:
    fuzz = Fuzzer(seed)
    codes: Counter = Counter()
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        for _ in range(count):
            method, data = fuzz.payload()
            call = channel.unary_unary(method)  # raw bytes both ways
            try:
                call(data, timeout=10)
                codes["OK"] += 1
            except grpc.RpcError as exc:
                codes[exc.code().name] += 1
                assert exc.code().name in ALLOWED, (method, exc.code(), exc.details())
    return codes


def _still_correct(server, client_for, link_params) -> None:
    client = client_for(server)
    src, dst = np.array([1, 2, 3]), np.array([20, 21, 22])
    np.testing.assert_allclose(client.predict_links("links", src, dst).scores,
                               tk.oracle_link_scores(link_params, src, dst), atol=1e-5)
    assert client.predict_nodes("toy", [0, 1]).probabilities.shape == (2, 3)
    assert client.health() == "SERVING"


def _fuzz_test(start_server, client_for, repo_dir, link_params, caplog, count: int) -> None:
    server = start_server(repo_dir, max_message_bytes=256 * 1024)
    with caplog.at_level(logging.ERROR, logger="qgnn.runtime.server"):
        codes = _run_fuzz(server, count, seed=count)
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    assert codes["INVALID_ARGUMENT"] > count // 10 and codes["OK"] > 0
    assert sum(codes.values()) == count
    _still_correct(server, client_for, link_params)


def test_fuzzed_requests_never_crash_or_get_internal(start_server, client_for, repo_dir,
                                                    link_params, caplog):
    _fuzz_test(start_server, client_for, repo_dir, link_params, caplog, 500)


@pytest.mark.slow
def test_fuzzed_requests_ten_thousand(start_server, client_for, repo_dir, link_params, caplog):
    _fuzz_test(start_server, client_for, repo_dir, link_params, caplog, 10_000)


def test_oversized_messages_and_too_many_ids_are_resource_exhausted(start_server, client_for,
                                                                    repo_dir, link_params):
    server = start_server(repo_dir, max_message_bytes=64 * 1024, max_ids_per_request=100)
    client = client_for(server, max_message_bytes=16 * 2**20)
    for call in (lambda: client.predict_nodes("toy", np.arange(100_000) % 30),
                 lambda: client.predict_nodes("toy", np.zeros(101, np.int64)),
                 lambda: client.predict_links("links", np.zeros(101), np.zeros(101))):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "101 entries exceed the limit of 100" in info.value.details()
    assert client.predict_nodes("toy", np.zeros(100, np.int64)).probabilities.shape == (100, 3)
    _still_correct(server, client_for, link_params)


def test_garbage_bytes_are_invalid_argument_not_internal(served):
    server, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        call = channel.unary_unary("/qgnn.v1.GraphInference/PredictNodes")
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff\xff\xff", timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid PredictNodes request" in info.value.details()
