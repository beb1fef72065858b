"""ai.qgnn::EdgeSoftmax: per-destination softmax over in-edges, by hand, by a loop oracle, and
the function body (segmented max scan + float64 running sums) on onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from qgnn.exporter.ops.edge_softmax import edge_softmax

INDPTR = np.array([0, 2, 5, 5, 6, 6], dtype=np.int64)  # destinations 2 and 4 have no edge
LN3 = np.log(3.0)
# head 0 small, head 1 huge magnitudes: exp without the max subtraction overflows/underflows
LOGITS = np.array([[0, 1000], [LN3, 1000 + LN3], [1, -1000], [1, -1000], [1, -1000],
                   [5, 88]], dtype=np.float32)
HAND = np.array([[0.25, 0.25], [0.75, 0.75], [1 / 3, 1 / 3], [1 / 3, 1 / 3], [1 / 3, 1 / 3],
                 [1, 1]])


def test_hand_example(op_runner):
    feeds = {"logits": LOGITS, "indptr": INDPTR}
    for got in (op_runner.reference("EdgeSoftmax", feeds), op_runner.ort("EdgeSoftmax", feeds)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, HAND, rtol=1e-4)  # float32(ln 3) and 1000 + ln 3


def loop_softmax(logits: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    out = np.zeros(logits.shape)
    for v in range(indptr.size - 1):
        for h in range(logits.shape[1]):
            scores = [float(logits[e, h]) for e in range(indptr[v], indptr[v + 1])]
            if scores:
                top = max(scores)
                total = sum(np.exp(s - top) for s in scores)
                for e in range(indptr[v], indptr[v + 1]):
                    out[e, h] = np.exp(float(logits[e, h]) - top) / total
    return out


def random_logits(structure, heads: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(structure.num_edges, heads)) * 30).astype(np.float32)


def test_reference_matches_loop_oracle(structure):
    logits = random_logits(structure, 3, 0)
    got = edge_softmax(logits, structure.indptr)
    np.testing.assert_allclose(got, loop_softmax(logits, structure.indptr), rtol=1e-5,
                               atol=1e-12)


def test_body_matches_reference(op_runner, structure, features):
    feeds = {"logits": random_logits(structure, features, features), "indptr": structure.indptr}
    got = op_runner.ort("EdgeSoftmax", feeds)
    want = op_runner.reference("EdgeSoftmax", feeds)
    assert got.shape == want.shape == (structure.num_edges, features)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)
    sums = np.zeros((structure.num_dst, features))
    np.add.at(sums, np.repeat(np.arange(structure.num_dst), np.diff(structure.indptr)), got)
    has_edges = np.diff(structure.indptr) > 0
    np.testing.assert_allclose(sums[has_edges], 1.0, rtol=1e-5)


def test_model_checks_and_infers(op_runner):
    model = op_runner.model("EdgeSoftmax", {"logits": LOGITS, "indptr": INDPTR})
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.FLOAT and len(out.shape.dim) == 2


def test_reference_rejects_bad_inputs():
    with pytest.raises(ValueError, match="logits must be finite"):
        edge_softmax(np.full((6, 1), -np.inf, np.float32), INDPTR)
    with pytest.raises(ValueError, match=r"indptr\[-1\] = 6 must equal len\(logits\) = 4"):
        edge_softmax(LOGITS[:4], INDPTR)
    with pytest.raises(ValueError, match="logits must be float32"):
        edge_softmax(LOGITS.astype(np.float64), INDPTR)
