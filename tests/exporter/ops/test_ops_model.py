"""The op set's plumbing: validated nodes, one body per (op, overload), standard ops only in
every body, and several ai.qgnn ops (and overloads) side by side in one model on onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from qgnn.exporter.ops import (
    IR_VERSION,
    ONNX_OPSET_VERSION,
    OPS,
    QGNN_DOMAIN,
    QGNN_OPSET_VERSION,
    function_protos,
    make_op_model,
    make_op_node,
    opset_imports,
    reference_ops,
)


def _all_nodes(nodes):
    """Nodes with those of Loop/If bodies, recursively."""
    for node in nodes:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g.node)


@pytest.mark.parametrize("op", sorted(OPS))
def test_bodies_use_standard_ops_only(op):
    for variant in OPS[op].variants():
        function = OPS[op].build_function(variant)
        assert (function.domain, function.name, function.overload) == (
            QGNN_DOMAIN, op, variant.overload)
        assert [(o.domain, o.version) for o in function.opset_import] == [
            ("", ONNX_OPSET_VERSION)]
        for node in _all_nodes(function.node):
            assert node.domain == ""
            assert onnx.defs.has(node.op_type, ONNX_OPSET_VERSION, "")
            assert node.op_type != "ScatterND"  # wrong with repeated indices and > 1 thread


def test_reference_classes_are_named_after_their_ops():
    assert {cls.__name__ for cls in reference_ops()} == set(OPS)
    assert all(cls.op_domain == QGNN_DOMAIN for cls in reference_ops())


def test_make_op_node_sets_domain_overload_and_attributes():
    node = make_op_node("QAggregate", ["x", "s", "z", "p", "i", "", "", "", "ys", "yz"], ["y"],
                        reduce="mean", bits=4)
    assert (node.domain, node.op_type, node.overload) == (QGNN_DOMAIN, "QAggregate", "mean")
    assert {a.name: helper.get_attribute_value(a) for a in node.attribute} == {
        "reduce": b"mean", "bits": 4}
    weighted = make_op_node("Aggregate", ["x", "p", "i", "w"], ["y"])
    assert weighted.overload == "sum_weighted"
    assert make_op_node("EdgeDst", ["p"], ["d"]).overload == ""


@pytest.mark.parametrize(("op", "inputs", "attributes", "message"), [
    ("Scatter", ["x"], {}, "not an ai.qgnn op"),
    ("Aggregate", ["x", "p", "i"], {"reduce": "min"}, "reduce must be one of"),
    ("Aggregate", ["x", "p", "i"], {"bits": 8}, "unknown attribute 'bits'"),
    ("QAggregate", ["x", "s", "z", "p", "i", "", "", "", "ys", "yz"], {"bits": 9},
     "bits must be one of"),
    ("Aggregate", ["x", "", "i"], {}, r"required inputs \['indptr'\] are missing"),
    ("QAggregate", ["x", "s", "z", "p", "i", "w", "", "", "ys", "yz"], {}, "come together"),
    ("QAggregate", ["x", "s", "z", "p", "i"], {}, r"\['y_scale', 'y_zero_point'\] are missing"),
    ("EdgeDst", ["p", "q"], {}, "2 inputs given, at most 1"),
])
def test_make_op_node_rejects_bad_nodes(op, inputs, attributes, message):
    with pytest.raises(ValueError, match=message):
        make_op_node(op, inputs, ["y"], **attributes)


def test_make_op_node_wants_one_output():
    with pytest.raises(ValueError, match="exactly one output"):
        make_op_node("EdgeDst", ["p"], ["a", "b"])


def test_function_protos_one_per_op_and_overload():
    nodes = [make_op_node("Aggregate", ["x", "p", "i"], ["a"]),
             make_op_node("Aggregate", ["x2", "p", "i"], ["b"]),
             make_op_node("Aggregate", ["x", "p", "i"], ["c"], reduce="max"),
             make_op_node("EdgeDst", ["p"], ["d"]),
             helper.make_node("Relu", ["a"], ["e"])]
    assert [(f.name, f.overload) for f in function_protos(nodes)] == [
        ("Aggregate", "max"), ("Aggregate", "sum"), ("EdgeDst", "")]


def test_function_protos_rejects_unknown_overload():
    node = helper.make_node("Aggregate", ["x", "p", "i"], ["y"], domain=QGNN_DOMAIN,
                            overload="median")
    with pytest.raises(ValueError, match="overload 'median'"):
        function_protos([node])


def test_make_op_model_pins_versions():
    model = make_op_model("EdgeDst", {"indptr": (TensorProto.INT64, ["n"])})
    assert model.ir_version == IR_VERSION
    assert {(o.domain, o.version) for o in model.opset_import} == {
        ("", ONNX_OPSET_VERSION), (QGNN_DOMAIN, QGNN_OPSET_VERSION)}
    with pytest.raises(ValueError, match="unknown inputs"):
        make_op_model("EdgeDst", {"ptr": (TensorProto.INT64, ["n"])})


def test_ops_and_overloads_share_a_model():
    """A GAT-like chain: per-edge scores from source and destination terms (EdgeDst + Gather),
    EdgeSoftmax, attention-weighted sum and a max aggregation of the same features, plus a
    quantised mean; every function attached once per overload; onnxruntime == reference."""
    nodes = [
        make_op_node("EdgeDst", ["indptr"], ["dst"]),
        helper.make_node("Gather", ["a_src", "src"], ["s_src"], axis=0),
        helper.make_node("Gather", ["a_dst", "dst"], ["s_dst"], axis=0),
        helper.make_node("Add", ["s_src", "s_dst"], ["logits"]),
        make_op_node("EdgeSoftmax", ["logits", "indptr"], ["alpha"]),
        helper.make_node("Squeeze", ["alpha", "axis1"], ["alpha_e"]),
        make_op_node("Aggregate", ["x", "indptr", "src", "alpha_e"], ["attended"]),
        make_op_node("Aggregate", ["x", "indptr", "src"], ["pooled"], reduce="max"),
        make_op_node("QAggregate", ["x_q", "s_x", "zp_x", "indptr", "src", "", "", "", "s_y",
                                    "zp_y"], ["q_mean"], reduce="mean"),
    ]
    f32, i64, u8 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.UINT8
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in (
            ("x", f32, ["N", 4]), ("a_src", f32, ["N", 1]), ("a_dst", f32, ["D", 1]),
            ("indptr", i64, ["D1"]), ("src", i64, ["E"]), ("x_q", u8, ["N", 4]))],
        [helper.make_tensor_value_info(n, t, [None, None]) for n, t in (
            ("attended", f32), ("pooled", f32), ("q_mean", u8))],
        initializer=[onnx.numpy_helper.from_array(v, n) for n, v in (
            ("axis1", np.array([1], np.int64)), ("s_x", np.array(0.1, np.float32)),
            ("zp_x", np.array(128, np.uint8)), ("s_y", np.array(0.05, np.float32)),
            ("zp_y", np.array(100, np.uint8)))])
    model = helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION,
                              functions=function_protos(graph.node))
    assert len(model.functions) == 5
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)
    rng = np.random.default_rng(0)
    indptr = np.array([0, 3, 3, 5, 9], dtype=np.int64)
    feeds = {"x": rng.normal(size=(6, 4)).astype(np.float32),
             "a_src": rng.normal(size=(6, 1)).astype(np.float32),
             "a_dst": rng.normal(size=(4, 1)).astype(np.float32), "indptr": indptr,
             "src": rng.integers(0, 6, size=9).astype(np.int64),
             "x_q": rng.integers(0, 256, size=(6, 4)).astype(np.uint8)}
    got = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, feeds)
    want = ReferenceEvaluator(model, new_ops=reference_ops()).run(None, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])
    assert np.all(got[0][1] == 0)  # destination 1 has no edge
