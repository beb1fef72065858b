"""ai.qgnn::EdgeDst: the destination of every edge from the CSR pointer."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from qgnn.exporter.ops.edge_dst import edge_dst


def test_hand_example(op_runner):
    feeds = {"indptr": np.array([0, 2, 5, 5, 6, 6], dtype=np.int64)}
    want = np.array([0, 0, 1, 1, 1, 3], dtype=np.int64)
    np.testing.assert_array_equal(op_runner.reference("EdgeDst", feeds), want)
    np.testing.assert_array_equal(op_runner.ort("EdgeDst", feeds), want)


def test_body_and_reference_match_loops(op_runner, structure):
    want = [v for v in range(structure.num_dst)
            for _ in range(structure.indptr[v], structure.indptr[v + 1])]
    feeds = {"indptr": structure.indptr}
    np.testing.assert_array_equal(op_runner.reference("EdgeDst", feeds), want)
    got = op_runner.ort("EdgeDst", feeds)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_trailing_and_leading_empty_destinations(op_runner):
    feeds = {"indptr": np.array([0, 0, 0, 3, 3, 4, 4, 4], dtype=np.int64)}
    np.testing.assert_array_equal(op_runner.ort("EdgeDst", feeds), [2, 2, 2, 4])


def test_model_checks_and_infers(op_runner):
    model = op_runner.model("EdgeDst", {"indptr": np.array([0, 1], dtype=np.int64)})
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.INT64 and len(out.shape.dim) == 1


def test_reference_rejects_bad_pointers():
    with pytest.raises(ValueError, match="at least one entry"):
        edge_dst(np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="indptr must start with 0"):
        edge_dst(np.array([1, 2], np.int64))
    with pytest.raises(ValueError, match="non-decreasing"):
        edge_dst(np.array([0, 2, 1], np.int64))
