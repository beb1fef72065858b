"""Request validation: the issue-17 reproducers, exactly, over a live server (both protocols),
and the validation functions against hand-computed cases."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import serving_testkit as tk
from qgnn.runtime import validation
from qgnn.runtime.errors import InvalidRequestError, LimitExceededError
from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve
from qgnn.runtime.proto_gen.inference import grpc_service_pb2_grpc as kserve_grpc
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc

Tensor = kserve.ModelInferRequest.InferInputTensor


@pytest.fixture
def stubs(served):
    server, _ = served
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield kserve_grpc.GRPCInferenceServiceStub(channel), pb_grpc.GraphInferenceStub(channel)
    channel.close()


def _refused(call, request) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return info.value.details()


# ---------------------------------------------------------------------------------------------
# The reproducers of issue 17, as sent


@pytest.mark.parametrize("version", ["²", "³", "١", "1²", "٣", "0", "-1", "+1", " 1", "1" * 19])
def test_versions_other_than_ascii_digits_are_refused_on_every_kserve_method(stubs, version):
    stub, _ = stubs
    for call, request in (
            (stub.ModelReady, kserve.ModelReadyRequest(name="toy", version=version)),
            (stub.ModelMetadata, kserve.ModelMetadataRequest(name="toy", version=version)),
            (stub.ModelConfig, kserve.ModelConfigRequest(name="toy", version=version)),
            (stub.ModelStatistics, kserve.ModelStatisticsRequest(name="toy", version=version)),
            (stub.ModelInfer, kserve.ModelInferRequest(
                model_name="toy", model_version=version, inputs=[Tensor(
                    name="node_ids", datatype="INT64", shape=[1],
                    contents=kserve.InferTensorContents(int64_contents=[1]))]))):
        assert "version" in _refused(call, request)


def test_ascii_version_still_addresses_the_version(stubs):
    stub, _ = stubs
    assert stub.ModelReady(kserve.ModelReadyRequest(name="toy", version="1"), timeout=10).ready
    assert not stub.ModelReady(kserve.ModelReadyRequest(name="toy", version="2"),
                               timeout=10).ready


@pytest.mark.parametrize(("shape", "raw", "needle"), [
    ([1] * 65, None, "at most 8 dimensions"),
    ([0, 2**63 - 1], None, "a dimension over"),
    ([2**63 - 1, 2**63 - 1, 0, 1], [b""], "a dimension over"),
    ([2**62, 2**62, 4], [b""], None),  # a product past int64: RESOURCE_EXHAUSTED, no overflow
])
def test_hostile_shapes_are_refused_before_numpy_sees_them(stubs, shape, raw, needle):
    stub, _ = stubs
    for name, model, dtype in (("node_ids", "toy", "INT64"), ("pairs", "links", "UINT64")):
        request = kserve.ModelInferRequest(model_name=model, inputs=[Tensor(
            name=name, datatype=dtype, shape=shape)], raw_input_contents=raw or [])
        if needle is None:
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert str(2**126) in info.value.details()
        else:
            assert needle in _refused(stub.ModelInfer, request)


@pytest.mark.parametrize(("datatype", "field", "value", "shown"), [
    ("UINT8", "uint_contents", 300, "out of range for UINT8 (0..255)"),
    ("INT8", "int_contents", 300, "out of range for INT8 (-128..127)"),
    ("INT8", "int_contents", 698, "out of range for INT8 (-128..127)"),
    ("INT8", "int_contents", -129, "out of range for INT8 (-128..127)"),
    ("INT16", "int_contents", 65580, "out of range for INT16 (-32768..32767)"),
    ("UINT16", "uint_contents", 65580, "out of range for UINT16 (0..65535)"),
])
def test_narrow_typed_ids_out_of_the_datatypes_range_are_refused_never_wrapped(
        stubs, datatype, field, value, shown):
    stub, _ = stubs
    message = _refused(stub.ModelInfer, kserve.ModelInferRequest(model_name="toy", inputs=[
        Tensor(name="node_ids", datatype=datatype, shape=[2],
               contents=kserve.InferTensorContents(**{field: [1, value]}))]))
    assert f"contents.{field}[1]" in message and shown in message
    assert f"(got {value})" in message  # the value sent, not the wrapped one


def test_every_integer_datatype_answers_like_int64_at_its_range_edges(stubs, node_params):
    stub, _ = stubs
    expected = tk.oracle_probabilities(node_params)
    for datatype in validation.ID_DATATYPES:
        dt = validation.DATATYPES[datatype]
        ids = np.array([0, 29, 7], dt.dtype)
        for raw in (True, False):
            tensor = Tensor(name="node_ids", datatype=datatype, shape=[3])
            request = kserve.ModelInferRequest(model_name="toy", inputs=[tensor])
            if raw:
                request.raw_input_contents.append(ids.tobytes())
            else:
                getattr(tensor.contents, dt.contents_field).extend(ids.tolist())
                request.inputs[0].CopyFrom(tensor)
            r = stub.ModelInfer(request, timeout=10)
            got = np.frombuffer(r.raw_output_contents[0], "<f4").reshape(3, 3)
            np.testing.assert_allclose(got, expected[[0, 29, 7]], atol=1e-5)


@pytest.mark.parametrize(("datatype", "ids", "needle"), [
    ("INT64", [3, -1], "node_ids[1]: negative"),
    ("INT8", [-5], "node_ids[0]: negative"),
    ("INT32", [30], "node_ids[0]: not a node of the graph"),
    ("UINT8", [255], "node_ids[0]: not a node of the graph"),
    ("UINT64", [2**63], "does not fit in int64"),
    ("UINT64", [2**64 - 1], "does not fit in int64"),
])
def test_ids_outside_the_graph_are_refused_naming_the_value(stubs, datatype, ids, needle):
    stub, _ = stubs
    dt = validation.DATATYPES[datatype]
    request = kserve.ModelInferRequest(model_name="toy", inputs=[Tensor(
        name="node_ids", datatype=datatype, shape=[len(ids)],
        contents=kserve.InferTensorContents(**{dt.contents_field: ids}))])
    message = _refused(stub.ModelInfer, request)
    assert needle in message and f"(got {ids[-1]})" in message


def test_contents_in_the_wrong_field_or_with_raw_bytes_are_refused(stubs):
    stub, _ = stubs
    both = kserve.ModelInferRequest(model_name="toy", inputs=[Tensor(
        name="node_ids", datatype="INT64", shape=[1],
        contents=kserve.InferTensorContents(int64_contents=[5]))],
        raw_input_contents=[np.array([6], "<i8").tobytes()])
    assert "not both" in _refused(stub.ModelInfer, both)
    wrong = kserve.ModelInferRequest(model_name="toy", inputs=[Tensor(
        name="node_ids", datatype="INT8", shape=[1],
        contents=kserve.InferTensorContents(int64_contents=[5]))])
    assert "contents.int_contents" in _refused(stub.ModelInfer, wrong)


def test_a_huge_model_name_is_refused_without_being_echoed(stubs):
    stub, qgnn = stubs
    name = "m" * 16_384
    for call, request in (
            (stub.ModelReady, kserve.ModelReadyRequest(name=name)),
            (stub.ModelMetadata, kserve.ModelMetadataRequest(name=name)),
            (stub.ModelInfer, kserve.ModelInferRequest(model_name=name)),
            (qgnn.PredictNodes, pb.PredictNodesRequest(model=pb.ModelRef(name=name),
                                                      node_ids=[1])),
            (qgnn.ListModels, pb.ListModelsRequest(name=name))):
        message = _refused(call, request)
        assert len(message) < 400 and "16384 characters" in message
    bad = _refused(qgnn.GetModel, pb.GetModelRequest(model=pb.ModelRef(name="to y")))
    assert "not a model name" in bad


def test_qgnn_v1_refuses_versions_below_one(stubs):
    _, qgnn = stubs
    message = _refused(qgnn.PredictNodes, pb.PredictNodesRequest(
        model=pb.ModelRef(name="toy", version=0), node_ids=[1]))
    assert "model.version" in message


# ---------------------------------------------------------------------------------------------
# The functions


def test_version_text_accepts_only_ascii_digits():
    assert validation.version_text("") is None
    assert validation.version_text("7") == 7
    assert validation.version_text("0012") == 12
    for text in ("²", "١", "７", "1.0", "1e3", "x", "0"):  # "７" is a fullwidth seven
        with pytest.raises(InvalidRequestError):
            validation.version_text(text)


def test_tensor_shape_bounds_rank_dimensions_and_count():
    assert validation.tensor_shape([3, 2], "s", 10) == ((3, 2), 6)
    assert validation.tensor_shape([], "s", 10) == ((), 1)
    assert validation.tensor_shape([0, 5], "s", 10) == ((0, 5), 0)
    with pytest.raises(InvalidRequestError, match="dimensions must be >= 0"):
        validation.tensor_shape([2, -1], "s", 10)
    with pytest.raises(LimitExceededError):
        validation.tensor_shape([4, 3], "s", 10)
    with pytest.raises(InvalidRequestError, match="a dimension over 10"):
        validation.tensor_shape([0, 11], "s", 10)
    with pytest.raises(InvalidRequestError, match="at most 8 dimensions"):
        validation.tensor_shape([1] * 9, "s", 10)


def test_typed_contents_keep_in_range_values_exactly():
    dt = validation.DATATYPES["INT8"]
    got = validation.typed_contents([-128, 0, 127], dt, "c")
    assert got.dtype == np.int8 and got.tolist() == [-128, 0, 127]
    big = validation.DATATYPES["UINT64"]
    assert validation.typed_contents([2**64 - 1], big, "c").tolist() == [2**64 - 1]


def test_clip_keeps_short_text_and_states_the_length_of_long_text():
    assert validation.clip("toy") == "toy"
    clipped = validation.clip("a" * 1000)
    assert clipped.startswith("a" * 48) and clipped.endswith("(1000 characters)")
    assert len(clipped) < 80
