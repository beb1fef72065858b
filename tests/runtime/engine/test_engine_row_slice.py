"""Leading-row slices (``x[:num_dst]``) that only kernels read run as a ``RowSlice`` view
(runtime/engine/row_slice.py): the same answers as stock onnxruntime at every ISA level, no
copy, no onnxruntime call of their own; a slice a standard node reads stays in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from qgnn.exporter.ops import IR_VERSION, opset_imports
from qgnn.runtime import kernels
from qgnn.runtime.engine.executor import PartitionedExecutor, PortableExecutor
from qgnn.runtime.engine.partition import partition
from qgnn.runtime.engine.row_slice import row_slice
from qgnn.runtime.engine.session import SessionConfig

F = 16
needs_kernels = pytest.mark.skipif(not kernels.available(), reason="kernels not built")


def _model(*, also_standard_reader: bool = False, end_offset: int = 1) -> onnx.ModelProto:
    """x[:len(indptr) - end_offset] requantised through ReLU (a FloatStep kernel reads it);
    optionally also cast to float by a standard node, as a second output."""
    inits = [numpy_helper.from_array(np.array(v, dt), n) for n, v, dt in (
        ("zero", [0], np.int64), ("off", [end_offset], np.int64), ("s", 0.05, np.float32),
        ("zp", 120, np.uint8), ("s_y", 0.04, np.float32), ("zp_y", 3, np.uint8))]
    nodes = [helper.make_node("Shape", ["indptr"], ["n_ptr"]),
             helper.make_node("Sub", ["n_ptr", "off"], ["count"]),
             helper.make_node("Slice", ["x", "zero", "count", "zero"], ["x_dst"]),
             helper.make_node("DequantizeLinear", ["x_dst", "s", "zp"], ["f"]),
             helper.make_node("Relu", ["f"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s_y", "zp_y"], ["q"]),
             helper.make_node("Identity", ["q"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.UINT8, None)]
    if also_standard_reader:
        nodes.append(helper.make_node("Cast", ["x_dst"], ["x_float"], to=TensorProto.FLOAT))
        outputs.append(helper.make_tensor_value_info("x_float", TensorProto.FLOAT, None))
    inputs = [helper.make_tensor_value_info("x", TensorProto.UINT8, [None, F]),
              helper.make_tensor_value_info("indptr", TensorProto.INT64, [None])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION)


def _kernel_ops(model: onnx.ModelProto) -> list[str]:
    return [k.op_type for phase in partition(model.SerializeToString()).kernels for k in phase]


def _segment_ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for s in partition(model.SerializeToString()).segments for n in s.nodes]


@needs_kernels
# ends 20 and 21 rows, 36 (clamped to all 30), 0 (no rows), -19 (counted from the end: 11)
@pytest.mark.parametrize("end_offset", [1, 0, -15, 21, 40])
def test_slice_read_only_by_kernels_is_a_view_equal_to_onnxruntime(end_offset: int) -> None:
    model = _model(end_offset=end_offset)
    assert _kernel_ops(model) == ["RowSlice", "FloatStep"]
    assert "Slice" not in _segment_ops(model)
    rng = np.random.default_rng(end_offset + 100)
    feeds = {"x": rng.integers(0, 256, (30, F)).astype(np.uint8),
             "indptr": np.zeros(21, np.int64)}
    data = model.SerializeToString()
    stock = PortableExecutor(data, SessionConfig()).run(feeds)["y"]
    for isa in [lvl for lvl in kernels.levels_supported() if lvl in kernels.levels_built()]:
        got = PartitionedExecutor(data, SessionConfig(), isa=isa).run(feeds)["y"]
        np.testing.assert_array_equal(got, stock, err_msg=isa)
    assert stock.shape[0] == {1: 20, 0: 21, -15: 30, 21: 0, 40: 11}[end_offset]


@needs_kernels
def test_slice_a_standard_node_also_reads_stays_in_onnxruntime() -> None:
    model = _model(also_standard_reader=True)
    assert "RowSlice" not in _kernel_ops(model)
    assert "Slice" in _segment_ops(model)
    feeds = {"x": np.arange(10 * F, dtype=np.uint8).reshape(10, F),
             "indptr": np.zeros(5, np.int64)}
    data = model.SerializeToString()
    stock = PortableExecutor(data, SessionConfig()).run(feeds)
    got = PartitionedExecutor(data, SessionConfig()).run(feeds)
    for name in ("y", "x_float"):
        np.testing.assert_array_equal(got[name], stock[name])


def test_row_slice_follows_onnx_slice_and_copies_nothing() -> None:
    x = np.arange(24, dtype=np.uint8).reshape(6, 4)
    for end, rows in ((4, 4), (6, 6), (9, 6), (0, 0), (-1, 5), (-10, 0),
                      (np.iinfo(np.int64).max, 6)):
        got = row_slice(x, np.array([end], np.int64))
        assert (got.shape == (rows, 4) and np.shares_memory(got, x)) or rows == 0
        np.testing.assert_array_equal(got, x[:rows])
        assert got.flags.c_contiguous
    with pytest.raises(ValueError, match="the end must be one integer"):
        row_slice(x, np.array([1.0]))
    with pytest.raises(ValueError, match="the end must be one integer"):
        row_slice(x, np.array([1, 2]))
