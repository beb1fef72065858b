"""KServe v2 on a live server: tritonclient (an independent client) unchanged, raw and typed
inputs, raw little-endian outputs, and the same error codes as qgnn.v1."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import serving_testkit as tk
from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve
from qgnn.runtime.proto_gen.inference import grpc_service_pb2_grpc as kserve_grpc

tc = pytest.importorskip("tritonclient.grpc")


@pytest.fixture
def triton(served):
    server, _ = served
    client = tc.InferenceServerClient(url=f"127.0.0.1:{server.grpc_port}")
    yield client
    client.close()


@pytest.fixture
def stub(served):
    server, _ = served
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield kserve_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def test_server_and_model_readiness_and_metadata(triton, served):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("toy") and triton.is_model_ready("toy", "1")
    assert not triton.is_model_ready("toy", "2") and not triton.is_model_ready("nope")
    meta = triton.get_server_metadata()
    assert meta.name == "qgnn"
    m = triton.get_model_metadata("toy")
    assert (m.name, list(m.versions), m.platform) == ("toy", ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in m.inputs] == [("node_ids", "INT64",
                                                                         [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in m.outputs] == [
        ("probabilities", "FP32", [-1, 3]), ("predicted_class", "INT64", [-1]),
        ("embeddings", "FP32", [-1, 8])]
    link = triton.get_model_metadata("links")
    assert [(t.name, list(t.shape)) for t in link.inputs] == [("pairs", [-1, 2])]


def test_model_config_is_the_documented_subset(triton):
    config = triton.get_model_config("toy").config
    assert (config.name, config.platform, config.backend, config.max_batch_size) == (
        "toy", "onnxruntime_onnx", "onnxruntime", 0)
    assert config.default_model_filename == "model.onnx"
    assert {k: v.string_value for k, v in config.parameters.items()} == {
        "task": "node", "model_type": "mean-mlp", "quantisation_bits": "32",
        "quantisation_method": "none"}
    assert [(i.name, list(i.dims)) for i in config.input] == [("node_ids", [-1])]


def test_tritonclient_infer_matches_the_oracle(triton, node_params):
    ids = np.array([4, 0, 4, 17], np.int64)
    x = tc.InferInput("node_ids", [4], "INT64")
    x.set_data_from_numpy(ids)
    outputs = [tc.InferRequestedOutput(n) for n in ("probabilities", "predicted_class",
                                                    "embeddings")]
    result = triton.infer("toy", [x], outputs=outputs, request_id="req-7")
    expected = tk.oracle_probabilities(node_params)[ids]
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)
    np.testing.assert_array_equal(result.as_numpy("predicted_class"), expected.argmax(1))
    np.testing.assert_allclose(result.as_numpy("embeddings"),
                               tk.oracle_embeddings(node_params)[ids], atol=1e-5)
    response = result.get_response()
    assert (response.id, response.model_version) == ("req-7", "1")
    default = triton.infer("toy", [x])  # no outputs named: probabilities + predicted_class
    assert [o.name for o in default.get_response().outputs] == ["probabilities",
                                                                "predicted_class"]


def test_link_model_pairs_with_tritonclient(triton, link_params):
    pairs = np.array([[1, 20], [12, 3]], np.int64)
    x = tc.InferInput("pairs", [2, 2], "INT64")
    x.set_data_from_numpy(pairs)
    scores = triton.infer("links", [x]).as_numpy("scores")
    np.testing.assert_allclose(scores, tk.oracle_link_scores(link_params, pairs[:, 0],
                                                             pairs[:, 1]), atol=1e-5)


def test_typed_contents_are_accepted_and_outputs_are_raw_little_endian(stub, node_params):
    tensor = kserve.ModelInferRequest.InferInputTensor(
        name="node_ids", datatype="INT32", shape=[2],
        contents=kserve.InferTensorContents(int_contents=[5, 6]))
    r = stub.ModelInfer(kserve.ModelInferRequest(model_name="toy", model_version="1",
                                                 inputs=[tensor]), timeout=10)
    assert [(o.name, o.datatype, list(o.shape)) for o in r.outputs] == [
        ("probabilities", "FP32", [2, 3]), ("predicted_class", "INT64", [2])]
    probs = np.frombuffer(r.raw_output_contents[0], "<f4").reshape(2, 3)
    np.testing.assert_allclose(probs, tk.oracle_probabilities(node_params)[[5, 6]], atol=1e-5)
    assert len(r.raw_output_contents[1]) == 16


def _infer_error(stub, **kw) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(kserve.ModelInferRequest(**kw), timeout=10)
    return info.value.code(), info.value.details()


def _tensor(name="node_ids", datatype="INT64", shape=(2,), **contents):
    return kserve.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype, shape=list(shape),
        contents=kserve.InferTensorContents(**contents))


@pytest.mark.parametrize(("kw", "code", "needle"), [
    ({"model_name": "toy", "inputs": [_tensor(datatype="FP32", fp32_contents=[1, 2])]},
     "INVALID_ARGUMENT", "ids must be"),
    ({"model_name": "toy", "inputs": [_tensor(shape=(3,), int64_contents=[1, 2])]},
     "INVALID_ARGUMENT", "needs 3 values"),
    ({"model_name": "toy", "inputs": [_tensor(shape=(1, 2), int64_contents=[1, 2])]},
     "INVALID_ARGUMENT", "must be [n]"),
    ({"model_name": "toy", "inputs": [_tensor()],
      "raw_input_contents": [np.array([1], "<i8").tobytes()]},
     "INVALID_ARGUMENT", "needs 16 bytes"),
    ({"model_name": "toy", "inputs": [_tensor(name="ids", int64_contents=[1, 2])]},
     "INVALID_ARGUMENT", "needs input 'node_ids'"),
    ({"model_name": "toy", "inputs": [_tensor(int64_contents=[1, 99])]},
     "INVALID_ARGUMENT", "node_ids[1]"),
    ({"model_name": "toy", "model_version": "x", "inputs": [_tensor(int64_contents=[1, 2])]},
     "INVALID_ARGUMENT", "model_version"),
    ({"model_name": "toy", "inputs": [_tensor(int64_contents=[1, 2])],
      "outputs": [kserve.ModelInferRequest.InferRequestedOutputTensor(name="logits")]},
     "INVALID_ARGUMENT", "logits"),
    ({"model_name": "toy", "inputs": [_tensor(datatype="STRING")]},
     "INVALID_ARGUMENT", "STRING"),
    ({"model_name": "nope", "inputs": [_tensor(int64_contents=[1, 2])]}, "NOT_FOUND", "nope"),
    ({"model_name": "links", "inputs": [_tensor(name="pairs", shape=(2,),
                                                int64_contents=[1, 2])]},
     "INVALID_ARGUMENT", "[n, 2]"),
    ({"model_name": "toy", "inputs": [_tensor(shape=(10**12,))]}, "RESOURCE_EXHAUSTED",
     "limit"),
])
def test_bad_infer_requests_get_precise_errors(stub, kw, code, needle):
    got, message = _infer_error(stub, **kw)
    assert got.name == code, message
    assert needle in message


def test_model_statistics_count_successes_and_failures(triton, stub):
    x = tc.InferInput("node_ids", [1], "INT64")
    x.set_data_from_numpy(np.array([1], np.int64))
    for _ in range(3):
        triton.infer("toy", [x])
    stats = triton.get_inference_statistics("toy").model_stats
    assert len(stats) == 1 and stats[0].version == "1"
    s = stats[0].inference_stats
    assert s.success.count == 3 and s.success.ns > 0 and stats[0].execution_count >= 1
    assert stats[0].inference_count == 3 and stats[0].last_inference > 0
    everything = stub.ModelStatistics(kserve.ModelStatisticsRequest(), timeout=10)
    assert sorted(m.name for m in everything.model_stats) == ["links", "toy"]
