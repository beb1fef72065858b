"""Bundles with int8 weights give exact integers on every CPU: the engine stores the weights as
uint8 at load, which onnxruntime's AVX2 kernels (modelled by mlas_emulation) get right."""

from __future__ import annotations

import mlas_emulation
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from qgnn.runtime.engine import onnx_proto as op
from qgnn.runtime.engine.executor import PartitionedExecutor, PortableExecutor
from qgnn.runtime.engine.session import SessionConfig
from qgnn.runtime.engine.weight_storage import rewrite_weights_as_uint8, store_weights_as_uint8
from qgnn.runtime.kernels import available

K, J = 64, 6


def _model(weight: np.ndarray, zero_point: np.ndarray | None = None) -> onnx.ModelProto:
    """x (N, K) uint8 -> MatMulInteger(x, W, zp_x = 3 [, zp_w]) -> float32 y."""
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.uint8(3), "zp_x")]
    inputs = ["x", "w", "zp_x"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "zp_w"))
        inputs.append("zp_w")
    nodes = [helper.make_node("MatMulInteger", inputs, ["acc"]),
             helper.make_node("Cast", ["acc"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.UINT8, [None, K])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _full_range() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(200, 256, (30, K)).astype(np.uint8)
    w = rng.choice(np.array([-127, 127, 100, -100], np.int8), (K, J))
    return x, w


def test_the_emulation_saturates_pairs_like_vpmaddubsw() -> None:
    a = np.array([[255, 255, 1, 1]], np.uint8)
    b = np.array([[127], [127], [1], [1]], np.int8)
    assert mlas_emulation.matmul_integer_exact(a, b)[0, 0] == 2 * 255 * 127 + 2
    assert mlas_emulation.matmul_integer_saturating(a, b)[0, 0] == 32767 + 2
    stored = (b.view(np.uint8) ^ 0x80).astype(np.uint8)
    assert mlas_emulation.matmul_integer_saturating(a, stored, 0, 128)[0, 0] == 2 * 255 * 127 + 2


def test_int8_weights_are_wrong_on_avx2_and_right_after_the_rewrite() -> None:
    x, w = _full_range()
    exact = (x.astype(np.int64) - 3) @ w.astype(np.int64)
    model = _model(w)
    old = mlas_emulation.avx2_evaluator(model, []).run(["y"], {"x": x})[0]
    assert (old != exact).mean() > 0.5  # the failure this guards against is real
    rewritten = onnx.ModelProto.FromString(store_weights_as_uint8(model.SerializeToString()))
    node = rewritten.graph.node[0]
    inits = {t.name: numpy_helper.to_array(t) for t in rewritten.graph.initializer}
    assert inits[node.input[1]].dtype == np.uint8 and inits[node.input[3]] == 128
    assert "w" not in inits  # the int8 copy is gone
    new = mlas_emulation.avx2_evaluator(rewritten, []).run(["y"], {"x": x})[0]
    np.testing.assert_array_equal(new, exact)


def test_an_int8_zero_point_moves_with_the_weights() -> None:
    x, w = _full_range()
    zp = np.arange(J, dtype=np.int8) - 2
    model = _model(w, zp)
    exact = (x.astype(np.int64) - 3) @ (w.astype(np.int64) - zp.astype(np.int64))
    rewritten = onnx.ModelProto.FromString(store_weights_as_uint8(model.SerializeToString()))
    new = mlas_emulation.avx2_evaluator(rewritten, []).run(["y"], {"x": x})[0]
    np.testing.assert_array_equal(new, exact)


def test_uint8_models_are_left_byte_for_byte() -> None:
    _, w = _full_range()
    data = _model((w.view(np.uint8) ^ 0x80).astype(np.uint8),
                  np.uint8(128)).SerializeToString()
    assert store_weights_as_uint8(data) == data


def test_a_computed_weight_is_left_alone(caplog) -> None:
    nodes = [helper.make_node("Identity", ["w0"], ["w"]),
             helper.make_node("MatMulInteger", ["x", "w"], ["acc"])]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("x", TensorProto.UINT8, [None, 2]),
        helper.make_tensor_value_info("w0", TensorProto.INT8, [2, 2])],
        [helper.make_tensor_value_info("acc", TensorProto.INT32, None)])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=9).SerializeToString()
    assert store_weights_as_uint8(data) == data
    assert "computed in the graph" in caplog.text


def test_a_computed_uint8_weight_is_exact_and_not_reported(caplog) -> None:
    """EGC mixes with a computed uint8 activation: its uint8 zero point says so, no warning."""
    nodes = [helper.make_node("Identity", ["w0"], ["w"]),
             helper.make_node("MatMulInteger", ["x", "w", "", "zp"], ["acc"])]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("x", TensorProto.UINT8, [None, 2]),
        helper.make_tensor_value_info("w0", TensorProto.UINT8, [2, 2])],
        [helper.make_tensor_value_info("acc", TensorProto.INT32, None)],
        [helper.make_tensor("zp", TensorProto.UINT8, [], [7])])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=9).SerializeToString()
    assert store_weights_as_uint8(data) == data
    assert "computed in the graph" not in caplog.text


@pytest.mark.parametrize("executor", [
    PortableExecutor,
    pytest.param(PartitionedExecutor, marks=pytest.mark.skipif(
        not available(), reason="compiled kernels not built"))])
def test_executors_load_int8_weights_exactly(executor) -> None:
    x, w = _full_range()
    exact = ((x.astype(np.int64) - 3) @ w.astype(np.int64)).astype(np.float32)
    out = executor(_model(w).SerializeToString(), SessionConfig()).run({"x": x})["y"]
    np.testing.assert_array_equal(out, exact)


@pytest.mark.parametrize("executor", [
    PortableExecutor,
    pytest.param(PartitionedExecutor, marks=pytest.mark.skipif(
        not available(), reason="compiled kernels not built"))])
def test_a_parsed_model_is_rewritten_in_place_once_and_runs_exactly(executor) -> None:
    # the engine parses the bundle's model once and hands the proto to its executor
    x, w = _full_range()
    exact = ((x.astype(np.int64) - 3) @ w.astype(np.int64)).astype(np.float32)
    proto = op.load_model(_model(w).SerializeToString())
    out = executor(proto, SessionConfig()).run({"x": x})["y"]
    np.testing.assert_array_equal(out, exact)
    names = {t.name: t.data_type for t in proto.graph.initializer}
    assert "w" not in names and names["w_u8"] == TensorProto.UINT8  # rewritten in place
    assert not rewrite_weights_as_uint8(proto)  # a second pass finds nothing left to do
    np.testing.assert_array_equal(executor(proto, SessionConfig()).run({"x": x})["y"], exact)
