"""ai.qgnn::QEdgeSoftmax: the reference against the contract, and the function body (integer max
scan, table Gather, int64 CumSum sums, float64 divide) on stock onnxruntime, bit for bit."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from qgnn.contract import edge_softmax_q, softmax_table
from qgnn.exporter.ops.q_edge_softmax import q_edge_softmax

INDPTR = np.array([0, 2, 5, 5, 6, 6], dtype=np.int64)  # destinations 2 and 4 have no edge
TABLE = softmax_table(np.float32(0.05), 8)


def feeds_for(logits_q: np.ndarray, indptr: np.ndarray, table: np.ndarray) -> dict:
    return {"logits_q": logits_q, "indptr": indptr, "table": table}


def random_logits(rng: np.random.Generator, edges: int, heads: int, bits: int) -> np.ndarray:
    return rng.integers(0, 2**bits, (edges, heads)).astype(np.uint8)


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_hand_example(op_runner) -> None:
    q = np.array([[7, 0], [7, 3], [1, 1], [1, 1], [1, 1], [200, 9]], np.uint8)
    feeds = feeds_for(q, INDPTR, TABLE)
    want = np.array([[0.5, 1 / (1 + np.exp(0.15))], [0.5, 1 / (1 + np.exp(-0.15))],
                     [1 / 3, 1 / 3], [1 / 3, 1 / 3], [1 / 3, 1 / 3], [1, 1]])
    for got in (op_runner.reference("QEdgeSoftmax", feeds), op_runner.ort("QEdgeSoftmax", feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert got[5, 0] == 1.0 and got[0, 0] == 0.5  # one edge; equal logits


@pytest.mark.parametrize("bits", [8, 4])
def test_body_equals_reference_bit_for_bit(op_runner, structure, features, bits) -> None:
    rng = np.random.default_rng(features + bits)
    for scale in (0.003, 0.05, 1.7):
        table = softmax_table(np.float32(scale), bits)
        feeds = feeds_for(random_logits(rng, structure.num_edges, features, bits),
                          structure.indptr, table)
        want = op_runner.reference("QEdgeSoftmax", feeds)
        assert_same_bits(op_runner.ort("QEdgeSoftmax", feeds), want)
        dst = np.repeat(np.arange(structure.num_dst), np.diff(structure.indptr))
        assert_same_bits(want, edge_softmax_q(feeds["logits_q"], dst, structure.num_dst, table))


def test_all_equal_and_extreme_logits(op_runner, mixed_structure) -> None:
    s = mixed_structure
    deg = np.diff(s.indptr)
    for value in (0, 255):
        feeds = feeds_for(np.full((s.num_edges, 2), value, np.uint8), s.indptr, TABLE)
        got = op_runner.ort("QEdgeSoftmax", feeds)
        want = (1.0 / np.repeat(deg, deg).astype(np.float64)).astype(np.float32)
        assert_same_bits(got, np.stack([want, want], 1))
        assert_same_bits(op_runner.reference("QEdgeSoftmax", feeds), got)
    # the hub's largest logit on one edge, every other 255 steps below: T[255] of a big scale
    q = np.zeros((s.num_edges, 1), np.uint8)
    q[s.indptr[7]] = 255
    feeds = feeds_for(q, s.indptr, softmax_table(np.float32(1.0), 8))
    got = op_runner.ort("QEdgeSoftmax", feeds)
    assert got[s.indptr[7], 0] == 1.0 and not got[s.indptr[7] + 1:s.indptr[8]].any()
    assert_same_bits(op_runner.reference("QEdgeSoftmax", feeds), got)


def test_model_checks_and_infers(op_runner) -> None:
    q = np.zeros((6, 2), np.uint8)
    model = op_runner.model("QEdgeSoftmax", feeds_for(q, INDPTR, TABLE))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.FLOAT and len(out.shape.dim) == 2


def test_reference_rejects_bad_inputs() -> None:
    q = np.zeros((6, 1), np.uint8)
    with pytest.raises(ValueError, match=r"indptr\[-1\] = 6 must equal len\(logits_q\) = 4"):
        q_edge_softmax(q[:4], INDPTR, TABLE)
    with pytest.raises(ValueError, match="logits_q must be uint8"):
        q_edge_softmax(q.astype(np.int64), INDPTR, TABLE)
    with pytest.raises(ValueError, match="table must be int64"):
        q_edge_softmax(q, INDPTR, TABLE.astype(np.int32))
    with pytest.raises(ValueError, match="QEdgeSoftmax: table must hold 2\\^bits entries"):
        q_edge_softmax(q, INDPTR, TABLE[:100])
    with pytest.raises(ValueError, match="logit 16 is beyond the table of 16"):
        q_edge_softmax(q + 16, INDPTR, softmax_table(0.1, 4))
    with pytest.raises(ValueError, match="table\\[0\\] must be 2\\^30"):
        q_edge_softmax(q, INDPTR, TABLE * 2)
