"""Partitioned execution (onnxruntime segments + compiled kernels) against stock onnxruntime
(the portable function-body path) and onnx's numpy reference evaluator."""

from __future__ import annotations

import logging

import engine_testkit as tk
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx import onnx_ml_pb2 as onnx_pb
from qgnn.exporter.ops import IR_VERSION, function_protos, make_op_node, opset_imports
from qgnn.runtime import kernels
from qgnn.runtime.engine import onnx_proto
from qgnn.runtime.engine.executor import PartitionedExecutor, PortableExecutor, make_executor
from qgnn.runtime.engine.partition import PartitionError, partition
from qgnn.runtime.engine.session import SessionConfig

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")


def _feeds(case, seeds_last: int | None = None) -> dict[str, np.ndarray]:
    """Full-graph inputs (every layer the whole in-CSR)."""
    n = case.num_nodes
    indptr, src = tk.in_csr(case.src, case.dst, n)
    feeds = {"x": case.model_x(),
             "in_degree": np.bincount(case.dst, minlength=n).astype(np.int64)}
    for i in range(case.num_layers):
        feeds[f"indptr_{i}"], feeds[f"src_{i}"] = indptr, src
    if seeds_last is not None:  # last layer: only the first seeds_last destinations
        last = case.num_layers - 1
        feeds[f"indptr_{last}"] = indptr[:seeds_last + 1].copy()
        feeds[f"src_{last}"] = src[:indptr[seeds_last]].copy()
    return feeds


def test_schema_matches_onnx_field_numbers() -> None:
    """The hand-written descriptor agrees with onnx's own on every field it declares."""
    pairs = {"ModelProto": onnx_pb.ModelProto, "GraphProto": onnx_pb.GraphProto,
             "NodeProto": onnx_pb.NodeProto, "AttributeProto": onnx_pb.AttributeProto,
             "TensorProto": onnx_pb.TensorProto, "ValueInfoProto": onnx_pb.ValueInfoProto,
             "OperatorSetIdProto": onnx_pb.OperatorSetIdProto,
             "FunctionProto": onnx_pb.FunctionProto, "TypeProto": onnx_pb.TypeProto,
             "TensorShapeProto": onnx_pb.TensorShapeProto,
             "TensorTypeProto": onnx_pb.TypeProto.Tensor,
             "Dimension": onnx_pb.TensorShapeProto.Dimension,
             "StringStringEntryProto": onnx_pb.StringStringEntryProto}
    for name, reference in pairs.items():
        ours = onnx_proto._CLASSES[name].DESCRIPTOR
        theirs = {f.name: f for f in reference.DESCRIPTOR.fields}
        for field in ours.fields:
            assert field.name in theirs, f"{name}.{field.name}"
            other = theirs[field.name]
            assert field.number == other.number, f"{name}.{field.name}"
            # enums are declared as int32 (the same varint), messages we only count as bytes
            # (the same length-delimited record)
            same_wire = {(field.TYPE_INT32, other.TYPE_ENUM), (field.TYPE_BYTES,
                                                                other.TYPE_MESSAGE)}
            assert field.type == other.type or (field.type, other.type) in same_wire, \
                f"{name}.{field.name}"
            assert field.is_repeated == other.is_repeated, f"{name}.{field.name}"


def test_round_trip_keeps_unknown_fields(int8_case) -> None:
    data = int8_case.model.SerializeToString()
    again = onnx.load_from_string(onnx_proto.load_model(data).SerializeToString())
    assert again == int8_case.model


def test_initializer_decoding_matches_numpy_helper() -> None:
    for value in (np.arange(6, dtype=np.float32).reshape(2, 3), np.array(7, np.uint8),
                  np.array([-3, 4], np.int64), np.array([1.5], np.float64)):
        raw = numpy_helper.from_array(value, "t")
        ours = onnx_proto.TensorProto()
        ours.ParseFromString(raw.SerializeToString())
        np.testing.assert_array_equal(onnx_proto.tensor_to_array(ours), value)
        typed = helper.make_tensor("t", helper.np_dtype_to_tensor_dtype(value.dtype),
                                   value.shape, value.reshape(-1).tolist())
        ours.ParseFromString(typed.SerializeToString())
        decoded = onnx_proto.tensor_to_array(ours)
        assert decoded.dtype == value.dtype
        np.testing.assert_array_equal(decoded, value)


def test_plan_needs_one_session_per_alternation(int8_case) -> None:
    plan = partition(int8_case.model.SerializeToString())
    kernel_ops = [[k.op_type for k in phase] for phase in plan.kernels]
    # the ReLU between the layers, requantised into layer 1's input, runs fused (float_step.py)
    assert kernel_ops == [[], ["QAggregate"], ["FloatStep", "QAggregate"]]
    assert sum(bool(s.nodes) for s in plan.segments) == 3
    assert plan.graph_inputs == ["x", "in_degree", "indptr_0", "src_0", "indptr_1", "src_1"]


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2])
def test_partitioned_equals_portable_and_reference_int8(int8_case, threads: int) -> None:
    data = int8_case.model.SerializeToString()
    config = SessionConfig(threads=threads)
    feeds = _feeds(int8_case, seeds_last=17)
    fast = PartitionedExecutor(data, config).run(feeds)["logits"]
    stock = PortableExecutor(data, config).run(feeds)["logits"]
    full = tk.reference_outputs(int8_case.model, int8_case.model_x(), int8_case.src,
                                int8_case.dst, 2)
    assert fast.shape == (17, 5)
    np.testing.assert_array_equal(fast, stock)  # dequantised integers: bit for bit
    np.testing.assert_array_equal(fast, full[:17])


@needs_kernels
def test_partitioned_equals_portable_float(float_case) -> None:
    data = float_case.model.SerializeToString()
    feeds = _feeds(float_case)
    fast = PartitionedExecutor(data, SessionConfig()).run(feeds)["logits"]
    stock = PortableExecutor(data, SessionConfig()).run(feeds)["logits"]
    full = tk.reference_outputs(float_case.model, float_case.x, float_case.src, float_case.dst, 2)
    np.testing.assert_allclose(fast, stock, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast, full, rtol=1e-5, atol=1e-6)


def _edge_dst_model() -> onnx.ModelProto:
    """EdgeDst on a graph input (kernel phase 0), a scale computed by a Constant and one
    computed at run time from an input, a weighted max aggregation."""
    nodes = [
        make_op_node("EdgeDst", ["indptr"], ["dst"]),
        helper.make_node("Constant", [], ["s_x"], value=numpy_helper.from_array(
            np.array(0.5, np.float32))),
        helper.make_node("Mul", ["s_base", "two"], ["s_y"]),
        helper.make_node("Cast", ["dst"], ["dst_u8"], to=TensorProto.UINT8),
        make_op_node("QAggregate", ["x", "s_x", "zp", "indptr", "src", "dst_u8", "s_w", "zp",
                                    "s_y", "zp"], ["agg"], reduce="max", bits=6),
        helper.make_node("Cast", ["agg"], ["out"], to=TensorProto.FLOAT),
    ]
    inits = [numpy_helper.from_array(np.array(3, np.uint8), "zp"),
             numpy_helper.from_array(np.array(0.25, np.float32), "s_w"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("x", TensorProto.UINT8, [None, 3]),
        helper.make_tensor_value_info("indptr", TensorProto.INT64, [None]),
        helper.make_tensor_value_info("src", TensorProto.INT64, [None]),
        helper.make_tensor_value_info("s_base", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION,
                             functions=function_protos(graph.node))


@needs_kernels
def test_kernel_phase_zero_constants_and_runtime_scales() -> None:
    model = _edge_dst_model()
    plan = partition(model.SerializeToString())
    assert [k.op_type for k in plan.kernels[0]] == ["EdgeDst"]
    assert "s_x" in plan.constants and "zp" in plan.constants
    rng = np.random.default_rng(0)
    indptr = np.array([0, 2, 2, 5, 9], np.int64)
    feeds = {"x": rng.integers(0, 255, (6, 3)).astype(np.uint8), "indptr": indptr,
             "src": rng.integers(0, 6, 9).astype(np.int64),
             "s_base": np.array(0.75, np.float32)}
    fast = PartitionedExecutor(model.SerializeToString(), SessionConfig()).run(feeds)["out"]
    stock = PortableExecutor(model.SerializeToString(), SessionConfig()).run(feeds)["out"]
    np.testing.assert_array_equal(fast, stock)
    assert fast.max() <= 63  # bits=6 reached the kernel


def test_loop_body_reading_outer_tensors_stays_after_its_producer() -> None:
    """A Loop whose body reads an outer-scope tensor made after an ai.qgnn node must run in a
    later segment than that node (implicit inputs count as inputs)."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "agg_f"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Relu", ["x"], ["x_relu"]),
             make_op_node("Aggregate", ["x_relu", "indptr", "src"], ["agg"], reduce="sum"),
             helper.make_node("Identity", ["agg"], ["agg_f"]),
             helper.make_node("Loop", ["trips", "cond", "zero"], ["y"], body=body)]
    inits = [numpy_helper.from_array(np.array(3, np.int64), "trips"),
             numpy_helper.from_array(np.array(True), "cond"),
             numpy_helper.from_array(np.zeros((1, 2), np.float32), "zero")]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2]),
        helper.make_tensor_value_info("indptr", TensorProto.INT64, [None]),
        helper.make_tensor_value_info("src", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION,
                              functions=function_protos(graph.node))
    plan = partition(model.SerializeToString())
    assert [n.op_type for n in plan.segments[0].nodes] == ["Relu"]
    assert [k.op_type for k in plan.kernels[1]] == ["Aggregate"]
    assert [n.op_type for n in plan.segments[1].nodes] == ["Identity", "Loop"]
    if kernels.available():
        feeds = {"x": np.ones((3, 2), np.float32), "indptr": np.array([0, 1, 3], np.int64),
                 "src": np.array([0, 1, 2], np.int64)}
        out = PartitionedExecutor(model.SerializeToString(), SessionConfig()).run(feeds)["y"]
        np.testing.assert_array_equal(out, [[3.0, 3.0], [6.0, 6.0]])


def test_unknown_ai_qgnn_op_is_refused() -> None:
    node = helper.make_node("Mystery", ["x"], ["y"], domain="ai.qgnn")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [None])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION)
    with pytest.raises(PartitionError, match="Mystery"):
        partition(model.SerializeToString())


def test_missing_compiled_kernels_fall_back_to_portable(int8_case, monkeypatch, caplog) -> None:
    monkeypatch.setattr(kernels, "available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="qgnn.runtime.engine"):
        executor = make_executor(int8_case.model.SerializeToString(), SessionConfig())
    assert executor.mode == "portable"
    assert "portable" in caplog.text and "compiled kernels" in caplog.text
    out = executor.run(_feeds(int8_case))["logits"]
    full = tk.reference_outputs(int8_case.model, int8_case.model_x(), int8_case.src,
                                int8_case.dst, 2)
    np.testing.assert_array_equal(out, full)


def _linear_model(*, bias: bool, per_channel: bool, bits: int, expose: str | None = None,
                  rank: int = 2, exported: bool = False) -> onnx.ModelProto:
    """A requantised linear layer: MatMulInteger [+ int32 bias] -> Cast -> Mul -> Round ->
    Add(zp) -> Clip(0, 2^bits - 1) -> Cast(uint8), then a float output; ``exported``: as the
    exporter writes it, weights stored as uint8 ``w + 128`` (zero point 128) and the tail
    QuantizeLinear(1, zp) [-> Clip(0, 2^bits - 1)]."""
    rng = np.random.default_rng(bits)
    k, j = 9, 5
    w = rng.integers(-127, 128, (k, j)).astype(np.int8)
    if exported:
        w = (w.view(np.uint8) ^ 0x80).astype(np.uint8)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.uint8(128), "zp_w"),
             numpy_helper.from_array(np.float32(1), "one"),
             numpy_helper.from_array(np.uint8(3), "zp_y_u8"),
             numpy_helper.from_array(np.uint8(0), "lo_u8"),
             numpy_helper.from_array(np.uint8(2**bits - 1), "hi_u8"),
             numpy_helper.from_array(np.array(7, np.uint8), "zp_x"),
             numpy_helper.from_array(rng.uniform(0.01, 0.04, j).astype(np.float32)
                                     if per_channel else np.float32(0.02), "m"),
             numpy_helper.from_array(np.float32(3), "zp_y"),
             numpy_helper.from_array(np.float32(0), "lo"),
             numpy_helper.from_array(np.float32(2**bits - 1), "hi"),
             numpy_helper.from_array(rng.integers(-3000, 3000, j).astype(np.int32), "bias")]
    acc = "acc"
    nodes = [helper.make_node("MatMulInteger", ["x", "w", "zp_x"] + (["zp_w"] if exported
                                                                     else []), ["acc"])]
    if bias:
        nodes.append(helper.make_node("Add", ["bias", "acc"], ["acc_b"]))
        acc = "acc_b"
    nodes += [helper.make_node("Cast", [acc], ["acc_f"], to=TensorProto.FLOAT),
              helper.make_node("Mul", ["acc_f", "m"], ["scaled"])]
    if exported:
        nodes.append(helper.make_node("QuantizeLinear", ["scaled", "one", "zp_y_u8"],
                                      ["y_q" if bits == 8 else "y_q8"]))
        if bits < 8:
            nodes.append(helper.make_node("Clip", ["y_q8", "lo_u8", "hi_u8"], ["y_q"]))
    else:
        nodes += [helper.make_node("Round", ["scaled"], ["rounded"]),
                  helper.make_node("Add", ["rounded", "zp_y"], ["shifted"]),
                  helper.make_node("Clip", ["shifted", "lo", "hi"], ["clipped"]),
                  helper.make_node("Cast", ["clipped"], ["y_q"], to=TensorProto.UINT8)]
    nodes.append(helper.make_node("Cast", ["y_q"], ["y"], to=TensorProto.FLOAT))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if expose:
        outputs.append(helper.make_tensor_value_info(expose, TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.UINT8, [None] * (rank - 1) + [k])], outputs, inits)
    return helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION)


@needs_kernels
@pytest.mark.parametrize("exported", [False, True])
@pytest.mark.parametrize(("bias", "per_channel", "bits", "rank"),
                         [(False, False, 8, 2), (True, True, 8, 2), (True, False, 4, 2),
                          (False, True, 8, 3)])
def test_requantised_linear_is_fused_and_exact(bias, per_channel, bits, rank, exported) -> None:
    model = _linear_model(bias=bias, per_channel=per_channel, bits=bits, rank=rank,
                          exported=exported)
    data = model.SerializeToString()
    plan = partition(data)
    assert [k.op_type for k in plan.kernels[0]] == ["QLinear"]
    assert [n.op_type for n in plan.segments[0].nodes] == ["Cast"]
    shape = (40, 9) if rank == 2 else (4, 10, 9)
    x = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    stock = PortableExecutor(data, SessionConfig()).run({"x": x})["y"]
    levels = [lvl for lvl in kernels.levels_supported() if lvl in kernels.levels_built()]
    for isa in levels:  # the fused kernel at every ISA level this host has
        fast = PartitionedExecutor(data, SessionConfig(), isa=isa).run({"x": x})["y"]
        np.testing.assert_array_equal(fast, stock, err_msg=isa)
    assert stock.min() == 0 and stock.max() == 2**bits - 1  # both saturations exercised


def test_chain_read_elsewhere_is_not_fused() -> None:
    plan = partition(_linear_model(bias=False, per_channel=False, bits=8,
                                   expose="scaled").SerializeToString())
    assert not any(plan.kernels)
    assert "MatMulInteger" in [n.op_type for n in plan.segments[0].nodes]
